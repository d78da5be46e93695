"""docs/examples/openlmi_flow.py (the calls of docs/openlmi.rst) runs as documented."""

from __future__ import annotations

from pathlib import Path

from tests.support.examples import load_example
from tests.support.namespace import private_namespace


@private_namespace
def test_the_openlmi_flow_runs(tmp_path: Path) -> None:
    module = load_example("openlmi_flow")
    target = str(tmp_path / "mnt")
    assert module.main(tmp_path) == [
        f"CreateMount returned 0 mount {target}",
        f"found by query: {target} references: 1",
        f"fstab line: tmpfs {target} tmpfs noauto,user,size=16m,suid,dev,exec 0 0",
        "missing mount: CIM_ERR_NOT_FOUND True",
        f"release by a non-holder returned 6 - holder 'nobody' holds no reference on "
        f"'{target}' (held by cim)",
        "DeleteMount Mode 4 returned 0",
    ]
