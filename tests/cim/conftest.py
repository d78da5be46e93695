"""Fixtures of the CIM tests: a live pywbem_mock connection per kernel (fake, and real
inside a private mount namespace), with a scratch fstab and state directory.

A CimWorld holds only paths until a test body asks for the connection, so that
for the real kernel everything that touches the machine is created inside the
namespace child (tests/support/namespace.py).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pywbem import CIMInstanceName, Uint16

from lmi_mount.cim.mock import mock_connection
from lmi_mount.cim.model import load_model
from lmi_mount.linux.fake import FakeKernel
from lmi_mount.linux.kernel import LinuxKernel
from lmi_mount.mounts.fstab import FstabDocument
from lmi_mount.mounts.mountinfo import MountRecord, MountTable, parse_mountinfo
from tests.support.skips import has_tool, requires_root

NS = "root/cimv2"
SERVICE = "LMI_MountConfigurationService"


class CimWorld:
    """Paths, a kernel and live connections for one test."""

    def __init__(self, kind: str, root: Path) -> None:
        self.kind = kind
        self.root = root
        self.fstab = root / "fstab"
        self.fstab.write_text("# scratch fstab\n")
        self.state = Path(tempfile.mkdtemp(prefix="lmi-cim-state-", dir="/dev/shm"))
        self.boot_id = root / "boot_id"
        self.boot_id.write_text("boot-1\n")
        self.kernel: Any = None
        self.connections: list[Any] = []
        self._busy: list[subprocess.Popen[bytes]] = []

    def connect(self, **config: Any) -> Any:
        if self.kernel is None:
            # "no-statmount" reads mounts back from mountinfo (Linux 5.12 to
            # 6.7); "legacy" mounts by mount(2) (before 5.12).
            self.kernel = FakeKernel() if self.kind == "fake" else LinuxKernel(
                mount_api="legacy" if self.kind == "legacy" else "new",
                use_statmount=self.kind == "real")
        options: dict[str, Any] = {
            "kernel": self.kernel,
            "boot_id_path": self.boot_id,
            "host": "host.example",
            "after_fstab_edit": lambda: None,
        }
        if self.kind == "fake":
            options["processes"] = self.kernel.processes
        fstab = config.pop("fstab_path", self.fstab)
        options.update(config)
        conn = mock_connection(fstab, self.state, **options)
        self.connections.append(conn)
        return conn

    def close(self) -> None:
        for conn in self.connections:
            conn.close()
        self.connections.clear()

    def dir(self, name: str) -> str:
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return str(path)

    def mounts_at(self, target: str) -> list[MountRecord]:
        return MountTable(parse_mountinfo(self.kernel.read_mountinfo())).mounts_at(target)

    def fstab_entry(self, target: str) -> Any:
        return FstabDocument.parse(self.fstab.read_text()).find_target(target)

    def make_busy(self, target: str) -> int:
        if self.kind == "fake":
            self.kernel.make_busy(target, 4242, "sleep")
            return 4242
        proc = subprocess.Popen(["sleep", "60"], cwd=target)
        self._busy.append(proc)
        return proc.pid

    def end_busy(self) -> None:
        if self.kind == "fake":
            self.kernel.release_busy(4242)
        for proc in self._busy:
            proc.kill()
            proc.wait()
        self._busy.clear()

    def image(self, name: str = "disk.img") -> str:
        """An ext4 image (the fake kernel checks the superblock magic too)."""
        path = self.root / name
        subprocess.run(["truncate", "-s", "16M", str(path)], check=True)
        subprocess.run([has_tool("mkfs.ext4") or "mkfs.ext4", "-q", "-F", str(path)], check=True)
        return str(path)


_REAL_MARKS = [pytest.mark.root, pytest.mark.private_namespace, requires_root]
KERNELS = [
    pytest.param("fake", id="fake"),
    pytest.param("real", id="real", marks=_REAL_MARKS),
]
#: KERNELS and the real kernel's paths for older kernels (see CimWorld.connect).
EVERY_KERNEL = [
    *KERNELS,
    pytest.param("no-statmount", id="no-statmount", marks=_REAL_MARKS),
    pytest.param("legacy", id="legacy", marks=_REAL_MARKS),
]


@pytest.fixture(scope="session", autouse=True)
def compiled_model() -> None:
    """Compile the model once in the parent: namespace children inherit it through
    fork instead of compiling it again each (load_model caches per process)."""
    load_model()


@pytest.fixture(params=KERNELS)
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CimWorld]:
    made = CimWorld(request.param, tmp_path)
    yield made
    made.close()
    shutil.rmtree(made.state, ignore_errors=True)


@pytest.fixture
def fake_world(tmp_path: Path) -> Iterator[CimWorld]:
    made = CimWorld("fake", tmp_path)
    yield made
    made.close()
    shutil.rmtree(made.state, ignore_errors=True)


def service_path(conn: Any) -> CIMInstanceName:
    [path] = conn.EnumerateInstanceNames(SERVICE, namespace=NS)
    return path


def call(conn: Any, method: str, **params: Any) -> tuple[Any, dict[str, Any]]:
    """InvokeMethod on the service; Mode given as int becomes a uint16."""
    if "Mode" in params and isinstance(params["Mode"], int):
        params["Mode"] = Uint16(params["Mode"])
    rv, out = conn.InvokeMethod(method, service_path(conn), **params)
    return int(rv), dict(out)


def create_tmpfs(
    conn: Any, target: str, *, mode: int = 32768, **params: Any
) -> tuple[Any, dict[str, Any]]:
    """CreateMount of a tmpfs on ``target`` (Mode 32768 unless given): the tests' usual mount."""
    return call(
        conn,
        "CreateMount",
        Mode=mode,
        MountPoint=target,
        FileSystemSpec="tmpfs",
        FileSystemType="tmpfs",
        **params,
    )


def finished_job(conn: Any, job: CIMInstanceName, timeout: float = 10.0) -> Any:
    """The LMI_MountJob instance once it has ended (Completed, Terminated or Exception)."""
    deadline = time.monotonic() + timeout
    while (instance := conn.GetInstance(job))["JobState"] not in (7, 8, 10):
        assert time.monotonic() < deadline, f"job {job} did not end within {timeout} s"
        time.sleep(0.01)
    return instance
