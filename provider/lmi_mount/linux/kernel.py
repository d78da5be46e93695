"""Mounting and unmounting through the running kernel.

Owns: the ``Kernel`` protocol the engine mounts through, its error
(``KernelError``), and ``LinuxKernel``, which implements it with the new
mount API (``linux.mountapi``: fsopen/fsconfig/fsmount, open_tree,
mount_setattr, move_mount onto an O_PATH descriptor) or, on kernels without
it, mount(2) through /proc/self/fd; umount2(2) with UMOUNT_NOFOLLOW; loop
devices for image files (loop-control ioctls, autoclear); and mount(8) for
the file system types that need a user-space helper. Every mount call
returns the mount as the kernel reports it afterwards (statmount(2) of the
new mount where the kernel has it, else its mountinfo line), so the caller
can compare it with what it asked for. Also the pure rules both kernels
share: which types are block file systems, which need a helper, and how a
helper mount is spelled.

Must not know: holders, fstab, CIM, or what options mean beyond the MS_*
flags it is handed; whether a mount is wanted. (A path given as text may be
stacked on, as mount(2) does; an Anchor never is: the engine's requests come
with one.)
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import errno
import fcntl
import functools
import logging
import os
import re
import select
import signal
import stat
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Final, Literal, Protocol, TypeVar

from lmi_mount.linux import mountapi
from lmi_mount.linux.mountapi import ATIME_FLAGS, SB_FLAG_WORDS, attributes
from lmi_mount.linux.namespace import libc
from lmi_mount.linux.paths import Anchor, open_no_symlinks, open_resolved, unstable_path
from lmi_mount.linux.processes import ProcessUse, busy_processes, mount_users
from lmi_mount.mounts.escaping import nonempty_options, unescape_field, unquoted
from lmi_mount.mounts.flags import (
    FLAG_OPTION_NAMES,
    MNT_DETACH,
    MS_BIND,
    MS_MANDLOCK,
    MS_MOVE,
    MS_NOATIME,
    MS_NODEV,
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
    MS_UNBINDABLE,
    PER_MOUNT_FLAGS,
    UMOUNT_NOFOLLOW,
    flag_option_names,
)
from lmi_mount.mounts.mountinfo import MountinfoParser, MountRecord, MountTable
from lmi_mount.mounts.options import is_selinux_option
from lmi_mount.text import decimal

log = logging.getLogger(__name__)

Op = Literal["mount", "umount", "loop", "helper"]
_R = TypeVar("_R")

#: Which kernel interface mounts: "new" is the file-descriptor mount API
#: (fsopen/fsmount/open_tree/mount_setattr/move_mount, Linux 5.12 for all of
#: it), "legacy" is mount(2) with a second MS_REMOUNT|MS_BIND call for the
#: per-mount flags of a bind, both through /proc/self/fd magic links.
MountApi = Literal["new", "legacy"]

#: A mount target: a path, or an Anchor the caller opened (and keeps open).
Target = str | Anchor

# Flags that make mount(2) operate on an existing mount instead of creating a
# file system instance; such calls never go through a helper or a loop device.
EXISTING_MOUNT_FLAGS: Final = (
    MS_REMOUNT | MS_BIND | MS_MOVE | MS_SHARED | MS_PRIVATE | MS_SLAVE | MS_UNBINDABLE
)

# Block file systems that need a device: an image file is attached to a loop
# device first. The kernel's own list is the types /proc/filesystems shows
# without "nodev"; these are added for modules not loaded yet.
BLOCK_FSTYPES: Final = frozenset({
    "ext2", "ext3", "ext4", "xfs", "btrfs", "squashfs", "erofs", "vfat", "msdos", "exfat",
    "iso9660", "udf", "f2fs", "jfs", "hfsplus", "ntfs3", "minix", "nilfs2",
})

# File systems that are read-only by design: their loop device is attached
# read-only, and the kernel marks their superblock "ro" whatever was asked.
READ_ONLY_FSTYPES: Final = frozenset({"squashfs", "erofs", "iso9660", "cramfs"})

# Types mount(2) cannot mount alone: a mount(8) helper (/sbin/mount.TYPE) does
# the user-space part (a FUSE daemon, NFS/SMB negotiation). "fuse.X" types are
# handled by mount.fuse, which starts the program X (mount.fuse(8)).
HELPER_FSTYPES: Final = frozenset({
    "fuse", "fuse3", "fuseblk", "nfs", "nfs4", "cifs", "smb3", "sshfs", "ceph", "glusterfs",
})

# The FUSE file systems a request may name (fuse.PROG or PROG#SRC). mount.fuse
# runs PROG as root with the source as its argument, so an open list would let
# a request run any program in PATH on any file ("sh#/tmp/script").
FUSE_PROGRAMS: Final = frozenset({
    "bindfs", "encfs", "fuse-overlayfs", "fuse-zip", "fuse2fs", "gocryptfs", "httpfs2",
    "ntfs-3g", "rclone", "s3fs", "sshfs", "squashfuse", "squashfuse_ll", "archivemount",
})

# The mount.fuse family of types: TYPE or TYPE.PROG.
_FUSE_TYPE: Final = re.compile(r"(fuse3?|fuseblk)(?:\.(.*))?")
# FUSE options that run a program the options name (sshfs(1)).
FUSE_COMMAND_OPTIONS: Final = frozenset({"ssh_command", "sftp_server"})

# libmount's default helper search path (FS_SEARCH_PATH in libmount's context_mount.c).
DEFAULT_HELPER_DIRS: Final = ("/sbin", "/sbin/fs.d", "/sbin/fs")
#: How many mounts made by recent helpers are remembered as theirs (see
#: LinuxKernel._helper_result): far more than can finish while one runs.
HELPER_MADE_MEMORY: Final = 4096

# <linux/loop.h>
LOOP_SET_FD: Final = 0x4C00
LOOP_CLR_FD: Final = 0x4C01
LOOP_SET_STATUS64: Final = 0x4C04
LOOP_GET_STATUS64: Final = 0x4C05
LOOP_CONFIGURE: Final = 0x4C0A  # Linux 5.8: attach and configure in one atomic call
LOOP_CTL_GET_FREE: Final = 0x4C82
LO_FLAGS_READ_ONLY: Final = 1
LO_FLAGS_AUTOCLEAR: Final = 4
LO_NAME_SIZE: Final = 64
LOOP_MAJOR: Final = 7

# LOOP_CTL_GET_FREE hands out a number another process may claim before our
# LOOP_CONFIGURE (EBUSY); util-linux's loopdev.c retries too.
_LOOP_ATTEMPTS: Final = 16

_LOOP_NAME = re.compile(r"loop\d+")

# mount(8)'s word for each MS_* flag it sets ("ro" -> MS_RDONLY).
_FLAG_OF_WORD: Final = {name: flag for flag, name, _ in FLAG_OPTION_NAMES}


class KernelError(OSError):
    """A mount, unmount, loop or helper operation failed.

    ``errno`` is the kernel's (or, for a helper, the best match of its message,
    EIO when nothing matches); ``op`` says which step failed; ``detail`` is
    the kernel's strerror or the helper's own message (its stderr).
    """

    def __init__(
        self,
        errno_: int,
        op: Op,
        target: str,
        source: str | None = None,
        fstype: str | None = None,
        detail: str | None = None,
    ) -> None:
        text = detail or os.strerror(errno_)
        super().__init__(errno_, text)
        self.op: Op = op
        self.target = target
        self.source = source
        self.fstype = fstype
        self.detail = text

    def __str__(self) -> str:
        code = self.errno or 0
        name = errno.errorcode.get(code, str(code))
        kind = f" (type {self.fstype})" if self.fstype else ""
        if self.op == "umount":
            what = f"umount {self.target!r}"
        elif self.op == "loop":
            what = f"loop device for {self.source!r} (mount on {self.target!r})"
        elif self.op == "helper":
            what = f"mount helper: mount {self.source!r} on {self.target!r}{kind}"
        elif self.source is None:  # a remount or a propagation change
            what = f"changing the mount on {self.target!r}{kind}"
        else:
            what = f"mount {self.source!r} on {self.target!r}{kind}"
        return f"{what} failed: {self.detail} [{name}]"

    def __reduce__(self) -> tuple[type[KernelError], tuple[object, ...]]:
        # OSError pickles its (errno, strerror) args, which this __init__ does not take.
        return (
            type(self),
            (self.errno, self.op, self.target, self.source, self.fstype, self.detail),
        )


class Kernel(Protocol):
    """What the engine needs from a kernel; LinuxKernel and FakeKernel implement it."""

    def read_mountinfo(self) -> str:
        """The text of /proc/self/mountinfo (proc(5)) as the kernel renders it."""
        ...

    def mount_table_version(self) -> int | None:
        """A number that changes whenever the mount table may have changed.

        Callers poll it before ``read_mountinfo`` and keep what they parsed
        while it stays the same. None: unknown, read every time.
        """
        ...

    def loop_backing_file(self, device: str) -> str | None:
        """The file behind loop device ``device`` (``/dev/loopN``), or None."""
        ...

    def mount_at(self, target: str) -> MountRecord | None:
        """The mount path lookup finds at ``target`` (MountTable.at of the table now).

        Cheap where the kernel has statmount(2): a walk to ``target`` without
        symlinks, one statx and one statmount, instead of the whole table.
        """
        ...

    def loop_devices(self) -> dict[str, str]:
        """Every attached loop device and its backing file."""
        ...

    def mount(
        self,
        source: str | Anchor | None,
        target: Target,
        fstype: str | None,
        flags: int,
        data: str = "",
        *,
        clear: int = 0,
        expect: int | None = None,
        attaching: Callable[[int], None] | None = None,
    ) -> MountRecord:
        """Mount, as mount(8) would with the same options, and return the result.

        ``flags`` and ``data`` are mount(2)'s. Unlike mount(2), the per-mount
        flags of a bind (MS_BIND) are applied, not ignored: the new mount
        takes the flags of the mount it copies, with ``flags`` set and
        ``clear`` cleared (per-mount MS_* flags the request names as off:
        ``suid`` on a nosuid source). MS_REMOUNT|MS_BIND sets all per-mount
        flags; MS_REMOUNT alone reconfigures the superblock with ``data`` and
        the superblock flags, and sets the per-mount flags; both keep the
        atime mode unless ``flags`` name one.

        A block file system type whose source is a regular file gets a loop
        device (read-only with MS_RDONLY, autoclear so the unmount frees it,
        detached again if the mount fails; an image already attached is
        reused, as mount(8) does). A type that needs a user-space helper goes
        through mount(8). ``target`` (and a bind ``source``) may be an
        Anchor: the mount lands on that descriptor whatever its path has
        become, and never on top of a mount (EBUSY if the Anchor is a mount's
        root). A remount's ``target`` path is walked without following any
        symlink, and with ``expect`` (a mount id) it must be that mount
        (ESTALE otherwise). Returns the mount made or changed, as the kernel
        shows it now. Raises KernelError.

        ``attaching``, where the kernel makes the new mount detached first
        (the new mount API) and tells its unique id, is called with that id
        before the mount is attached: a caller that records it durably can
        find the mount after a crash at any later instant (``find_mount``).
        If it raises, nothing is attached.
        """
        ...

    def unmount(
        self, target: str, flags: int = 0, *, expect: int | None = None, recursive: bool = False
    ) -> None:
        """umount2(2) of the topmost mount at ``target``; MNT_DETACH only when asked.

        The path is walked without following any symlink (a parent directory
        swapped for one cannot redirect it), and with ``expect`` the mount
        found there must be that mount id (ESTALE otherwise). ``recursive``
        unmounts the mounts on it first, deepest first (umount -R).
        """
        ...

    def processes(self, target: str) -> list[ProcessUse]:
        """The processes using files at or under ``target`` (why an unmount is busy)."""
        ...

    def same_file(self, first: str, second: str) -> bool:
        """``first`` and ``second`` are one file or directory (device and inode),
        through whatever mounts the paths cross."""
        ...

    def uses_helper(self, fstype: str | None) -> bool:
        """Whether a mount of ``fstype`` is made by mount(8) and a ``mount.TYPE``
        helper, whose mount may show another type (ntfs-3g's is ``fuseblk``)."""
        ...

    @property
    def selinux_enabled(self) -> bool:
        """Whether SELinux is enabled; where it is not, ``mount`` leaves the
        SELinux options out of its data, as mount(8) does."""
        ...

    def find_mount(self, mount_id: int | None, unique_id: int | None) -> MountRecord | None:
        """Mount ``unique_id`` (where the kernel has unique ids, else ``mount_id``) as
        it is now, read afresh, or None when it is gone.

        Its mount point may have been renamed: a rename is no mount event,
        so a table kept since its ``mount_table_version`` still shows the
        old path; this never does. By mount id alone the answer may be a
        later mount given the same id: callers check device and root.
        """
        ...

    def names_before_attaching(self, fstype: str | None) -> bool:
        """Whether ``mount`` of ``fstype`` (None: a bind) calls ``attaching`` with
        the new mount's unique id before it is attached (the new mount API),
        rather than make it by mount(2) or a mount(8) helper, which name the
        mount only once it is attached."""
        ...

    def is_mount(self, mount_id: int, unique_id: int) -> bool | None:
        """Whether the mount of never-reused ``unique_id`` lives and is mount
        ``mount_id``, asked without a path lookup (a lookup pins a mount for an
        instant, and a concurrent umount2 of it fails EBUSY); None where the
        kernel cannot tell without one (no statmount)."""
        ...

    @property
    def asks_by_unique_id(self) -> bool:
        """Whether ``find_mount`` and ``is_mount`` ask the kernel for a mount by
        its unique id (statmount(2), where it works): then ``find_mount``
        alone proves that the mount lives, and it is one question to the
        kernel where ``is_mount`` and then ``find_mount`` were two."""
        ...

    def live_mount_ids(self) -> frozenset[int] | None:
        """The never-reused ids of every mount of this namespace now, hidden ones
        too, in one call: a reader asks whether held mounts still live once,
        not once each. None where the kernel cannot list them (no statmount)."""
        ...

    def mount_identity(self, target: str) -> tuple[int, int | None] | None:
        """(mount id, unique mount id) of the mount whose root ``target`` is (None for
        a path that is no mount point: the mount it lies in is not the one asked for).

        The mount id is mountinfo's; it is reused as soon as a mount is gone,
        so it cannot tell, after a restart, the mount we made from a new one
        at the same path. The unique id (statx(2) STATX_MNT_ID_UNIQUE, Linux
        6.8) is never reused; None where the kernel lacks it. None for a path
        that cannot be reached.
        """
        ...


def mounted_elsewhere(device: tuple[int, int], proc_root: str = "/proc") -> str | None:
    """Where the file system ``device`` (major, minor) is mounted in a mount
    namespace other than this process's: a mount point and the pid whose
    namespace shows it; None if no namespace this process can read has it.
    A remount of its superblock would reach that mount too."""
    own = _namespace_inode(proc_root)
    read = {own} if own is not None else set()
    wanted = f"{device[0]}:{device[1]}"
    with os.scandir(proc_root) as entries:
        pids = sorted(pid for entry in entries if (pid := decimal(entry.name)) is not None)
    # A chrooted process's mountinfo lists only the mounts under its root: a
    # namespace is read through a process whose root is the namespace's, and
    # through a chrooted one only if it has none (a review hid a namespace so).
    chrooted: dict[int, int] = {}
    for pid in pids:
        try:
            namespace = os.stat(f"{proc_root}/{pid}/ns/mnt").st_ino
            if namespace in read:
                continue
            if os.readlink(f"{proc_root}/{pid}/root") != "/":
                chrooted.setdefault(namespace, pid)
                continue
            found = _mounted_in(pid, wanted, proc_root)
        except OSError:  # gone meanwhile, or not ours to read: another may be
            continue
        read.add(namespace)
        if found is not None:
            return found
    for namespace, pid in chrooted.items():
        if namespace not in read:
            with contextlib.suppress(OSError):
                found = _mounted_in(pid, wanted, proc_root)
                if found is not None:
                    return found
    return None


def _mounted_in(pid: int, device: str, proc_root: str) -> str | None:
    """Where process ``pid``'s mountinfo shows the file system ``device``
    (``major:minor``), or None."""
    with open(f"{proc_root}/{pid}/mountinfo", "rb") as stream:
        table = stream.read().decode("utf-8", "surrogateescape")
    for line in table.splitlines():
        fields = line.split(" ", 5)
        if len(fields) > 4 and fields[2] == device:
            return f"on {unescape_field(fields[4])} in the mount namespace of pid {pid}"
    return None


def _namespace_inode(proc_root: str) -> int | None:
    """The inode of this process's mount namespace (ns/mnt), None if unknown."""
    try:
        return os.stat(f"{proc_root}/self/ns/mnt").st_ino
    except OSError:
        return None


@functools.cache
def detect_mount_api() -> MountApi:
    """"new" where the kernel has every call of the new mount API that is used
    (mount_setattr, the last of them, is Linux 5.12), else "legacy"."""
    calls = (mountapi.SYS_FSOPEN, mountapi.SYS_OPEN_TREE, mountapi.SYS_MOUNT_SETATTR)
    return "new" if all(mountapi.available(number) for number in calls) else "legacy"


def is_block_fstype(fstype: str, filesystems: Iterable[str] = ()) -> bool:
    """True for a type that needs a block device; ``filesystems`` are /proc/filesystems lines."""
    if fstype in BLOCK_FSTYPES:
        return True
    return any(line.split() == [fstype] for line in filesystems)


def needs_helper(fstype: str | None, helper_dirs: Sequence[str] = ()) -> bool:
    """True for a type mount(2) cannot mount alone (FUSE, network file systems, any
    type with a ``mount.TYPE`` program in ``helper_dirs``)."""
    if fstype is None:
        return False
    if fstype in HELPER_FSTYPES or _FUSE_TYPE.fullmatch(fstype):
        return True
    return any(os.access(os.path.join(d, f"mount.{fstype}"), os.X_OK) for d in helper_dirs)


def helper_mount_spec(
    source: str | None, fstype: str, flags: int, data: str
) -> tuple[str, str, str]:
    """Return (source, type, options) of the mount(8) call for a helper file system.

    - mount.fuse accepts both ``-t fuse PROG#SRC`` and ``-t fuse.PROG SRC``
      (mount.fuse(8)); the second spelling is used, so the mountinfo type is
      ``fuse.PROG`` either way.
    - A FUSE daemon names its mount after itself unless told ``fsname=``
      (squashfuse's mounts read "squashfuse"), and then drops the subtype;
      both are passed so mountinfo shows the source and type asked for, as it
      does for kernel file systems. A source containing ``,``, ``\\`` or ``"``
      would not survive the option string and is left to the daemon's default.
    - Flags are spelled as mount(8) option names; ``data`` follows them.
    """
    spec = source if source is not None else "none"
    if fstype == "fuse" and "#" in spec:
        program, _, spec = spec.partition("#")
        fstype = f"fuse.{program}"
    options = flag_option_names(flags)
    given = [option for option in data.split(",") if option]
    if fstype.startswith("fuse."):
        keys = {option.partition("=")[0] for option in given}
        if "fsname" not in keys and not {",", "\\", '"'} & set(spec):
            given.append(f"fsname={spec}")
        if "subtype" not in keys:
            given.append(f"subtype={fstype.removeprefix('fuse.')}")
    return spec, fstype, ",".join(options + given)


class _LoopInfo64(ctypes.Structure):
    """struct loop_info64 of <linux/loop.h>."""

    _fields_ = (
        ("lo_device", ctypes.c_uint64),
        ("lo_inode", ctypes.c_uint64),
        ("lo_rdevice", ctypes.c_uint64),
        ("lo_offset", ctypes.c_uint64),
        ("lo_sizelimit", ctypes.c_uint64),
        ("lo_number", ctypes.c_uint32),
        ("lo_encrypt_type", ctypes.c_uint32),
        ("lo_encrypt_key_size", ctypes.c_uint32),
        ("lo_flags", ctypes.c_uint32),
        ("lo_file_name", ctypes.c_char * LO_NAME_SIZE),
        ("lo_crypt_name", ctypes.c_char * LO_NAME_SIZE),
        ("lo_encrypt_key", ctypes.c_char * 32),
        ("lo_init", ctypes.c_uint64 * 2),
    )


class _LoopConfig(ctypes.Structure):
    """struct loop_config of <linux/loop.h> (LOOP_CONFIGURE)."""

    _fields_ = (
        ("fd", ctypes.c_uint32),
        ("block_size", ctypes.c_uint32),
        ("info", _LoopInfo64),
        ("reserved", ctypes.c_uint64 * 8),
    )


# The kernel copies exactly these sizes; a layout slip would be silent otherwise.
assert ctypes.sizeof(_LoopInfo64) == 232 and ctypes.sizeof(_LoopConfig) == 304

# Words in mount(8)'s and helpers' messages (LC_ALL=C) and the errno they mean,
# checked in order after the strerror texts themselves.
_HELPER_PHRASES: Final = (
    ("unknown filesystem type", errno.ENODEV),
    ("does not exist", errno.ENOENT),
    ("not found", errno.ENOENT),
    ("already mounted", errno.EBUSY),
    ("busy", errno.EBUSY),
    ("permission denied", errno.EACCES),
    ("must be superuser", errno.EPERM),
    ("operation not permitted", errno.EPERM),
    ("timed out", errno.ETIMEDOUT),
    ("wrong fs type", errno.EINVAL),
    ("bad option", errno.EINVAL),
)
_HELPER_ERRNOS: Final = (
    errno.ENOENT, errno.ENOTDIR, errno.EACCES, errno.EPERM, errno.EBUSY, errno.ENODEV,
    errno.ETIMEDOUT, errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENOTCONN, errno.EINVAL,
    errno.EIO,
)


def helper_errno(message: str) -> int:
    """The errno a helper's message (run with LC_ALL=C) most likely reports; EIO if none."""
    text = message.lower()
    for code in _HELPER_ERRNOS:
        if os.strerror(code).lower() in text:
            return code
    for phrase, code in _HELPER_PHRASES:
        if phrase in text:
            return code
    return errno.EIO


def _encode(path: str | None) -> bytes | None:
    return None if path is None else os.fsencode(path)


class LinuxKernel:
    """The running kernel, through ctypes libc, the loop driver and mount(8).

    Every path it reads is injected: ``proc_root`` (mountinfo, filesystems,
    processes), ``sys_root`` (loop backing files), ``dev_root`` (loop-control
    and loop nodes), ``helper_dirs`` (where ``mount.TYPE`` helpers live),
    ``mount_program`` (mount(8), run with LC_ALL=C so its messages can be
    matched to an errno) and ``helper_timeout`` in seconds. ``mount_api``
    chooses the interface (``detect_mount_api()`` when None); tests run the
    legacy one on this kernel too, and ``use_statmount=False`` reads mounts
    back from mountinfo as kernels before 6.8 must.
    """

    def __init__(
        self,
        proc_root: str = "/proc",
        sys_root: str = "/sys",
        dev_root: str = "/dev",
        mount_program: str = "mount",
        helper_dirs: Sequence[str] = DEFAULT_HELPER_DIRS,
        helper_timeout: float = 120.0,
        mount_api: MountApi | None = None,
        use_statmount: bool = True,
    ) -> None:
        self.proc_root = proc_root
        self.mount_api: MountApi = mount_api or detect_mount_api()
        # statmount(2) (Linux 6.8), asked once whether it works here; tests turn
        # it off to run the path of kernels 5.12 to 6.7.
        self._statmount = use_statmount and mountapi.has_statmount()
        self._watch: tuple[int, select.poll, tuple[int, int | None]] | None = None
        self._watch_lock = threading.Lock()
        self._table_version = 0
        self._parser = MountinfoParser()
        self.sys_root = sys_root
        self.dev_root = dev_root
        self.mount_program = mount_program
        self.helper_dirs = tuple(helper_dirs)
        self.helper_timeout = helper_timeout
        # Helpers of different mount points run side by side (the engine locks
        # per mount point), and a helper's mount is found by comparing the
        # table before and after it: what the others are mounting, or made
        # since, is theirs, never a stray of this one's (_helper_result).
        self._helper_lock = threading.Lock()
        self._helpers_running: collections.Counter[str] = collections.Counter()
        self._helper_made: collections.deque[int] = collections.deque(
            maxlen=HELPER_MADE_MEMORY)
        self._selinux: bool | None = None

    @property
    def selinux_enabled(self) -> bool:
        # libselinux's is_selinux_enabled(): a selinuxfs mounted writable.
        # Asked once: SELinux is turned on or off only at boot.
        if self._selinux is None:
            self._selinux = any(record.fstype == "selinuxfs" and "ro" not in record.vfs_options
                                for record in self._table())
        return self._selinux

    # -- reading -----------------------------------------------------------

    def mount_table_version(self) -> int | None:
        # proc(5): mountinfo is pollable; POLLPRI|POLLERR once after each change
        # of the namespace's mount table since this descriptor's last poll
        # (fs/proc_namespace.c mounts_poll()). The watch belongs to one process
        # in one namespace: after fork() the open file (and its events) would
        # be shared with the parent, after unshare() it would watch the old
        # namespace; either way it is opened again.
        owner = (os.getpid(), _namespace_inode(self.proc_root))
        with self._watch_lock:
            if self._watch is not None and self._watch[2] != owner:
                os.close(self._watch[0])
                self._watch = None
            if self._watch is None:
                try:
                    fd = os.open(f"{self.proc_root}/self/mountinfo", os.O_RDONLY | os.O_CLOEXEC)
                except OSError:
                    return None
                poller = select.poll()
                poller.register(fd, select.POLLPRI | select.POLLERR)
                self._watch = (fd, poller, owner)
                self._table_version += 1
            elif any(events & (select.POLLPRI | select.POLLERR)
                     for _, events in self._watch[1].poll(0)):
                self._table_version += 1
            return self._table_version

    def read_mountinfo(self) -> str:
        # surrogateescape: paths are bytes to the kernel; keep non-UTF-8 names intact.
        path = f"{self.proc_root}/self/mountinfo"
        with open(path, encoding="utf-8", errors="surrogateescape") as stream:
            return stream.read()

    def _table(self) -> MountTable:
        """The mount table now, parsed afresh for its new lines only."""
        return MountTable(self._parser.parse(self.read_mountinfo()))

    def mount_at(self, target: str) -> MountRecord | None:
        if self._statmount:
            try:
                fd, _ = open_no_symlinks(target)
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                    return None  # no such directory: nothing can be mounted on it
                fd = -1  # a symlink on the way: the table compares paths as text
            if fd >= 0:
                try:
                    answer = mountapi.statx_fd(fd, mountapi.STATX_MNT_ID_UNIQUE)
                finally:
                    os.close(fd)
                if answer is not None and answer[0] & mountapi.STATX_MNT_ID_UNIQUE:
                    if not answer[1] & mountapi.STATX_ATTR_MOUNT_ROOT:
                        return None
                    record = mountapi.statmount(answer[2])
                    if record is not None:
                        return record if record.target == target else None
        return self._table().at(target)

    def loop_backing_file(self, device: str) -> str | None:
        name = os.path.basename(device)
        if os.path.dirname(device) != self.dev_root or not _LOOP_NAME.fullmatch(name):
            return None
        return self._sys_backing_file(name)

    def loop_devices(self) -> dict[str, str]:
        try:
            names = os.listdir(f"{self.sys_root}/block")
        except FileNotFoundError:
            return {}
        devices = {}
        for name in sorted(names, key=lambda n: (len(n), n)):
            if _LOOP_NAME.fullmatch(name):
                backing = self._sys_backing_file(name)
                if backing is not None:
                    devices[f"{self.dev_root}/{name}"] = backing
        return devices

    def processes(self, target: str) -> list[ProcessUse]:
        return busy_processes(target, self.proc_root)

    # -- mounting ----------------------------------------------------------

    def mount(
        self,
        source: str | Anchor | None,
        target: Target,
        fstype: str | None,
        flags: int,
        data: str = "",
        *,
        clear: int = 0,
        expect: int | None = None,
        attaching: Callable[[int], None] | None = None,
    ) -> MountRecord:
        if not self.selinux_enabled:
            data = without_selinux_options(data)  # before a mount, a remount or a helper
        if flags & MS_REMOUNT:
            with self._mount_root_of(target, expect) as root:
                return self._remount(root, flags, data)
        if flags & (MS_MOVE | MS_SHARED | MS_PRIVATE | MS_SLAVE | MS_UNBINDABLE):
            # A change of an existing mount: reached like a remount.
            with self._mount_root_of(target, expect) as root:
                self._mount2(_source_text(source), root, fstype, flags, data)
                return self._read_back_at(root)
        with _anchored(target, "mount") as anchor:
            if isinstance(target, Anchor) and mountapi.is_mount_root(anchor.fd):
                # The caller checked the path and found no mount; the directory
                # it opened is one now (a parent renamed in between): never stack.
                raise KernelError(errno.EBUSY, "mount", anchor.path, _source_text(source),
                                  fstype, f"{anchor.current_path()!r} is a mount point already")
            if flags & MS_BIND:
                return self._bind(source, anchor, flags, clear, attaching)
            if not isinstance(source, Anchor) and fstype is not None:
                if self.uses_helper(fstype):
                    return self._mount_with_helper(source, anchor, fstype, flags, data)
                if source is not None and source.startswith("/") and self._is_block(fstype):
                    return self._mount_local_source(source, anchor, fstype, flags, data,
                                                    attaching)
            if fstype is None:
                raise KernelError(errno.EINVAL, "mount", anchor.path, _source_text(source),
                                  None, "no file system type and not a bind mount")
            return self._new_mount(_source_text(source), anchor, fstype, flags, data,
                                   attaching=attaching)

    def unmount(
        self, target: str, flags: int = 0, *, expect: int | None = None, recursive: bool = False
    ) -> None:
        try:
            self._unmount_one(target, flags, expect)
            return
        except KernelError as exc:
            # EBUSY is also what mounts on it give: only then is the table read.
            if not recursive or exc.errno != errno.EBUSY:
                raise
            busy = exc
        table = self._table()
        top = table.by_id.get(expect) if expect is not None else table.at(target)
        if top is not None:
            below = table.descendants(top)
            # umount -R takes the submounts first and only then finds the top
            # busy: the caller would get an error and have lost them. A tree
            # a process uses is refused whole, before any change. (A use the
            # kernel keeps by itself, a loop device's backing file, or a bound
            # socket, is not seen: the deepest mounts still go first.)
            users = mount_users({top.mount_id, *(r.mount_id for r in below)}, self.proc_root)
            if users is None:  # Linux < 5.8: by path
                users = [use.pid for use in busy_processes(target, self.proc_root)]
            if users:
                raise busy
            if below:
                # An rbind of a shared tree (systemd makes / shared) has submounts
                # that are peers of the originals, and unmounting a peer unmounts
                # the original too: the tree becomes a slave first, as before
                # ``umount -R`` of a bind, so that nothing goes but its own copies
                # (through a descriptor of the checked mount, as a remount goes).
                self.mount(None, target, None, MS_REC | MS_SLAVE, expect=expect)
            for record in reversed(below):
                self._unmount_one(record.target, flags, record.mount_id)
        self._unmount_one(target, flags, expect)

    def _unmount_one(self, target: str, flags: int, expect: int | None) -> None:
        """umount2(2) of ``target`` through its parent directory's descriptor, reached
        without following a symlink, after checking it is mount ``expect``."""
        try:
            parent, name = open_no_symlinks(target, parent=True)
        except OSError as exc:
            raise KernelError(exc.errno or errno.ENOENT, "umount", target,
                              detail=exc.strerror) from exc
        try:
            if expect is not None:
                self._check_mount(parent, name, target, expect, "umount")
            path = f"/proc/self/fd/{parent}/{name}"
            if libc().umount2(os.fsencode(path), flags | UMOUNT_NOFOLLOW) != 0:
                raise KernelError(ctypes.get_errno(), "umount", target)
        finally:
            os.close(parent)

    def _check_mount(self, parent: int, name: str, target: str, expect: int, op: Op) -> None:
        try:
            fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
        except OSError as exc:
            raise KernelError(exc.errno or errno.ENOENT, op, target) from exc
        try:
            found = mountapi.mount_id(fd)
        finally:
            os.close(fd)
        if found is None:  # Linux < 5.8: the table says what is at the path
            record = self._table().at(target)
            found = record.mount_id if record is not None else None
        if found != expect:
            raise KernelError(errno.ESTALE, op, target,
                              detail=f"mount {expect} is no longer at {target!r} "
                                     f"(found {'nothing' if found is None else found})")

    @contextlib.contextmanager
    def _mount_root_of(self, target: Target, expect: int | None) -> Iterator[Anchor]:
        """An Anchor on the mount at ``target`` (walked without symlinks), which must
        be mount ``expect`` when given."""
        if isinstance(target, Anchor):
            yield target
            return
        try:
            parent, name = open_no_symlinks(target, parent=True)
        except OSError as exc:
            raise KernelError(exc.errno or errno.ENOENT, "mount", target,
                              detail=exc.strerror) from exc
        try:
            if expect is not None:
                self._check_mount(parent, name, target, expect, "mount")
            try:
                fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
            except OSError as exc:
                raise KernelError(exc.errno or errno.ENOENT, "mount", target) from exc
        finally:
            os.close(parent)
        with Anchor(fd, target) as root:
            yield root

    def uses_helper(self, fstype: str | None) -> bool:
        return needs_helper(fstype, self.helper_dirs)

    def same_file(self, first: str, second: str) -> bool:
        try:
            a, b = os.stat(first), os.stat(second)
        except OSError:
            return False
        return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)

    def find_mount(self, mount_id: int | None, unique_id: int | None) -> MountRecord | None:
        if unique_id is not None and self._statmount:
            record = mountapi.statmount(unique_id)
            if record is None or mount_id is None or record.mount_id == mount_id:
                return record
            return None
        if mount_id is None:
            return None
        return self._table().by_id.get(mount_id)

    def names_before_attaching(self, fstype: str | None) -> bool:
        # The name is the unique id (Linux 6.8): on 5.12 to 6.7 the new API
        # attaches a mount it cannot name first either.
        return (self.mount_api == "new" and not self.uses_helper(fstype)
                and mountapi.has_mount_ids(unique=True))

    @property
    def asks_by_unique_id(self) -> bool:
        return self._statmount

    def is_mount(self, mount_id: int, unique_id: int) -> bool | None:
        if not self._statmount:
            return None
        record = mountapi.statmount(unique_id)
        return record is not None and record.mount_id == mount_id

    def live_mount_ids(self) -> frozenset[int] | None:
        if not self._statmount:
            return None
        found = mountapi.listmount()
        return frozenset(found) if found is not None else None

    def mount_identity(self, target: str) -> tuple[int, int | None] | None:
        # Walked without symlinks: a parent swapped for one must not lend the
        # identity of another mount to a holder record.
        try:
            fd, _ = open_no_symlinks(target)
        except OSError:
            return None
        try:
            mount_id = mountapi.mount_id(fd)
            # A path inside a mount is not that mount's: only its root is.
            if mount_id is None or mountapi.is_mount_root(fd) is False:
                return None
            return mount_id, mountapi.unique_mount_id(fd)
        finally:
            os.close(fd)

    # -- internals ---------------------------------------------------------

    def _new_mount(
        self,
        source: str | None,
        anchor: Anchor,
        fstype: str,
        flags: int,
        data: str,
        *,
        shown_source: str | None = None,
        attaching: Callable[[int], None] | None = None,
    ) -> MountRecord:
        """A new superblock (or a shared one of the same device) on ``anchor``."""
        if self.mount_api == "legacy":
            self._mount2(source, anchor, fstype, flags, data, shown_source=shown_source)
            return self._read_back_at(anchor)
        context = self._call(mountapi.fsopen, fstype, anchor=anchor, source=shown_source or source,
                             fstype=fstype)
        try:
            try:
                if source is not None:
                    mountapi.fsconfig(context, "source", source)
                # The superblock flags as mount(2) sets them from the same MS_*
                # flags: a read-only mount is a read-only superblock too.
                words = [(word, None) for flag, word, _ in SB_FLAG_WORDS if flags & flag]
                _set_parameters(context, [*words, *split_data(data)])
                mountapi.fsconfig_command(context, mountapi.FSCONFIG_CMD_CREATE)
                tree = mountapi.fsmount(context, attributes(flags, atime_always=True).set)
            except OSError as exc:
                raise self._context_error(exc, context, anchor, shown_source or source, fstype,
                                          loop=source if shown_source else None) from exc
        finally:
            os.close(context)
        return self._attach(tree, anchor, shown_source or source, fstype,
                            flags if _statfs_stays_here(fstype) else 0,
                            mandlock=bool(flags & MS_MANDLOCK), attaching=attaching)

    def _bind(
        self, source: str | Anchor | None, anchor: Anchor, flags: int, clear: int,
        attaching: Callable[[int], None] | None = None,
    ) -> MountRecord:
        shown = _source_text(source)
        if source is None or shown == "":
            raise KernelError(errno.EINVAL, "mount", anchor.path, shown, None,
                              "a bind mount needs a source")
        recursive = bool(flags & MS_REC)
        with _anchored(source, "mount", role="bind source") as origin:
            # A directory binds onto a directory, a file onto a file; mount(2)
            # says ENOTDIR, move_mount(2) a vaguer EINVAL.
            if _is_directory(origin.fd) != _is_directory(anchor.fd):
                raise KernelError(errno.ENOTDIR, "mount", anchor.path, origin.path, None,
                                  "a bind mount joins a directory to a directory, or a file "
                                  "to a file")
            if self.mount_api == "legacy":
                return self._bind_legacy(origin, anchor, flags, clear)
            tree = self._call(mountapi.open_tree, b"", anchor=anchor, source=origin.path,
                              dirfd=origin.fd, clone=True, recursive=recursive, empty_path=True)
        # The attributes are set while the copy is detached: nobody ever sees
        # it with the flags of its origin (mount_setattr(2)). An rbind's copies
        # of the submounts take what it sets (a restriction, an atime mode),
        # never what it lifts, which mount(8) asks of the top alone: an rbind of
        # a tree must not make its noexec or nodev parts exec or dev.
        change = attributes(flags, clear)
        lifted = mountapi.Attributes(0, change.clear & ~mountapi.MOUNT_ATTR__ATIME)
        try:
            if recursive and lifted:
                change = mountapi.Attributes(change.set, change.clear & mountapi.MOUNT_ATTR__ATIME)
                if change:
                    self._call(mountapi.mount_setattr, tree, change, recursive=True,
                               anchor=anchor, source=origin.path)
                change = lifted
                recursive = False
            if change:
                self._call(mountapi.mount_setattr, tree, change, recursive=recursive,
                           anchor=anchor, source=origin.path)
        except KernelError:
            os.close(tree)
            raise
        # A bind is looked at before the move only where statfs(2) stays in the
        # kernel (``_statfs_stays_here``): of a FUSE mount it asks the daemon,
        # which failed the request once dead and hung it while stopped.
        checked = (flags if flags & _RESTRICTION_FLAGS
                   and _statfs_stays_here(self._fstype_of(origin.fd)) else 0)
        return self._attach(tree, anchor, origin.path, None, checked, attaching=attaching)

    def _attach(
        self, tree: int, anchor: Anchor, source: str | None, fstype: str | None, flags: int,
        *, mandlock: bool = False, attaching: Callable[[int], None] | None = None,
    ) -> MountRecord:
        """move_mount(2) the detached ``tree`` onto ``anchor`` and read it back.

        The restrictions ``flags`` ask for (``ro``, ``nosuid``, ``nodev``,
        ``noexec``, ``nosymfollow``) are looked at on the detached tree first:
        one that did not take is refused before anyone can reach the mount
        (the read-back after the move checks everything, but the mount was
        reachable until its rollback). ``attaching`` hears the tree's unique
        id first (see Kernel.mount): closing a tree that was never attached
        frees it, so a crash before the move leaves nothing, and one after it
        leaves a mount found by that id."""
        try:
            missing = _restrictions_missing(tree, flags)
            if missing:
                raise KernelError(errno.EPERM, "mount", anchor.path, source, fstype,
                                  f"the new mount came up without {', '.join(missing)} (asked "
                                  "for): not attached")
            if attaching is not None:
                unique = mountapi.unique_mount_id(tree)
                if unique is not None:
                    attaching(unique)
            self._call(mountapi.move_mount, tree, anchor.fd, anchor=anchor, source=source,
                       fstype=fstype)
            return self._read_back(tree, anchor, mandlock=mandlock)
        finally:
            os.close(tree)

    def _fstype_of(self, fd: int) -> str | None:
        """The type of the file system ``fd`` is on, from its mount (statmount(2),
        no call into the file system); None where that cannot be told."""
        unique = mountapi.unique_mount_id(fd) if self._statmount else None
        record = mountapi.statmount(unique) if unique is not None else None
        return record.fstype if record is not None else None

    def _bind_legacy(
        self, origin: Anchor, anchor: Anchor, flags: int, clear: int
    ) -> MountRecord:
        self._mount2(origin.proc_path, anchor, None, MS_BIND | (flags & MS_REC), "",
                     shown_source=origin.path)
        table = self._table()
        record = self._read_back_at(anchor, table)
        # An rbind's copies of the submounts get what it sets too, as on the
        # new API, parents first; what it lifts, the top alone.
        copies = [record, *table.descendants(record)] if flags & MS_REC else [record]
        try:
            for copy in copies:
                live = _vfs_flags(copy.vfs_options)
                lifted = clear if copy is record else 0
                wanted = (live & ~lifted & ~(ATIME_FLAGS if flags & ATIME_FLAGS else 0)) | (
                    flags & PER_MOUNT_FLAGS)
                if wanted != live:
                    with self._mount_root_of(copy.target, copy.mount_id) as root:
                        # MS_REMOUNT|MS_BIND sets every per-mount flag: the full set.
                        self._mount2(None, root, None, MS_REMOUNT | MS_BIND | wanted, "")
        except KernelError:
            with contextlib.suppress(KernelError):
                self.unmount(record.target, MNT_DETACH, expect=record.mount_id)
            raise
        return self._read_back_at(anchor)

    def _remount(self, anchor: Anchor, flags: int, data: str) -> MountRecord:
        is_root = mountapi.is_mount_root(anchor.fd)
        if is_root is False:
            raise KernelError(errno.EINVAL, "mount", anchor.path,
                              detail=f"{os.strerror(errno.EINVAL)} (not a mount point)")
        if self.mount_api == "legacy":
            self._mount2(None, anchor, None, flags, "" if flags & MS_BIND else data)
            return self._read_back_at(anchor)
        if not flags & MS_BIND:
            context = self._call(mountapi.fspick, anchor.fd, anchor=anchor)
            try:
                try:
                    # As MS_REMOUNT: every superblock flag a remount may change
                    # is set or cleared; the others (dirsync) are left as they are.
                    words = [(word if flags & flag else clear_word, None)
                             for flag, word, clear_word in SB_FLAG_WORDS
                             if flag & MS_RMT_MASK and (flags & flag or clear_word is not None)]
                    _set_parameters(context, [(w, v) for w, v in words if w is not None]
                                    + split_data(data))
                    mountapi.fsconfig_command(context, mountapi.FSCONFIG_CMD_RECONFIGURE)
                except OSError as exc:
                    raise self._context_error(exc, context, anchor, None, None) from exc
            finally:
                os.close(context)
        # As MS_REMOUNT: every per-mount flag is set or cleared, the atime
        # mode only when asked (do_reconfigure_mnt(), mnt_flags & MNT_ATIME_MASK).
        change = attributes(flags, PER_MOUNT_FLAGS & ~flags & ~ATIME_FLAGS)
        self._call(mountapi.mount_setattr, anchor.fd, change, anchor=anchor)
        return self._read_back(anchor.fd, anchor, mandlock=True)

    def _call(self, function: Callable[..., _R], *args: object, anchor: Anchor,
              source: str | None = None, fstype: str | None = None,
              **kwargs: object) -> _R:
        try:
            return function(*args, **kwargs)
        except OSError as exc:
            code = exc.errno or errno.EIO
            raise KernelError(code, "mount", anchor.path, source, fstype) from exc

    def _context_error(
        self, exc: OSError, context: int, anchor: Anchor, source: str | None,
        fstype: str | None, loop: str | None = None,
    ) -> KernelError:
        """The failure of a file system context, in the kernel's own words where it
        logged any ("tmpfs: Unknown parameter 'bogusopt'")."""
        code = exc.errno or errno.EIO
        detail = os.strerror(code)
        messages = mountapi.context_messages(context)
        if messages:
            detail = f"{detail}: {'; '.join(messages)}"
        parameter = getattr(exc, "parameter", None)
        if parameter is not None and not any(parameter.split("=")[0] in m for m in messages):
            detail = f"{detail} (the kernel refused {parameter!r})"
        if loop is not None:
            detail = f"{detail} (through loop device {loop})"
        return KernelError(code, "mount", anchor.path, source, fstype, detail)

    def _read_back(self, fd: int, anchor: Anchor, *, mandlock: bool = False) -> MountRecord:
        """The mount ``fd`` is on, as the kernel shows it: statmount(2) by its unique id
        where the kernel has it (one call), else its mountinfo line by id.
        statmount's superblock flags omit "mand": with ``mandlock`` the line is read."""
        unique = mountapi.unique_mount_id(fd)
        if unique is not None and self._statmount and not mandlock:
            record = mountapi.statmount(unique)
            if record is not None:
                return record
            # Gone already (``umount -l`` of it meanwhile): the table says what
            # is there now. It says nothing of the kernel (has_statmount).
        mount_id = mountapi.mount_id(fd)
        table = self._table()
        if mount_id is not None and mount_id in table.by_id:
            return table.by_id[mount_id]
        return self._read_back_at(anchor, table)

    def _read_back_at(self, anchor: Anchor, table: MountTable | None = None) -> MountRecord:
        """The topmost mount on the directory ``anchor`` refers to (kernels without
        STATX_MNT_ID, and mount(2) calls, which give no handle on the new mount)."""
        table = table or self._table()
        path = anchor.current_path()
        record = table.at(path)
        if record is None:
            raise KernelError(errno.ENOENT, "mount", anchor.path,
                              detail=f"no mount at {path!r} after mounting")
        return record

    def _mount2(
        self,
        source: str | None,
        target: Anchor,
        fstype: str | None,
        flags: int,
        data: str,
        *,
        shown_source: str | None = None,
    ) -> None:
        """mount(2) onto the descriptor of ``target`` (its /proc/self/fd magic link)."""
        result = libc().mount(
            _encode(source), os.fsencode(target.proc_path), _encode(fstype), flags,
            os.fsencode(data) if data else None,
        )
        if result != 0:
            code = ctypes.get_errno()
            detail = os.strerror(code)
            shown = shown_source or source
            if shown_source is not None and source is not None and source.startswith("/dev/"):
                detail = f"{detail} (through loop device {source})"
            raise KernelError(code, "mount", target.path, shown, fstype, detail)

    def _is_block(self, fstype: str) -> bool:
        try:
            with open(f"{self.proc_root}/filesystems", encoding="ascii") as stream:
                return is_block_fstype(fstype, stream.read().splitlines())
        except OSError:
            return is_block_fstype(fstype)

    def _sys_backing_file(self, name: str) -> str | None:
        try:
            with open(
                f"{self.sys_root}/block/{name}/loop/backing_file",
                encoding="utf-8", errors="surrogateescape",
            ) as stream:
                return stream.read().rstrip("\n")
        except (FileNotFoundError, NotADirectoryError):
            return None

    def _mount_local_source(
        self, source: str, anchor: Anchor, fstype: str, flags: int, data: str,
        attaching: Callable[[int], None] | None,
    ) -> MountRecord:
        """Mount the image file or block device ``source`` names, opened once
        (``open_resolved``): what decides between a loop device and the device
        itself is the file that is then attached or named, so a name a user
        swaps meanwhile (an image for a link to root's disk) cannot be mounted
        (an adversarial review mounted root's device for a user's image)."""
        try:
            found = open_resolved(source)
        except OSError as exc:
            raise KernelError(exc.errno or errno.ENOENT, "mount", anchor.path, source, fstype,
                              exc.strerror if exc.filename == source else None) from exc
        try:
            mode = os.fstat(found).st_mode
            if stat.S_ISREG(mode):
                # As mount(8): the loop device is read-only exactly when the
                # mount is. A squashfs on a writable loop device is still
                # read-only (the file system marks its superblock so).
                read_only = bool(flags & MS_RDONLY)
                try:
                    backing = os.open(f"/proc/self/fd/{found}",
                                      (os.O_RDONLY if read_only else os.O_RDWR) | os.O_CLOEXEC)
                except OSError as exc:
                    raise KernelError(exc.errno or errno.EIO, "loop", anchor.path, source,
                                      fstype) from exc
                return self._mount_image(source, backing, anchor, fstype, flags, data,
                                         attaching)
            if not stat.S_ISBLK(mode):
                raise KernelError(errno.ENOTBLK, "mount", anchor.path, source, fstype,
                                  f"{source!r} is neither a block device nor an image file")
            return self._new_mount(_stable_device_name(found, source, anchor.path, fstype),
                                   anchor, fstype, flags, data, attaching=attaching)
        finally:
            os.close(found)

    def _mount_image(
        self, image: str, backing_fd: int, anchor: Anchor, fstype: str, flags: int, data: str,
        attaching: Callable[[int], None] | None = None,
    ) -> MountRecord:
        """Mount the image open as ``backing_fd`` (taken) through a loop device."""
        read_only = bool(flags & MS_RDONLY)
        device, loop_fd, attached = self._loop_for(image, backing_fd, anchor.path, fstype,
                                                   read_only)
        try:
            return self._new_mount(device, anchor, fstype, flags, data, shown_source=image,
                                   attaching=attaching)
        except Exception:  # the mount failed, or its note could not be written
            if attached:
                # Autoclear would free it when loop_fd closes; clear explicitly
                # so the device is free when this call returns.
                with contextlib.suppress(OSError):
                    fcntl.ioctl(loop_fd, LOOP_CLR_FD)
            raise
        finally:
            os.close(loop_fd)

    def _loop_for(
        self, image: str, backing_fd: int, target: str, fstype: str, read_only: bool
    ) -> tuple[str, int, bool]:
        """Return (device, open fd on it, attached by us) for the image open as
        ``backing_fd`` (taken: closed or attached).

        An image already attached at offset 0 is reused, as mount(8) does
        (libmount's loopcxt_find_overlap): a second loop device on the same
        file would give two superblocks of one file system, which corrupts it.
        The kernel then shares the superblock and refuses a mount that would
        change its read-only state (EBUSY) or write through a read-only
        device (EACCES). A device is the image's when the kernel says its
        backing file is the very file opened (device and inode, from
        LOOP_GET_STATUS64, as libmount compares them): never by the name
        sysfs shows, which a user can make a link to another file once his
        own backing file is deleted ("x.img (deleted)", an adversarial review
        got root that way).
        """
        try:
            image_stat = os.fstat(backing_fd)
            for device in self.loop_devices():
                try:
                    shared = os.open(device, os.O_RDONLY | os.O_CLOEXEC)
                except OSError:
                    continue  # detached meanwhile (autoclear): attach anew below
                if _loop_backs(shared, image_stat):
                    os.close(backing_fd)
                    return device, shared, False
                os.close(shared)
        except BaseException:
            os.close(backing_fd)
            raise
        return (*self._attach_loop(backing_fd, image, target, fstype, read_only), True)

    def _attach_loop(
        self, backing_fd: int, image: str, target: str, fstype: str, read_only: bool
    ) -> tuple[str, int]:
        """Attach the open ``backing_fd`` (``image``) to a free loop device; closes it."""
        try:
            control = os.open(f"{self.dev_root}/loop-control", os.O_RDWR | os.O_CLOEXEC)
        except OSError as exc:
            os.close(backing_fd)
            raise KernelError(
                exc.errno or errno.EIO, "loop", target, image, fstype,
                f"cannot open {self.dev_root}/loop-control: {exc.strerror}",
            ) from exc
        try:
            for _ in range(_LOOP_ATTEMPTS):
                number = fcntl.ioctl(control, LOOP_CTL_GET_FREE)
                device = f"{self.dev_root}/loop{number}"
                try:
                    loop_fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
                except OSError as exc:
                    raise KernelError(
                        exc.errno or errno.EIO, "loop", target, image, fstype,
                        f"cannot open {device}: {exc.strerror}",
                    ) from exc
                try:
                    _configure_loop(loop_fd, backing_fd, image, read_only)
                except OSError as exc:
                    os.close(loop_fd)
                    if exc.errno == errno.EBUSY:
                        continue  # another process took this device first
                    raise KernelError(
                        exc.errno or errno.EIO, "loop", target, image, fstype,
                        f"cannot attach {device}: {exc.strerror}",
                    ) from exc
                return device, loop_fd
            raise KernelError(
                errno.EBUSY, "loop", target, image, fstype,
                f"no free loop device after {_LOOP_ATTEMPTS} attempts",
            )
        finally:
            os.close(control)
            os.close(backing_fd)

    def _mount_with_helper(
        self, source: str | None, anchor: Anchor, fstype: str, flags: int, data: str
    ) -> MountRecord:
        target = anchor.current_path()
        problem = helper_problem(source or "none", target, fstype, data)
        if problem is not None:
            raise KernelError(errno.EINVAL, "helper", target, source, fstype, problem)
        unstable = helper_unstable(source or "none", target, fstype)
        if unstable is not None:  # the engine refused it already; a race since
            raise KernelError(errno.EPERM, "helper", target, source, fstype, unstable)
        spec, spec_type, options = helper_mount_spec(source, fstype, flags, data)
        argv = helper_argv(self.mount_program, spec, target, spec_type, options)
        # The helper takes a path, not the descriptor: what it mounts is found
        # by comparing the table before and after (see _helper_result).
        before = {r.mount_id for r in self._table()}
        with self._helper_lock:
            self._helpers_running[target] += 1
        record: MountRecord | None = None
        try:
            record = self._run_helper(argv, source, anchor, target, spec_type, before)
            return record
        finally:
            # In one step: a mount is always either being made or made.
            with self._helper_lock:
                self._helpers_running[target] -= 1
                if not self._helpers_running[target]:
                    del self._helpers_running[target]
                if record is not None:
                    self._helper_made.append(record.mount_id)

    def _run_helper(self, argv: list[str], source: str | None, anchor: Anchor, target: str,
                    spec_type: str, before: set[int]) -> MountRecord:
        environment = {**os.environ, "LC_ALL": "C"}
        # stderr goes to a file, not a pipe: a FUSE daemon forked by the helper
        # may keep a pipe open long after the helper itself has exited.
        with tempfile.TemporaryFile() as errors:
            try:
                # A session (and process group) of its own: on timeout, mount(8),
                # the mount.TYPE helper it runs and their children are killed
                # together; one that leaves the group (a daemonizing FUSE
                # server) escapes, as it would any supervisor.
                process = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errors,
                    env=environment, start_new_session=True,
                )
            except OSError as exc:
                raise KernelError(
                    exc.errno or errno.ENOENT, "helper", target, source, spec_type,
                    f"cannot run {argv[0]}: {exc.strerror}",
                ) from exc
            try:
                returncode = process.wait(timeout=self.helper_timeout)
            except subprocess.TimeoutExpired as exc:
                # Killing mount(8) alone left the helper running: it could
                # mount later, unrecorded, under the next request's feet.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                late = self._take_back_late_mount(anchor, before, source, spec_type)
                raise KernelError(
                    errno.ETIMEDOUT, "helper", target, source, spec_type,
                    f"{argv[0]} did not finish within {self.helper_timeout:g} s; it was "
                    f"killed{late}",
                ) from exc
            errors.seek(0)
            # One line: mount(8) indents a second line ("dmesg(1) may have more...").
            message = " ".join(errors.read().decode("utf-8", "replace").split())
        if returncode != 0:
            detail = message or f"{argv[0]} exited with status {returncode}"
            raise KernelError(
                helper_errno(message), "helper", target, source, spec_type, detail
            )
        return self._helper_result(anchor, target, before, source, spec_type)

    def _take_back_late_mount(self, anchor: Anchor, before: set[int], source: str | None,
                              fstype: str) -> str:
        """Unmount what a killed helper mounted on ``anchor`` before it died; what was
        done, for the error message. Only a mount of the source or type it was
        asked for is the helper's: another one that appeared meanwhile (an
        administrator's, an automount) is left alone, and said."""
        record = self._table().at(anchor.current_path())
        if record is None or record.mount_id in before:
            return ""
        if record.source != source and record.fstype != fstype:
            return (f"; a mount of {record.source!r} ({record.fstype}) that appeared on "
                    f"{record.target!r} meanwhile is not the helper's and was left alone")
        try:
            self.unmount(record.target, MNT_DETACH, expect=record.mount_id)
        except KernelError as exc:
            log.error("could not take back the killed helper's mount on %s: %s",
                      record.target, exc)
            return f"; the mount it made on {record.target!r} could not be taken back: {exc}"
        return " and the mount it had made was taken back"

    def _helper_result(
        self, anchor: Anchor, target: str, before: set[int], source: str | None, fstype: str
    ) -> MountRecord:
        """The mount the helper made on ``anchor`` (given to it as ``target``); if it
        mounted anywhere else (the path was swapped while it ran), what it made
        there is taken back, but never what other helpers are making or made."""
        table = self._table()
        path = anchor.current_path()
        record = table.at(path)
        if record is not None and record.mount_id not in before:
            return record
        with self._helper_lock:
            others = set(self._helper_made)
            running = set(self._helpers_running) - {target}
        made = [r for r in table if r.mount_id not in before and r.fstype == fstype
                and r.mount_id not in others and r.target not in running]
        for stray in reversed(made):
            try:
                self.unmount(stray.target, MNT_DETACH, expect=stray.mount_id)
            except KernelError as exc:
                log.error("could not take back the helper's mount on %s: %s", stray.target, exc)
        where = ", ".join(repr(r.target) for r in made) or "nowhere"
        raise KernelError(errno.ESTALE, "helper", path, source, fstype,
                          f"mount(8) reported success but mounted on {where}, not on {path!r}"
                          + (" (taken back)" if made else ""))


def helper_problem(spec: str, target: str | None, fstype: str, data: str = "") -> str | None:
    """Why mount(8) must not be run for this request, or None.

    A source or mount point starting with ``-`` would be read as an option
    by helpers that parse their own arguments without ``--`` (mount.fuse,
    mount.nfs). The mount.fuse family (types ``fuse``, ``fuse3``,
    ``fuseblk``, with or without ``.PROG``) runs, as root, the program the
    type or a ``PROG#`` source prefix names, looked up in PATH, with the
    source as its argument (mount.fuse(8)): only known FUSE file systems
    (FUSE_PROGRAMS) are accepted, without the options that make them run a
    command of their own (sshfs ``ssh_command=``). Any other helper type
    gets no ``#`` in its source, which a helper that is mount.fuse under
    another name would read the same way.
    """
    for role, value in (("source", spec), ("mount point", target)):
        if value and value.startswith("-"):
            return f"{role} {value!r} starts with '-': a mount helper would read it as an option"
    family = _FUSE_TYPE.fullmatch(fstype)
    if family is None:
        if "#" in spec:
            return (f"source {spec!r} contains '#', which mount.fuse reads as a program to run "
                    "(PROG#SOURCE); only FUSE types may name one")
        return None
    programs = [family.group(2)] if family.group(2) is not None else []
    if "#" in spec:
        programs.append(spec.partition("#")[0])
    for program in programs:
        if program not in FUSE_PROGRAMS:
            return (f"FUSE program {program!r} is not a FUSE file system lmi-mount knows "
                    f"(mount.fuse would run it as root): one of "
                    f"{', '.join(sorted(FUSE_PROGRAMS))}")
    for key, _ in split_data(data):
        if key in FUSE_COMMAND_OPTIONS:
            return f"option {key!r} makes a FUSE file system run a command of its choice as root"
    return None


def helper_unstable(spec: str, target: str, fstype: str) -> str | None:
    """Why the names a mount helper would be given could lead elsewhere, or None.

    mount(8) and the helper take names, not the descriptors lmi-mount checked:
    a name someone but root can change (a user's directory on the way) could
    be swapped for a link meanwhile, and the helper would mount there, or
    mount his file (adversarial reviews: nobody's directory over a root one,
    root's 0600 image read through squashfuse, also spelled ``PROG#SOURCE``).
    So the mount point and a source path (after ``PROG#``) must be names
    only root may change (``unstable_path``), and a FUSE source that is a
    file must be named by its absolute path (a relative one is looked up
    from the daemon's working directory)."""
    source = spec.partition("#")[2] if "#" in spec else spec
    if (_FUSE_TYPE.fullmatch(fstype) and source and not source.startswith("/")
            and ":" not in source and source != "none"):
        return f"source {source!r} is a relative path: name it by its absolute path"
    for role, name in (("mount point", target), ("source", source)):
        if name.startswith("/"):
            unstable = unstable_path(name)
            if unstable is not None:
                return (f"a mount helper is given the {role} by name, and {unstable}: helpers "
                        f"(FUSE, NFS, CIFS) mount only on, and from, names only root may change")
    return None


def helper_argv(program: str, spec: str, target: str, fstype: str, options: str) -> list[str]:
    """mount(8)'s command line: ``--`` ends its options, so a spec or mount point
    that starts with ``-`` can never be read as one (``-V``, ``--fstab=...``);
    what ``helper_problem`` refuses never gets this far."""
    problem = helper_problem(spec, target, fstype)
    if problem is not None:
        raise KernelError(errno.EINVAL, "helper", target, spec, fstype, problem)
    argv = [program, "-t", fstype]
    if options:
        argv += ["-o", options]
    return [*argv, "--", spec, target]


def without_selinux_options(data: str) -> str:
    """mount(2) ``data`` without the SELinux options, as mount(8) gives it where
    SELinux is not enabled."""
    if "context" not in data and "seclabel" not in data:
        return data
    return ",".join(option for option in nonempty_options(data) if not is_selinux_option(option))


def split_data(data: str) -> list[tuple[str, str | None]]:
    """mount(2) data as fsconfig(2) parameters: (key, value or None for a flag).

    The quotes around a value are taken off: mount(2) hands the LSM options
    of its data to the LSM, which takes them off itself (security/selinux/
    hooks.c), but fsconfig(2) passes the value as it is, and the LSM refuses
    a quoted context (containerd met it moving to fsconfig).
    """
    parameters: list[tuple[str, str | None]] = []
    for option in nonempty_options(data):
        key, sep, value = option.partition("=")
        parameters.append((key, unquoted(value) if sep else None))
    return parameters


#: The restrictions statfs(2) reports in f_flag (fs/statfs.c flags_by_mnt):
#: MS_* flag, ST_* flag, mount(8)'s word. ST_NOSYMFOLLOW is Linux 5.10's.
_RESTRICTIONS: Final = ((MS_RDONLY, os.ST_RDONLY, "ro"), (MS_NOSUID, os.ST_NOSUID, "nosuid"),
                        (MS_NODEV, os.ST_NODEV, "nodev"), (MS_NOEXEC, os.ST_NOEXEC, "noexec"),
                        (MS_NOSYMFOLLOW, 0x2000, "nosymfollow"))
_RESTRICTION_FLAGS: Final = MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_NOSYMFOLLOW


#: File systems whose statfs(2) goes to a daemon or a server, or may (an
#: overlay's goes to its upper layer): their detached mounts are not looked at.
_STATFS_ELSEWHERE: Final = frozenset(("nfs", "nfs4", "cifs", "smb3", "ceph", "9p", "afs",
                                      "overlay", "virtiofs"))


def _statfs_stays_here(fstype: str | None) -> bool:
    """Whether fstatfs(2) of a mount of ``fstype`` stays in the kernel (not a
    FUSE type, ``fuse.*`` and ``fuseblk``, nor _STATFS_ELSEWHERE)."""
    return (fstype is not None and fstype not in _STATFS_ELSEWHERE
            and not fstype.startswith("fuse"))


def _restrictions_missing(tree: int, flags: int) -> list[str]:
    """The restrictions ``flags`` ask for that the mount ``tree`` lacks, by
    fstatfs(2) of its descriptor (an O_PATH one, which fstatfs takes since
    Linux 3.12); none where fstatfs fails (the read-back after the move
    checks every option)."""
    asked = [(st, word) for ms, st, word in _RESTRICTIONS if flags & ms]
    if not asked:
        return []
    try:
        shown = os.fstatvfs(tree).f_flag
    except OSError as exc:
        log.debug("the detached mount could not be looked at: %s", exc)
        return []
    return [word for st, word in asked if not shown & st]


def _vfs_flags(words: Iterable[str]) -> int:
    """MS_* per-mount flags of mountinfo's per-mount option words (no atime word
    is strictatime)."""
    flags = 0
    for word in words:
        flags |= _FLAG_OF_WORD.get(word, 0) & PER_MOUNT_FLAGS
    if not flags & (MS_NOATIME | MS_RELATIME):
        flags |= MS_STRICTATIME
    return flags


def _set_parameters(context: int, parameters: Iterable[tuple[str, str | None]]) -> None:
    """fsconfig(2) each parameter; a refusal carries the parameter it was about."""
    for key, value in parameters:
        try:
            mountapi.fsconfig(context, key, value)
        except OSError as exc:
            exc.parameter = key if value is None else f"{key}={value}"  # type: ignore[attr-defined]
            raise


def _is_directory(fd: int) -> bool:
    return stat.S_ISDIR(os.fstat(fd).st_mode)


def _source_text(source: str | Anchor | None) -> str | None:
    return source.path if isinstance(source, Anchor) else source


@contextlib.contextmanager
def _anchored(
    where: Target | None, op: Op, *, role: str = "mount point"
) -> Iterator[Anchor]:
    """``where`` as an Anchor: the caller's own (left open), or opened here and closed.

    A path given as text is walked without following any symlink: callers
    that follow the symlinks a user wrote open an Anchor themselves (the
    engine does, once); the texts the engine passes come from mountinfo and
    its own records, where a symlink can only be one swapped in meanwhile.
    """
    if isinstance(where, Anchor):
        yield where
        return
    path = where or ""
    try:
        fd, _ = open_no_symlinks(path)
    except OSError as exc:
        raise KernelError(exc.errno or errno.ENOENT, op, path,
                          detail=f"{role} {path!r}: {exc.strerror}") from exc
    mode = os.fstat(fd).st_mode
    if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
        os.close(fd)
        raise KernelError(errno.ENOTDIR, op, path,
                          detail=f"{role} {path!r} is not a directory or a regular file")
    anchor = Anchor(fd, path, is_file=stat.S_ISREG(mode))
    with anchor:
        yield anchor


def _stable_device_name(fd: int, source: str, target: str, fstype: str) -> str:
    """The name of the block device open as ``fd`` that the kernel may be given:
    mount(2) and fsconfig(2) take a device by name and look it up again, so
    the name must be one no user can change, in a directory root owns that
    no one else may write (``/dev``); KernelError otherwise."""
    name = os.readlink(f"/proc/self/fd/{fd}")
    try:
        parent, entry = open_no_symlinks(name, parent=True)
    except OSError as exc:
        raise KernelError(exc.errno or errno.EINVAL, "mount", target, source, fstype,
                          f"device {name!r} cannot be named safely: {exc.strerror}") from exc
    try:
        directory = os.fstat(parent)
        named = os.stat(entry, dir_fd=parent, follow_symlinks=False)
    finally:
        os.close(parent)
    opened = os.fstat(fd)
    if directory.st_uid != 0 or directory.st_mode & 0o022 or \
            (named.st_dev, named.st_ino) != (opened.st_dev, opened.st_ino):
        raise KernelError(errno.EPERM, "mount", target, source, fstype,
                          f"device {name!r} is in a directory others may change: the kernel "
                          "would look the name up again (name the device in /dev)")
    return name


def _loop_backs(loop_fd: int, image: os.stat_result) -> bool:
    """Whether the loop device open as ``loop_fd`` has ``image`` attached at offset
    0, as the kernel records its backing file (LOOP_GET_STATUS64)."""
    info = _LoopInfo64()
    try:
        fcntl.ioctl(loop_fd, LOOP_GET_STATUS64, info)
    except OSError:
        return False  # ENXIO: not attached (any more)
    return (info.lo_offset == 0 and info.lo_inode == image.st_ino
            and (os.major(info.lo_device), os.minor(info.lo_device))
            == (os.major(image.st_dev), os.minor(image.st_dev)))


def _configure_loop(loop_fd: int, backing_fd: int, image: str, read_only: bool) -> None:
    """Attach ``backing_fd`` to the loop device with autoclear (and read-only).

    LOOP_CONFIGURE (Linux 5.8) does it atomically; older kernels answer
    EINVAL or ENOTTY, and get LOOP_SET_FD then LOOP_SET_STATUS64, whose
    read-only state comes from the mode ``backing_fd`` was opened with.
    """
    name = os.fsencode(image)[: LO_NAME_SIZE - 1]
    lo_flags = LO_FLAGS_AUTOCLEAR | (LO_FLAGS_READ_ONLY if read_only else 0)
    config = _LoopConfig(fd=backing_fd)
    config.info.lo_flags = lo_flags
    config.info.lo_file_name = name
    try:
        fcntl.ioctl(loop_fd, LOOP_CONFIGURE, bytes(config))
        return
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTTY):
            raise
    fcntl.ioctl(loop_fd, LOOP_SET_FD, backing_fd)
    info = _LoopInfo64(lo_flags=LO_FLAGS_AUTOCLEAR)
    info.lo_file_name = name
    try:
        fcntl.ioctl(loop_fd, LOOP_SET_STATUS64, bytes(info))
    except OSError:
        with contextlib.suppress(OSError):
            fcntl.ioctl(loop_fd, LOOP_CLR_FD)
        raise
