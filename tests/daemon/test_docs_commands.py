"""The documentation's shell sessions run as written, against a real sandbox daemon.

Convention of docs/: a ``.. code-block:: console`` block is a session
against ``lmi-mountd --sandbox /tmp/lmi-sandbox --sandbox-password secret``
on the default ports (5988, 5989), in a scratch directory or (pages that name
the checkout's files) at the top of the checkout, and is run here; commands that cannot run
in a test (systemctl, installing files under /etc) go in ``shell`` blocks.

Here the daemon runs on a free port pair in a fresh directory whose path is
as long as ``/tmp/lmi-sandbox``, so that pywbemcli wraps long values where the
page shows them wrapped. The commands and the output shown are rewritten
(ports, directory), run in order in one bash (variables set by one command
serve the next), and each command's standard output must match what the
page shows: a line ``...`` stands for any number of lines, and ``...``
within a line for any text. Every command must exit 0 and the session must
write nothing to standard error (the pages' failing examples redirect it
with ``2>&1`` and print ``$?``).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.daemon import sandbox
from tests.support.skips import has_tool, requires_root

DOCS = Path(__file__).resolve().parents[2] / "docs"
DOC_ROOT = "/tmp/lmi-sandbox"
DOC_PASSWORD = "secret"
DOC_HTTP, DOC_HTTPS = 5988, 5989
MARKER = "@@lmi-docs-status@@"
PAGES = [
    pytest.param("administration.rst", ("pywbemcli", "wbemcli", "lmi-mount"),
                 id="administration"),
    pytest.param("cookbook-wbemcli.rst", ("wbemcli",), id="cookbook-wbemcli"),
    pytest.param("running-lmi-mountd.rst", ("pywbemcli",), id="running-lmi-mountd"),
    pytest.param("fleet.rst", ("ansible-playbook", "pywbemcli"), id="fleet"),
    pytest.param("subscribing.rst", ("pywbemcli", "pywbemlistener", "nsenter"),
                 id="subscribing"),
]
# Pages whose sessions start at the top of the checkout (they name its files).
IN_CHECKOUT = {"fleet.rst", "subscribing.rst"}


@dataclass(frozen=True)
class Step:
    line: int
    command: str
    expected: tuple[str, ...]


def steps(text: str) -> list[Step]:
    """The ``$`` commands of the console blocks of a page and the output shown under each."""
    found: list[Step] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].strip() != ".. code-block:: console":
            i += 1
            continue
        i += 1
        block: list[tuple[int, str]] = []
        while i < len(lines) and (not lines[i].strip() or lines[i].startswith("   ")):
            block.append((i + 1, lines[i][3:]))
            i += 1
        j = 0
        while j < len(block):
            number, content = block[j]
            if not content.startswith("$ "):
                j += 1
                continue
            command = [content[2:]]
            while command[-1].endswith("\\") and j + 1 < len(block):
                j += 1
                command.append(block[j][1])
            expected: list[str] = []
            j += 1
            while j < len(block) and not block[j][1].startswith("$ "):
                expected.append(block[j][1].rstrip())
                j += 1
            while expected and not expected[-1]:
                expected.pop()
            found.append(Step(number, "\n".join(command), tuple(expected)))
    return found


def matches(expected: tuple[str, ...], actual: list[str]) -> bool:
    """``actual`` is ``expected`` where a line ``...`` stands for any lines and ``...``
    within a line for any text."""
    def line_pattern(line: str) -> str:
        return ".*?".join(re.escape(part) for part in line.split("...")) + r"\n"

    pattern = "".join(r"(?:.*\n)*?" if line == "..." else line_pattern(line)
                      for line in expected)
    return re.fullmatch(pattern, "".join(f"{line}\n" for line in actual)) is not None


@pytest.mark.parametrize(("expected", "actual", "result"), [
    pytest.param(("a", "b"), ["a", "b"], True, id="exact"),
    pytest.param(("a",), ["a", "b"], False, id="extra-line"),
    pytest.param(("a", "...", "d"), ["a", "b", "c", "d"], True, id="lines-elided"),
    pytest.param(("a", "...", "d"), ["a", "d"], True, id="nothing-elided"),
    pytest.param(("x=...;",), ["x=42;"], True, id="text-elided"),
    pytest.param(("x=...;",), ["y=42;"], False, id="text-differs"),
    pytest.param(("a.b",), ["axb"], False, id="dot-is-literal"),
])
def test_matches(expected: tuple[str, ...], actual: list[str], result: bool) -> None:
    assert matches(expected, actual) is result


def rewrite(text: str, daemon: sandbox.Daemon) -> str:
    """The page's text for this daemon: its ports and its directory."""
    return (text.replace(f"127.0.0.1:{DOC_HTTP}", f"127.0.0.1:{daemon.http_port}")
            .replace(f"127.0.0.1:{DOC_HTTPS}", f"127.0.0.1:{daemon.https_port}")
            .replace(DOC_ROOT, str(daemon.root)))


def run_steps(page: list[Step], daemon: sandbox.Daemon, workdir: Path,
              cwd: Path) -> list[tuple[Step, list[str], int]]:
    """Run the steps in one bash in ``cwd``; (step, its stdout lines, its exit status) each.

    Ansible keeps its own files (temporary modules, its home) in ``workdir``."""
    script = [f"cd {cwd}", f"export ANSIBLE_HOME={workdir}/ansible",
              f"export ANSIBLE_LOCAL_TEMP={workdir}/ansible/tmp"]
    for step in page:
        script += [rewrite(step.command, daemon), f"printf '\\n{MARKER} %s\\n' \"$?\""]
    bash = has_tool("bash")
    assert bash is not None
    done = subprocess.run([bash, "--noprofile", "--norc"], input="\n".join(script) + "\n",
                          capture_output=True, text=True, timeout=180, env=sandbox.client_env())
    assert done.stderr == "", done.stderr
    chunks = re.split(rf"\n{MARKER} (\d+)\n", done.stdout)
    assert len(chunks) == 2 * len(page) + 1 and chunks[-1] == "", done.stdout
    results = []
    for index, step in enumerate(page):
        lines = [line.rstrip() for line in chunks[2 * index].splitlines()]
        while lines and not lines[-1]:
            lines.pop()
        results.append((step, lines, int(chunks[2 * index + 1])))
    return results


def test_the_wbemcli_cookbook_has_the_operations_it_promises() -> None:
    page = steps((DOCS / "cookbook-wbemcli.rst").read_text(encoding="utf-8"))
    commands = " ".join(step.command for step in page)
    for operation in ("ecn", "gc", "ei", "ein", "gi", "ai", "ain", "ri", "rin", "cm"):
        assert f"wbemcli {operation} " in commands, operation
    assert "CreateMount." in commands and "DeleteMount." in commands


@pytest.mark.root
@requires_root
@pytest.mark.parametrize(("name", "tools"), PAGES)
def test_every_command_of_the_page(tmp_path: Path, name: str, tools: tuple[str, ...]) -> None:
    missing = [tool for tool in tools if has_tool(tool) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed")
    page = steps((DOCS / name).read_text(encoding="utf-8"))
    assert page, f"{name} has no console block"
    workdir = tmp_path / "work"
    workdir.mkdir()
    # "/tmp/lmi" and mkdtemp's 8 random characters: as long as DOC_ROOT.
    root = Path(tempfile.mkdtemp(prefix="lmi", dir="/tmp"))
    assert len(str(root)) == len(DOC_ROOT)
    try:
        with sandbox.running(root, password=DOC_PASSWORD, log_dir=tmp_path) as daemon:
            cwd = DOCS.parent if name in IN_CHECKOUT else workdir
            results = run_steps(page, daemon, workdir, cwd)
            assert daemon.stop() == 0
    finally:
        # The mounts ended with the daemon's namespace: only files are left.
        shutil.rmtree(root)
    failures = []
    for step, actual, status in results:
        expected = tuple(rewrite(line, daemon) for line in step.expected)
        if status != 0 or not matches(expected, actual):
            failures.append(f"{name}:{step.line}: $ {step.command}\n"
                            f"exit status {status}; output:\n" + "\n".join(actual))
    assert not failures, "\n\n".join(failures)

