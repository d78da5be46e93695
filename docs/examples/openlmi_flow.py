"""The OpenLMI-storage client flow on lmi-mount: the calls of docs/openlmi.rst, runnable.

Run as root: ``unshare --mount --propagation private python3 docs/examples/openlmi_flow.py``.
Everything happens in a private mount namespace with a scratch fstab under a
temporary directory; the tests run ``main`` the same way. The synchronous
window is 0 here, so that every method call becomes a job, as a slow one
does on a real host.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pywbem import CIM_ERR_NOT_FOUND, CIMError, CIMInstanceName, Uint16

from lmi_mount.cim.mock import mock_connection


def main(workdir: Path) -> list[str]:
    """Run the flow under ``workdir``; return what it printed, line by line."""
    printed: list[str] = []

    def say(*parts: object) -> None:
        printed.append(" ".join(str(p) for p in parts))

    (workdir / "mnt").mkdir()
    fstab = workdir / "fstab"
    fstab.write_text("# scratch fstab\n")
    target = str(workdir / "mnt")
    conn = mock_connection(fstab, workdir / "state", hold_seconds=0, synchronous_seconds=0)
    [service] = conn.EnumerateInstanceNames("LMI_MountConfigurationService")
    [capabilities] = conn.EnumerateInstanceNames("LMI_MountedFileSystemCapabilities")

    # [setting]
    rv, out = conn.InvokeMethod("CreateSetting", capabilities)
    goal = conn.GetInstance(out["MountSetting"])  # OpenLMI's scripts read out["setting"]
    # OpenLMI's Auto=False and AllowUserMount=True are fstab options here.
    goal["OtherOptions"] = ["noauto", "user", "size=16m"]
    conn.ModifyInstance(goal)
    # [/setting]

    # [job]
    def finished(rv: int, out: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """The result of a call; a job (4096) is an LMI_MountJob, polled until it ends
        (Completed 7, Terminated 8, Exception 10), as OpenLMI's LMI_StorageJob was."""
        if rv != 4096:
            return rv, out
        job = out["Job"]  # lmishell's Sync* methods wait for LMI_StorageJob only
        while (instance := conn.GetInstance(job))["JobState"] not in (7, 8, 10):
            time.sleep(0.1)
        if instance["JobState"] == 8:
            return 4, {}
        results = dict(instance["JobOutParameters"].items())
        return int(results.pop("__ReturnValue")), results

    rv, out = finished(*conn.InvokeMethod(
        "CreateMount", service, Mode=Uint16(1), MountPoint=target,
        FileSystemSpec="tmpfs", FileSystemType="tmpfs", Goal=goal.path))
    say("CreateMount returned", rv, "mount", out["Mount"]["MountPointPath"])
    # [/job]

    # [find]
    [mount] = conn.ExecQuery("WQL", "select * from LMI_MountedFileSystem where "
                             f'MountPointPath = "{target}"')
    say("found by query:", mount["MountPointPath"], "references:", mount["ReferenceCount"])
    say("fstab line:", next(line for line in fstab.read_text().splitlines()
                            if not line.startswith("#")))
    # [/find]

    # [errors]
    missing = CIMInstanceName("LMI_MountedFileSystem", {
        "FileSystemSpec": "tmpfs", "MountPointPath": target + "-nowhere"})
    try:
        conn.GetInstance(missing)
    except CIMError as error:  # OpenLMI answered CIM_ERR_FAILED
        say("missing mount:", error.status_code_name, error.status_code == CIM_ERR_NOT_FOUND)
    rv, out = finished(*conn.InvokeMethod(
        "DeleteMount", service, Mode=Uint16(32769), Mount=mount.path, Holder="nobody"))
    say("release by a non-holder returned", rv, "-", out["Error"]["Message"])
    # [/errors]

    rv, out = finished(*conn.InvokeMethod("DeleteMount", service, Mode=Uint16(4),
                                          Mount=mount.path, Force=True))
    say("DeleteMount Mode 4 returned", rv)
    conn.close()
    return printed


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as scratch:
        print("\n".join(main(Path(scratch))))
    sys.exit(0)
