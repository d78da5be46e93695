"""An in-memory kernel held to the same contract as ``LinuxKernel``.

Owns: ``FakeKernel``, a model of one private mount namespace: the mount tree
(ids, parents, stacking), superblocks (device numbers, flags, options), loop
devices with autoclear, bind and recursive bind, per-mount and superblock
remounts, busy mounts and lazy detach, FUSE helper mounts, the mountinfo text
as the kernel renders it, and fault injection for rollback tests. It needs no
root: mount points are real directories (tests use temporary ones) and only
their existence is checked; nothing on disk changes.

Must not know: the engine, holders, fstab. ``tests/contract`` runs one suite
against this class and the real kernel; every rule here cites the kernel code
it models, and what it does not model is listed in ``FakeKernel``'s docstring.
"""

from __future__ import annotations

import errno
import itertools
import os
import re
import stat
import threading
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Final

from lmi_mount.linux.kernel import (
    BLOCK_FSTYPES,
    READ_ONLY_FSTYPES,
    KernelError,
    Op,
    helper_mount_spec,
    is_block_fstype,
    needs_helper,
    without_selinux_options,
)
from lmi_mount.linux.paths import Anchor
from lmi_mount.linux.processes import ProcessUse
from lmi_mount.mounts.escaping import escape_field
from lmi_mount.mounts.flags import (
    MNT_DETACH,
    MNT_FORCE,
    MS_BIND,
    MS_DIRSYNC,
    MS_LAZYTIME,
    MS_MANDLOCK,
    MS_MOVE,
    MS_NOATIME,
    MS_NODEV,
    MS_NODIRATIME,
    MS_NOEXEC,
    MS_NOSUID,
    MS_NOSYMFOLLOW,
    MS_PRIVATE,
    MS_RDONLY,
    MS_REC,
    MS_RELATIME,
    MS_REMOUNT,
    MS_RMT_MASK,
    MS_SHARED,
    MS_SLAVE,
    MS_STRICTATIME,
    MS_SYNCHRONOUS,
    MS_UNBINDABLE,
    UMOUNT_NOFOLLOW,
)
from lmi_mount.mounts.mountinfo import MountRecord, MountTable, parse_mountinfo
from lmi_mount.text import decimal

# Per-mount flags a new mount takes from mount(2) flags (fs/namespace.c, path_mount()).
_MOUNT_FLAGS: Final = (
    MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_NOATIME | MS_NODIRATIME | MS_NOSYMFOLLOW
)
# MNT_ATIME_MASK: what a remount without atime flags preserves.
_ATIME_FLAGS: Final = MS_NOATIME | MS_NODIRATIME | MS_RELATIME
_ATIME_REQUEST: Final = MS_NOATIME | MS_NODIRATIME | MS_RELATIME | MS_STRICTATIME
# Superblock flags shown in mountinfo's super options (fs/proc_namespace.c, show_sb_opts()).
_SB_FLAGS: Final = MS_RDONLY | MS_SYNCHRONOUS | MS_DIRSYNC | MS_MANDLOCK | MS_LAZYTIME
_PROPAGATION: Final = MS_SHARED | MS_PRIVATE | MS_SLAVE | MS_UNBINDABLE

# show_mnt_opts() and show_sb_opts() order.
_MOUNT_WORDS: Final = (
    (MS_NOSUID, "nosuid"), (MS_NODEV, "nodev"), (MS_NOEXEC, "noexec"),
    (MS_NOATIME, "noatime"), (MS_NODIRATIME, "nodiratime"), (MS_RELATIME, "relatime"),
    (MS_NOSYMFOLLOW, "nosymfollow"),
)
_SB_WORDS: Final = (
    (MS_SYNCHRONOUS, "sync"), (MS_DIRSYNC, "dirsync"), (MS_MANDLOCK, "mand"),
    (MS_LAZYTIME, "lazytime"),
)

DEFAULT_FILESYSTEMS: Final = frozenset(
    BLOCK_FSTYPES | {"tmpfs", "ramfs", "proc", "sysfs", "devtmpfs", "devpts", "mqueue",
                     "overlay", "fuse", "fuseblk", "cgroup2", "debugfs", "tracefs"}
)

# Options Linux 6.x with its default configuration shows without being asked
# (seen on loop devices); which ones depends on the kernel version, its
# configuration and the device, hence a parameter.
DEFAULT_SHOWN_OPTIONS: Final[Mapping[str, tuple[str, ...]]] = {
    "squashfs": ("errors=continue",),
    "overlay": ("uuid=on",),
    "xfs": ("inode64", "logbufs=8", "logbsize=32k", "noquota"),
    "btrfs": ("discard=async", "space_cache=v2", "subvolid=5", "subvol=/"),
}

# File systems whose st_dev (and mountinfo's major:minor) is an anonymous
# device even on a block device: btrfs, one per subvolume (btrfs_get_tree_super()).
_ANON_DEVICE_FSTYPES: Final = frozenset({"btrfs"})

_PAGE_SIZE: Final = 4096
_LOOP_MAJOR: Final = 7

# Superblock magic numbers (offset, bytes) of the image types the fake can
# recognise, so that mounting an image as the wrong type fails as in the
# kernel (EINVAL); types without an entry are accepted unchecked.
_MAGIC: Final[Mapping[str, tuple[tuple[int, bytes], ...]]] = {
    "ext": ((0x438, b"\x53\xef"),),  # ext2/3/4: s_magic at 1024 + 56
    "squashfs": ((0, b"hsqs"),),
    "xfs": ((0, b"XFSB"),),
    "btrfs": ((0x10040, b"_BHRfS_M"),),
    "erofs": ((1024, b"\xe2\xe1\xf5\xe0"),),
}
_FAMILY: Final = {"ext2": "ext", "ext3": "ext", "ext4": "ext"}

_TMPFS_ORDER: Final = (
    "size", "nr_inodes", "mode", "uid", "gid", "huge", "mpol", "inode32", "inode64", "noswap",
    "quota", "usrquota", "grpquota",
)
_MEMPARSE: Final = re.compile(r"(\d+)([kKmMgGtTpPeE%]?)")
_SUFFIX_SHIFT: Final = {"": 0, "k": 10, "m": 20, "g": 30, "t": 40, "p": 50, "e": 60}


def mangle(value: str) -> str:
    """Escape a mountinfo field as the kernel does (fs/proc_namespace.c, mangle()).

    The kernel escapes space, tab, newline and backslash only; ``escape_field``
    also escapes ``#`` for fstab, which mountinfo leaves as it is.
    """
    return escape_field(value).replace("\\043", "#")


@dataclass(eq=False)
class _Loop:
    number: int
    backing: str
    identity: tuple[int, int]
    read_only: bool


@dataclass(eq=False)
class _Superblock:
    device: tuple[int, int]
    fstype: str
    source: str | None
    flags: int
    options: dict[str, str | None]
    loop: _Loop | None = None
    block_device: tuple[int, int] | None = None
    # The real directory that holds this file system's files in the model:
    # where it was first mounted ("/" for the root file system).
    home: str = "/"


@dataclass(eq=False)
class _Mount:
    mount_id: int
    parent_id: int
    sb: _Superblock
    root: str
    target: str
    flags: int
    attached: bool = True
    unique_id: int = 0


@dataclass(frozen=True)
class _Busy:
    pid: int
    command: str
    path: str
    mount: _Mount


class FakeKernel:
    """A mount namespace in memory, answering like the kernel does.

    The namespace starts with one root mount on ``/`` (``root_source``,
    ``root_fstype``, ``root_device``); mount ids, anonymous device minors and
    loop numbers are the lowest free ones, as the kernel's IDAs hand them out;
    every mount is private (no optional fields).

    Test hooks: ``make_busy(path, pid, command)`` pins the mount under
    ``path`` as a process's cwd would (EBUSY on unmount, listed by
    ``processes``; after a lazy detach the pinned superblock, and its loop
    device, live on until ``release_busy(pid)``); ``fail_next(op, errno)``
    makes the next operation ``op`` ("mount", "umount", "loop", "helper") fail.

    Files: a file system's files live, in the model, in the real directory
    where it was first mounted, so ``mkdir`` under a fresh tmpfs mount point
    works and a bind or recursive bind shows those directories at its own
    path (for existence checks: the real directories do not change).

    Not modelled: file contents (reading through a mount shows the real
    directory, not the image or the bind source); propagation other than
    private; MS_MOVE and MNT_EXPIRE (EINVAL); option validation and rendering
    of file systems other than tmpfs (their options are shown as given, then
    ``shown_options``, the defaults this kernel adds); FUSE daemons (a
    ``fuse.PROG`` mount succeeds when PROG is in ``fuse_programs`` and a
    source path exists); permissions and user namespaces; SELinux's labels
    (``selinux_enabled`` False, the default: ``mount`` leaves SELinux's
    options out, as the real one does on such a host; True: they are kept
    as any file system option).
    """

    #: Whether this kernel stands for a host with SELinux enabled (a test sets it).
    selinux_enabled = False

    def __init__(
        self,
        *,
        dev_root: str = "/dev",
        root_source: str = "/dev/vda",
        root_fstype: str = "ext4",
        root_device: tuple[int, int] = (254, 0),
        filesystems: Collection[str] = DEFAULT_FILESYSTEMS,
        helper_types: Collection[str] = ("fuse",),
        fuse_programs: Collection[str] = ("squashfuse",),
        shown_options: Mapping[str, tuple[str, ...]] = DEFAULT_SHOWN_OPTIONS,
        memory_bytes: int | None = None,
        anon_minor_base: int = 40,
    ) -> None:
        self.dev_root = dev_root
        self.filesystems = frozenset(filesystems)
        self.helper_types = frozenset(helper_types)
        self.fuse_programs = frozenset(fuse_programs)
        self.shown_options = dict(shown_options)
        self.memory_bytes = memory_bytes if memory_bytes is not None else _physical_memory()
        self.anon_minor_base = anon_minor_base
        self._lock = threading.RLock()
        root_sb = _Superblock(root_device, root_fstype, root_source, 0, {})
        # The namespace root has no parent: the kernel shows its own id there.
        self._root = _Mount(1, 1, root_sb, "/", "/", MS_RELATIME)
        self._mounts: list[_Mount] = [self._root]
        self._busy: list[_Busy] = []
        self._loops: dict[int, _Loop] = {}
        self._faults: dict[str, list[int]] = {}
        self._rendered = ""
        self._table_version = 0
        # Like statx's STATX_MNT_ID_UNIQUE: never reused, unlike mount ids.
        self._unique_ids = itertools.count(1 << 32)
        self._attaching: Callable[[int], None] | None = None

    # -- test hooks --------------------------------------------------------

    def fail_next(self, op: Op, errno_: int) -> None:
        """Make the next ``op`` fail with ``errno_`` (queued: call twice for two failures)."""
        if op not in ("mount", "umount", "loop", "helper"):
            raise ValueError(f"unknown operation {op!r}")
        with self._lock:
            self._faults.setdefault(op, []).append(errno_)

    def make_busy(self, path: str, pid: int, command: str) -> None:
        """Pin the mount holding ``path`` as process ``pid`` with its cwd there would."""
        real = os.path.realpath(path)
        if not os.path.exists(self._on_disk(real)):
            raise FileNotFoundError(errno.ENOENT, "no such path to make busy", path)
        with self._lock:
            self._busy.append(_Busy(pid, command, real, self._resolve(real)))

    def release_busy(self, pid: int) -> None:
        """The process ``pid`` went away: its mounts are no longer busy."""
        with self._lock:
            self._busy = [busy for busy in self._busy if busy.pid != pid]
            self._collect()

    # -- Kernel protocol ---------------------------------------------------

    def mount_table_version(self) -> int | None:
        with self._lock:
            # The rendered table is the state: a new text is a new version.
            text = self._mountinfo()
            if text != self._rendered:
                self._rendered = text
                self._table_version += 1
            return self._table_version

    def read_mountinfo(self) -> str:
        return self._mountinfo()

    def _mountinfo(self) -> str:
        with self._lock:
            return "".join(self._render(mount) for mount in self._mounts)

    def mount_at(self, target: str) -> MountRecord | None:
        # A point read, as statmount(2) makes it: not through read_mountinfo,
        # which stands for a read of the whole table (tests count them), and
        # with the mount's unique id, as statmount's records have.
        with self._lock:
            record = MountTable(parse_mountinfo(self._mountinfo())).at(target)
            if record is None:
                return None
            mount = next(m for m in self._mounts if m.mount_id == record.mount_id)
            return replace(record, unique_id=mount.unique_id)

    def loop_backing_file(self, device: str) -> str | None:
        with self._lock:
            loop = self._loop_named(device)
            return loop.backing if loop else None

    def loop_devices(self) -> dict[str, str]:
        with self._lock:
            return {
                f"{self.dev_root}/loop{number}": self._loops[number].backing
                for number in sorted(self._loops)
            }

    def same_file(self, first: str, second: str) -> bool:
        # Each path is resolved through the fake's mounts to the real file
        # that holds it, where the host's stat tells identity.
        with self._lock:
            try:
                a = os.stat(self._on_disk(os.path.realpath(first)))
                b = os.stat(self._on_disk(os.path.realpath(second)))
            except OSError:
                return False
        return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)

    def find_mount(self, mount_id: int | None, unique_id: int | None) -> MountRecord | None:
        with self._lock:
            for mount in self._mounts:
                if (mount.unique_id == unique_id if unique_id is not None
                        else mount.mount_id == mount_id):
                    if mount_id is not None and mount.mount_id != mount_id:
                        return None
                    (record,) = parse_mountinfo(self._render(mount))
                    return replace(record, unique_id=mount.unique_id)
            return None

    def names_before_attaching(self, fstype: str | None) -> bool:
        return not self.uses_helper(fstype)

    @property
    def asks_by_unique_id(self) -> bool:
        return True  # every fake mount has a unique id, as under statmount(2)

    def is_mount(self, mount_id: int, unique_id: int) -> bool | None:
        with self._lock:
            return any(mount.unique_id == unique_id and mount.mount_id == mount_id
                       for mount in self._mounts if mount.attached)

    def live_mount_ids(self) -> frozenset[int] | None:
        with self._lock:
            return frozenset(mount.unique_id for mount in self._mounts if mount.attached)

    def mount_identity(self, target: str) -> tuple[int, int | None] | None:
        # statx of a path names the mount the walk ends in, as _resolve does;
        # a path that does not exist has none (ENOENT).
        with self._lock:
            path = os.path.realpath(target)
            if not os.path.exists(self._on_disk(path)):
                return None
            mount = self._resolve(path)
            if mount.target != path:
                return None  # not a mount point (STATX_ATTR_MOUNT_ROOT unset)
            return mount.mount_id, mount.unique_id

    def processes(self, target: str) -> list[ProcessUse]:
        prefix = target if target.endswith("/") else target + "/"
        with self._lock:
            return [
                ProcessUse(busy.pid, busy.command, "cwd", busy.path)
                for busy in sorted(self._busy, key=lambda b: b.pid)
                if busy.mount.attached and (busy.path == target or busy.path.startswith(prefix))
            ]

    def mount(
        self,
        source: str | Anchor | None,
        target: str | Anchor,
        fstype: str | None,
        flags: int,
        data: str = "",
        *,
        clear: int = 0,
        expect: int | None = None,
        attaching: Callable[[int], None] | None = None,
    ) -> MountRecord:
        # An Anchor is followed to where its directory is now, as the kernel
        # mounts on the descriptor whatever its path has become.
        if isinstance(source, Anchor):
            source = source.current_path()
        anchored = isinstance(target, Anchor)
        if isinstance(target, Anchor):
            target = target.current_path()
        if not self.selinux_enabled:
            data = without_selinux_options(data)
        with self._lock:
            if anchored and not flags & MS_REMOUNT and self._resolve(target).target == target:
                raise KernelError(errno.EBUSY, "mount", target, source, fstype,
                                  f"{target!r} is a mount point already")
            self._inject("mount", target, source, fstype)
            path = self._existing(target, "mount", source, fstype)
            if expect is not None:
                self._expect(path, expect, "mount")
            if flags & MS_REMOUNT:
                if flags & MS_BIND:
                    self._remount_mount(path, source, fstype, flags)
                else:
                    self._remount_superblock(path, source, fstype, flags, data)
            else:
                # Like the new mount API: a new mount (not one a helper makes)
                # is told by its unique id before it is attached.
                self._attaching = attaching if not self.uses_helper(fstype) else None
                try:
                    if flags & MS_BIND:
                        self._bind(source, path, bool(flags & MS_REC), flags, clear)
                    elif flags & (MS_MOVE | _PROPAGATION):
                        self._propagation(path, source, fstype, flags)
                    else:
                        self._new_mount(source, path, fstype, flags, data)
                finally:
                    self._attaching = None
            (record,) = parse_mountinfo(self._render(self._resolve(path)))
            return record

    def unmount(
        self, target: str, flags: int = 0, *, expect: int | None = None, recursive: bool = False
    ) -> None:
        with self._lock:
            top = self._resolve(os.path.realpath(target))
            if recursive and top.target == os.path.realpath(target):
                tree = self._subtree(top)
                if any(busy.mount in tree for busy in self._busy):
                    # As LinuxKernel: a busy tree is refused whole, nothing taken.
                    raise KernelError(errno.EBUSY, "umount", target)
                for below in reversed(tree[1:]):
                    self.unmount(below.target, flags, expect=below.mount_id)
            if expect is not None:
                self._expect(self._existing(target, "umount", None, None), expect, "umount")
            self._inject("umount", target, None, None)
            if flags & ~(MNT_FORCE | MNT_DETACH | UMOUNT_NOFOLLOW):
                raise KernelError(
                    errno.EINVAL, "umount", target,
                    detail=f"umount2 flags {flags:#x} are not modelled by FakeKernel",
                )
            path = self._existing(target, "umount", None, None)
            mount = self._resolve(path)
            if mount.target != path:
                raise KernelError(errno.EINVAL, "umount", target)  # not a mount point
            if mount is self._root:
                raise KernelError(errno.EBUSY, "umount", target)
            if flags & MNT_DETACH:
                # umount_tree(): the mount and everything under it leave the namespace.
                for gone in self._subtree(mount):
                    gone.attached = False
            else:
                if any(other.parent_id == mount.mount_id for other in self._mounts):
                    raise KernelError(errno.EBUSY, "umount", target)
                if any(busy.mount is mount for busy in self._busy):
                    raise KernelError(errno.EBUSY, "umount", target)
                mount.attached = False
            self._mounts = [m for m in self._mounts if m.attached]
            self._collect()

    def uses_helper(self, fstype: str | None) -> bool:
        return needs_helper(fstype)

    # -- mount kinds ---------------------------------------------------------

    def _new_mount(
        self, source: str | None, path: str, fstype: str | None, flags: int, data: str
    ) -> None:
        if fstype is None:
            raise KernelError(errno.EINVAL, "mount", path, source, fstype,
                              detail="no file system type (do_new_mount)")
        if self.uses_helper(fstype):
            self._helper_mount(source, path, fstype, flags, data)
            return
        if fstype not in self.filesystems:
            raise KernelError(errno.ENODEV, "mount", path, source, fstype)
        if not self._is_dir(path):
            raise KernelError(errno.ENOTDIR, "mount", path, source, fstype)
        if is_block_fstype(fstype):
            sb = self._block_superblock(source, path, fstype, flags, data)
        else:
            if fstype == "overlay":
                self._check_overlay(data, path, source)
            options = self._options(fstype, data, path, source, {})
            sb = _Superblock(self._anon_device(), fstype, source, self._sb_flags(fstype, flags),
                             options)
        self._attach(sb, "/", path, _mount_flags(flags))

    def _check_overlay(self, data: str, path: str, source: str | None) -> None:
        """ovl_parse_param(): lowerdir is required, upperdir needs workdir, all must exist."""
        given = dict(_split(data))
        lower, upper, work = given.get("lowerdir"), given.get("upperdir"), given.get("workdir")
        if not lower or bool(upper) != bool(work):
            raise KernelError(errno.EINVAL, "mount", path, source, "overlay",
                              detail="overlayfs: lowerdir is missing, or upperdir without workdir")
        for directory in [*lower.split(":"), upper, work]:
            if directory and not self._is_dir(os.path.realpath(directory)):
                raise KernelError(errno.ENOENT, "mount", path, source, "overlay",
                                  detail=f"overlayfs: failed to resolve '{directory}'")

    def _helper_mount(
        self, source: str | None, path: str, fstype: str, flags: int, data: str
    ) -> None:
        self._inject("helper", path, source, fstype)
        spec, spec_type, options = helper_mount_spec(source, fstype, flags, data)
        family = "fuse" if spec_type.startswith("fuse") else spec_type
        if family not in self.helper_types:
            raise KernelError(errno.ENODEV, "helper", path, source, spec_type,
                              detail=f"mount: {path}: unknown filesystem type '{spec_type}'.")
        words = dict(_split(options))
        program = spec_type.removeprefix("fuse.")
        if spec_type.startswith("fuse.") and program not in self.fuse_programs:
            raise KernelError(errno.ENOENT, "helper", path, source, spec_type,
                              detail=f"/bin/sh: 1: {program}: not found")
        if spec.startswith("/") and not os.path.exists(spec):
            raise KernelError(errno.ENOENT, "helper", path, source, spec_type,
                              detail=f"{spec}: No such file or directory")
        if not self._is_dir(path):
            raise KernelError(errno.ENOTDIR, "helper", path, source, spec_type)
        # fuse_show_options(): user_id and group_id of the mounter, then flags.
        shown: dict[str, str | None] = {"user_id": str(os.getuid()), "group_id": str(os.getgid())}
        for word in ("default_permissions", "allow_other"):
            if word in words:
                shown[word] = None
        # libfuse names the mount after fsname= and types it fuse.<subtype>.
        subtype = words.get("subtype")
        sb = _Superblock(
            self._anon_device(), f"fuse.{subtype}" if subtype else "fuse",
            words.get("fsname") or program, flags & _SB_FLAGS, shown,
        )
        self._attach(sb, "/", path, _mount_flags(flags))

    def _block_superblock(
        self, source: str | None, path: str, fstype: str, flags: int, data: str
    ) -> _Superblock:
        if source is None:
            raise KernelError(errno.EINVAL, "mount", path, source, fstype,
                              detail="no source specified")
        loop = self._loop_named(source)
        attached = False
        if loop is None:
            try:
                st = os.stat(source)
            except OSError as exc:
                code = exc.errno or errno.ENOENT
                raise KernelError(code, "mount", path, source, fstype) from exc
            if stat.S_ISREG(st.st_mode):
                loop, attached = self._loop_for(source, st, path, fstype, bool(flags & MS_RDONLY))
                device = (_LOOP_MAJOR, loop.number)
            elif stat.S_ISBLK(st.st_mode):
                device = (os.major(st.st_rdev), os.minor(st.st_rdev))
            else:
                raise KernelError(errno.ENOTBLK, "mount", path, source, fstype)
        else:
            device = (_LOOP_MAJOR, loop.number)
        shown_source = f"{self.dev_root}/loop{loop.number}" if loop else source
        try:
            return self._block_sb_for(
                device, loop, shown_source, source, path, fstype, flags, data
            )
        except KernelError:
            if attached and loop is not None:
                del self._loops[loop.number]
            raise

    def _block_sb_for(
        self, device: tuple[int, int], loop: _Loop | None, shown_source: str, source: str,
        path: str, fstype: str, flags: int, data: str,
    ) -> _Superblock:
        # get_tree_bdev(): an existing superblock of the device is shared,
        # unless the mount asks for another read-only state than it has...
        for sb in self._live_superblocks():
            if sb.block_device == device:
                if sb.fstype != fstype or (sb.flags ^ flags) & MS_RDONLY:
                    raise KernelError(errno.EBUSY, "mount", path, source, fstype)
                return sb
        # ...else the device is opened, which fails for writing a read-only one.
        if loop is not None and loop.read_only and not flags & MS_RDONLY:
            raise KernelError(errno.EACCES, "mount", path, source, fstype)
        image = loop.backing if loop else source
        if not _looks_like(image, fstype):
            raise KernelError(errno.EINVAL, "mount", path, source, fstype)
        options = self._options(fstype, data, path, source, {})
        # btrfs shows the anonymous device of its subvolume, not the block device.
        shown = self._anon_device() if fstype in _ANON_DEVICE_FSTYPES else device
        return _Superblock(shown, fstype, shown_source, self._sb_flags(fstype, flags), options,
                           loop, block_device=device)

    def _bind(
        self, source: str | None, path: str, recursive: bool, flags: int = 0, clear: int = 0
    ) -> None:
        if not source:
            raise KernelError(errno.EINVAL, "mount", path, source, None)
        real = os.path.realpath(source)
        if not os.path.exists(self._on_disk(real)):
            raise KernelError(errno.ENOENT, "mount", path, source, None)
        if self._is_dir(real) != self._is_dir(path):
            raise KernelError(errno.ENOTDIR, "mount", path, source, None)
        origin = self._resolve(real)
        before = list(self._mounts)
        # clone_mnt(): the copy shares the superblock and the per-mount flags;
        # then mount_setattr(2) sets and clears the asked ones before the copy
        # is attached; an rbind's copies of the submounts take what it sets,
        # never what it lifts (LinuxKernel._bind).
        copy = self._attach(origin.sb, _join(origin.root, _relative(real, origin.target)), path,
                            _bind_flags(origin.flags, flags, clear))
        if not recursive:
            return
        # copy_tree(): every mount below the source, in tree order, re-rooted.
        copies = {origin.mount_id: copy}
        for sub in before:
            parent_copy = copies.get(sub.parent_id)
            if sub is origin or parent_copy is None or not _covers(real, sub.target):
                continue
            target = _join(path, _relative(sub.target, real))
            copies[sub.mount_id] = self._attach(sub.sb, sub.root, target,
                                                _bind_flags(sub.flags, flags, 0),
                                                parent=parent_copy)

    def _remount_mount(
        self, path: str, source: str | None, fstype: str | None, flags: int
    ) -> None:
        # do_reconfigure_mnt(): only the per-mount flags change.
        mount = self._mount_point(path, source, fstype)
        mount.flags = _remount_flags(flags, mount.flags)

    def _remount_superblock(
        self, path: str, source: str | None, fstype: str | None, flags: int, data: str
    ) -> None:
        # do_remount(): the superblock's flags and options, and this mount's flags.
        mount = self._mount_point(path, source, fstype)
        sb = mount.sb
        if sb.loop is not None and sb.loop.read_only and not flags & MS_RDONLY:
            raise KernelError(errno.EACCES, "mount", path, source, sb.fstype)
        sb.options = self._options(sb.fstype, data, path, source, sb.options)
        forced = MS_RDONLY if sb.fstype in READ_ONLY_FSTYPES else 0
        sb.flags = (sb.flags & ~MS_RMT_MASK) | (flags & MS_RMT_MASK) | forced
        mount.flags = _remount_flags(flags, mount.flags)

    def _propagation(
        self, path: str, source: str | None, fstype: str | None, flags: int
    ) -> None:
        # Every mount of the fake is private already: MS_PRIVATE on a mount
        # point changes nothing; the rest is outside the model.
        self._mount_point(path, source, fstype)
        if flags & MS_MOVE or flags & _PROPAGATION != MS_PRIVATE:
            raise KernelError(errno.EINVAL, "mount", path, source, fstype,
                              detail="only MS_PRIVATE is modelled by FakeKernel")

    # -- helpers -----------------------------------------------------------

    def _inject(self, op: Op, target: str, source: str | None, fstype: str | None) -> None:
        pending = self._faults.get(op)
        if pending:
            code = pending.pop(0)
            raise KernelError(code, op, target, source, fstype,
                              detail=f"{os.strerror(code)} (injected)")

    def _expect(self, path: str, expect: int, op: Op) -> None:
        found = self._resolve(path)
        if found.target != path or found.mount_id != expect:
            raise KernelError(errno.ESTALE, op, path,
                              detail=f"mount {expect} is no longer at {path!r}")

    def _existing(self, target: str, op: Op, source: str | None, fstype: str | None) -> str:
        path = os.path.realpath(target)
        if not os.path.exists(self._on_disk(path)):
            raise KernelError(errno.ENOENT, op, target, source, fstype)
        return path

    def _on_disk(self, path: str) -> str:
        """The real path that holds ``path`` of the namespace, through the mounts on it."""
        mount = self._resolve(path)
        inside = _join(mount.root, _relative(path, mount.target))
        return mount.sb.home if inside == "/" else mount.sb.home.rstrip("/") + inside

    def _is_dir(self, path: str) -> bool:
        return os.path.isdir(self._on_disk(path))

    def _resolve(self, path: str) -> _Mount:
        """The mount a path walk ends in: from the root, cross the shallowest
        mount point on the way at each step, and the top of a stack."""
        current = self._root
        while True:
            best: _Mount | None = None
            for mount in self._mounts:
                if (mount.parent_id == current.mount_id and mount is not current
                        and _covers(mount.target, path)
                        and (best is None or len(mount.target) <= len(best.target))):
                    best = mount
            if best is None:
                return current
            current = best

    def _mount_point(self, path: str, source: str | None, fstype: str | None) -> _Mount:
        mount = self._resolve(path)
        if mount.target != path:
            raise KernelError(errno.EINVAL, "mount", path, source, fstype,
                              detail=f"{os.strerror(errno.EINVAL)} (not a mount point)")
        return mount

    def _subtree(self, top: _Mount) -> list[_Mount]:
        found = [top]
        ids = {top.mount_id}
        for mount in self._mounts:  # creation order: parents come first
            if mount.parent_id in ids and mount is not top:
                found.append(mount)
                ids.add(mount.mount_id)
        return found

    def _attach(
        self, sb: _Superblock, root: str, target: str, flags: int, parent: _Mount | None = None
    ) -> _Mount:
        if sb.home == "/" and sb is not self._root.sb:
            sb.home = self._on_disk(target)  # a new file system: first mounted here
        parent = parent or self._resolve(target)
        used = {m.mount_id for m in self._mounts} | {b.mount.mount_id for b in self._busy}
        mount = _Mount(_lowest_free(used, 1), parent.mount_id, sb, root, target, flags,
                       unique_id=next(self._unique_ids))
        hook, self._attaching = self._attaching, None  # an rbind's top mount only
        if hook is not None:
            hook(mount.unique_id)
        self._mounts.append(mount)
        return mount

    def _live_superblocks(self) -> list[_Superblock]:
        seen: dict[int, _Superblock] = {}
        for sb in [m.sb for m in self._mounts] + [b.mount.sb for b in self._busy]:
            seen.setdefault(id(sb), sb)
        return list(seen.values())

    def _collect(self) -> None:
        """Free the loop devices no live superblock uses (LO_FLAGS_AUTOCLEAR)."""
        used = {id(sb.loop) for sb in self._live_superblocks() if sb.loop is not None}
        self._loops = {n: loop for n, loop in self._loops.items() if id(loop) in used}

    def _anon_device(self) -> tuple[int, int]:
        used = {sb.device[1] for sb in self._live_superblocks() if sb.device[0] == 0}
        return 0, _lowest_free(used, self.anon_minor_base)

    def _loop_named(self, device: str) -> _Loop | None:
        head, _, number = device.rpartition("/loop")
        index = decimal(number)
        if head != self.dev_root or index is None:
            return None
        return self._loops.get(index)

    def _loop_for(
        self, image: str, st: os.stat_result, path: str, fstype: str, read_only: bool
    ) -> tuple[_Loop, bool]:
        identity = (st.st_dev, st.st_ino)
        for loop in self._loops.values():
            if loop.identity == identity:
                return loop, False  # reused, as LinuxKernel and mount(8) do
        self._inject("loop", path, image, fstype)
        loop = _Loop(_lowest_free(set(self._loops), 0), os.path.realpath(image), identity,
                     read_only)
        self._loops[loop.number] = loop
        return loop, True

    def _sb_flags(self, fstype: str, flags: int) -> int:
        forced = MS_RDONLY if fstype in READ_ONLY_FSTYPES else 0
        return (flags & _SB_FLAGS) | forced

    def _options(
        self, fstype: str, data: str, path: str, source: str | None,
        current: Mapping[str, str | None],
    ) -> dict[str, str | None]:
        """The fs-specific options after a mount (``current`` empty) or remount."""
        given = _split(data)
        if fstype == "tmpfs":
            return self._tmpfs_options(given, path, source, current)
        merged = dict(current)
        merged.update(given)
        if not current:
            # A new superblock shows the defaults it was not given, after the rest.
            for key, value in _split(",".join(self.shown_options.get(fstype, ()))):
                merged.setdefault(key, value)
        return merged

    def _tmpfs_options(
        self, given: Iterable[tuple[str, str | None]], path: str, source: str | None,
        current: Mapping[str, str | None],
    ) -> dict[str, str | None]:
        """shmem_parse_one() + shmem_show_options(): normalized values, kernel order,
        defaults hidden; a remount changes only the options it names."""
        values = dict(current)
        pages = self.memory_bytes // _PAGE_SIZE
        for key, value in given:
            if key not in _TMPFS_ORDER and key != "nr_blocks":
                raise KernelError(errno.EINVAL, "mount", path, source, "tmpfs",
                                  detail=f"tmpfs: Unknown parameter '{key}'")
            try:
                if key in ("size", "nr_blocks"):
                    blocks = _tmpfs_blocks(key, value or "", pages)
                    values.pop("size", None)
                    if blocks != pages // 2:  # the default, half of RAM, is not shown
                        values["size"] = f"{blocks * (_PAGE_SIZE // 1024)}k"
                elif key == "nr_inodes":
                    values[key] = str(_memparse(value or ""))
                elif key == "mode":
                    mode = int(value or "", 8) & 0o7777
                    values.pop(key, None)
                    if mode != 0o1777:
                        values[key] = f"{mode:03o}"
                elif key in ("uid", "gid"):
                    values.pop(key, None)
                    if int(value or "") != 0:
                        values[key] = str(int(value or ""))
                else:
                    values[key] = value
            except ValueError:
                raise KernelError(errno.EINVAL, "mount", path, source, "tmpfs",
                                  detail=f"tmpfs: Bad value for '{key}'") from None
        return {key: values[key] for key in _TMPFS_ORDER if key in values}

    def _render(self, mount: _Mount) -> str:
        sb = mount.sb
        vfs = ["ro" if mount.flags & MS_RDONLY else "rw"]
        vfs += [word for flag, word in _MOUNT_WORDS if mount.flags & flag]
        sup = ["ro" if sb.flags & MS_RDONLY else "rw"]
        sup += [word for flag, word in _SB_WORDS if sb.flags & flag]
        sup += [key if value is None else f"{key}={value}" for key, value in sb.options.items()]
        major, minor = sb.device
        return (
            f"{mount.mount_id} {mount.parent_id} {major}:{minor} {mangle(mount.root)} "
            f"{mangle(mount.target)} {','.join(vfs)} - {mangle(sb.fstype)} "
            f"{mangle(sb.source if sb.source is not None else 'none')} "
            f"{mangle(','.join(sup))}\n"
        )


def _mount_flags(flags: int) -> int:
    """Per-mount flags of a new mount: relatime unless noatime or strictatime."""
    result = flags & _MOUNT_FLAGS
    if not flags & MS_NOATIME:
        result |= MS_RELATIME
    if flags & MS_STRICTATIME:
        result &= ~(MS_RELATIME | MS_NOATIME)
    return result


def _bind_flags(old: int, flags: int, clear: int) -> int:
    """Per-mount flags of a bind copy of a mount with ``old``: ``flags`` set,
    ``clear`` cleared, the atime mode replaced only when ``flags`` name one."""
    result = (old | (flags & _MOUNT_FLAGS)) & ~(clear & _MOUNT_FLAGS & ~flags)
    if flags & (MS_NOATIME | MS_RELATIME | MS_STRICTATIME):
        # MOUNT_ATTR__ATIME: the mode only; nodiratime is a flag of its own.
        mode = MS_NOATIME | MS_RELATIME
        result = (result & ~mode) | (_mount_flags(flags) & mode)
    return result


def _remount_flags(flags: int, old: int) -> int:
    """Per-mount flags after a remount: all replaced, but atime kept unless asked."""
    result = _mount_flags(flags)
    if not flags & _ATIME_REQUEST:
        result = (result & ~_ATIME_FLAGS) | (old & _ATIME_FLAGS)
    return result


def _split(data: str) -> list[tuple[str, str | None]]:
    pairs: list[tuple[str, str | None]] = []
    for option in data.split(","):
        if option:
            key, sep, value = option.partition("=")
            pairs.append((key, value if sep else None))
    return pairs


def _memparse(text: str) -> int:
    """The kernel's memparse(): a number with an optional k/m/g/t/p/e suffix."""
    match = _MEMPARSE.fullmatch(text)
    if not match or match.group(2) == "%":
        raise ValueError(text)
    return int(match.group(1)) << _SUFFIX_SHIFT[match.group(2).lower()]


def _tmpfs_blocks(key: str, value: str, pages: int) -> int:
    if key == "nr_blocks":
        return _memparse(value)
    match = _MEMPARSE.fullmatch(value)
    if not match:
        raise ValueError(value)
    if match.group(2) == "%":
        size = int(match.group(1)) * pages * _PAGE_SIZE // 100
    else:
        size = _memparse(value)
    return -(-size // _PAGE_SIZE)


def _looks_like(image: str, fstype: str) -> bool:
    family = _FAMILY.get(fstype, fstype)
    checks = _MAGIC.get(family)
    if checks is None:
        return True
    try:
        with open(image, "rb") as stream:
            for offset, magic in checks:
                stream.seek(offset)
                if stream.read(len(magic)) != magic:
                    return False
    except OSError:
        return False
    return True


def _lowest_free(used: Collection[int], start: int) -> int:
    number = start
    while number in used:
        number += 1
    return number


def _covers(top: str, path: str) -> bool:
    return top == "/" or path == top or path.startswith(top + "/")


def _relative(path: str, top: str) -> str:
    """``path`` relative to ``top``, which covers it; "" when they are equal."""
    if path == top:
        return ""
    return path[1:] if top == "/" else path[len(top) + 1:]


def _join(base: str, relative: str) -> str:
    if not relative:
        return base
    return base.rstrip("/") + "/" + relative


def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return 8 << 30
