"""The pywbem cookbook's examples (docs/examples/pywbem_cookbook.py) run as documented."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from tests.support.namespace import private_namespace

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "pywbem_cookbook.py"


@private_namespace
def test_cookbook_examples_run(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("pywbem_cookbook", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    printed = module.main(tmp_path)
    target = str(tmp_path / "mnt")
    assert printed[0] == f"mounted tmpfs on {target} references: 1"
    assert "second holder shares it: ['backup-job', 'report-job']" in printed
    assert any(line.startswith("plan: fstab: remove line 'tmpfs") for line in printed)
    assert printed[-1] == "fstab now: # scratch fstab"
