"""FakeKernel's own hooks and the corners the shared contract does not reach."""

from __future__ import annotations

import errno
import threading
from pathlib import Path

import pytest

from lmi_mount.linux.fake import FakeKernel, mangle
from lmi_mount.linux.kernel import KernelError
from lmi_mount.mounts.flags import MNT_DETACH, MS_BIND, MS_MOVE, MS_PRIVATE, MS_SHARED
from lmi_mount.mounts.mountinfo import MountTable, parse_mountinfo
from tests.contract.helpers import make_dirs, mkfs_image
from tests.support.skips import requires_tool


def _ids(kernel: FakeKernel) -> list[int]:
    return [record.mount_id for record in parse_mountinfo(kernel.read_mountinfo())]


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        pytest.param("a b\tc\nd\\e", "a\\040b\\011c\\012d\\134e", id="kernel-escapes"),
        pytest.param("#x", "#x", id="hash-kept"),
        pytest.param("\\043", "\\134043", id="literal-escape-text"),
    ],
)
def test_mangle(value: str, shown: str) -> None:
    assert mangle(value) == shown


def test_fail_next_fails_once_and_changes_nothing(tmp_path: Path) -> None:
    kernel = FakeKernel()
    (target,) = make_dirs(tmp_path, "t")
    before = kernel.read_mountinfo()
    kernel.fail_next("mount", errno.ENOSPC)
    with pytest.raises(KernelError) as raised:
        kernel.mount("tmpfs", target, "tmpfs", 0)
    assert (raised.value.errno, raised.value.op) == (errno.ENOSPC, "mount")
    assert "(injected)" in str(raised.value)
    assert kernel.read_mountinfo() == before
    kernel.mount("tmpfs", target, "tmpfs", 0)

    kernel.fail_next("umount", errno.EBUSY)
    kernel.fail_next("umount", errno.EIO)
    for code in (errno.EBUSY, errno.EIO):
        with pytest.raises(KernelError) as raised:
            kernel.unmount(target)
        assert raised.value.errno == code
    kernel.unmount(target)
    assert kernel.read_mountinfo() == before


@requires_tool("mkfs.ext4")
def test_fail_next_loop_and_helper(tmp_path: Path) -> None:
    kernel = FakeKernel()
    image = mkfs_image(tmp_path, "ext4")
    (target,) = make_dirs(tmp_path, "t")
    kernel.fail_next("loop", errno.EBUSY)
    with pytest.raises(KernelError) as raised:
        kernel.mount(image, target, "ext4", 0)
    assert (raised.value.op, raised.value.errno) == ("loop", errno.EBUSY)
    assert kernel.loop_devices() == {}
    kernel.fail_next("helper", errno.ETIMEDOUT)
    with pytest.raises(KernelError) as raised:
        kernel.mount(image, target, "fuse.squashfuse", 0)
    assert (raised.value.op, raised.value.errno) == ("helper", errno.ETIMEDOUT)
    with pytest.raises(ValueError, match="unknown operation 'mkdir'"):
        kernel.fail_next("mkdir", errno.EIO)  # type: ignore[arg-type]


@requires_tool("mkfs.ext4")
def test_lazy_detach_keeps_a_busy_file_system_and_its_loop_until_released(
    tmp_path: Path,
) -> None:
    kernel = FakeKernel()
    image = mkfs_image(tmp_path, "ext4")
    (target,) = make_dirs(tmp_path, "t")
    kernel.mount(image, target, "ext4", 0)
    kernel.make_busy(target, 4242, "editor")
    kernel.unmount(target, MNT_DETACH)
    assert kernel.processes(target) == []  # no longer reachable by path
    assert list(kernel.loop_devices().values()) == [image]  # but still in use
    kernel.release_busy(4242)
    assert kernel.loop_devices() == {}


def test_ids_and_anonymous_devices_are_the_lowest_free(tmp_path: Path) -> None:
    kernel = FakeKernel()
    a, b, c = make_dirs(tmp_path, "a", "b", "c")
    for path in (a, b, c):
        kernel.mount("tmpfs", path, "tmpfs", 0)
    assert _ids(kernel) == [1, 2, 3, 4]
    minor_b = MountTable(parse_mountinfo(kernel.read_mountinfo())).at(b)
    kernel.unmount(b)
    kernel.mount("tmpfs", b, "tmpfs", 0)
    record = MountTable(parse_mountinfo(kernel.read_mountinfo())).at(b)
    assert record is not None and minor_b is not None
    assert (record.mount_id, record.minor) == (3, minor_b.minor)


@pytest.mark.parametrize(
    ("data", "detail"),
    [
        pytest.param("colour=blue", "tmpfs: Unknown parameter 'colour'", id="unknown"),
        pytest.param("size=lots", "tmpfs: Bad value for 'size'", id="bad-size"),
        pytest.param("mode=999", "tmpfs: Bad value for 'mode'", id="bad-mode"),
    ],
)
def test_tmpfs_rejects_what_the_kernel_rejects(tmp_path: Path, data: str, detail: str) -> None:
    (target,) = make_dirs(tmp_path, "t")
    with pytest.raises(KernelError) as raised:
        FakeKernel().mount("tmpfs", target, "tmpfs", 0, data)
    assert (raised.value.errno, raised.value.detail) == (errno.EINVAL, detail)


def test_outside_the_model(tmp_path: Path) -> None:
    kernel = FakeKernel()
    a, b = make_dirs(tmp_path, "a", "b")
    kernel.mount("tmpfs", a, "tmpfs", 0)
    kernel.mount(None, a, None, MS_PRIVATE)  # already private: accepted
    for flags in (MS_SHARED, MS_MOVE):
        with pytest.raises(KernelError) as raised:
            kernel.mount(a, b, None, flags)
        assert raised.value.errno == errno.EINVAL
    with pytest.raises(KernelError) as raised:
        kernel.unmount("/")
    assert raised.value.errno == errno.EBUSY


def test_helpers_that_are_not_installed(tmp_path: Path) -> None:
    (target,) = make_dirs(tmp_path, "t")
    kernel = FakeKernel()
    with pytest.raises(KernelError) as raised:
        kernel.mount("h:/x", target, "nfs", 0)
    assert (raised.value.op, raised.value.errno) == ("helper", errno.ENODEV)
    with pytest.raises(KernelError) as raised:
        kernel.mount(target, target, "fuse.nosuchprogram", 0)
    assert (raised.value.op, raised.value.errno) == ("helper", errno.ENOENT)


def test_threads_mounting_at_once_keep_ids_unique(tmp_path: Path) -> None:
    kernel = FakeKernel()
    targets = make_dirs(tmp_path, *(f"d{i}" for i in range(8)))

    def churn(target: str) -> None:
        for _ in range(50):
            kernel.mount(target, target, None, MS_BIND)
            kernel.unmount(target)
        kernel.mount("tmpfs", target, "tmpfs", 0)

    threads = [threading.Thread(target=churn, args=(t,)) for t in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ids = _ids(kernel)
    assert sorted(ids) == list(range(1, 10))
