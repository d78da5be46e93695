"""Locked, compare-and-swap, atomic replacement of small system files (/etc/fstab).

Owns: reading a file together with the version that was read, replacing it so
that a reader or a crash sees either the old or the new content and never a
mix, never overwriting an edit someone else made after our read, keeping the
file's mode and owner, and telling systemd to reload its generated units
after an fstab edit. Must not know: what the text means (``mounts.fstab``
parses it) or CIM. Every path is a parameter.

The write protocol, in the order the ``crash`` hook sees its steps
(``REPLACE_STEPS``):

1. ``locked``: take an exclusive flock(2) on the lock file ``<path>.lock``.
   The lock is not taken on the file itself: the rename in step 6 puts a new
   inode at the path, so a writer blocked on the old inode would wake up
   holding a lock on a file that is no longer ``<path>`` while the next
   writer locks the new one. A separate lock file never moves. The name is
   libmount's flock convention (``libmount/src/lock.c``,
   ``mnt_lock_use_simplelock``: ``<name>.lock``), so tools built on it
   serialize with us; like libmount we never delete it (deleting a lock file
   races with its next user).
2. ``temp-created``: create ``.<name>.lmi-tmp`` in the same directory (a
   rename is atomic only within one file system). Only lock holders touch
   that name, so a leftover from a killed writer is simply removed and
   created afresh by the next one: a crash leaves at most this one file and
   it never blocks a later write.
3. ``temp-attributes``: fchown then fchmod to the old file's owner and mode
   (chown first: it clears set-id bits). A new file gets ``new_file_mode``
   (0644) and the writer's owner (root for the service).
4. ``temp-written`` then ``temp-synced``: write all bytes, fsync(2).
5. ``checked``: stat and re-read the file and compare with the version the
   caller read (device, inode, size, mtime and SHA-256 of the content). Any
   difference is an edit made by someone who does not take our lock (an
   editor, ansible): ``ConflictError``, the temporary file is removed and
   the other edit survives. The check comes last, right before the rename,
   so that the window in which such an edit could still be lost is a few
   system calls, not the length of a write and an fsync.
6. ``renamed``: rename(2) over the path: atomic for every reader.
7. ``dir-synced``: fsync the directory so that the rename itself is durable
   (fsync(2): syncing a file does not sync its directory entry).

No protocol can save a writer that does not lock and writes in place
while we replace the file (its remaining writes land in the old inode):
the compare-and-swap guarantees that every change made before our rename
is either kept or reported.

Any error before the rename removes the temporary file and raises
``FileWriteError`` with the errno, the path and the step; the old file is
untouched. An error after the rename (a failing directory fsync) raises
``FileWriteError`` with ``replaced=True``: the new content is in place but
may not survive a power loss.

Text is decoded as UTF-8 with ``surrogateescape``, so any byte sequence
(Latin-1 paths, NUL) round-trips exactly. A symbolic link at the path is
followed: its target is replaced and the link stays.
"""

from __future__ import annotations

import contextlib
import errno as errno_codes
import fcntl
import hashlib
import logging
import os
import stat
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

_LOG: Final = logging.getLogger(__name__)

ENCODING: Final = "utf-8"
ENCODING_ERRORS: Final = "surrogateescape"
NEW_FILE_MODE: Final = 0o644
# libmount gives up on the mtab lock after 30 s (lock.c, MOUNTLOCK_MAXTIME).
LOCK_TIMEOUT: Final = 30.0
LOCK_SUFFIX: Final = ".lock"
TEMP_SUFFIX: Final = ".lmi-tmp"
#: Backups are the replaced files themselves, named PATH + BACKUP_INFIX + a UTC
#: time stamp, so that they sort by age; none are kept unless asked.
BACKUP_INFIX: Final = ".lmi-backup-"
DEFAULT_BACKUPS: Final = 0

REPLACE_STEPS: Final = (
    "locked",
    "temp-created",
    "temp-attributes",
    "temp-written",
    "temp-synced",
    "checked",
    "renamed",
    "dir-synced",
)

CrashHook = Callable[[str], None]
"""Called with each step name of ``REPLACE_STEPS`` once that step is done.

Tests kill the process there (crash consistency) or raise an ``OSError``
(fault injection: it is handled exactly like the system call failing).
"""


class FileError(Exception):
    """A file could not be read or replaced; ``path`` names it."""

    def __init__(self, message: str, path: str) -> None:
        super().__init__(message)
        self.path = path


class ConflictError(FileError):
    """The file changed after it was read: the other edit is kept, ours is not written."""

    def __init__(self, path: str, expected: FileVersion, found: FileVersion) -> None:
        super().__init__(
            f"{path!r} was changed by someone else since it was read "
            f"({expected.describe()} -> {found.describe()}); not overwritten",
            path,
        )
        self.expected = expected
        self.found = found


class UntrustedFile(FileError):
    """A file the service would trust (its configuration, users, TLS key, state) that
    anyone but root could have written or swapped; the message names the fix."""


#: Symbolic links followed while resolving a trusted path (the kernel's limit).
MAX_LINKS: Final = 40


def check_trusted(path: str | os.PathLike[str], what: str, *, secret: bool = False) -> None:
    """Refuse ``path`` unless it is a regular file or a directory, not a symbolic
    link, owned by root (or this process's user), that neither group nor others
    may write, nor, when ``secret`` (password hashes, a private key), others
    read or use (by the mode or by an ACL naming them); a directory whose
    default ACL lets a named user or group write what is made in it neither;
    and unless nobody else can change what the path leads to: the path is
    resolved here one component at a time, as the kernel resolves it, and
    every directory it passes through must be root's (or ours) and writable
    by others only with the sticky bit (as /tmp), and every symbolic link it
    follows root's (or ours): even in a sticky directory, a link's owner may
    repoint it after the check. The file
    the kernel reaches must be the one the walk checked (a link of /proc leads
    to what it names, whatever its text). UntrustedFile names the file and the
    command that fixes it.
    """
    name = os.fspath(path)
    if not os.path.isabs(name):
        try:
            name = os.path.join(os.getcwd(), name)
        except OSError as error:
            raise UntrustedFile(f"{what} {name}: the working directory: {_strerror(error)}; "
                                "name it from /", name) from None
    final, info = _resolve_checked(name, what)
    directory = stat.S_ISDIR(info.st_mode)
    # Whoever could write a file may hold it open: a chown or chmod leaves him
    # that descriptor, so the fix is a new file. A directory's permissions are
    # checked at each use: a chown is the fix, and a look at what it holds.
    replace = (f"write a new one as root and mv it over {name} (a chown or chmod leaves "
               "a writer the descriptors he holds)")
    if info.st_uid not in (0, os.geteuid()):
        fix = (f"chown root {name} and chmod go-w {name}, then check what it holds"
               if directory else replace)
        raise UntrustedFile(
            f"{what} {name} is owned by uid {info.st_uid}, who could change it: {fix}", name)
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o022:
        fix = f"chmod go-w {name}" + ("" if directory else f", or, if it may be open, {replace}")
        raise UntrustedFile(
            f"{what} {name} has mode {mode:o}: others could change it; {fix}", name)
    if secret and mode & 0o007:
        raise UntrustedFile(
            f"{what} {name} has mode {mode:o}: others could read it; chmod o-rwx {name}",
            name)
    if secret:
        user = _acl_named(final, _ACL_ACCESS, _ACL_ANY)
        if user is not None:
            raise UntrustedFile(f"{what} {name}: an ACL lets {user} use it; "
                                f"setfacl -b {name}", name)
    if directory:
        # Under a default ACL the umask does not apply: a file made with a mode
        # that lets its group write would let the named entry write it.
        user = _acl_named(final, _ACL_DEFAULT, _ACL_WRITE)
        if user is not None:
            raise UntrustedFile(f"{what} {name}: a default ACL lets {user} write what is "
                                f"made in it; setfacl -k {name}", name)


#: Resolutions of a trusted path tried when its file is replaced meanwhile. Only
#: root (or the daemon's user) can replace a file in a directory the walk
#: trusts, so a try costs time, not safety; three were too few once, on a
#: loaded machine, against a test that replaces the file back to back.
RESOLVE_TRIES: Final = 10


def _resolve_checked(name: str, what: str) -> tuple[str, os.stat_result]:
    """The last component of ``name`` where the walk resolved its directory (a
    trailing "/" or "/." would make the kernel follow a link there), and its
    lstat, refused unless a regular file or a directory and unless the kernel's
    own resolution of ``name`` reaches that same file: a link of /proc, on any
    procfs, leads to what it names, whatever its text. A file replaced between
    the two looks (an editor, a renewal) is looked at again."""
    for _ in range(RESOLVE_TRIES):
        final = _resolve_trusted(name, what)
        try:
            info = os.lstat(final)
            kernel = os.stat(name)
        except OSError as error:
            raise UntrustedFile(f"{what} {name}: {_strerror(error)}", name) from None
        if stat.S_ISLNK(info.st_mode):
            raise UntrustedFile(
                f"{what} {name} is a symbolic link (to {os.path.realpath(final)}): name the "
                "file itself, a link can be swapped", name)
        if not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):
            raise UntrustedFile(f"{what} {name} is a {file_kind(info.st_mode)}, not a file "
                                "or a directory", name)
        if (kernel.st_dev, kernel.st_ino) == (info.st_dev, info.st_ino):
            return final, info
    raise UntrustedFile(
        f"{what} {name} leads elsewhere than its links read ({final} was checked): "
        "name it without links of /proc", name)


#: POSIX ACLs (linux/posix_acl_xattr.h): version 2, then (tag, permission, id) entries.
_ACL_ACCESS: Final = "system.posix_acl_access"
_ACL_DEFAULT: Final = "system.posix_acl_default"
_ACL_NAMED: Final = {0x02: "uid", 0x08: "gid"}  # ACL_USER, ACL_GROUP
_ACL_MASK: Final = 0x10
_ACL_ANY: Final = 0o7
_ACL_WRITE: Final = 0o2


def _acl_named(path: str, xattr: str, wanted: int) -> str | None:
    """A named user or group ("uid 65534") the ACL ``xattr`` of ``path`` gives a
    permission of ``wanted`` that the mask lets through, or None (no ACL, or
    none such)."""
    try:
        acl = os.getxattr(path, xattr, follow_symlinks=False)
    except OSError:
        return None  # none, or a file system without ACLs
    entries = [(int.from_bytes(acl[at:at + 2], "little"),
                int.from_bytes(acl[at + 2:at + 4], "little"),
                int.from_bytes(acl[at + 4:at + 8], "little"))
               for at in range(4, len(acl) - 7, 8)]
    mask = next((perm for tag, perm, _ in entries if tag == _ACL_MASK), 0o7)
    for tag, perm, ident in entries:
        if tag in _ACL_NAMED and perm & mask & wanted:
            return f"{_ACL_NAMED[tag]} {ident}"
    return None


def file_kind(mode: int) -> str:
    """What a file of ``mode`` is that is not a file, a directory or a link ("FIFO")."""
    for test, kind in ((stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"),
                       (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device")):
        if test(mode):
            return kind
    return "special file"


def _resolve_trusted(name: str, what: str) -> str:
    """Walk ``name``'s directories as path resolution does, refusing any that
    someone else controls (see ``check_trusted``); returns its last component
    in the directory the walk reached (not followed)."""
    pending = [part for part in name.split("/") if part not in ("", ".")]
    if not pending:
        return "/"
    pending.reverse()  # the next component is popped from the end
    current, links = "/", 0
    _check_directory(name, what, current)
    while len(pending) > 1:
        part = pending.pop()
        if part == "..":
            current = os.path.dirname(current)  # current holds no link: its parent
            continue
        candidate = os.path.join(current, part)
        try:
            info = os.lstat(candidate)
        except OSError as error:
            raise UntrustedFile(f"{what} {name}: {candidate}: {_strerror(error)}",
                                name) from None
        if stat.S_ISLNK(info.st_mode):
            if info.st_uid not in (0, os.geteuid()):
                raise UntrustedFile(
                    f"{what} {name}: {candidate} is a symbolic link owned by uid "
                    f"{info.st_uid}, who could point it elsewhere: name the path without it",
                    name)
            links += 1
            if links > MAX_LINKS:
                raise UntrustedFile(f"{what} {name}: too many symbolic links", name)
            target = os.readlink(candidate)
            pending.extend(reversed([p for p in target.split("/") if p not in ("", ".")]))
            if target.startswith("/"):
                current = "/"
            continue
        current = candidate
        _check_directory(name, what, current, info)
    last = pending[0]
    return os.path.dirname(current) if last == ".." else os.path.join(current, last)


def _check_directory(name: str, what: str, directory: str,
                     info: os.stat_result | None = None) -> None:
    """Refuse ``name`` if ``directory``, on its way, lets anyone but root and us
    rename what is in it."""
    if info is None:
        try:
            info = os.lstat(directory)
        except OSError as error:
            raise UntrustedFile(f"{what} {name}: {directory}: {_strerror(error)}",
                                name) from None
    if info.st_uid not in (0, os.geteuid()):
        raise UntrustedFile(
            f"{what} {name} is in {directory}, which uid {info.st_uid} may change: move "
            "it to a directory only root can write", name)
    if info.st_mode & 0o022 and not info.st_mode & stat.S_ISVTX:
        raise UntrustedFile(
            f"{what} {name} is in {directory}, which has mode {stat.S_IMODE(info.st_mode):o}: "
            f"others may change it; chmod go-w {directory}, or move it to a directory only "
            "root can write", name)


class FileReadError(FileError):
    """Reading failed; ``errno`` is the system error number."""

    def __init__(self, path: str, error: OSError) -> None:
        super().__init__(f"cannot read {path!r}: {_strerror(error)}", path)
        self.errno = error.errno


class FileWriteError(FileError):
    """Replacing failed at ``step``; unless ``replaced``, the old file is intact."""

    def __init__(self, path: str, error: OSError, step: str, *, replaced: bool = False) -> None:
        outcome = (
            "the new content is in place but not known to be durable"
            if replaced
            else "the old file is unchanged"
        )
        super().__init__(f"cannot replace {path!r} ({step}): {_strerror(error)}; {outcome}", path)
        self.errno = error.errno
        self.step = step
        self.replaced = replaced
        #: (old, new) text of an ``edit_file`` that ``replaced`` the file: the
        #: caller undoes an edit that took effect though it failed.
        self.texts: tuple[str, str] | None = None


def _strerror(error: OSError) -> str:
    if error.errno is None:
        return str(error)
    name = errno_codes.errorcode.get(error.errno, str(error.errno))
    return f"[{name}] {error.strerror or os.strerror(error.errno)}"


@dataclass(frozen=True, slots=True)
class FileVersion:
    """What was read: identity and content of one file at one moment.

    ``exists=False`` (all numbers 0) is the version of a missing file; a
    write against it creates the file and fails if someone else did first.
    Equality of all fields is the compare-and-swap test: size and mtime
    catch most edits cheaply, the digest catches a same-size edit within
    the file system's timestamp granularity.
    """

    exists: bool
    device: int
    inode: int
    size: int
    mtime_ns: int
    digest: str

    @classmethod
    def missing(cls) -> FileVersion:
        """The version of a file that does not exist."""
        return cls(False, 0, 0, 0, 0, hashlib.sha256(b"").hexdigest())

    @classmethod
    def of(cls, info: os.stat_result, data: bytes) -> FileVersion:
        """The version of a file whose fstat is ``info`` and content ``data``."""
        return cls(
            True,
            info.st_dev,
            info.st_ino,
            info.st_size,
            info.st_mtime_ns,
            hashlib.sha256(data).hexdigest(),
        )

    def describe(self) -> str:
        """Short human form for messages."""
        if not self.exists:
            return "missing"
        return f"inode {self.inode}, {self.size} bytes, sha256 {self.digest[:12]}"


def _decode(data: bytes) -> str:
    return data.decode(ENCODING, ENCODING_ERRORS)


def _encode(text: str) -> bytes:
    return text.encode(ENCODING, ENCODING_ERRORS)


def _read_fd(fd: int, size_hint: int) -> bytes:
    chunks: list[bytes] = []
    while True:
        # Read past the hint: the size may change while we read.
        chunk = os.read(fd, max(size_hint + 1, 65536))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _read_raw(path: str) -> tuple[bytes, os.stat_result | None]:
    """Read ``path``: (content, fstat), or (b"", None) when it does not exist."""
    try:
        # O_NONBLOCK: opening a FIFO planted at the path must not hang us.
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    except FileNotFoundError:
        return b"", None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            code = errno_codes.EISDIR if stat.S_ISDIR(info.st_mode) else errno_codes.EINVAL
            raise OSError(code, "not a regular file", path)
        data = _read_fd(fd, info.st_size)
        # fstat after the read: an in-place writer racing with us changes
        # mtime, so the version never claims content it did not see.
        after = os.fstat(fd)
    finally:
        os.close(fd)
    return data, after


def _version(info: os.stat_result | None, data: bytes) -> FileVersion:
    return FileVersion.missing() if info is None else FileVersion.of(info, data)


def _same_file(a: os.stat_result | None, b: os.stat_result | None) -> bool:
    if a is None or b is None:
        return a is b
    return (a.st_dev, a.st_ino, a.st_size, a.st_mtime_ns) == (
        b.st_dev,
        b.st_ino,
        b.st_size,
        b.st_mtime_ns,
    )


def read_versioned(path: str | os.PathLike[str]) -> tuple[str, FileVersion]:
    """Read the text of ``path`` and the version to pass to ``replace_atomically``.

    A missing file reads as ``""`` with ``FileVersion.missing()``. Other
    failures (permission, not a regular file, EIO) raise ``FileReadError``.
    """
    name = os.fspath(path)
    try:
        data, info = _read_raw(name)
    except OSError as error:
        raise FileReadError(name, error) from error
    return _decode(data), _version(info, data)


def default_lock_path(path: str | os.PathLike[str]) -> str:
    """The lock file of ``path``: ``<real path>.lock`` (libmount's flock naming)."""
    return os.path.realpath(path) + LOCK_SUFFIX


def temp_path(path: str | os.PathLike[str]) -> str:
    """The temporary file a replacement of ``path`` writes: ``<dir>/.<name>.lmi-tmp``."""
    real = os.path.realpath(path)
    directory, name = os.path.split(real)
    return os.path.join(directory, f".{name}{TEMP_SUFFIX}")


@contextlib.contextmanager
def locked(lock_path: str, *, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """Hold an exclusive flock(2) on ``lock_path`` (created 0644 if missing).

    flock locks belong to the open file description, so two threads of one
    process exclude each other as two processes do. Waits up to ``timeout``
    seconds; then raises ``FileWriteError`` with ETIMEDOUT naming the lock.
    """
    try:
        fd = os.open(lock_path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOCTTY, 0o644)
    except OSError as error:
        raise FileWriteError(lock_path, error, "lock") from error
    try:
        _flock(fd, lock_path, timeout)
        yield
    finally:
        os.close(fd)  # closing the last descriptor releases the lock


def _flock(fd: int, lock_path: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.0005
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        except OSError as error:
            raise FileWriteError(lock_path, error, "lock") from error
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            timed_out = OSError(
                errno_codes.ETIMEDOUT, f"lock still held by another writer after {timeout:g} s"
            )
            raise FileWriteError(lock_path, timed_out, "lock")
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, 0.05)


def replace_atomically(
    path: str | os.PathLike[str],
    text: str,
    expected: FileVersion,
    *,
    lock_path: str | None = None,
    crash: CrashHook | None = None,
    new_file_mode: int = NEW_FILE_MODE,
    lock_timeout: float = LOCK_TIMEOUT,
    backups: int = DEFAULT_BACKUPS,
) -> FileVersion:
    """Replace the content of ``path`` with ``text`` if it is still ``expected``.

    See the module docstring for the protocol. Returns the version now on
    disk. Raises ``ConflictError`` when the file is no longer ``expected``
    (nothing written), ``FileWriteError`` on a system error. With
    ``backups``, the replaced file is kept (``backups_of``), the newest that
    many.
    """
    real = os.path.realpath(path)
    lock = lock_path if lock_path is not None else real + LOCK_SUFFIX
    with locked(lock, timeout=lock_timeout):
        _step(crash, "locked", real)
        return LockedFile(real, crash, new_file_mode).replace(text, expected,
                                                              backups=backups)[0]


class LockedFile:
    """A file whose lock the caller holds (``exclusive``): read it, replace it."""

    def __init__(self, path: str, crash: CrashHook | None = None,
                 new_file_mode: int = NEW_FILE_MODE) -> None:
        self.path = path
        self._crash = crash
        self._new_file_mode = new_file_mode

    def read(self) -> tuple[str, FileVersion]:
        return read_versioned(self.path)

    def replace(self, text: str, expected: FileVersion, *,
                backups: int = DEFAULT_BACKUPS) -> tuple[FileVersion, str | None]:
        """Replace the content with ``text`` if it is still ``expected`` (a writer
        that does not lock may have changed it); returns the new version and the
        backup kept of the old file, if any. Raises as ``replace_atomically``."""
        data = _encode(text)

        def unchanged(current: bytes, info: os.stat_result | None) -> bool:
            return _version(info, current) == expected

        written, backup = _replace_locked(self.path, data, unchanged, lambda: expected,
                                          self._crash, self._new_file_mode, backups)
        return FileVersion.of(written, data), backup


@contextlib.contextmanager
def exclusive(path: str | os.PathLike[str], *, timeout: float = LOCK_TIMEOUT,
              lock_path: str | None = None) -> Iterator[LockedFile]:
    """Hold the lock of ``path`` (the one every writer of this module takes) for a
    whole session, such as an administrator's editor: writers wait meanwhile."""
    real = os.path.realpath(path)
    with locked(lock_path if lock_path is not None else real + LOCK_SUFFIX, timeout=timeout):
        yield LockedFile(real)


def backups_of(path: str | os.PathLike[str]) -> list[str]:
    """The backups kept of ``path``, oldest first."""
    real = os.path.realpath(path)
    directory, name = os.path.split(real)
    prefix = name + BACKUP_INFIX
    try:
        found = [entry for entry in os.listdir(directory or ".") if entry.startswith(prefix)]
    except OSError:
        return []
    return [os.path.join(directory, entry) for entry in sorted(found)]


def edit_file(
    path: str | os.PathLike[str],
    edit: Callable[[str], str],
    *,
    retries: int = 3,
    lock_path: str | None = None,
    crash: CrashHook | None = None,
    new_file_mode: int = NEW_FILE_MODE,
    lock_timeout: float = LOCK_TIMEOUT,
    backups: int = DEFAULT_BACKUPS,
) -> tuple[str, str]:
    """Apply the pure function ``edit`` to the text of ``path``; return (old, new).

    The read, the edit and the replacement happen under the lock, so
    writers that use this module never conflict; a writer that does not
    lock (an editor) is caught by the compare-and-swap and the edit is
    re-applied to the fresh text, up to ``retries`` more times, before the
    ``ConflictError`` is raised. ``edit`` may run more than once: it must
    not have side effects. When it returns the text unchanged, nothing is
    written. Errors of ``edit`` itself propagate unchanged.
    """
    if retries < 0:
        raise ValueError(f"retries must be >= 0, not {retries}")
    real = os.path.realpath(path)
    lock = lock_path if lock_path is not None else real + LOCK_SUFFIX
    attempt = 0
    while True:
        with locked(lock, timeout=lock_timeout):
            _step(crash, "locked", real)
            try:
                return _edit_locked(real, edit, crash, new_file_mode, backups)
            except ConflictError:
                if attempt >= retries:
                    raise
        attempt += 1
        _LOG.info("%s changed under us; re-applying the edit (retry %d)", real, attempt)


def _edit_locked(
    path: str, edit: Callable[[str], str], crash: CrashHook | None, new_file_mode: int,
    backups: int,
) -> tuple[str, str]:
    try:
        data, info = _read_raw(path)
    except OSError as error:
        raise FileReadError(path, error) from error
    old = _decode(data)
    new = edit(old)
    if new == old:
        return old, new

    # We still hold the bytes we read: comparing them is exact and cheaper
    # than hashing twice. The digest is computed only for a conflict message.
    def unchanged(current: bytes, current_info: os.stat_result | None) -> bool:
        return _same_file(current_info, info) and current == data

    try:
        _replace_locked(
            path, _encode(new), unchanged, lambda: _version(info, data), crash, new_file_mode,
            backups,
        )
    except FileWriteError as error:
        if error.replaced:
            error.texts = (old, new)
        raise
    return old, new


def _step(crash: CrashHook | None, step: str, path: str) -> None:
    if crash is None:
        return
    try:
        crash(step)
    except OSError as error:
        replaced = step in ("renamed", "dir-synced")
        raise FileWriteError(path, error, step, replaced=replaced) from error


def _replace_locked(
    path: str,
    data: bytes,
    unchanged: Callable[[bytes, os.stat_result | None], bool],
    expected: Callable[[], FileVersion],
    crash: CrashHook | None,
    new_file_mode: int,
    backups: int = 0,
) -> tuple[os.stat_result, str | None]:
    """Steps 2-7 of the protocol; the caller holds the lock. Returns the new file's
    fstat and the backup kept of the old one (None without ``backups``).

    ``unchanged(content, fstat)`` is the compare-and-swap test; ``expected()``
    gives the version the caller read, for the message of a conflict. The
    temporary file takes the old one's owner, mode and extended attributes
    (an SELinux label, POSIX ACLs, user attributes): replacing a file must
    not change who may read it.
    """
    try:
        info: os.stat_result | None = os.stat(path)
    except FileNotFoundError:
        info = None
    except OSError as error:
        raise FileWriteError(path, error, "temp-created") from error
    directory = os.path.dirname(path) or "."
    temp = os.path.join(directory, f".{os.path.basename(path)}{TEMP_SUFFIX}")
    step = "temp-created"
    fd = -1
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)  # a leftover of a writer killed mid-write
        fd = os.open(
            temp,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o600,
        )
        _step(crash, step, path)
        step = "temp-attributes"
        if info is not None:
            os.fchown(fd, info.st_uid, info.st_gid)
            os.fchmod(fd, stat.S_IMODE(info.st_mode))
            _copy_xattrs(path, fd)
        else:
            os.fchmod(fd, new_file_mode)
        _step(crash, step, path)
        step = "temp-written"
        _write_all(fd, data)
        _step(crash, step, path)
        step = "temp-synced"
        os.fsync(fd)
        written = os.fstat(fd)
        os.close(fd)
        fd = -1
        _step(crash, step, path)
        step = "checked"
        current_data, current_info = _read_raw(path)
        if not unchanged(current_data, current_info):
            raise ConflictError(path, expected(), _version(current_info, current_data))
        _step(crash, step, path)
        step = "renamed"
        backup = _keep_backup(path, backups) if info is not None and backups > 0 else None
        os.rename(temp, path)
    except BaseException as error:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(temp)
        if isinstance(error, OSError):
            raise FileWriteError(path, error, step) from error
        raise
    _step(crash, "renamed", path)
    try:
        fsync_directory(directory)
    except OSError as error:
        raise FileWriteError(path, error, "dir-synced", replaced=True) from error
    _step(crash, "dir-synced", path)
    if backup is not None:
        _LOG.info("kept the previous %s as %s", path, backup)
        _prune_backups(path, backups)
    return written, backup


def _copy_xattrs(path: str, fd: int) -> None:
    try:
        names = os.listxattr(path)
    except OSError as error:
        if error.errno in (errno_codes.ENOTSUP, errno_codes.EOPNOTSUPP):
            return  # a file system without extended attributes
        raise
    for name in names:
        os.setxattr(fd, name, os.getxattr(path, name))


def _keep_backup(path: str, backups: int) -> str:
    """Hard-link the file about to be replaced under its backup name: after the
    rename that name holds the old file itself (content, owner, attributes)."""
    # One reading of the clock: a second from one and a fraction from another
    # named a backup taken across a second's boundary before older ones.
    now = time.time_ns()
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now // 10**9))
    backup = f"{path}{BACKUP_INFIX}{stamp}.{now % 10**9:09d}Z"
    os.link(path, backup)
    return backup


def _prune_backups(path: str, backups: int) -> None:
    for old in backups_of(path)[:-backups]:
        try:
            os.unlink(old)
        except OSError as error:
            _LOG.warning("could not remove the old backup %s: %s", old, _strerror(error))


def write_new(path: str | os.PathLike[str], data: bytes, mode: int = NEW_FILE_MODE) -> None:
    """Put ``data`` at ``path`` whole: written to a new file of a name no one else
    uses (``O_EXCL``, ``O_NOFOLLOW``: a planted file or link there is refused, not
    written through) in the same directory, then renamed over ``path``. A reader
    sees the old file or the new one, never part of it. For files that may be
    lost in a crash (a pid file, a cache): nothing is fsynced. Raises OSError;
    the new file is removed on every error."""
    name = os.fspath(path)
    directory, base = os.path.split(name)
    scratch = os.path.join(directory, f".{base}.{os.getpid()}.{os.urandom(4).hex()}")
    fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 mode)
    try:
        try:
            os.fchmod(fd, mode)  # not narrowed by the umask
            _write_all(fd, data)
        finally:
            os.close(fd)
        os.replace(scratch, name)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(scratch)
        raise


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        count = os.write(fd, view)
        view = view[count:]


def fsync_directory(directory: str | os.PathLike[str]) -> None:
    """fsync(2) a directory, so that a rename or a new file in it is durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- systemd -----------------------------------------------------------------

SYSTEMD_RUN_DIR: Final = "/run/systemd/system"


class Runner(Protocol):
    """The part of ``subprocess.run`` that the reloader uses."""

    def __call__(
        self,
        args: Sequence[str],
        *,
        capture_output: bool,
        text: bool,
        timeout: float,
        check: bool,
    ) -> subprocess.CompletedProcess[str]: ...


@dataclass(frozen=True, slots=True)
class ReloadResult:
    """What happened to ``systemctl daemon-reload``.

    ``attempted`` is False when systemd does not run the machine (nothing to
    do, ``ok`` True). Otherwise ``ok`` says whether systemctl succeeded and
    ``detail`` carries its error output or the reason it could not run.
    """

    attempted: bool
    ok: bool
    detail: str = ""
    returncode: int | None = None


def systemd_booted(run_dir: str = SYSTEMD_RUN_DIR) -> bool:
    """sd_booted(3): systemd runs the machine iff ``run_dir`` is a directory (lstat)."""
    try:
        return stat.S_ISDIR(os.lstat(run_dir).st_mode)
    except OSError:
        return False


def reload_systemd(
    run_dir: str = SYSTEMD_RUN_DIR,
    systemctl: str = "systemctl",
    runner: Runner = subprocess.run,
    *,
    timeout: float = 60.0,
) -> ReloadResult:
    """Run ``systemctl daemon-reload`` when systemd runs the machine.

    systemd-fstab-generator turns fstab into mount units; until the reload,
    systemd acts on the old ones (systemd.mount(5), "fstab"). The edit is
    already done when this runs, so a failure is returned and logged, never
    raised.
    """
    if not systemd_booted(run_dir):
        return ReloadResult(attempted=False, ok=True, detail=f"{run_dir} is not a directory")
    command = [systemctl, "daemon-reload"]
    try:
        completed = runner(command, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError) as error:
        detail = f"cannot run {' '.join(command)!r}: {error}"
        _LOG.warning("%s", detail)
        return ReloadResult(attempted=True, ok=False, detail=detail)
    if completed.returncode != 0:
        output = (completed.stderr or completed.stdout or "").strip()
        detail = f"{' '.join(command)!r} exited with {completed.returncode}: {output}"
        _LOG.warning("%s", detail)
        return ReloadResult(
            attempted=True, ok=False, detail=detail, returncode=completed.returncode
        )
    return ReloadResult(attempted=True, ok=True, returncode=0)


@dataclass(frozen=True, slots=True)
class SystemdReloader:
    """``reload_systemd`` with its paths and runner bound, for injection into the engine."""

    run_dir: str = SYSTEMD_RUN_DIR
    systemctl: str = "systemctl"
    runner: Runner = subprocess.run
    timeout: float = 60.0

    def __call__(self) -> ReloadResult:
        """Reload if systemd runs the machine; never raises for a failed reload."""
        return reload_systemd(self.run_dir, self.systemctl, self.runner, timeout=self.timeout)
