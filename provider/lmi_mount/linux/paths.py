"""Checks of the paths a mount request names, against the real file system.

Owns: existence and type checks of mount points and sources, and the
resolution of what the user wrote into what the kernel will report (realpath
of a bind source or image file, ``UUID=``/``LABEL=`` specs through the udev
symlinks). Every root is injected so tests and ``--sandbox`` stay contained.

Mount points and bind sources are checked once, on a descriptor: an
``Anchor`` is an ``O_PATH`` descriptor opened on what the path named at that
moment, and every later step (the type check, the real path, the mount
itself) uses the descriptor. A rename or a symlink swapped into the path
afterwards cannot redirect the mount (the check-then-use race of a path
string); the name a reply gives is read back from the descriptor.

Must not know: mount logic, fstab, CIM.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
import sys
from dataclasses import dataclass, field
from typing import Final

from lmi_mount.linux import blkid, mountapi
from lmi_mount.linux.namespace import libc
from lmi_mount.mounts.fstab import PATH_MAX, too_long

# fstab(5) tags and the /dev/disk directories udev keeps them in.
_TAG_DIRS = {
    "UUID": "by-uuid",
    "LABEL": "by-label",
    "PARTUUID": "by-partuuid",
    "PARTLABEL": "by-partlabel",
    "ID": "by-id",
}


@dataclass(frozen=True, slots=True)
class VolumeStats:
    """statvfs(3) figures of a mounted file system, in bytes where sizes."""

    block_size: int
    size: int
    available: int
    files: int
    name_max: int
    read_only: bool


def volume_stats(path: str) -> VolumeStats | None:
    """statvfs(3) of the file system mounted at ``path``; None when it cannot be read.

    A hung network mount would block statvfs; the caller decides whether to
    ask (only the file system class reports sizes).
    """
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return VolumeStats(
        block_size=st.f_bsize,
        size=st.f_blocks * st.f_frsize,
        available=st.f_bavail * st.f_frsize,
        files=st.f_files,
        name_max=st.f_namemax,
        read_only=bool(st.f_flag & os.ST_RDONLY),
    )


class PathProblem(ValueError):
    """A path in a request is unusable; the message names it and says why."""

    def __init__(self, message: str, path: str, code: int = errno.EINVAL) -> None:
        super().__init__(message)
        self.path = path
        #: The errno a system call would have given (ENOENT, ENOTDIR, ...).
        self.errno = code


@dataclass(eq=False, slots=True)
class Anchor:
    """An ``O_PATH`` descriptor on a directory or file, and its path when opened.

    ``path`` is the real path read back from the descriptor (symlinks
    resolved, as the kernel reports mount points). ``is_file`` says it is a
    regular file (a file bind mount). Close it (or use ``with``) when done.
    """

    fd: int
    path: str
    is_file: bool = False
    closed: bool = field(default=False)

    @property
    def proc_path(self) -> str:
        """A path that resolves to this very descriptor (a /proc magic link), for
        system calls that take no descriptor (mount(2), helpers)."""
        return f"/proc/self/fd/{self.fd}"

    def current_path(self) -> str:
        """Where the file is now (it may have been renamed since it was opened);
        OSError naming the path it was opened by when that is too long to read."""
        try:
            return _fd_path(self.fd)
        except OSError as exc:
            if exc.errno != errno.ENAMETOOLONG:
                raise
            raise OSError(exc.errno, too_long("the directory", self.path,
                                              " was moved where its path"), self.path) from None

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            os.close(self.fd)

    def __enter__(self) -> Anchor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def real_path_now(path: str) -> str:
    """``os.path.realpath(path)``, in one realpath(3) call where every component
    exists (a path the engine locks: Python's walk, an lstat per component,
    cost a request about 4 % of its CPU); Python's, which resolves what exists
    and keeps the rest, where one does not or realpath(3) refuses.

    No descriptor is opened: the engine's lock keys are taken with this, and
    a descriptor on a mount point keeps it busy for another request's
    unmount. OSError as ``os.path.realpath`` raises it.
    """
    if "\0" not in path:  # ctypes would cut the path there; Python refuses it
        buffer = ctypes.create_string_buffer(PATH_MAX)  # realpath(3): PATH_MAX bytes
        if libc().realpath(os.fsencode(path), buffer) is not None:
            return os.fsdecode(buffer.value)
    return os.path.realpath(path)


def _fd_path(fd: int) -> str:
    return os.readlink(f"/proc/self/fd/{fd}")


def _named_path(fd: int, path: str, what: str) -> str:
    """The path of ``fd``, which ``path`` (``what`` it is) opened; PathProblem when
    it is longer than PATH_MAX: readlink(2) cannot give it, and mountinfo and
    fstab could not name a mount there (a review got "File name too long:
    '/proc/self/fd/8'" for a request)."""
    try:
        return _fd_path(fd)
    except OSError as exc:
        if exc.errno != errno.ENAMETOOLONG:
            raise
        raise PathProblem(too_long(what, path, " where it leads"), path,
                          errno.ENAMETOOLONG) from None


def resolved_path(path: str, what: str) -> str:
    """The real path of what ``path`` names now (``open_resolved``); PathProblem
    naming ``path`` and ``what`` it is when it cannot be reached safely."""
    fd = _open_named(path, what)
    try:
        return _named_path(fd, path, what)
    finally:
        os.close(fd)


def _open_named(path: str, what: str) -> int:
    """``open_resolved(path)``, its refusal a PathProblem naming ``what`` ``path`` is."""
    try:
        return open_resolved(path)
    except FileNotFoundError:
        raise PathProblem(f"{what} {path!r} does not exist", path, errno.ENOENT) from None
    except OSError as exc:
        raise _unusable(what, path, exc) from exc


def _unusable(what: str, path: str, exc: OSError) -> PathProblem:
    return PathProblem(f"{what} {path!r} cannot be used: {exc.strerror}", path,
                       exc.errno or errno.EINVAL)


#: Whether openat2(2) is used (Linux >= 5.6); tests set it False to run the
#: component-by-component walk older kernels get.
USE_OPENAT2 = True
_openat2_missing = False


def open_no_symlinks(path: str, *, parent: bool = False) -> tuple[int, str]:
    """Open the absolute ``path`` (``O_PATH``) following no symbolic link in any
    component: openat2(2) with RESOLVE_NO_SYMLINKS, one system call, where the
    kernel has it (Linux 5.6), else a walk one component at a time.

    For a path the engine found in mountinfo, which never holds a symlink: a
    local user who swaps a parent directory for a symlink cannot redirect an
    unmount or a remount to another mount. With ``parent`` the descriptor is
    the last component's directory and the name is returned, else the name
    is "". Raises OSError (ELOOP for a symlink, naming ``path``).
    """
    global _openat2_missing
    names = [name for name in path.split("/") if name]
    if not path.startswith("/") or any(name in (".", "..") for name in names):
        raise OSError(errno.EINVAL, f"not a normalized absolute path: {path!r}", path)
    last = names.pop() if parent and names else ""
    if parent and not last:
        raise OSError(errno.EINVAL, "the root directory has no parent", path)
    if USE_OPENAT2 and not _openat2_missing:
        walked = "/" + "/".join(names)
        try:
            fd = mountapi.openat2(mountapi.AT_FDCWD, walked,
                                  os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC,
                                  mountapi.RESOLVE_NO_SYMLINKS)
        except OSError as exc:
            if exc.errno in (errno.ENOSYS, errno.EPERM):
                # Linux < 5.6, or a seccomp filter that refuses the call.
                _openat2_missing = True
            elif exc.errno == errno.ENAMETOOLONG:
                pass  # longer than PATH_MAX: the walk opens it a component at a time
            elif exc.errno == errno.ELOOP:
                raise OSError(errno.ELOOP, f"{path!r} goes through a symbolic link",
                              path) from exc
            else:
                raise OSError(exc.errno, f"{exc.strerror}: {path!r}", path) from exc
        else:
            # O_NOFOLLOW on the last component gives the link itself, not ELOOP.
            if stat.S_ISLNK(os.fstat(fd).st_mode):
                os.close(fd)
                raise OSError(errno.ELOOP, f"{path!r} is a symbolic link", path)
            return fd, last
    fd = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for name in names:
            try:
                following = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except OSError as exc:
                raise OSError(exc.errno, f"{exc.strerror}: {name!r} in {path!r}", path) from exc
            os.close(fd)
            fd = following
            mode = os.fstat(fd).st_mode
            if stat.S_ISLNK(mode):
                raise OSError(errno.ELOOP, f"{name!r} in {path!r} is a symbolic link", path)
        return fd, last
    except BaseException:
        os.close(fd)
        raise


#: Symbolic links one resolution follows at most (the kernel's MAXSYMLINKS).
_MAX_LINKS = 40


#: An owner no one vouches for: that of a file on a file system whose owners its
#: maker wrote (an image on a loop device, a FUSE file system), who may be anyone.
WRITTEN_BY_ITS_MAKER: Final = -1
_LOOP_MAJOR: Final = 7
_FUSE_SUPER_MAGIC: Final = 0x65735546
_PROC_SUPER_MAGIC: Final = 0x9FA0
#: The links of /proc whose text is what they lead to; every other link there
#: (fd/N, cwd, root, exe, ns/*) is a magic link, whose text is not.
_PROC_TEXT_LINKS: Final = frozenset({"self", "thread-self", "mounts", "net"})


def _looked_at(fd: int) -> os.stat_result:
    """``fstat(fd)``, but an owner on an image or a FUSE file system counts as
    WRITTEN_BY_ITS_MAKER: a user's squashfs made with ``-all-root`` shows his
    links as root's (a review mounted root's image through one), and root's
    own image cannot be told from his by its owners."""
    found = os.fstat(fd)
    if os.major(found.st_dev) != _LOOP_MAJOR and _fs_type(fd) != _FUSE_SUPER_MAGIC:
        return found
    fields = list(found[:10])
    fields[4] = WRITTEN_BY_ITS_MAKER  # st_uid
    return os.stat_result(fields)


def _fs_type(fd: int) -> int | None:
    """fstatfs(2)'s f_type of ``fd`` (the first field of struct statfs), or None."""
    buffer = ctypes.create_string_buffer(256)
    if libc().fstatfs(fd, buffer) != 0:
        return None
    return int.from_bytes(buffer.raw[:ctypes.sizeof(ctypes.c_long)], sys.byteorder, signed=True)


def _owner(found: os.stat_result) -> str:
    return ("an owner its maker wrote (an image or FUSE file system)"
            if found.st_uid == WRITTEN_BY_ITS_MAKER else f"uid {found.st_uid}")


def _unsafe_transition(here: os.stat_result, there: os.stat_result) -> bool:
    """Whether going from ``here`` to ``there`` leaves a user's tree for another
    owner's: systemd's ``unsafe_transition()`` (CHASE_SAFE)."""
    return here.st_uid != 0 and here.st_uid != there.st_uid


def _others_may_write(found: os.stat_result) -> bool:
    """Whether someone but ``found``'s owner may write it (group or other write bit)."""
    return bool(found.st_mode & (stat.S_IWGRP | stat.S_IWOTH))


def _only_root_may_write(found: os.stat_result) -> bool:
    return found.st_uid == 0 and not _others_may_write(found)


def _unsafe_link(directory: os.stat_result, link: os.stat_result) -> bool:
    """Whether root must not follow ``link`` found in ``directory``: a link of
    another owner than the directory's in a user's directory (CHASE_SAFE), or,
    in a directory others than its owner may write (/tmp, a root:staff 2775
    one), a link neither root's nor the directory owner's: the kernel's
    fs.protected_symlinks rule, applied whatever the sysctl says and to group
    writable directories too (reviews: nobody's /tmp/x -> ../etc, and his
    link in a directory his group may write)."""
    if _unsafe_transition(directory, link):
        return True
    return _others_may_write(directory) and link.st_uid not in (0, directory.st_uid)


def unstable_path(path: str) -> str | None:
    """Why the absolute ``path`` could be made to lead elsewhere by someone but
    root, for a program given the name and not a descriptor (a mount helper):
    the first entry on the way that is a link, or that lies in a directory
    root does not own or that others may write (a root-owned entry of a sticky
    directory aside); None when only root can change where it leads."""
    current = "/"
    for name in (part for part in path.split("/") if part):
        child = os.path.join(current, name)
        try:
            directory = os.lstat(current)
        except OSError as exc:
            return f"{current!r} cannot be looked at: {exc.strerror}"
        try:
            entry = os.lstat(child)
        except FileNotFoundError:
            # Missing from here on: only who may write ``current`` can make it.
            if _only_root_may_write(directory):
                return None
            return (f"{child!r} does not exist, and {current!r} (uid {directory.st_uid}) may "
                    "be written by someone but root")
        except OSError as exc:
            return f"{child!r} cannot be looked at: {exc.strerror}"
        if stat.S_ISLNK(entry.st_mode):
            return f"{child!r} is a symbolic link"
        sticky = (directory.st_uid == 0 and directory.st_mode & stat.S_ISVTX
                  and entry.st_uid == 0)
        if not (_only_root_may_write(directory) or sticky):
            return (f"{current!r} (uid {directory.st_uid}, mode {directory.st_mode & 0o7777:04o})"
                    " may be changed by someone but root")
        current = child
    return None


def open_resolved(path: str) -> int:
    """Open the absolute ``path`` (``O_PATH``), following symbolic links and ``..``
    as the kernel does, one component at a time, but never out of a directory
    a user other than root owns into another owner's (systemd's chase() with
    CHASE_SAFE): a link that user made (``~nobody/mnt -> /etc``) would lead
    root's mount, or root's open of an image, wherever that user likes. A
    link must belong to root or to its directory's owner, an absolute link
    from a user's tree is refused, and ``..`` may not climb out of one; in a
    sticky directory anyone may write, a link must be root's or the
    directory owner's (fs.protected_symlinks, whatever the sysctl). On an
    image or a FUSE file system, owners are what its maker wrote, anyone
    (``_looked_at``): links there lead nowhere out of it. Each
    step opens what it checked, so a swap made meanwhile cannot redirect it.
    Raises OSError naming ``path`` (ENOLINK for an unsafe transition).
    """
    global _openat2_missing
    if not path.startswith("/"):
        raise OSError(errno.EINVAL, f"not an absolute path: {path!r}", path)
    todo = [name for name in reversed(path.split("/")) if name not in ("", ".")]
    if ".." not in todo and USE_OPENAT2 and not _openat2_missing:
        # The common case, a path without links, in one system call.
        try:
            return mountapi.openat2(mountapi.AT_FDCWD, path, os.O_PATH | os.O_CLOEXEC,
                                    mountapi.RESOLVE_NO_SYMLINKS)
        except OSError as exc:
            if exc.errno in (errno.ENOSYS, errno.EPERM):
                _openat2_missing = True  # Linux < 5.6, or a seccomp filter
            elif exc.errno not in (errno.ELOOP, errno.ENAMETOOLONG):
                raise OSError(exc.errno, exc.strerror, path) from exc
    fd = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    here = _looked_at(fd)
    links = 0
    link = ""

    def refuse(code: int, why: str) -> OSError:
        return OSError(code, why, path)

    try:
        while todo:
            name = todo.pop()
            if name == ".":
                continue
            step = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            there = _looked_at(step)
            if name == ".." and _unsafe_transition(here, there):
                os.close(step)
                after = f" after the symbolic link {link!r}" if link else ""
                raise refuse(errno.ENOLINK, f"it climbs with '..'{after} out of a directory of "
                                            f"{_owner(here)} into one of {_owner(there)}")
            if stat.S_ISLNK(there.st_mode):
                try:
                    link = _fd_path(fd).rstrip("/") + "/" + name
                    links += 1
                    if links > _MAX_LINKS:
                        raise refuse(errno.ELOOP, "it goes through too many symbolic links")
                    if name not in _PROC_TEXT_LINKS and _fs_type(step) == _PROC_SUPER_MAGIC:
                        # A review: a non-dumpable process's fd/N is root's link,
                        # and its text named another directory than the fd.
                        raise refuse(errno.ENOLINK,
                                     f"it goes through {link!r}, a /proc link whose text is "
                                     "not what it leads to: name the real path")
                    if _unsafe_link(here, there):
                        raise refuse(errno.ENOLINK,
                                     f"it goes through the symbolic link {link!r} of "
                                     f"{_owner(there)} in a directory of {_owner(here)}"
                                     + (" that others may write"
                                        if _others_may_write(here) else ""))
                    destination = os.readlink("", dir_fd=step)
                finally:
                    os.close(step)
                todo.extend(n for n in reversed(destination.split("/")) if n not in ("", "."))
                if destination.startswith("/"):
                    top = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
                    top_stat = _looked_at(top)
                    if _unsafe_transition(there, top_stat):
                        os.close(top)
                        raise refuse(errno.ENOLINK,
                                     f"it goes through the symbolic link {link!r} of "
                                     f"{_owner(there)} to {destination!r}, out of that "
                                     "user's tree: name the real path")
                    os.close(fd)
                    fd, here = top, top_stat
                continue
            os.close(fd)
            fd, here = step, there
            if todo and not stat.S_ISDIR(here.st_mode):
                raise refuse(errno.ENOTDIR, f"{name!r} on the way is not a directory")
        return fd
    except BaseException:
        os.close(fd)
        raise


def make_directories(path: str, mode: int) -> list[str]:
    """Make the absolute, normalized ``path`` and each missing directory above it
    with ``mode`` (exactly: the service's umask is not the client's), as
    mount(8)'s X-mount.mkdir does; returns the directories made, outermost
    first. What exists is reached as ``open_resolved`` reaches it, and each
    directory made is opened without following a link, so that a user who
    owns a directory on the way cannot have root make one elsewhere. Raises
    OSError naming ``path``."""
    names = [name for name in path.split("/") if name]
    existing = len(names)
    while existing > 0:
        try:
            fd = open_resolved("/" + "/".join(names[:existing]))
            break
        except FileNotFoundError:
            existing -= 1
    else:
        fd = open_resolved("/")
    made: list[str] = []
    try:
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(errno.ENOTDIR, f"{_fd_path(fd)!r} on the way is not a directory",
                          path)
        for name in names[existing:]:
            os.mkdir(name, mode, dir_fd=fd)
            made.append(_fd_path(fd).rstrip("/") + "/" + name)
            step = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                           dir_fd=fd)
            os.close(fd)
            fd = step
            os.fchmod(fd, mode)
        return made
    except OSError as exc:
        if exc.filename == path:
            raise
        raise OSError(exc.errno, f"{exc.strerror} (making {path!r})", path) from exc
    finally:
        os.close(fd)


def open_anchor(path: str, what: str, *, file_ok: bool = False, dir_ok: bool = True) -> Anchor:
    """Open ``path`` (following symlinks, as the user named it, where that is safe:
    ``open_resolved``) as an Anchor.

    ``what`` names the role in messages ("mount point", "bind source"). The
    descriptor must be a directory, or a regular file where ``file_ok``.
    Raises PathProblem naming ``path``.
    """
    if not path.startswith("/"):
        raise PathProblem(f"{what} {path!r} is not an absolute path", path)
    fd = _open_named(path, what)
    try:
        try:
            st = os.fstat(fd)
        except OSError as exc:  # a FUSE mount whose daemon died: ENOTCONN
            raise _unusable(what, path, exc) from exc
        is_dir, is_file = stat.S_ISDIR(st.st_mode), stat.S_ISREG(st.st_mode)
        if not ((dir_ok and is_dir) or (file_ok and is_file)):
            kinds = [kind for kind, ok in (("a directory", dir_ok), ("a regular file", file_ok))
                     if ok]
            raise PathProblem(f"{what} {path!r} is not {' or '.join(kinds)}", path,
                              errno.ENOTDIR if not is_dir else errno.EISDIR)
        real = _named_path(fd, path, what)
        if st.st_nlink == 0 or not real.startswith("/"):
            raise PathProblem(f"{what} {path!r} was removed while it was opened", path,
                              errno.ENOENT)
        return Anchor(fd, real, is_file=is_file)
    except BaseException:
        os.close(fd)
        raise


@dataclass(frozen=True, slots=True)
class PathChecker:
    """Path checks relative to an injected device directory (``/dev``)."""

    dev_root: str = "/dev"

    def _tagged(self, source: str, device: str) -> str:
        """``device``, which tag ``source`` found, unless it is a loop device: the
        label and UUID of an image are whatever its maker wrote (a review's
        nobody made his with root's, and root's absent disk's tag mounted his
        image without nosuid); an image is named by its path."""
        if os.path.basename(device).startswith("loop") and \
                os.path.dirname(device) == self.dev_root:
            raise PathProblem(f"{source} names {device}, a loop device over an image, whose "
                              "label and UUID are whatever its maker wrote: name the image by "
                              "its path", source)
        return device

    def open_mount_point(self, target: str, *, file_ok: bool = False) -> Anchor:
        """The mount point, opened once: an Anchor on a directory (or a regular
        file for a file bind)."""
        return open_anchor(target, "mount point", file_ok=file_ok)

    def open_bind_source(self, source: str) -> Anchor:
        """The source of a bind mount, opened once (a directory or a regular file)."""
        return open_anchor(source, "bind source", file_ok=True)

    def device_source(self, source: str) -> str:
        """Resolve a block source: image files and devices to their real path, tags via
        udev's /dev/disk links or, without them, libblkid.

        Anything that is neither a local path nor a tag ("tmpfs",
        "server:/export", "//server/share") is returned unchanged: the kernel
        or the helper interprets it.
        """
        tag, sep, value = source.partition("=")
        if sep and tag in _TAG_DIRS:
            # libblkid and udev name the device probed last: a user's image on
            # a loop device, made with root's label or UUID (UUIDs are public
            # in /etc/fstab), could be mounted for root's tag, with root's
            # flags (an adversarial review). A tag that names more than one
            # device names none. (ID= is udev's alone: libblkid lists none.)
            devices = blkid.devices_with_tag(tag, value)
            if len(devices) > 1:
                raise PathProblem(f"{source} names {len(devices)} devices ({', '.join(devices)})"
                                  ": name the one meant by its path", source)
            link = os.path.join(self.dev_root, "disk", _TAG_DIRS[tag], value)
            if os.path.exists(link):
                return self._tagged(source, os.path.realpath(link))
            # Without udev's link (no udev: a container, an initramfs), as
            # mount(8) does: the device libblkid's probe found.
            if not devices:
                probed = ", and libblkid finds none" if tag in blkid.TAGS and \
                    blkid.available() else ""
                raise PathProblem(f"no device has {source} (no {link}{probed})", source)
            return self._tagged(source, os.path.realpath(devices[0]))
        if source.startswith("/") and not source.startswith("//"):
            return resolved_path(source, "source")
        return source
