"""The pywbem cookbook's examples (docs/examples/pywbem_cookbook.py) run as documented."""

from __future__ import annotations

from pathlib import Path

from tests.support.examples import load_example
from tests.support.namespace import private_namespace


@private_namespace
def test_cookbook_examples_run(tmp_path: Path) -> None:
    module = load_example("pywbem_cookbook")
    printed = module.main(tmp_path)
    target = str(tmp_path / "mnt")
    assert printed[0] == f"mounted tmpfs on {target} references: 1"
    assert "second holder shares it: ['backup-job', 'report-job']" in printed
    assert any(line.startswith("plan: fstab: remove line 'tmpfs") for line in printed)
    assert printed[-1] == "fstab now: # scratch fstab"
