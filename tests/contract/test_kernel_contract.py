"""The kernel contract: what the engine may rely on, held for FakeKernel and LinuxKernel.

Every test takes the ``kernel`` fixture and runs twice: ``[fake]`` in this
process, ``[real]`` as root inside a private mount namespace (see conftest).
Results are read back the way the engine reads them: parse_mountinfo of
read_mountinfo(), MountTable lookups, loop_devices(), processes().
"""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest

from lmi_mount.linux.kernel import Kernel, KernelError, LinuxKernel
from lmi_mount.linux.paths import open_anchor
from lmi_mount.linux.processes import describe
from lmi_mount.mounts.flags import (
    MNT_DETACH,
    MS_BIND,
    MS_DIRSYNC,
    MS_NOATIME,
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    MS_RDONLY,
    MS_REC,
    MS_REMOUNT,
    MS_SHARED,
    MS_SLAVE,
    MS_STRICTATIME,
    MS_SYNCHRONOUS,
    MS_UNBINDABLE,
)
from tests.contract.conftest import REAL_MARKS
from tests.contract.helpers import (
    at,
    busy,
    is_mounted,
    loops_under,
    make_dirs,
    mkfs_image,
    options,
    sees_files,
    table,
    wait_for_loops_released,
)
from tests.support.skips import requires_fs, requires_tool


def test_bind_shows_the_source_directory_and_shares_the_device(
    kernel: Kernel, base: Path
) -> None:
    source, target = make_dirs(base, "source/inner", "target")
    (base / "source/inner/file").write_text("bound")
    kernel.mount(source, target, None, MS_BIND)

    mounts = table(kernel)
    record = at(kernel, target)
    assert record.root.endswith("/source/inner")
    assert mounts.user_source(record, kernel.loop_backing_file) == source
    assert record.propagation == "private"
    # The same file system as the mount that holds the source directory.
    holding = max((m for m in mounts.visible() if source.startswith(m.target.rstrip("/") + "/")),
                  key=lambda m: len(m.target))
    assert holding.device == record.device
    if sees_files(kernel):
        assert (Path(target) / "file").read_text() == "bound"

    kernel.unmount(target)
    assert not is_mounted(kernel, target)


def test_bind_applies_the_asked_flags_over_the_source_mount_flags(
    kernel: Kernel, base: Path
) -> None:
    # mount(2) alone ignores every flag but MS_REC on a new bind (the first
    # build's bug: a "read-only, no-exec" bind came up rw). The contract is
    # mount(8)'s with the new API: the copy keeps its origin's flags, with the
    # asked ones set and the ``clear`` ones cleared, before anyone sees it.
    origin, plain, opened = make_dirs(base, "origin", "plain", "opened")
    kernel.mount("tmpfs", origin, "tmpfs", MS_NOSUID | MS_NODEV)
    record = kernel.mount(origin, plain, None, MS_BIND | MS_RDONLY | MS_NOEXEC)
    assert record == at(kernel, plain)
    assert record.vfs_options == ("ro", "nosuid", "nodev", "noexec", "relatime")
    record = kernel.mount(origin, opened, None, MS_BIND | MS_NOATIME, clear=MS_NOSUID)
    assert record.vfs_options == ("rw", "nodev", "noatime")
    if sees_files(kernel):
        # The probes a user would try: write, and execute, through each bind.
        with pytest.raises(OSError) as raised:
            (Path(plain) / "file").write_text("x")
        assert raised.value.errno == errno.EROFS
        script = Path(origin) / "script"
        script.write_text("#!/bin/sh\nexit 0\n")
        script.chmod(0o755)
        assert subprocess.run([f"{opened}/script"], check=False).returncode == 0
        with pytest.raises(PermissionError):
            subprocess.run([f"{plain}/script"], check=False)


def test_mount_lands_on_the_anchor_not_on_what_the_path_became(
    kernel: Kernel, base: Path
) -> None:
    # The target is opened once; renaming it and putting a symlink in its
    # place afterwards does not redirect the mount (the check-then-use race).
    wanted, elsewhere = make_dirs(base, "wanted", "elsewhere")
    with open_anchor(wanted, "mount point") as anchor:
        os.rename(wanted, f"{wanted}.moved")
        os.symlink(elsewhere, wanted)
        record = kernel.mount("tmpfs", anchor, "tmpfs", 0, "size=1m")
    assert record.target == f"{wanted}.moved"
    assert not is_mounted(kernel, elsewhere)
    kernel.unmount(f"{wanted}.moved")


def test_unmount_does_not_follow_a_final_symlink(kernel: Kernel, base: Path) -> None:
    (real,) = make_dirs(base, "real")
    kernel.mount("tmpfs", real, "tmpfs", 0)
    os.symlink(real, base / "link")
    if isinstance(kernel, LinuxKernel):  # the fake models no symlinks of its own
        with pytest.raises(KernelError) as raised:
            kernel.unmount(str(base / "link"))
        assert raised.value.errno == errno.EINVAL
    assert is_mounted(kernel, real)
    kernel.unmount(real)


def test_bind_of_a_file_on_a_file(kernel: Kernel, base: Path) -> None:
    (base / "from").write_text("x")
    (base / "onto").write_text("")
    kernel.mount(str(base / "from"), str(base / "onto"), None, MS_BIND)
    record = at(kernel, str(base / "onto"))
    assert table(kernel).user_source(record, kernel.loop_backing_file) == str(base / "from")
    kernel.unmount(str(base / "onto"))


def test_recursive_bind_brings_submounts_along(kernel: Kernel, base: Path) -> None:
    top, plain, deep = make_dirs(base, "top", "plain", "deep")
    kernel.mount("tmpfs", top, "tmpfs", 0)
    (base / "top/sub").mkdir()
    kernel.mount("tmpfs", f"{top}/sub", "tmpfs", 0, "size=1m")
    kernel.mount(top, plain, None, MS_BIND)
    kernel.mount(top, deep, None, MS_BIND | MS_REC)

    mounts = table(kernel)
    assert mounts.at(f"{plain}/sub") is None
    copy, sub_copy = at(kernel, deep), at(kernel, f"{deep}/sub")
    assert sub_copy.parent_id == copy.mount_id
    assert sub_copy.device == at(kernel, f"{top}/sub").device
    assert copy.device == at(kernel, top).device

    # A mount with submounts is busy until they are gone (umount2(2)).
    with pytest.raises(KernelError) as raised:
        kernel.unmount(deep)
    assert raised.value.errno == errno.EBUSY
    kernel.unmount(f"{deep}/sub")
    kernel.unmount(deep)


@pytest.mark.parametrize("where", ["top", "sub"])
def test_recursive_unmount_of_a_busy_tree_takes_nothing_away(
    kernel: Kernel, base: Path, where: str
) -> None:
    # umount -R unmounts the submounts first and then finds the top busy: the
    # caller got an error and had lost the submounts. Nothing may change.
    tree, copy = make_dirs(base, "tree", "copy")
    kernel.mount("tmpfs", tree, "tmpfs", 0)
    for name in ("sub", "work"):
        (Path(tree) / name).mkdir()
    kernel.mount("tmpfs", f"{tree}/sub", "tmpfs", 0, "size=1m")
    (Path(tree) / "sub/deeper").mkdir(exist_ok=True)  # the fake shows the host's files
    kernel.mount("tmpfs", f"{tree}/sub/deeper", "tmpfs", 0, "size=1m")
    kernel.mount(tree, copy, None, MS_BIND | MS_REC)
    before = [(r.target, r.mount_id) for r in table(kernel).records if r.target.startswith(copy)]
    assert len(before) == 3

    with busy(kernel, copy + ("/work" if where == "top" else "/sub")):
        with pytest.raises(KernelError) as raised:
            kernel.unmount(copy, expect=at(kernel, copy).mount_id, recursive=True)
        assert raised.value.errno == errno.EBUSY
        after = [(r.target, r.mount_id) for r in table(kernel).records
                 if r.target.startswith(copy)]
        assert after == before

    kernel.unmount(copy, expect=at(kernel, copy).mount_id, recursive=True)
    assert not [r for r in table(kernel).records if r.target.startswith(copy)]
    assert is_mounted(kernel, f"{tree}/sub/deeper")


def test_tmpfs_size_and_mode_as_the_kernel_shows_them(kernel: Kernel, base: Path) -> None:
    (target,) = make_dirs(base, "tmp")
    kernel.mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0750")
    record = at(kernel, target)
    assert record.fstype == "tmpfs" and record.source == "tmpfs"
    assert record.vfs_options == ("rw", "nosuid", "nodev", "relatime")
    assert record.super_options == ("rw", "size=1024k", "mode=750")
    assert record.major == 0  # an anonymous device: a new superblock


def test_every_new_superblock_gets_its_own_device(kernel: Kernel, base: Path) -> None:
    first, second = make_dirs(base, "first", "second")
    kernel.mount("tmpfs", first, "tmpfs", 0)
    kernel.mount("tmpfs", second, "tmpfs", 0)
    assert at(kernel, first).device != at(kernel, second).device


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        pytest.param(0, ("rw", "relatime"), id="default-relatime"),
        pytest.param(MS_NOATIME, ("rw", "noatime"), id="noatime"),
        pytest.param(MS_STRICTATIME, ("rw",), id="strictatime"),
        pytest.param(MS_RDONLY | MS_NOEXEC, ("ro", "noexec", "relatime"), id="ro-noexec"),
    ],
)
def test_per_mount_options_of_a_new_mount(
    kernel: Kernel, base: Path, flags: int, expected: tuple[str, ...]
) -> None:
    (target,) = make_dirs(base, "m")
    kernel.mount("tmpfs", target, "tmpfs", flags)
    assert at(kernel, target).vfs_options == expected


def test_remount_of_one_mount_leaves_the_superblock_and_other_mounts(
    kernel: Kernel, base: Path
) -> None:
    origin, view = make_dirs(base, "origin", "view")
    kernel.mount("tmpfs", origin, "tmpfs", 0)
    kernel.mount(origin, view, None, MS_BIND)

    kernel.mount(None, view, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID)
    view_record, origin_record = at(kernel, view), at(kernel, origin)
    assert view_record.vfs_options[:2] == ("ro", "nosuid")
    assert "relatime" in view_record.vfs_options  # atime kept when not asked
    assert view_record.super_options[0] == "rw"
    assert origin_record.vfs_options == ("rw", "relatime")
    if sees_files(kernel):
        with pytest.raises(OSError) as denied:
            (Path(view) / "f").write_text("x")
        assert denied.value.errno == errno.EROFS

    kernel.mount(None, view, None, MS_REMOUNT | MS_BIND)
    assert at(kernel, view).vfs_options == ("rw", "relatime")


def test_remount_of_the_superblock_changes_what_every_mount_shows(
    kernel: Kernel, base: Path
) -> None:
    origin, view = make_dirs(base, "origin", "view")
    kernel.mount("tmpfs", origin, "tmpfs", 0, "size=1m,mode=0700")
    kernel.mount(origin, view, None, MS_BIND)

    kernel.mount(None, origin, None, MS_REMOUNT, "size=2m")
    for target in (origin, view):
        assert options(at(kernel, target).super_options) == {
            "rw": None, "size": "2048k", "mode": "700",  # unnamed options kept
        }
    kernel.mount(None, origin, None, MS_REMOUNT | MS_RDONLY)
    assert at(kernel, origin).vfs_options[0] == "ro"
    assert at(kernel, origin).super_options[0] == "ro"
    assert at(kernel, view).vfs_options[0] == "rw"  # its own flag, readonly sb below
    assert at(kernel, view).super_options[0] == "ro"


def test_remount_of_a_dirsync_superblock_changes_the_other_flags_and_keeps_dirsync(
    kernel: Kernel, base: Path
) -> None:
    # dirsync is outside the kernel's MS_RMT_MASK: mount(2) ignores it on a
    # remount, and fsconfig(2) refuses a reconfiguration that names it.
    [origin] = make_dirs(base, "origin")
    kernel.mount("tmpfs", origin, "tmpfs", MS_DIRSYNC)
    assert "dirsync" in at(kernel, origin).super_options

    kernel.mount(None, origin, None, MS_REMOUNT | MS_DIRSYNC | MS_RDONLY | MS_SYNCHRONOUS)
    record = at(kernel, origin)
    assert record.super_options[0] == "ro"
    assert {"sync", "dirsync"} <= set(record.super_options)

    kernel.mount(None, origin, None, MS_REMOUNT)
    record = at(kernel, origin)
    assert record.super_options[0] == "rw"
    assert "sync" not in record.super_options
    assert "dirsync" in record.super_options  # a remount cannot take it away


@pytest.mark.parametrize(
    ("fstype", "size_mib"),
    [
        pytest.param("ext4", 16, marks=[requires_tool("mkfs.ext4"), requires_fs("ext4")],
                     id="ext4"),
        pytest.param("xfs", 300, marks=[requires_tool("mkfs.xfs"), requires_fs("xfs")],
                     id="xfs"),
        pytest.param("btrfs", 120, marks=[requires_tool("mkfs.btrfs"), requires_fs("btrfs")],
                     id="btrfs"),
    ],
)
def test_image_file_gets_an_autoclear_loop_device(
    kernel: Kernel, base: Path, fstype: str, size_mib: int
) -> None:
    files = {} if fstype == "xfs" else {"hello": "from the image"}
    image = mkfs_image(base, fstype, size_mib, files)
    (target,) = make_dirs(base, "mnt")
    kernel.mount(image, target, fstype, MS_NODEV)

    record = at(kernel, target)
    assert record.fstype == fstype
    assert record.source.startswith("/dev/loop")
    if fstype == "btrfs":  # st_dev is the subvolume's anonymous device
        assert record.major == 0
    else:
        assert (record.major, record.minor) == (7, int(record.source.removeprefix("/dev/loop")))
    assert kernel.loop_backing_file(record.source) == image
    assert table(kernel).user_source(record, kernel.loop_backing_file) == image
    assert loops_under(kernel, base) == {record.source: image}
    assert record.super_options[0] == "rw"
    if sees_files(kernel) and files:
        assert (Path(target) / "hello").read_text() == "from the image"

    kernel.unmount(target)
    assert not wait_for_loops_released(kernel, base)


@requires_tool("mkfs.ext4")
def test_read_only_image_mount_and_a_second_mount_sharing_its_loop_device(
    kernel: Kernel, base: Path
) -> None:
    image = mkfs_image(base, "ext4")
    first, second, other = make_dirs(base, "first", "second", "other")
    kernel.mount(image, first, "ext4", MS_RDONLY)
    kernel.mount(image, second, "ext4", MS_RDONLY)
    one, two = at(kernel, first), at(kernel, second)
    assert one.super_options[0] == "ro" and one.vfs_options[0] == "ro"
    # One loop device and one superblock: never two file systems on one image.
    assert one.source == two.source and one.device == two.device
    assert list(loops_under(kernel, base)) == [one.source]
    # A read-write mount of the shared read-only superblock is refused...
    with pytest.raises(KernelError) as raised:
        kernel.mount(image, other, "ext4", 0)
    assert raised.value.errno == errno.EBUSY
    # ...and so is turning it read-write through the read-only device.
    with pytest.raises(KernelError) as raised:
        kernel.mount(None, first, None, MS_REMOUNT)
    assert raised.value.errno == errno.EACCES

    kernel.unmount(first)
    assert list(loops_under(kernel, base)) == [one.source]  # still used by the second
    kernel.unmount(second)
    assert not wait_for_loops_released(kernel, base)


@requires_tool("mksquashfs")
@requires_fs("squashfs")
def test_squashfs_image_is_read_only_whatever_was_asked(kernel: Kernel, base: Path) -> None:
    image = mkfs_image(base, "squashfs", files={"hello": "squashed"})
    first, second = make_dirs(base, "first", "second")
    kernel.mount(image, first, "squashfs", 0)
    record = at(kernel, first)
    assert record.vfs_options[0] == "rw"
    assert record.super_options[0] == "ro"  # the file system marks itself read-only
    assert table(kernel).user_source(record, kernel.loop_backing_file) == image
    if sees_files(kernel):
        assert (Path(first) / "hello").read_text() == "squashed"
    # A second mount of the shared superblock must not ask to change its ro state.
    with pytest.raises(KernelError) as raised:
        kernel.mount(image, second, "squashfs", 0)
    assert raised.value.errno == errno.EBUSY
    kernel.unmount(first)
    assert not wait_for_loops_released(kernel, base)


@requires_tool("mksquashfs")
def test_wrong_type_for_an_image_fails_and_frees_the_loop_device(
    kernel: Kernel, base: Path
) -> None:
    image = mkfs_image(base, "squashfs")
    (target,) = make_dirs(base, "mnt")
    with pytest.raises(KernelError) as raised:
        kernel.mount(image, target, "ext4", 0)
    assert raised.value.errno == errno.EINVAL
    assert raised.value.op == "mount" and raised.value.source == image
    assert not is_mounted(kernel, target)
    assert not loops_under(kernel, base)


@requires_fs("overlay")
def test_overlay(kernel: Kernel, base: Path) -> None:
    lower, upper, work, merged = make_dirs(base, "lower", "upper", "work", "merged")
    (base / "lower/bottom").write_text("lower")
    data = f"lowerdir={lower},upperdir={upper},workdir={work}"
    kernel.mount("overlay", merged, "overlay", 0, data)
    record = at(kernel, merged)
    assert (record.fstype, record.source) == ("overlay", "overlay")
    shown = options(record.super_options)
    assert (shown["lowerdir"], shown["upperdir"], shown["workdir"]) == (lower, upper, work)
    if sees_files(kernel):
        (Path(merged) / "top").write_text("upper")
        assert (base / "upper/top").read_text() == "upper"
        assert (Path(merged) / "bottom").read_text() == "lower"
    kernel.unmount(merged)


def test_busy_mount_refuses_unmount_names_the_process_and_detaches_lazily(
    kernel: Kernel, base: Path
) -> None:
    (target,) = make_dirs(base, "busy")
    kernel.mount("tmpfs", target, "tmpfs", 0)
    (Path(target) / "work").mkdir()
    with busy(kernel, f"{target}/work") as process:
        with pytest.raises(KernelError) as raised:
            kernel.unmount(target)
        error = raised.value
        assert (error.errno, error.op, error.target) == (errno.EBUSY, "umount", target)
        assert target in str(error) and "EBUSY" in str(error)

        uses = kernel.processes(target)
        mine = [use for use in uses if use.pid == process.pid]
        assert [(u.command, u.how, u.path) for u in mine] == [("sleep", "cwd", f"{target}/work")]
        assert f"pid {process.pid} (sleep, cwd {target}/work)" in describe(uses)

        kernel.unmount(target, MNT_DETACH)
        assert not is_mounted(kernel, target)
        assert not [use for use in kernel.processes(target) if use.pid == process.pid]


def test_mounting_on_a_mount_point_stacks_silently(kernel: Kernel, base: Path) -> None:
    (target,) = make_dirs(base, "stack")
    kernel.mount("tmpfs", target, "tmpfs", 0, "size=1m")
    kernel.mount("tmpfs", target, "tmpfs", 0, "size=2m")
    mounts = table(kernel)
    bottom, top = mounts.mounts_at(target)
    assert top.parent_id == bottom.mount_id  # mounted on the root of the first
    assert mounts.at(target) == top
    assert options(top.super_options)["size"] == "2048k"

    kernel.unmount(target)  # the top of the stack goes first
    (left,) = table(kernel).mounts_at(target)
    assert left.mount_id == bottom.mount_id
    kernel.unmount(target)
    assert not table(kernel).mounts_at(target)


def test_mount_ids_are_unique_and_parents_exist(kernel: Kernel, base: Path) -> None:
    a, b, c = make_dirs(base, "a", "b", "c")
    kernel.mount("tmpfs", a, "tmpfs", 0)
    kernel.mount(a, b, None, MS_BIND)
    kernel.mount("tmpfs", c, "tmpfs", 0)
    mounts = table(kernel)
    ids = [record.mount_id for record in mounts]
    assert len(ids) == len(set(ids))
    ours = [at(kernel, path) for path in (a, b, c)]
    assert all(record.parent_id in mounts.by_id for record in ours)
    kernel.unmount(b)
    left = table(kernel)
    assert left.at(b) is None
    assert [left.at(path) for path in (a, c)] == [ours[0], ours[2]]


def test_same_file_looks_through_mounts(kernel: Kernel, base: Path) -> None:
    source, view, tmp, tmp_view, other = make_dirs(base, "source", "view", "tmp", "tv", "other")
    (base / "source/file").write_text("x")
    kernel.mount(source, view, None, MS_BIND)
    kernel.mount("tmpfs", tmp, "tmpfs", 0)
    kernel.mount(tmp, tmp_view, None, MS_BIND)
    assert kernel.same_file(view, source)
    assert kernel.same_file(f"{view}/file", f"{source}/file")
    assert kernel.same_file(tmp_view, tmp)
    assert not kernel.same_file(tmp, other)
    assert not kernel.same_file(view, other)
    assert not kernel.same_file(str(base / "missing"), str(base / "missing"))


def test_mount_identity_names_the_mount_whose_root_a_path_is(kernel: Kernel,
                                                             base: Path) -> None:
    (target,) = make_dirs(base, "t")
    kernel.mount("tmpfs", target, "tmpfs", 0)
    (Path(target) / "deeper").mkdir()
    first = kernel.mount_identity(target)
    record = at(kernel, target)
    assert first is not None and first[0] == record.mount_id
    assert first[1] is not None  # statx STATX_MNT_ID_UNIQUE (Linux 6.8)
    # A directory in a mount is not that mount: a holder record must never
    # take the identity of the mount its mount point lies in.
    assert kernel.mount_identity(f"{target}/deeper") is None
    assert kernel.mount_identity(str(base / "missing")) is None

    kernel.mount("tmpfs", target, "tmpfs", 0)  # stacked: the walk ends on top
    top = kernel.mount_identity(target)
    assert top is not None and top[0] == table(kernel).mounts_at(target)[-1].mount_id
    kernel.unmount(target)
    kernel.unmount(target)

    # Mount ids are reused at once (lowest free, machine-wide, so another
    # process may take it first); the unique id is never reused.
    kernel.mount("tmpfs", target, "tmpfs", 0)
    again = kernel.mount_identity(target)
    assert again is not None and again[0] == at(kernel, target).mount_id
    assert again[1] != first[1]


def test_a_point_read_carries_the_unique_id_the_path_names(kernel: Kernel,
                                                           base: Path) -> None:
    # A plan checks a held mount by its unique id: a record read by statmount
    # says it (no second lookup of the path); one read from mountinfo cannot.
    (target,) = make_dirs(base, "t")
    kernel.mount("tmpfs", target, "tmpfs", 0)
    identity = kernel.mount_identity(target)
    point = kernel.mount_at(target)
    assert identity is not None and point is not None
    found = kernel.find_mount(identity[0], identity[1])
    assert found is not None and found == point
    if kernel.live_mount_ids() is None:  # no statmount: the table answers
        assert point.unique_id is None and found.unique_id is None
    else:
        assert point.unique_id == identity[1] == found.unique_id
    # Not compared: the same mount read from the table is the same record.
    assert table(kernel).at(target) == point
    kernel.unmount(target)


@pytest.mark.parametrize("kernel", [  # FakeKernel models no propagation but private
    pytest.param(kind, id=kind, marks=REAL_MARKS) for kind in ("real", "no-statmount", "legacy")
], indirect=True)
def test_a_point_read_shows_propagation_as_mountinfo_does(kernel: Kernel, base: Path) -> None:
    # A read by statmount left the optional fields out: every mount looked
    # private, and a "shared" line's mount made private by hand was no drift.
    origin, peer, slave, alone = make_dirs(base, "origin", "peer", "slave", "alone")
    kernel.mount("tmpfs", origin, "tmpfs", 0)
    kernel.mount(None, origin, None, MS_SHARED)
    kernel.mount(origin, peer, None, MS_BIND)  # a peer of the shared group
    kernel.mount(origin, slave, None, MS_BIND)
    kernel.mount(None, slave, None, MS_SLAVE)
    kernel.mount("tmpfs", alone, "tmpfs", 0)
    kernel.mount(None, alone, None, MS_UNBINDABLE)
    shown = table(kernel)
    for target, expected in ((origin, "shared:"), (peer, "shared:"), (slave, "master:"),
                             (alone, "unbindable")):
        point = kernel.mount_at(target)
        assert point is not None
        assert point.optional_fields == shown.at(target).optional_fields, target
        assert point.propagation.startswith(expected), point
    for target in (slave, peer, origin, alone):
        kernel.unmount(target)


def test_live_mount_ids_lists_every_mount_of_the_namespace(kernel: Kernel,
                                                           base: Path) -> None:
    # One listing answers "is the mount my holders hold still alive" for every
    # held mount of a state read (listmount(2), Linux 6.8; None without it).
    live = kernel.live_mount_ids()
    if live is None:
        # Without statmount (Linux < 6.8) neither question can be asked by id.
        assert kernel.is_mount(1, 1 << 31) is None
        return
    assert len(live) == len(table(kernel))
    (target,) = make_dirs(base, "t")
    kernel.mount("tmpfs", target, "tmpfs", 0)
    kernel.mount("tmpfs", target, "tmpfs", 0)  # stacked: hidden mounts are listed too
    identity = kernel.mount_identity(target)
    assert identity is not None and identity[1] is not None
    now = kernel.live_mount_ids()
    assert now is not None and identity[1] in now and len(now) == len(live) + 2
    kernel.unmount(target)
    after = kernel.live_mount_ids()
    assert after is not None and identity[1] not in after and len(after) == len(live) + 1
    kernel.unmount(target)


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("with space", id="space"),
        pytest.param("with\ttab", id="tab"),
        pytest.param("back\\slash", id="backslash"),
        pytest.param("hash#sign", id="hash"),
        pytest.param("new\nline", id="newline"),
    ],
)
def test_mountinfo_escapes_like_the_kernel(kernel: Kernel, base: Path, name: str) -> None:
    source, target = make_dirs(base, f"src {name}", name)
    kernel.mount(source, target, None, MS_BIND)
    record = at(kernel, target)
    assert record.target == target
    assert table(kernel).user_source(record, kernel.loop_backing_file) == source
    line = next(line for line in kernel.read_mountinfo().splitlines()
                if line.startswith(f"{record.mount_id} "))
    raw_target = line.split(" ")[4]
    assert " " not in raw_target and "\t" not in raw_target
    assert ("#" in raw_target) == ("#" in name)  # '#' is not escaped in mountinfo


@pytest.mark.parametrize(
    ("call", "op", "code"),
    [
        pytest.param(lambda k, d: k.mount("tmpfs", f"{d}/missing", "tmpfs", 0), "mount",
                     errno.ENOENT, id="mount-missing-target"),
        pytest.param(lambda k, d: k.mount("x", f"{d}/dir", "nosuchfs", 0), "mount",
                     errno.ENODEV, id="mount-unknown-type"),
        pytest.param(lambda k, d: k.mount(f"{d}/missing", f"{d}/dir", None, MS_BIND), "mount",
                     errno.ENOENT, id="bind-missing-source"),
        pytest.param(lambda k, d: k.mount(f"{d}/file", f"{d}/dir", None, MS_BIND), "mount",
                     errno.ENOTDIR, id="bind-file-on-directory"),
        pytest.param(lambda k, d: k.mount(f"{d}/dir", f"{d}/dir2", "ext4", 0), "mount",
                     errno.ENOTBLK, id="block-type-on-a-directory"),
        pytest.param(lambda k, d: k.mount("overlay", f"{d}/dir", "overlay", 0,
                                          f"lowerdir={d}/missing,upperdir={d}/dir2,workdir={d}"),
                     "mount", errno.ENOENT, id="overlay-missing-lowerdir"),
        pytest.param(lambda k, d: k.mount(None, f"{d}/dir", None, MS_REMOUNT | MS_BIND),
                     "mount", errno.EINVAL, id="remount-not-a-mount-point"),
        pytest.param(lambda k, d: k.unmount(f"{d}/missing"), "umount", errno.ENOENT,
                     id="unmount-missing"),
        pytest.param(lambda k, d: k.unmount(f"{d}/dir"), "umount", errno.EINVAL,
                     id="unmount-not-a-mount-point"),
    ],
)
def test_errors_carry_errno_operation_and_target(
    kernel: Kernel, base: Path, call: object, op: str, code: int
) -> None:
    make_dirs(base, "dir", "dir2")
    (base / "file").write_text("")
    with pytest.raises(KernelError) as raised:
        call(kernel, str(base))  # type: ignore[operator]
    error = raised.value
    assert (error.errno, error.op) == (code, op), str(error)
    assert error.target.startswith(str(base))
    assert errno.errorcode[code] in str(error) and error.target in str(error)


@requires_tool("squashfuse")
@requires_tool("mksquashfs")
@requires_fs("fuse")
@pytest.mark.parametrize(
    ("source_of", "fstype"),
    [
        pytest.param(lambda image: image, "fuse.squashfuse", id="typed"),
        pytest.param(lambda image: f"squashfuse#{image}", "fuse", id="hash-spec"),
    ],
)
def test_fuse_mount_through_its_helper(
    kernel: Kernel, base: Path, source_of: object, fstype: str
) -> None:
    image = mkfs_image(base, "squashfs", files={"hello": "fused"})
    (target,) = make_dirs(base, "fused")
    kernel.mount(source_of(image), target, fstype, MS_RDONLY | MS_NOSUID)  # type: ignore[operator]
    record = at(kernel, target)
    assert (record.fstype, record.source) == ("fuse.squashfuse", image)
    assert record.vfs_options[:2] == ("ro", "nosuid")
    assert record.major == 0
    assert not loops_under(kernel, base)  # squashfuse reads the file itself
    if sees_files(kernel):
        assert (Path(target) / "hello").read_text() == "fused"
    kernel.unmount(target)
    assert not is_mounted(kernel, target)


@requires_fs("fuse")
def test_fuse_helper_failures_are_helper_errors(kernel: Kernel, base: Path) -> None:
    (target,) = make_dirs(base, "fused")
    with pytest.raises(KernelError) as raised:
        kernel.mount(str(base / "missing.img"), target, "fuse.squashfuse", MS_RDONLY)
    assert (raised.value.op, raised.value.errno) == ("helper", errno.ENOENT)
    assert not is_mounted(kernel, target)


def test_loop_devices_are_unchanged_by_a_test_without_images(kernel: Kernel, base: Path) -> None:
    before = loops_under(kernel, base)
    (target,) = make_dirs(base, "t")
    kernel.mount("tmpfs", target, "tmpfs", 0)
    kernel.unmount(target)
    assert loops_under(kernel, base) == before == {}
    assert os.path.isdir(target)
