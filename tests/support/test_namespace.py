"""Tests of the private-namespace runner itself (tests/support/namespace.py)."""

from __future__ import annotations

import errno
import os
import pathlib
import signal
import subprocess

import pytest

from lmi_mount.mounts.flags import MS_BIND
from tests.support import namespace as namespace_module
from tests.support.namespace import (
    NamespaceChildError,
    private_namespace,
    run_in_private_namespace,
)
from tests.support.skips import requires_root

pytestmark = [pytest.mark.root, requires_root]


def _mount_namespace() -> str:
    return os.readlink("/proc/self/ns/mnt")


def _is_zombie(pid: int) -> bool:
    with open(f"/proc/{pid}/stat", encoding="ascii") as stream:
        return stream.read().rsplit(")", 1)[1].split()[0] == "Z"


def _host_sees(path: str) -> bool:
    with open("/proc/self/mountinfo", encoding="utf-8") as stream:
        return any(line.split()[4] == path for line in stream)


def test_result_comes_back_from_another_namespace() -> None:
    assert run_in_private_namespace(_mount_namespace) != _mount_namespace()


def test_mounts_made_in_the_child_never_reach_the_host(tmp_path: pathlib.Path) -> None:
    target = os.fspath(tmp_path)

    def bind_and_look() -> bool:
        from lmi_mount.linux.namespace import libc

        assert libc().mount(os.fsencode(target), os.fsencode(target), None, MS_BIND, None) == 0
        return _host_sees(target)

    assert run_in_private_namespace(bind_and_look) is True
    assert not _host_sees(target)


def test_assertion_error_keeps_its_type_message_and_child_traceback() -> None:
    def fails() -> None:
        value = 41
        assert value == 42, "the child saw 41"

    with pytest.raises(AssertionError, match="the child saw 41") as info:
        run_in_private_namespace(fails)
    notes = "".join(getattr(info.value, "__notes__", []))
    assert "private-namespace child" in notes and "in fails" in notes


class _Unpicklable(Exception):
    def __init__(self, a: int, b: int) -> None:
        super().__init__(f"{a}/{b}")


@pytest.mark.parametrize(
    ("raised", "expected_type", "text"),
    [
        pytest.param(KeyError("k"), KeyError, "'k'", id="builtin"),
        pytest.param(
            _Unpicklable(1, 2), NamespaceChildError, "_Unpicklable: 1/2", id="unpicklable"
        ),
    ],
)
def test_exceptions_cross_back(raised: Exception, expected_type: type, text: str) -> None:
    def fails() -> None:
        raise raised

    with pytest.raises(expected_type) as info:
        run_in_private_namespace(fails)
    assert text in str(info.value)


def test_a_child_that_dies_is_reported() -> None:
    with pytest.raises(NamespaceChildError, match="killed by SIGKILL"):
        run_in_private_namespace(lambda: os.kill(os.getpid(), 9))


def test_timeout_kills_the_child_and_its_namespace(tmp_path: pathlib.Path) -> None:
    pid_file = tmp_path / "pid"

    def hang() -> None:
        sleeper = subprocess.Popen(["sleep", "30"])  # left in the namespace on purpose
        pid_file.write_text(str(sleeper.pid))
        signal.pause()

    with pytest.raises(TimeoutError, match="hang"):
        run_in_private_namespace(hang, timeout=0.5)
    sleeper = int(pid_file.read_text())
    assert not os.path.exists(f"/proc/{sleeper}") or _is_zombie(sleeper)


def test_leftover_processes_are_ended_with_the_namespace() -> None:
    def leave_a_daemon() -> int:
        # Double fork through the shell: the sleep is orphaned like a daemon.
        out = subprocess.run(
            ["sh", "-c", "sleep 30 >/dev/null 2>&1 & echo $!"],
            check=True, capture_output=True, text=True,
        )
        return int(out.stdout)

    orphan = run_in_private_namespace(leave_a_daemon)
    assert not os.path.exists(f"/proc/{orphan}")


def test_a_child_that_could_not_enter_ends_no_host_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse() -> None:
        raise OSError(errno.EPERM, "no namespace for you")

    monkeypatch.setattr(namespace_module, "enter_private_mount_namespace", refuse)
    bystander = subprocess.Popen(["sleep", "30"])  # in the host namespace, like the child
    try:
        with pytest.raises(PermissionError, match="no namespace for you"):
            run_in_private_namespace(lambda: None)
        assert bystander.poll() is None, "a process of the host namespace was killed"
    finally:
        bystander.kill()
        bystander.wait()


@private_namespace
def test_decorated_body_runs_inside(tmp_path: pathlib.Path) -> None:
    assert os.readlink(f"/proc/{os.getppid()}/ns/mnt") != _mount_namespace()
    assert os.path.isdir(tmp_path)
