"""The new mount API (Linux 5.2+) and statmount(2) through ctypes, one call each.

Owns: the system call numbers and flag values of ``open_tree``,
``move_mount``, ``fsopen``, ``fsconfig``, ``fsmount``, ``fspick``,
``mount_setattr`` (5.12) and ``statmount`` (6.8); the translation of MS_*
per-mount flags into MOUNT_ATTR_* attributes; the file system context's
message log (the kernel's own words for a failed ``fsconfig``); and
``statmount``'s reply as a ``MountRecord``, in mountinfo's spelling, so one
comparison serves both sources.

The numbers come from the kernel's unified syscall table
(``scripts/syscall.tbl``): these calls were added after the table was
unified, so they are the same on every architecture except alpha, which
offsets them by 110 (``arch/alpha/kernel/syscalls/syscall.tbl``).

Must not know: what is mounted where, holders, fstab, options beyond flags.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import platform
import struct
import sys
from dataclasses import dataclass
from typing import Final

from lmi_mount.linux.namespace import libc
from lmi_mount.mounts.escaping import nonempty_options, unescape_field
from lmi_mount.mounts.flags import (
    MS_DIRSYNC,
    MS_LAZYTIME,
    MS_MANDLOCK,
    MS_NOATIME,
    MS_NODEV,
    MS_NODIRATIME,
    MS_NOEXEC,
    MS_NOSUID,
    MS_NOSYMFOLLOW,
    MS_RDONLY,
    MS_RELATIME,
    MS_SHARED,
    MS_SLAVE,
    MS_STRICTATIME,
    MS_SYNCHRONOUS,
    MS_UNBINDABLE,
)
from lmi_mount.mounts.mountinfo import MountRecord

_ALPHA_OFFSET: Final = 110 if platform.machine().startswith("alpha") else 0
SYS_OPEN_TREE: Final = 428 + _ALPHA_OFFSET
SYS_MOVE_MOUNT: Final = 429 + _ALPHA_OFFSET
SYS_FSOPEN: Final = 430 + _ALPHA_OFFSET
SYS_FSCONFIG: Final = 431 + _ALPHA_OFFSET
SYS_FSMOUNT: Final = 432 + _ALPHA_OFFSET
SYS_FSPICK: Final = 433 + _ALPHA_OFFSET
SYS_MOUNT_SETATTR: Final = 442 + _ALPHA_OFFSET
SYS_STATMOUNT: Final = 457 + _ALPHA_OFFSET
SYS_LISTMOUNT: Final = 458 + _ALPHA_OFFSET
SYS_OPENAT2: Final = 437 + _ALPHA_OFFSET

# openat2(2) (Linux 5.6): struct open_how and its resolve flags.
RESOLVE_NO_MAGICLINKS: Final = 0x02
RESOLVE_NO_SYMLINKS: Final = 0x04

AT_FDCWD: Final = -100
AT_SYMLINK_NOFOLLOW: Final = 0x100
AT_NO_AUTOMOUNT: Final = 0x800
AT_EMPTY_PATH: Final = 0x1000
AT_RECURSIVE: Final = 0x8000
OPEN_TREE_CLONE: Final = 1
OPEN_TREE_CLOEXEC: Final = os.O_CLOEXEC
MOVE_MOUNT_F_EMPTY_PATH: Final = 0x04
MOVE_MOUNT_T_EMPTY_PATH: Final = 0x40
FSOPEN_CLOEXEC: Final = 1
FSMOUNT_CLOEXEC: Final = 1
FSPICK_CLOEXEC: Final = 1
FSPICK_EMPTY_PATH: Final = 8
FSCONFIG_SET_FLAG: Final = 0
FSCONFIG_SET_STRING: Final = 1
FSCONFIG_CMD_CREATE: Final = 6
FSCONFIG_CMD_RECONFIGURE: Final = 7

# <linux/mount.h> mount attributes.
MOUNT_ATTR_RDONLY: Final = 0x1
MOUNT_ATTR_NOSUID: Final = 0x2
MOUNT_ATTR_NODEV: Final = 0x4
MOUNT_ATTR_NOEXEC: Final = 0x8
MOUNT_ATTR__ATIME: Final = 0x70
MOUNT_ATTR_RELATIME: Final = 0x00
MOUNT_ATTR_NOATIME: Final = 0x10
MOUNT_ATTR_STRICTATIME: Final = 0x20
MOUNT_ATTR_NODIRATIME: Final = 0x80
MOUNT_ATTR_NOSYMFOLLOW: Final = 0x200000
MOUNT_ATTR_SIZE_VER0: Final = 32

# statx(2): stx_mask is the first u32, stx_attributes the u64 at 8, stx_mnt_id at 144.
STATX_MNT_ID: Final = 0x1000
STATX_MNT_ID_UNIQUE: Final = 0x4000
STATX_ATTR_MOUNT_ROOT: Final = 0x2000
_STATX_SIZE: Final = 256

# statmount(2): <linux/mount.h> struct statmount; the strings start at 512.
STATMOUNT_SB_BASIC: Final = 0x1
STATMOUNT_MNT_BASIC: Final = 0x2
STATMOUNT_MNT_ROOT: Final = 0x8
STATMOUNT_MNT_POINT: Final = 0x10
STATMOUNT_FS_TYPE: Final = 0x20
STATMOUNT_MNT_OPTS: Final = 0x80
STATMOUNT_FS_SUBTYPE: Final = 0x100
STATMOUNT_SB_SOURCE: Final = 0x200
_STATMOUNT_WANTED: Final = (
    STATMOUNT_SB_BASIC | STATMOUNT_MNT_BASIC | STATMOUNT_MNT_ROOT | STATMOUNT_MNT_POINT
    | STATMOUNT_FS_TYPE | STATMOUNT_MNT_OPTS | STATMOUNT_FS_SUBTYPE | STATMOUNT_SB_SOURCE
)
_STATMOUNT_STRINGS: Final = 512
_SB_RDONLY: Final = 0x1
_SB_SYNCHRONOUS: Final = 0x10
_SB_MANDLOCK: Final = 0x40
_SB_DIRSYNC: Final = 0x80
_SB_LAZYTIME: Final = 1 << 25

# MS_* per-mount flags and their MOUNT_ATTR_* (the atime mode is apart).
_ATTR_OF_FLAG: Final = (
    (MS_RDONLY, MOUNT_ATTR_RDONLY),
    (MS_NOSUID, MOUNT_ATTR_NOSUID),
    (MS_NODEV, MOUNT_ATTR_NODEV),
    (MS_NOEXEC, MOUNT_ATTR_NOEXEC),
    (MS_NODIRATIME, MOUNT_ATTR_NODIRATIME),
    (MS_NOSYMFOLLOW, MOUNT_ATTR_NOSYMFOLLOW),
)
ATIME_FLAGS: Final = MS_NOATIME | MS_RELATIME | MS_STRICTATIME

# Superblock flags as fsconfig(2) flag names (fs/fs_context.c common_set_sb_flag
# and common_clear_sb_flag); dirsync has no clearing word.
SB_FLAG_WORDS: Final = (
    (MS_RDONLY, "ro", "rw"),
    (MS_SYNCHRONOUS, "sync", "async"),
    (MS_DIRSYNC, "dirsync", None),
    (MS_LAZYTIME, "lazytime", "nolazytime"),
    (MS_MANDLOCK, "mand", "nomand"),
)

# show_mnt_opts() order, for mountinfo's spelling of a statmount reply.
_MOUNT_WORDS: Final = (
    (MOUNT_ATTR_NOSUID, "nosuid"), (MOUNT_ATTR_NODEV, "nodev"), (MOUNT_ATTR_NOEXEC, "noexec"),
)


class _MountAttr(ctypes.Structure):
    """struct mount_attr (MOUNT_ATTR_SIZE_VER0)."""

    _fields_ = (
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    )


assert ctypes.sizeof(_MountAttr) == MOUNT_ATTR_SIZE_VER0


def _syscall(number: int, *args: object) -> int:
    function = libc().syscall
    function.restype = ctypes.c_long
    result = int(function(ctypes.c_long(number), *args))
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return result


def _int(value: int) -> ctypes.c_int:
    return ctypes.c_int(value)


def _path(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else os.fsencode(value)


@dataclass(frozen=True, slots=True)
class Attributes:
    """A mount_setattr(2) change: attributes to set and to clear."""

    set: int
    clear: int

    def __bool__(self) -> bool:
        return bool(self.set or self.clear)


def attributes(flags: int, clear: int = 0, *, atime_always: bool = False) -> Attributes:
    """The MOUNT_ATTR_* change that MS_* ``flags`` set and ``clear`` clear.

    The atime mode follows path_mount(): strictatime beats noatime, which
    beats the default relatime; it is only changed when ``flags`` name one
    (or ``atime_always``, for a new mount, where relatime is the default).
    """
    set_bits = clear_bits = 0
    for flag, attribute in _ATTR_OF_FLAG:
        if flags & flag:
            set_bits |= attribute
        elif clear & flag:
            clear_bits |= attribute
    if flags & ATIME_FLAGS or atime_always:
        clear_bits |= MOUNT_ATTR__ATIME
        if flags & MS_STRICTATIME:
            set_bits |= MOUNT_ATTR_STRICTATIME
        elif flags & MS_NOATIME:
            set_bits |= MOUNT_ATTR_NOATIME
    return Attributes(set_bits, clear_bits)


def openat2(dirfd: int, path: str | bytes, flags: int, resolve: int) -> int:
    """openat2(2): ``path`` opened under ``dirfd`` with ``flags`` and the RESOLVE_*
    restrictions of ``resolve``, applied by the kernel to the whole walk at once.
    OSError (ENOSYS before Linux 5.6, ELOOP for a symlink under
    RESOLVE_NO_SYMLINKS)."""
    how = struct.pack("=QQQ", flags, 0, resolve)
    return _syscall(SYS_OPENAT2, _int(dirfd), _path(path), ctypes.c_char_p(how),
                    ctypes.c_size_t(len(how)))


def open_tree(path: str | bytes, *, dirfd: int = AT_FDCWD, clone: bool, recursive: bool,
              empty_path: bool = False) -> int:
    flags = OPEN_TREE_CLOEXEC | (OPEN_TREE_CLONE if clone else 0)
    flags |= (AT_RECURSIVE if recursive else 0) | (AT_EMPTY_PATH if empty_path else 0)
    return _syscall(SYS_OPEN_TREE, _int(dirfd), _path(path), ctypes.c_uint(flags))


def move_mount(mount_fd: int, target_fd: int) -> None:
    """Attach the detached mount ``mount_fd`` on the directory ``target_fd`` refers to."""
    _syscall(SYS_MOVE_MOUNT, _int(mount_fd), b"", _int(target_fd), b"",
             ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH))


def mount_setattr(fd: int, change: Attributes, *, recursive: bool = False) -> None:
    attr = _MountAttr(attr_set=change.set, attr_clr=change.clear)
    flags = AT_EMPTY_PATH | (AT_RECURSIVE if recursive else 0)
    _syscall(SYS_MOUNT_SETATTR, _int(fd), b"", ctypes.c_uint(flags), ctypes.byref(attr),
             ctypes.c_size_t(MOUNT_ATTR_SIZE_VER0))


def fsopen(fstype: str) -> int:
    return _syscall(SYS_FSOPEN, _path(fstype), ctypes.c_uint(FSOPEN_CLOEXEC))


def fspick(fd: int) -> int:
    return _syscall(SYS_FSPICK, _int(fd), b"", ctypes.c_uint(FSPICK_CLOEXEC | FSPICK_EMPTY_PATH))


def fsconfig(fd: int, key: str, value: str | None = None) -> None:
    """Set one parameter: a flag (``value`` None) or a string."""
    if value is None:
        _syscall(SYS_FSCONFIG, _int(fd), ctypes.c_uint(FSCONFIG_SET_FLAG), _path(key), None,
                 _int(0))
    else:
        _syscall(SYS_FSCONFIG, _int(fd), ctypes.c_uint(FSCONFIG_SET_STRING), _path(key),
                 _path(value), _int(0))


def fsconfig_command(fd: int, command: int) -> None:
    _syscall(SYS_FSCONFIG, _int(fd), ctypes.c_uint(command), None, None, _int(0))


def fsmount(fd: int, attributes_: int) -> int:
    return _syscall(SYS_FSMOUNT, _int(fd), ctypes.c_uint(FSMOUNT_CLOEXEC),
                    ctypes.c_uint(attributes_))


def context_messages(fd: int) -> list[str]:
    """The file system context's log (fsopen(2), "Message retrieval interface").

    Each read returns one message, prefixed ``e `` (error), ``w `` (warning)
    or ``i `` (information); ENODATA ends the log. The prefix is dropped.
    """
    messages = []
    for _ in range(32):  # the log holds at most 8 messages; bound the loop anyway
        try:
            text = os.read(fd, 4096)
        except OSError:
            break
        if not text:
            break
        line = text.decode("utf-8", "replace").rstrip("\n")
        messages.append(line[2:] if line[1:2] == " " else line)
    return messages


def statx_fd(fd: int, mask: int, *, path: str | bytes = b"",
             flags: int = AT_EMPTY_PATH) -> tuple[int, int, int] | None:
    """(returned mask, stx_attributes, stx_mnt_id) of ``fd`` (or ``path`` under it); None
    when statx(2) fails."""
    function = getattr(libc(), "statx", None)
    if function is None:
        return None
    buffer = ctypes.create_string_buffer(_STATX_SIZE)
    if function(_int(fd), _path(path), _int(flags | AT_NO_AUTOMOUNT), ctypes.c_uint(mask),
                buffer) != 0:
        return None
    raw = buffer.raw
    returned = int.from_bytes(raw[0:4], sys.byteorder)
    attrs = int.from_bytes(raw[8:16], sys.byteorder)
    mount_id = int.from_bytes(raw[144:152], sys.byteorder)
    return returned, attrs, mount_id


def unique_mount_id(fd: int) -> int | None:
    """STATX_MNT_ID_UNIQUE (Linux 6.8) of the mount ``fd`` is on; None where unknown."""
    answer = statx_fd(fd, STATX_MNT_ID_UNIQUE)
    if answer is None or not answer[0] & STATX_MNT_ID_UNIQUE:
        return None
    return answer[2]


@functools.cache
def has_mount_ids(unique: bool = False) -> bool:
    """Whether statx tells a file's mount id (STATX_MNT_ID, Linux 5.8), or with
    ``unique`` its never-reused one (STATX_MNT_ID_UNIQUE, Linux 6.8): asked
    once, of ``/``, so that one file's failure is not taken for the kernel's."""
    fd = os.open("/", os.O_PATH | os.O_CLOEXEC)
    try:
        return (unique_mount_id(fd) if unique else mount_id(fd)) is not None
    finally:
        os.close(fd)


@functools.cache
def has_statmount() -> bool:
    """Whether statmount(2) (Linux 6.8) reads mounts here: asked once, of the
    mount of ``/``, and not taken from any one mount's answer, which is also
    none when that mount is gone. False where statx has no unique ids, and
    where a seccomp filter older than the call refuses it (EPERM) while
    statx still tells unique ids."""
    fd = os.open("/", os.O_PATH | os.O_CLOEXEC)
    try:
        unique = unique_mount_id(fd)
    finally:
        os.close(fd)
    return unique is not None and statmount(unique) is not None


def mount_id(fd: int) -> int | None:
    """STATX_MNT_ID (Linux 5.8), mountinfo's id, of the mount ``fd`` is on."""
    answer = statx_fd(fd, STATX_MNT_ID)
    if answer is None or not answer[0] & STATX_MNT_ID:
        return None
    return answer[2]


def is_mount_root(fd: int) -> bool | None:
    """Whether ``fd`` is the root of its mount (STATX_ATTR_MOUNT_ROOT, Linux 5.8); None
    where the kernel does not say."""
    answer = statx_fd(fd, STATX_MNT_ID)
    if answer is None or not answer[0] & STATX_MNT_ID:
        return None
    return bool(answer[1] & STATX_ATTR_MOUNT_ROOT)


def statmount(unique_id: int) -> MountRecord | None:
    """The mount ``unique_id`` as one mountinfo record, from statmount(2) (Linux 6.8).

    Costs one system call where mountinfo costs a read and a parse of every
    line. None when the kernel lacks the call or the mount is gone.
    Its optional fields (propagation) come from STATMOUNT_MNT_BASIC.
    """
    request = struct.pack("=IIQQ", 24, 0, unique_id, _STATMOUNT_WANTED)
    size = 4096
    while True:
        buffer = ctypes.create_string_buffer(size)
        try:
            _syscall(SYS_STATMOUNT, ctypes.c_char_p(request), buffer, ctypes.c_size_t(size),
                     ctypes.c_uint(0))
        except OSError as exc:
            if exc.errno == errno.EOVERFLOW and size < (1 << 20):
                size *= 4
                continue
            return None
        return _record(buffer.raw)


#: listmount(2)'s mnt_id_req.mnt_id for the root of the caller's mount namespace.
LSMT_ROOT: Final = 0xFFFF_FFFF_FFFF_FFFF
_LISTMOUNT_BATCH: Final = 1024


def listmount() -> list[int] | None:
    """The unique ids of every mount of this mount namespace, from listmount(2)
    (Linux 6.8), in batches: each call resumes after the last id it returned.
    None when the kernel lacks the call."""
    found: list[int] = []
    last = 0
    buffer = (ctypes.c_uint64 * _LISTMOUNT_BATCH)()
    while True:
        request = struct.pack("=IIQQ", 24, 0, LSMT_ROOT, last)
        try:
            count = _syscall(SYS_LISTMOUNT, ctypes.c_char_p(request), buffer,
                             ctypes.c_size_t(_LISTMOUNT_BATCH), ctypes.c_uint(0))
        except OSError:
            return None
        found.extend(buffer[:count])
        if count < _LISTMOUNT_BATCH:
            return found
        if buffer[count - 1] <= last:
            return None  # no progress: a kernel that does not resume after ``param``
        last = buffer[count - 1]


def _record(raw: bytes) -> MountRecord:
    total, opts_at, mask = struct.unpack_from("=IIQ", raw, 0)
    major, minor, _magic, sb_flags, type_at = struct.unpack_from("=IIQII", raw, 16)
    unique, _parent_unique, old_id, old_parent, attr = struct.unpack_from("=QQIIQ", raw, 40)
    propagation, peer_group, master, propagate_from = struct.unpack_from("=QQQQ", raw, 72)
    root_at, point_at = struct.unpack_from("=II", raw, 104)
    subtype_at, source_at = struct.unpack_from("=II", raw, 120)
    strings = raw[_STATMOUNT_STRINGS:total]

    def string(offset: int, bit: int) -> str:
        if not mask & bit:
            return ""
        end = strings.index(b"\0", offset)
        return os.fsdecode(strings[offset:end])

    vfs = ["ro" if attr & MOUNT_ATTR_RDONLY else "rw"]
    vfs += [word for bit, word in _MOUNT_WORDS if attr & bit]
    atime = attr & MOUNT_ATTR__ATIME
    if atime == MOUNT_ATTR_NOATIME:
        vfs.append("noatime")
    if attr & MOUNT_ATTR_NODIRATIME:
        vfs.append("nodiratime")
    if atime == MOUNT_ATTR_RELATIME:
        vfs.append("relatime")
    if attr & MOUNT_ATTR_NOSYMFOLLOW:
        vfs.append("nosymfollow")
    sup = ["ro" if sb_flags & _SB_RDONLY else "rw"]
    sup += [word for bit, word in ((_SB_SYNCHRONOUS, "sync"), (_SB_DIRSYNC, "dirsync"),
                                   (_SB_MANDLOCK, "mand"), (_SB_LAZYTIME, "lazytime"))
            if sb_flags & bit]
    options = string(opts_at, STATMOUNT_MNT_OPTS)
    # The options come escaped as seq_show_option() writes them, as in mountinfo.
    sup += [unescape_field(option) for option in nonempty_options(options)]
    fstype = string(type_at, STATMOUNT_FS_TYPE)
    subtype = string(subtype_at, STATMOUNT_FS_SUBTYPE)
    source = string(source_at, STATMOUNT_SB_SOURCE) or "none"
    return MountRecord(
        mount_id=old_id,
        parent_id=old_parent,
        major=major,
        minor=minor,
        root=string(root_at, STATMOUNT_MNT_ROOT),
        target=string(point_at, STATMOUNT_MNT_POINT),
        vfs_options=tuple(vfs),
        optional_fields=_optional_fields(propagation, peer_group, master, propagate_from),
        fstype=f"{fstype}.{subtype}" if subtype else fstype,
        source=source,
        super_options=tuple(sup),
        unique_id=unique,
    )


def _optional_fields(propagation: int, peer_group: int, master: int,
                     propagate_from: int) -> tuple[str, ...]:
    """mountinfo's optional fields of a statmount reply, as show_mountinfo() writes
    them (fs/proc_namespace.c): ``shared:N``, ``master:N``, ``propagate_from:N``
    where it differs from the master, ``unbindable``."""
    fields = []
    if propagation & MS_SHARED:
        fields.append(f"shared:{peer_group}")
    if propagation & MS_SLAVE:
        fields.append(f"master:{master}")
        if propagate_from and propagate_from != master:
            fields.append(f"propagate_from:{propagate_from}")
    if propagation & MS_UNBINDABLE:
        fields.append("unbindable")
    return tuple(fields)


def available(number: int) -> bool:
    """Whether the kernel has system call ``number`` (ENOSYS means no)."""
    try:
        _syscall(number, _int(-1), None, _int(0), None, _int(0))
    except OSError as exc:
        return exc.errno != errno.ENOSYS
    return True
