"""Fixtures of the engine tests: one ``world`` per kernel (fake, and real in a namespace).

A World holds only paths until a test body asks for a kernel or a manager, so
that for the real kernel everything that touches the machine is created inside
the private-namespace child (see tests/support/namespace.py).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lmi_mount.engine import MountManager
from lmi_mount.linux.fake import FakeKernel
from lmi_mount.linux.kernel import Kernel, LinuxKernel, MountApi
from lmi_mount.mounts.mountinfo import MountRecord, MountTable, parse_mountinfo
from tests.support.skips import requires_root

_TMPFS = "/dev/shm" if Path("/dev/shm").is_dir() else None


class FakeClock:
    """A monotonic clock that moves only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class World:
    """Paths, a kernel and managers for one test, fake or real."""

    def __init__(self, kind: str, root: Path, mount_api: MountApi | None = None) -> None:
        self.kind = kind
        self.mount_api = mount_api
        self.root = root
        self.fstab = root / "fstab"
        self.fstab.write_text("# test fstab\n")
        # The journal's home in production is /run, a tmpfs: tests keep it on
        # tmpfs too, so that 8000 fsync'd records take milliseconds, not seconds.
        self.state = Path(tempfile.mkdtemp(prefix="lmi-test-state-", dir=_TMPFS))
        self.boot_id = root / "boot_id"
        self.boot_id.write_text("boot-1\n")
        self.clock = FakeClock()
        self._kernel: Kernel | None = None
        self._busy: list[subprocess.Popen[bytes]] = []

    @property
    def kernel(self) -> Kernel:
        if self._kernel is None:
            self._kernel = (FakeKernel() if self.kind == "fake"
                            else LinuxKernel(mount_api=self.mount_api))
        return self._kernel

    def manager(self, **overrides: Any) -> MountManager:
        options: dict[str, Any] = {
            "fstab_path": self.fstab,
            "state_dir": self.state,
            "boot_id_path": self.boot_id,
            "clock": self.clock,
            "timers": False,
            "after_fstab_edit": lambda: None,
            # Small: the state lives in /dev/shm, and many worlds are made. Eight
            # requests at once reserve room for their undo, each raw fstab line
            # included (test_parallel_writers): 64 KiB is too little for them.
            "journal_capacity": 128 << 10,
        }
        if self.kind == "fake":
            options["processes"] = self.kernel.processes  # type: ignore[attr-defined]
        options.update(overrides)
        return MountManager(self.kernel, **options).start()

    def dir(self, name: str) -> str:
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return str(path)

    def table(self) -> MountTable:
        return MountTable(parse_mountinfo(self.kernel.read_mountinfo()))

    def mounts_at(self, target: str) -> list[MountRecord]:
        return self.table().mounts_at(target)

    def make_busy(self, target: str) -> int:
        """Keep ``target`` busy with a process whose cwd is inside it; returns its pid."""
        if self.kind == "fake":
            self.kernel.make_busy(target, 4242, "sleep")  # type: ignore[attr-defined]
            return 4242
        proc = subprocess.Popen(["sleep", "60"], cwd=target)
        self._busy.append(proc)
        return proc.pid

    def end_busy(self) -> None:
        if self.kind == "fake":
            self.kernel.release_busy(4242)  # type: ignore[attr-defined]
        for proc in self._busy:
            proc.kill()
            proc.wait()
        self._busy.clear()


KERNELS = [
    pytest.param("fake", id="fake"),
    pytest.param(
        "real",
        id="real",
        marks=[pytest.mark.root, pytest.mark.private_namespace, requires_root],
    ),
]


@pytest.fixture(params=KERNELS)
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    made = World(request.param, tmp_path)
    yield made
    shutil.rmtree(made.state, ignore_errors=True)


# -- kill -9 at a step ------------------------------------------------------------------


def crash_points(world: World, action: Callable[[MountManager], object]) -> list[str]:
    """The crash-point names ``action`` passes, recorded in a dry pass."""
    seen: list[str] = []
    with world.manager(crash=seen.append) as manager:
        action(manager)
    return seen


def die_at(world: World, point: str, action: Callable[[MountManager], object]) -> None:
    """Run ``action`` in a forked engine process that is killed -9 at ``point``.

    The child shares this process's mount namespace, so its mounts outlive it
    the way a daemon's do.
    """
    pid = os.fork()
    if pid == 0:
        try:

            def crash(name: str) -> None:
                if name == point:
                    os.kill(os.getpid(), signal.SIGKILL)

            action(world.manager(crash=crash))
        finally:
            os._exit(3)  # not killed: the point was never reached
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (
        f"the engine was not killed at {point!r}"
    )


def fresh_dir(path: Path) -> Path:
    """``path`` as a new empty directory."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path
