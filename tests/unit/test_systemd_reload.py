"""``systemctl daemon-reload`` after an fstab edit, only when systemd runs the machine."""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from lmi_mount.linux.files import ReloadResult, SystemdReloader, reload_systemd, systemd_booted


class FakeRunner:
    """Records the commands; answers with a fixed result or raises."""

    def __init__(self, returncode: int = 0, stderr: str = "", error: Exception | None = None):
        self.calls: list[list[str]] = []
        self.returncode, self.stderr, self.error = returncode, stderr, error

    def __call__(
        self,
        args: Sequence[str],
        *,
        capture_output: bool,
        text: bool,
        timeout: float,
        check: bool,
    ) -> subprocess.CompletedProcess[str]:
        assert (capture_output, text, check) == (True, True, False)
        assert timeout > 0
        self.calls.append(list(args))
        if self.error is not None:
            raise self.error
        return subprocess.CompletedProcess(list(args), self.returncode, "", self.stderr)


@pytest.fixture
def booted(tmp_path: Path) -> str:
    run_dir = tmp_path / "run" / "systemd" / "system"
    run_dir.mkdir(parents=True)
    return str(run_dir)


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        pytest.param(lambda p: p.mkdir(), True, id="directory"),
        pytest.param(lambda p: None, False, id="missing"),
        pytest.param(lambda p: p.write_text(""), False, id="regular-file"),
        pytest.param(
            lambda p: (p.with_name("real").mkdir(), p.symlink_to(p.with_name("real"))),
            False,
            id="symlink-to-directory-as-sd_booted-lstat",
        ),
    ],
)
def test_systemd_booted(tmp_path: Path, make: Callable[[Path], object], expected: bool) -> None:
    run_dir = tmp_path / "system"
    make(run_dir)
    assert systemd_booted(str(run_dir)) is expected


def test_no_reload_without_systemd(tmp_path: Path) -> None:
    runner = FakeRunner()
    result = reload_systemd(str(tmp_path / "absent"), runner=runner)
    assert result == ReloadResult(
        attempted=False, ok=True, detail=f"{tmp_path / 'absent'} is not a directory"
    )
    assert runner.calls == []


def test_reload_runs_systemctl(booted: str) -> None:
    runner = FakeRunner()
    result = reload_systemd(booted, systemctl="/usr/bin/systemctl", runner=runner)
    assert result == ReloadResult(attempted=True, ok=True, returncode=0)
    assert runner.calls == [["/usr/bin/systemctl", "daemon-reload"]]


@pytest.mark.parametrize(
    ("runner", "detail", "returncode"),
    [
        pytest.param(
            FakeRunner(returncode=1, stderr="Failed to reload daemon: Access denied\n"),
            "'systemctl daemon-reload' exited with 1: Failed to reload daemon: Access denied",
            1,
            id="exit-status",
        ),
        pytest.param(
            FakeRunner(error=FileNotFoundError(2, "No such file or directory", "systemctl")),
            "cannot run 'systemctl daemon-reload': [Errno 2] No such file or directory",
            None,
            id="no-systemctl",
        ),
        pytest.param(
            FakeRunner(error=subprocess.TimeoutExpired(["systemctl"], 60)),
            "cannot run 'systemctl daemon-reload': Command '['systemctl']' timed out",
            None,
            id="timeout",
        ),
    ],
)
def test_reload_failure_is_reported_not_raised(
    booted: str,
    runner: FakeRunner,
    detail: str,
    returncode: int | None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="lmi_mount.linux.files"):
        result = reload_systemd(booted, runner=runner)
    assert (result.attempted, result.ok, result.returncode) == (True, False, returncode)
    assert result.detail.startswith(detail)
    assert [record.getMessage() for record in caplog.records] == [result.detail]


def test_reloader_runs_a_real_program(booted: str, tmp_path: Path) -> None:
    marker = tmp_path / "called"
    systemctl = tmp_path / "systemctl"
    systemctl.write_text(f'#!/bin/sh\necho "$@" > {marker}\n')
    systemctl.chmod(0o755)
    reloader = SystemdReloader(run_dir=booted, systemctl=str(systemctl))
    assert reloader() == ReloadResult(attempted=True, ok=True, returncode=0)
    assert marker.read_text() == "daemon-reload\n"


def test_reloader_reports_a_failing_real_program(booted: str, tmp_path: Path) -> None:
    systemctl = tmp_path / "systemctl"
    systemctl.write_text("#!/bin/sh\necho 'Transport endpoint is not connected' >&2\nexit 3\n")
    systemctl.chmod(0o755)
    result = SystemdReloader(run_dir=booted, systemctl=str(systemctl))()
    assert (result.ok, result.returncode) == (False, 3)
    assert result.detail.endswith("exited with 3: Transport endpoint is not connected")
