"""docs/: Sphinx builds with warnings as errors, and the model page covers the model."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lmi_mount.cim import names

DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.mark.skipif(
    shutil.which("dot") is None,
    reason="graphviz's dot is not installed (apt-get install graphviz); the diagram needs it",
)
def test_docs_build_without_warnings_and_show_every_lmi_class(tmp_path: Path) -> None:
    out = tmp_path / "html"
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         "-d", str(tmp_path / "doctrees"), str(DOCS), str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""

    page = (out / "model.html").read_text(encoding="utf-8")
    headings = re.findall(r"<h3>(LMI_\w+)", page)
    assert headings == list(names.LMI_CLASSES)
    assert "lmi-mount extension." in page

    svgs = list((out / "_images").glob("graphviz-*.svg"))
    assert len(svgs) == 1
    diagram = svgs[0].read_text(encoding="utf-8")
    for classname in names.LMI_CLASSES:
        assert f">{classname}<" in diagram, classname
