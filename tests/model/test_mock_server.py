"""mock_repo/: pywbemcli's --mock-server with the model, and the README's commands."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from pywbemtools.pywbemcli.pywbemcli import cli

from lmi_mount.cim import names
from lmi_mount.cim.model import Model

REPO = Path(__file__).resolve().parents[2]
README = REPO / "mock_repo" / "README.md"
PREFIX = "pywbemcli --mock-server mock_repo/mock_server.py "


def pywbemcli_executable() -> str:
    """The pywbemcli of this interpreter's environment, else the first on PATH."""
    beside = Path(sys.executable).with_name("pywbemcli")
    found = str(beside) if beside.is_file() else shutil.which("pywbemcli")
    assert found, "pywbemcli not installed (pip install -e .[test])"
    return found


def test_pywbemcli_lists_every_class_of_the_model(model: Model) -> None:
    result = subprocess.run(
        [
            pywbemcli_executable(),
            "--mock-server",
            "mock_repo/mock_server.py",
            "class",
            "enumerate",
            "--names-only",
            "--deep-inheritance",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    listed = result.stdout.split()
    assert set(names.LMI_CLASSES) <= set(listed)
    assert sorted(listed) == sorted(c.classname for c in model.classes)


def readme_commands() -> list[str]:
    """The pywbemcli command lines of the README's code blocks."""
    blocks = re.findall(r"^```sh\n(.*?)^```", README.read_text(encoding="utf-8"), re.M | re.S)
    return [
        line for block in blocks for line in block.splitlines() if line.startswith("pywbemcli")
    ]


def test_readme_has_commands_and_all_use_the_mock_server() -> None:
    commands = readme_commands()
    assert len(commands) >= 8
    assert all(c.startswith(PREFIX) for c in commands)


@pytest.mark.parametrize(
    "command", [pytest.param(c, id=c.removeprefix(PREFIX)) for c in readme_commands()]
)
def test_readme_command_works(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # In-process through pywbemcli's click entry point: the same command line
    # as the README, without a second of interpreter start-up per command. In
    # this process the playground runs on the fake kernel (the real one would
    # move pytest itself into a new mount namespace), in its own directory.
    monkeypatch.setenv("LMI_MOUNT_PLAYGROUND_KERNEL", "fake")
    monkeypatch.setenv("LMI_MOUNT_PLAYGROUND", str(tmp_path))
    args = shlex.split(command.replace("$PLAYGROUND", str(tmp_path)))[1:]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert result.output.strip()
    assert not re.search(r"^Error:", result.output, re.MULTILINE)
