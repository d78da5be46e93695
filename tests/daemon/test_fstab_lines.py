"""fstab lines through a real lmi-mountd, as a WBEM client over CIM-XML writes them.

The same cases as tests/cim/test_fstab_lines.py (which runs on the pywbem mock
front end), through the daemon's HTTP and CIM-XML: the sandbox's fstab has
exactly the line each request asked for.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pywbem import CIM_ERR_INVALID_PARAMETER, CIMError, Uint16, WBEMConnection

from tests.daemon import sandbox
from tests.daemon.sandbox import PASSWORD, USER
from tests.support.skips import requires_root

pytestmark = [pytest.mark.root, requires_root]


def test_fstab_only_lines_through_the_daemon(tmp_path: Path) -> None:
    root = tmp_path / "sandbox"
    with sandbox.running(root) as daemon:
        conn = WBEMConnection(daemon.http_url, (USER, PASSWORD),
                              default_namespace=sandbox.NAMESPACE)
        [service] = conn.EnumerateInstanceNames("LMI_MountConfigurationService")

        def create(spec: str, target: str, fstype: str, **extra: object) -> tuple[int, dict]:
            rv, out = conn.InvokeMethod("CreateMount", service, Mode=Uint16(2),
                                        MountPoint=target, FileSystemSpec=spec,
                                        FileSystemType=fstype, **extra)
            return int(rv), dict(out)

        uuid = "UUID=0a1b2c3d-0000-4000-8000-00000000beef"
        assert create(uuid, f"{root}/later/data", "ext4")[0] == 0
        rv, out = create("//nas/share", f"{root}/nas", "cifs", DryRun=True)
        assert rv == 0 and any("cifs-utils" in step for step in out["Plan"]), out
        assert create("//nas/share", f"{root}/nas", "cifs")[0] == 0
        with pytest.raises(CIMError) as refused:
            create("tmpfs", f"{root}/x", "nosuchfs")
        assert refused.value.status_code == CIM_ERR_INVALID_PARAMETER
        assert "'nosuchfs' is unknown here" in refused.value.status_description
        lines = [line for line in daemon.fstab.read_text().splitlines()
                 if not line.startswith("#")]
        assert lines == [f"{uuid} {root}/later/data ext4 defaults 0 0",
                         f"//nas/share {root}/nas cifs defaults 0 0"]
        assert daemon.stop(timeout=10) == 0
