"""Helpers of the kernel contract suite: images, mount table lookups, busy processes.

Everything here goes through the public Kernel API (and FakeKernel's test
hooks where the fake cannot see a real process), so one test body checks both
kernels.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lmi_mount.linux.fake import FakeKernel
from lmi_mount.linux.kernel import Kernel, LinuxKernel
from lmi_mount.mounts.mountinfo import MountRecord, MountTable, parse_mountinfo
from tests.support.skips import has_tool

# How long the kernel may take to free an autoclear loop device after the
# last user of its file system went away (the namespace's teardown runs
# after the child has exited).
LOOP_RELEASE_TIMEOUT = 5.0


def make_dirs(base: Path, *names: str) -> list[str]:
    paths = []
    for name in names:
        (base / name).mkdir(parents=True, exist_ok=True)
        paths.append(str(base / name))
    return paths


def mkfs_image(base: Path, fstype: str, size_mib: int = 16, files: dict[str, str] | None = None
               ) -> str:
    """Make a file system image of ``fstype`` holding ``files`` (name -> text)."""
    content = base / f"content-{fstype}"
    content.mkdir(exist_ok=True)
    for name, text in (files or {}).items():
        (content / name).write_text(text)
    image = base / f"{fstype}.img"
    if fstype == "squashfs":
        command = ["mksquashfs", str(content), str(image), "-quiet", "-noappend", "-no-progress"]
    else:
        with open(image, "wb") as stream:
            stream.truncate(size_mib << 20)
        command = {
            "ext4": ["mkfs.ext4", "-q", "-F", "-d", str(content), str(image)],
            "xfs": ["mkfs.xfs", "-q", "-f", str(image)],
            "btrfs": ["mkfs.btrfs", "-q", "-f", "--rootdir", str(content), str(image)],
        }[fstype]
    tool = has_tool(command[0])
    assert tool is not None, f"{command[0]} is missing (the test should have been skipped)"
    subprocess.run([tool, *command[1:]], check=True, stdout=subprocess.DEVNULL)
    return str(image)


def table(kernel: Kernel) -> MountTable:
    return MountTable(parse_mountinfo(kernel.read_mountinfo()))


def at(kernel: Kernel, target: str) -> MountRecord:
    record = table(kernel).at(target)
    assert record is not None, f"nothing mounted at {target}:\n{kernel.read_mountinfo()}"
    return record


def is_mounted(kernel: Kernel, target: str) -> bool:
    return table(kernel).at(target) is not None


def loops_under(kernel: Kernel, directory: Path | str) -> dict[str, str]:
    prefix = str(directory).rstrip("/") + "/"
    return {dev: f for dev, f in kernel.loop_devices().items() if f.startswith(prefix)}


def wait_for_loops_released(kernel: Kernel, directory: Path | str) -> dict[str, str]:
    """Loop devices still backed by files under ``directory`` after a grace period."""
    deadline = time.monotonic() + LOOP_RELEASE_TIMEOUT
    while (left := loops_under(kernel, directory)) and time.monotonic() < deadline:
        time.sleep(0.02)
    return left


@contextmanager
def loop_device(image: str) -> Iterator[str]:
    """A loop device set up over ``image`` (losetup(8)), detached afterwards."""
    device = subprocess.run(["losetup", "--find", "--show", image], check=True,
                            capture_output=True, text=True).stdout.strip()
    try:
        yield device
    finally:
        subprocess.run(["losetup", "-d", device], check=False)


def sees_files(kernel: Kernel) -> bool:
    """Whether mounts change what directories show: true of the kernel only."""
    return isinstance(kernel, LinuxKernel)


@contextmanager
def busy(kernel: Kernel, path: str) -> Iterator[subprocess.Popen[bytes]]:
    """A ``sleep`` whose working directory is ``path``, keeping its mount busy.

    The fake learns of it through make_busy; the kernel sees it by itself.
    """
    fake = isinstance(kernel, FakeKernel)
    # The fake's mounts are not on the disk: its sleep need not stand in them.
    process = subprocess.Popen(["sleep", "60"], cwd=None if fake else path)
    if fake:
        kernel.make_busy(path, process.pid, "sleep")
    try:
        yield process
    finally:
        process.kill()
        process.wait()
        if fake:
            kernel.release_busy(process.pid)


def options(text: tuple[str, ...]) -> dict[str, str | None]:
    """Options as a mapping (``size=1024k`` -> size: 1024k, ``ro`` -> ro: None)."""
    pairs = (option.partition("=") for option in text)
    return {key: (value if sep else None) for key, sep, value in pairs}

