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


MAN = DOCS.parent / "dist" / "man"


def _without_date(page: str) -> str:
    """A man page without its .TH line (it carries the build date)."""
    return "\n".join(line for line in page.splitlines() if not line.startswith(".TH "))


def test_the_installed_man_pages_are_built_from_the_docs(tmp_path: Path) -> None:
    # setup.cfg installs dist/man/*; they must be what the sources build to
    # now (regenerate: python3 -m sphinx -W -b man -d /tmp/doctrees docs dist/man).
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "man",
         "-d", str(tmp_path / "doctrees"), str(DOCS), str(tmp_path / "man")],
        capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    built = sorted(path.name for path in (tmp_path / "man").iterdir())
    assert built == ["lmi-mount.8", "lmi-mountd.8", "lmi-mountd.conf.5"]
    for name in built:
        fresh = _without_date((tmp_path / "man" / name).read_text(encoding="utf-8"))
        assert fresh == _without_date((MAN / name).read_text(encoding="utf-8")), (
            f"dist/man/{name} is stale: python3 -m sphinx -W -b man -d /tmp/doctrees "
            "docs dist/man")


@pytest.mark.parametrize(("page", "parser"), [
    pytest.param("lmi-mountd.8", "lmi_mount.daemon", id="lmi-mountd"),
    pytest.param("lmi-mount.8", "lmi_mount.admin", id="lmi-mount"),
])
def test_every_option_of_a_program_is_in_its_man_page(page: str, parser: str) -> None:
    import argparse
    import importlib

    top: argparse.ArgumentParser = importlib.import_module(parser).parser()
    parsers = [top] + [choice for action in top._actions
                       if isinstance(action, argparse._SubParsersAction)
                       for choice in action.choices.values()]
    options = {option for each in parsers for action in each._actions
               for option in action.option_strings
               if option.startswith("--") and option != "--help"}
    text = (MAN / page).read_text(encoding="utf-8").replace("\\-", "-")
    missing = sorted(option for option in options if option not in text)
    assert missing == [], f"{page} does not mention {missing}"
