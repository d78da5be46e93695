"""The durable holder journal: what lmi-mount holds survives a crash or restart.

Owns: the on-disk record of holder state and of the engine's open
transactions in an injected state directory, its replay, its compaction, the
space it reserves up front, and the lock that keeps two engines off one state
directory.

Storage: two preallocated files, ``holders.journal.0`` and
``holders.journal.1``, each ``capacity`` bytes (posix_fallocate, or zeros
written where the file system cannot fallocate). Records are written in
place with pwrite(2) at the write offset of the current file, then
fdatasync(2); a record is acknowledged only after that. Nothing is ever
appended past the preallocated size, so a record needs no new block and a
full state file system cannot make one fail. A failed write (or sync) leaves
the write offset and the in-memory state as they were and overwrites what it
wrote with zeros (best effort), so that memory and disk agree. Should that
fail after a failed compaction, a complete newer snapshot might remain and
win the next replay: the journal then turns read-only.

Format: JSON lines (ASCII, one object per line). Every record carries the
generation ``"g"`` of the file it is in, and ends with ``"crc"``, the CRC-32
(8 hex digits) of the line as it would read without that member::

    {"op":"boot","boot_id":...,"g":N,"next_txn":T,"records":K,"crc":"..."}

is the first record of a file: the boot the records belong to (kernel mounts
do not survive a reboot, so the state recorded for another boot is empty on
open), the generation, the next transaction id, and the number K of records
of the snapshot that follows it. Then come the other records, oldest first:

* ``{"op":"set","target":...,"holders":[...],...}`` the full holder state of
  one mount after a change: replay keeps the last ``set`` of each target.
* ``{"op":"intent","target":...,"source":...,...}`` written and synced BEFORE
  a kernel mount is attempted: if the process dies between the mount and its
  ``set`` record, replay still knows the mount at that path was ours
  (containerd's two-phase activation does the same). A ``set`` or
  ``forget`` of the target closes it.
* ``{"op":"forget","target":...}`` the mount is no longer tracked.
* ``{"op":"begin","txn":id,"operation":...,"steps":[...]}`` the engine starts
  a transaction (steps are the engine's, opaque here),
  ``{"op":"progress","txn":id,"data":{...}}`` notes what a step of it made
  (a compacted begin record carries them as ``"progress"``), and
  ``{"op":"end","txn":id}`` it finished: replay reports the begun and not
  ended ones, in order, so that the engine can finish or undo them.

Replay reads the file whose first record is a boot record of the highest
generation and whose K snapshot records are all present, line by line, and
stops at the first line that is empty or zeros, unparsable, fails its CRC, or
has another generation: stale content of an older use of the file, or a torn
write. Those were never acknowledged, because acknowledgement waits for the
fdatasync, and are dropped silently. A file whose snapshot is incomplete (a
crash during compaction) is ignored: the other file still holds everything.

Compaction: when a record (or a reservation, ``reserve``) does not fit in the
current file, the live state after that record (the boot record with the next
generation, one ``set`` per held mount, the open intents, one ``begin`` per
open transaction) is written into the OTHER file from offset 0 and synced,
and that file becomes current. It reuses preallocated space only: no rename,
no new file. If the live state itself does not fit, ``JournalError(ENOSPC)``
is raised before anything is changed. ``open`` compacts once, which starts
every run from a clean file and drops the state of a previous boot.

The single file ``holders.journal`` of earlier versions (plain JSON lines, no
generation, no CRC) is replayed on open, written into the new files and then
removed.

When the files (or the state directory, or its lock file) cannot be created
or preallocated because the state file system is full or read-only (ENOSPC,
EDQUOT, EROFS), ``open`` still returns
what can be replayed and the journal is read-only: ``read_only_reason`` says
why, and every write raises ``JournalError(EROFS)``; files created for the
attempt are removed, and an old ``holders.journal`` stays for a later
migration. Files that exist already need no new space and open normally on a
full file system.

Hazards: the lock file and the journal files are opened with O_NOFOLLOW and
O_CLOEXEC, created 0600, and refused unless they are regular files owned by
the effective uid; the state directory is created 0700.

Must not know: mount logic (what the records mean is the engine's business)
or CIM.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import json
import os
import stat
import threading
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Concatenate, Final, ParamSpec, TypeVar

from lmi_mount.linux.files import fsync_directory
from lmi_mount.mounts.holders import HeldMount

JOURNAL_NAME = "holders.journal"
"""The single journal file of earlier versions, migrated on open; also the stem
of the two preallocated files, ``holders.journal.0`` and ``holders.journal.1``."""
JOURNAL_NAMES = (f"{JOURNAL_NAME}.0", f"{JOURNAL_NAME}.1")
LOCK_NAME = "lock"
DEFAULT_CAPACITY = 1 << 20
"""Bytes preallocated for each of the two journal files: about 4,000 records
between compactions; the pair costs 2 MiB of /run."""
# Records carrying the engine's steps, decoded and checked before writing.
_OPAQUE_OPS = frozenset({"begin"})

#: Errors that mean "no room, or no writing at all, on the state file system".
FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})

_OPEN_FLAGS = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK
_NO_FALLOCATE = frozenset({errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS})
_CRC_PREFIX = b',"crc":"'
_CRC_SUFFIX_LEN = len(_CRC_PREFIX) + 8 + 2  # ,"crc":"xxxxxxxx"}
_ZEROS = bytes(1 << 16)


class JournalError(OSError):
    """The journal cannot be opened, locked, read or written (names the path)."""


@dataclass(frozen=True, slots=True)
class Intent:
    """A kernel mount that was about to be made when the record was written."""

    target: str
    source: str
    fstype: str | None
    options: str


@dataclass(frozen=True, slots=True)
class Transaction:
    """A transaction of the engine that was begun and not ended.

    ``progress`` are the notes the engine recorded while it ran (what a step
    made: the id of a new mount), oldest first.
    """

    txn: int
    operation: str
    steps: tuple[dict[str, Any], ...]
    progress: tuple[dict[str, Any], ...] = ()


@dataclass(slots=True)
class JournalState:
    """What replay recovered: the held mounts, the open intents, the open transactions."""

    mounts: dict[str, HeldMount] = field(default_factory=dict)
    intents: dict[str, Intent] = field(default_factory=dict)
    transactions: dict[int, Transaction] = field(default_factory=dict)

    def copy(self) -> JournalState:
        return JournalState(dict(self.mounts), dict(self.intents), dict(self.transactions))


# -- records ---------------------------------------------------------------------


def _held_to_record(held: HeldMount) -> dict[str, Any]:
    # Deadlines and generations are not journaled: monotonic time does not
    # survive a restart, and replay restarts hold timers afresh (WI6).
    return {
        "op": "set",
        "target": held.target,
        "source": held.source,
        "fstype": held.fstype,
        "options": held.options,
        "made_by_us": held.made_by_us,
        "mount_id": held.mount_id,
        "unique_id": held.unique_id,
        "holders": list(held.holders),
        **({"recursive": True} if held.recursive else {}),
    }


def _held_from_record(record: Mapping[str, Any]) -> HeldMount:
    return HeldMount(
        target=str(record["target"]),
        source=str(record["source"]),
        fstype=None if record["fstype"] is None else str(record["fstype"]),
        options=str(record["options"]),
        made_by_us=bool(record["made_by_us"]),
        mount_id=None if record["mount_id"] is None else int(record["mount_id"]),
        unique_id=None if record.get("unique_id") is None else int(record["unique_id"]),
        holders=tuple(str(h) for h in record["holders"]),
        recursive=bool(record.get("recursive", False)),
    )


def _intent_to_record(intent: Intent) -> dict[str, Any]:
    return {
        "op": "intent",
        "target": intent.target,
        "source": intent.source,
        "fstype": intent.fstype,
        "options": intent.options,
    }


def _begin_to_record(txn: Transaction) -> dict[str, Any]:
    record = {"op": "begin", "txn": txn.txn, "operation": txn.operation,
              "steps": list(txn.steps)}
    if txn.progress:
        record["progress"] = list(txn.progress)
    return record


def _objects(value: object, what: str) -> tuple[dict[str, Any], ...]:
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise TypeError(f"{what} must be a list of objects")
    return tuple(value)


def _integer(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{value!r} is not an integer")
    return value


@dataclass(slots=True)
class _Live:
    """The state the records describe, and the next transaction id."""

    state: JournalState = field(default_factory=JournalState)
    next_txn: int = 1

    def copy(self) -> _Live:
        return _Live(self.state.copy(), self.next_txn)


def _apply(live: _Live, record: Mapping[str, Any]) -> None:
    """Apply one record to ``live``; KeyError, TypeError or ValueError if malformed."""
    state = live.state
    op = record["op"]
    if op == "intent":
        fstype = record["fstype"]
        state.intents[str(record["target"])] = Intent(
            str(record["target"]),
            str(record["source"]),
            None if fstype is None else str(fstype),
            str(record["options"]),
        )
    elif op == "set":
        held = _held_from_record(record)
        state.mounts[held.target] = held
        state.intents.pop(held.target, None)
    elif op == "forget":
        state.mounts.pop(str(record["target"]), None)
        state.intents.pop(str(record["target"]), None)
    elif op == "begin":
        txn = _integer(record["txn"])
        steps = _objects(record["steps"], "steps")
        progress = _objects(record.get("progress", []), "progress")
        state.transactions[txn] = Transaction(txn, str(record["operation"]), steps, progress)
        live.next_txn = max(live.next_txn, txn + 1)
    elif op == "progress":
        txn = _integer(record["txn"])
        (note,) = _objects([record["data"]], "data")
        open_txn = state.transactions.get(txn)
        if open_txn is not None:
            state.transactions[txn] = replace(open_txn, progress=(*open_txn.progress, note))
    elif op == "end":
        state.transactions.pop(_integer(record["txn"]), None)
    else:
        raise ValueError(f"unknown op {op!r}")


#: Compact ASCII JSON; made once (``json.dumps`` with options makes one a call).
_JSON: Final = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def _encode(record: Mapping[str, Any]) -> bytes:
    """One line: the record as compact ASCII JSON, its CRC-32 as the last member."""
    body = _JSON.encode(record).encode("ascii")
    return body[:-1] + _CRC_PREFIX + b"%08x" % zlib.crc32(body) + b'"}\n'


def _decode(line: bytes) -> dict[str, Any] | None:
    """The record of one line (without its newline), or None if it is not a whole one."""
    if len(line) <= _CRC_SUFFIX_LEN or line[:1] != b"{" or line[-2:] != b'"}':
        return None
    cut = len(line) - _CRC_SUFFIX_LEN
    if line[cut : cut + len(_CRC_PREFIX)] != _CRC_PREFIX:
        return None
    body = line[:cut] + b"}"
    try:
        if int(line[-10:-2], 16) != zlib.crc32(body):
            return None
        record = json.loads(body)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def _with_generation(record: Mapping[str, Any], generation: int) -> dict[str, Any]:
    return {**record, "g": generation}


def _snapshot(live: _Live, generation: int, boot_id: str) -> bytes:
    """The records that describe ``live`` alone: what compaction writes."""
    state = live.state
    body: list[dict[str, Any]] = [_held_to_record(h) for h in state.mounts.values()]
    body += [_intent_to_record(i) for i in state.intents.values()]
    body += [_begin_to_record(t) for t in state.transactions.values()]
    header = {
        "op": "boot",
        "boot_id": boot_id,
        "g": generation,
        "next_txn": live.next_txn,
        "records": len(body),
    }
    return _encode(header) + b"".join(_encode(_with_generation(r, generation)) for r in body)


@dataclass(slots=True)
class _Image:
    """What one journal file holds."""

    generation: int
    live: _Live
    end: int  # offset just past the last valid record: the write offset
    complete: bool  # the whole snapshot after the boot record is present


def _header(data: bytes) -> tuple[int, dict[str, Any]] | None:
    """The generation and boot record that start a journal file, if they do."""
    newline = data.find(b"\n")
    header = _decode(data[:newline]) if newline >= 0 else None
    if header is None or header.get("op") != "boot":
        return None
    try:
        return _integer(header["g"]), header
    except (KeyError, TypeError):
        return None


def _parse_image(data: bytes, boot_id: str) -> _Image | None:
    """Replay one journal file; None if it does not start with a boot record."""
    found = _header(data)
    if found is None:
        return None
    generation, header = found
    try:
        next_txn = _integer(header["next_txn"])
        expected = _integer(header["records"])
        same_boot = str(header["boot_id"]) == boot_id
    except (KeyError, TypeError):
        return None
    live = _Live(next_txn=next_txn)
    position, count = data.find(b"\n") + 1, 0
    while position < len(data):
        newline = data.find(b"\n", position)
        if newline < 0:
            break
        record = _decode(data[position:newline])
        if record is None or record.get("op") == "boot":
            break
        try:
            if _integer(record.get("g")) != generation:
                break
            _apply(live, record)
        except (KeyError, TypeError, ValueError):
            break
        position, count = newline + 1, count + 1
    if not same_boot:
        live = _Live(next_txn=live.next_txn)  # another boot: no kernel mount of it remains
    return _Image(generation, live, position, count >= expected)


def _choose(files: list[bytes | None], boot_id: str) -> tuple[int, _Image | None, int]:
    """The index and image of the current file (the complete one of the highest
    generation; none: index 1, so that the first compaction writes file 0), and
    the highest generation any file starts with."""
    headers = [
        (found[0], index)
        for index, data in enumerate(files)
        if data is not None and (found := _header(data)) is not None
    ]
    for _generation, index in sorted(headers, reverse=True):
        data = files[index]
        assert data is not None
        image = _parse_image(data, boot_id)
        if image is not None and image.complete:
            return index, image, max(headers)[0]
    return 1, None, max(headers, default=(0, 0))[0]


def _parse_legacy(data: bytes, boot_id: str, path: Path) -> _Live:
    """Replay the single-file journal of earlier versions (no generation, no CRC)."""
    live = _Live()
    lines = data.split(b"\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if record["op"] == "boot":
                if record.get("boot_id", "") != boot_id:
                    return _Live()  # another boot: no kernel mount of it remains
            else:
                _apply(live, record)
        except (ValueError, KeyError, TypeError) as exc:
            if number == len(lines) or (number == len(lines) - 1 and not lines[-1]):
                break  # torn final append: never acknowledged, safe to drop
            raise JournalError(
                errno.EINVAL, f"corrupt journal record at line {number}: {exc}", str(path)
            ) from exc
    return live


# -- files -----------------------------------------------------------------------


def _describe(exc: OSError) -> str:
    code = exc.errno or 0
    return f"{errno.errorcode.get(code, str(code))}: {exc.strerror or os.strerror(code)}"


def _open_checked(path: Path, flags: int) -> int:
    """Open ``path`` without following a link; refuse anything but our own regular file.

    OSError for the open itself (the caller tells ENOENT or ENOSPC apart),
    JournalError for a file that is refused.
    """
    try:
        fd = os.open(path, flags | _OPEN_FLAGS, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise JournalError(
                exc.errno, f"refusing {path}: it is a symbolic link", str(path)
            ) from exc
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise JournalError(errno.EINVAL, f"refusing {path}: not a regular file", str(path))
        if info.st_uid != os.geteuid():
            raise JournalError(
                errno.EPERM,
                f"refusing {path}: owned by uid {info.st_uid}, not by uid {os.geteuid()}",
                str(path),
            )
    except BaseException:
        os.close(fd)
        raise
    return fd


def _read_fd(fd: int) -> bytes:
    size = os.fstat(fd).st_size
    chunks: list[bytes] = []
    offset = 0
    while offset < size:
        chunk = os.pread(fd, min(size - offset, 1 << 20), offset)
        if not chunk:
            break
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        if written <= 0:
            raise OSError(errno.EIO, "pwrite wrote nothing")
        view, offset = view[written:], offset + written


def _zero(fd: int, offset: int, length: int) -> bool:
    """Overwrite ``length`` bytes at ``offset`` with zeros and sync; False if that failed."""
    try:
        while length > 0:
            chunk = min(length, len(_ZEROS))
            _pwrite_all(fd, _ZEROS[:chunk], offset)
            offset, length = offset + chunk, length - chunk
        os.fdatasync(fd)
    except OSError:
        return False
    return True


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _serialized(
    method: Callable[Concatenate[HolderJournal, _P], _R],
) -> Callable[Concatenate[HolderJournal, _P], _R]:
    """Run a journal method under the journal's lock (see ``HolderJournal``)."""
    @functools.wraps(method)
    def locked(journal: HolderJournal, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        with journal._mutex:
            return method(journal, *args, **kwargs)
    return locked


class _Full(Exception):
    """The state file system has no room (or is read-only): the journal must be read-only."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class HolderJournal:
    """The holder journal in ``state_dir``, owned by one process at a time.

    ``boot_id_path`` is injected (``/proc/sys/kernel/random/boot_id``) so that
    tests can simulate a reboot. ``capacity`` is the size of each of the two
    preallocated journal files: the live state (held mounts, open intents and
    transactions) must fit in it. Its methods may be called from several
    threads: each runs whole under the journal's lock, and transactions
    may be open side by side.
    """

    def __init__(
        self,
        state_dir: str | os.PathLike[str],
        *,
        boot_id_path: str | os.PathLike[str] = "/proc/sys/kernel/random/boot_id",
        capacity: int = DEFAULT_CAPACITY,
    ) -> None:
        if capacity < 4096:
            raise ValueError(f"journal capacity {capacity} is below 4096 bytes")
        self.state_dir = Path(state_dir)
        self.paths = (self.state_dir / JOURNAL_NAMES[0], self.state_dir / JOURNAL_NAMES[1])
        self.legacy_path = self.state_dir / JOURNAL_NAME
        self.lock_path = self.state_dir / LOCK_NAME
        self.capacity = capacity
        self.read_only = False
        self.read_only_reason: str | None = None
        self._boot_id_path = Path(boot_id_path)
        self._lock_fd: int | None = None
        self._fds: tuple[int, int] | None = None
        self._open = False
        self._boot = ""
        self._live = _Live()
        self._current = 0
        self._generation = 0
        self._offset = 0
        # Engine threads on different mount points write concurrently: every
        # public method runs under this lock, and each open transaction's
        # reservation (bytes its later records may need) is counted here, so
        # that one transaction's begin cannot take the room promised to another.
        self._mutex = threading.RLock()
        self._reserved: dict[int, int] = {}

    @property
    def path(self) -> Path:
        """The current journal file."""
        return self.paths[self._current]

    @property
    def free(self) -> int:
        """Bytes left in the current file before a record needs a compaction."""
        return max(0, self.capacity - self._offset) if self._fds is not None else 0

    @property
    def _state(self) -> JournalState:
        return self._live.state

    # -- lifecycle -----------------------------------------------------------

    @_serialized
    def open(self) -> JournalState:
        """Lock the state directory, replay the journal, and return what it held."""
        if self._open:
            raise JournalError(errno.EBUSY, "journal is already open", str(self.state_dir))
        self.read_only, self.read_only_reason = False, None
        self._reserved = {}
        try:
            self._lock()
            self._open = True
            self._boot = self._boot_id()
            legacy = self._read_legacy(self._boot)
            if self.read_only:
                self._live = legacy if legacy is not None else self._replay_paths(self._boot)
                return self._live.state.copy()
            try:
                self._fds = self._prepare_files()
            except _Full as full:
                self._go_read_only(full.reason)
                self._live = legacy if legacy is not None else self._replay_paths(self._boot)
                return self._live.state.copy()
            files: list[bytes | None] = [_read_fd(fd) for fd in self._fds]
            self._current, image, self._generation = _choose(files, self._boot)
            self._offset = image.end if image is not None else self.capacity
            if legacy is not None:
                self._live = legacy
            else:
                self._live = image.live if image is not None else _Live()
            # Start every run from a compact file: it bounds replay time and
            # drops a torn tail or the state of a previous boot in one step.
            self._compact(self._live.copy())
            if legacy is not None:
                try:
                    self.legacy_path.unlink()
                    fsync_directory(self.state_dir)
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    raise JournalError(
                        exc.errno,
                        f"cannot remove the migrated journal: {exc}",
                        str(self.legacy_path),
                    ) from exc
        except BaseException:
            self.close()
            raise
        return self._live.state.copy()

    def peek(self) -> JournalState:
        """Replay the journal without locking or writing it (a read-only observer).

        What a concurrent engine is writing may be missing or torn at the end;
        the observer sees the state as of the last complete record.
        """
        boot = self._boot_id()
        legacy = self._read_legacy(boot)
        live = legacy if legacy is not None else self._replay_paths(boot)
        return live.state.copy()

    @_serialized
    def close(self) -> None:
        fds = list(self._fds or ())
        if self._lock_fd is not None:
            fds.append(self._lock_fd)
        self._fds = self._lock_fd = None
        self._open = False
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> HolderJournal:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- records -------------------------------------------------------------

    @_serialized
    def intent(self, intent: Intent) -> None:
        """Record, durably, that a kernel mount at ``intent.target`` is about to be made."""
        self._record(_intent_to_record(intent))

    @_serialized
    def set(self, held: HeldMount, *, alone: bool = False) -> None:
        """Record, durably, the full holder state of one mount.

        ``alone``: the record is a transaction of its own, written beside the
        open ones; it must leave them the room they reserved (``begin``), and
        is refused with ENOSPC when it cannot.
        """
        self._record(_held_to_record(held), alone=alone)

    @_serialized
    def forget(self, target: str, *, alone: bool = False) -> None:
        """Record, durably, that the mount at ``target`` is no longer tracked
        (``alone`` as for ``set``)."""
        self._record({"op": "forget", "target": target}, alone=alone)

    @_serialized
    def begin(
        self, operation: str, steps: list[dict[str, Any]], *,
        room: Callable[[int], int] | None = None,
    ) -> int:
        """Record, durably, that a transaction of ``steps`` starts; return its id.

        The steps are the engine's (JSON-serializable objects); replay hands
        them back as they were written, in ``JournalState.transactions``.
        ``room``, given the size of the begin record, says how many bytes the
        transaction's later records need: they are reserved first (see
        ``reserve``), so that none of them can fail for want of space.
        """
        self._writable()
        txn = self._live.next_txn
        record = {"op": "begin", "txn": txn, "operation": operation, "steps": list(steps)}
        encoded = self._line(record)
        later = room(len(encoded[0])) if room is not None else 0
        if room is not None:
            generation = self._generation
            self.reserve(len(encoded[0]) + later)
            if self._generation != generation:  # compacted: the line carries the generation
                encoded = self._line(record)
        self._record(record, encoded)
        if later:
            self._reserved[txn] = later
        return txn

    @_serialized
    def progress(self, txn: int, note: dict[str, Any]) -> None:
        """Record, durably, a note of open transaction ``txn`` (what a step made):
        an object of strings, numbers, booleans, None and lists of them."""
        self._writable()
        if txn not in self._live.state.transactions:
            raise JournalError(errno.EINVAL, f"transaction {txn} is not open", str(self.path))
        self._record({"op": "progress", "txn": txn, "data": dict(note)})

    @_serialized
    def end(self, txn: int) -> None:
        """Record, durably, that transaction ``txn`` is over (done or undone)."""
        self._writable()
        if txn not in self._live.state.transactions:
            raise JournalError(errno.EINVAL, f"transaction {txn} is not open", str(self.path))
        self._record({"op": "end", "txn": txn})
        self._reserved.pop(txn, None)

    @_serialized
    def stop(self, reason: str) -> None:
        """Refuse every later write (read-only, for ``reason``) until the next ``open``."""
        self._go_read_only(reason)

    @_serialized
    def reserve(self, nbytes: int) -> None:
        """Make sure records of ``nbytes`` in all can be written without a compaction.

        Compacts now if needed; JournalError(ENOSPC) if even a compacted file
        would not leave that much room. The room open transactions reserved
        (``begin``) stays theirs: it is counted as taken until their ``end``.
        """
        if nbytes < 0:
            raise ValueError(f"cannot reserve {nbytes} bytes")
        self._writable()
        promised = sum(self._reserved.values())
        if self._offset + promised + nbytes <= self.capacity:
            return
        self._compact(self._live.copy(), extra=promised + nbytes)

    # -- internals -----------------------------------------------------------

    def _boot_id(self) -> str:
        try:
            return self._boot_id_path.read_text(encoding="ascii").strip()
        except OSError:
            # No boot id (an unusual /proc): records then never expire by boot,
            # and replay relies on mount ids alone.
            return ""

    def _go_read_only(self, reason: str) -> None:
        self.read_only = True
        self.read_only_reason = reason

    def _writable(self) -> None:
        if self.read_only:
            raise JournalError(
                errno.EROFS,
                f"the journal is read-only: {self.read_only_reason}",
                str(self.state_dir),
            )
        if self._fds is None:
            raise JournalError(errno.EBADF, "journal is not open", str(self.state_dir))

    def _lock(self) -> None:
        """Create the state directory and take its lock (read-only if it cannot be made)."""
        try:
            self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            if exc.errno not in FULL_ERRNOS:
                raise JournalError(
                    exc.errno, f"cannot create state directory: {exc}", str(self.state_dir)
                ) from exc
            self._go_read_only(f"cannot create {self.state_dir} ({_describe(exc)})")
            return
        fd = self._open_lock_file()
        if fd is None:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise JournalError(
                    exc.errno,
                    "another lmi-mount engine holds the state directory",
                    str(self.state_dir),
                ) from exc
            raise JournalError(
                exc.errno, f"cannot lock state directory: {exc}", str(self.state_dir)
            ) from exc
        self._lock_fd = fd

    def _open_lock_file(self) -> int | None:
        """The lock file's descriptor, or None (and read-only) if it cannot be created."""
        try:
            return _open_checked(self.lock_path, os.O_RDWR | os.O_CREAT)
        except JournalError:
            raise
        except OSError as exc:
            if exc.errno not in FULL_ERRNOS:
                raise JournalError(
                    exc.errno, f"cannot open state directory: {exc}", str(self.state_dir)
                ) from exc
            failure = exc
        try:  # an existing lock file needs no room and no write access
            return _open_checked(self.lock_path, os.O_RDONLY)
        except FileNotFoundError:
            self._go_read_only(f"cannot create {self.lock_path} ({_describe(failure)})")
            return None
        except JournalError:
            raise
        except OSError as exc:
            raise JournalError(
                exc.errno, f"cannot open state directory: {exc}", str(self.state_dir)
            ) from exc

    def _read_legacy(self, boot: str) -> _Live | None:
        try:
            fd = _open_checked(self.legacy_path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        except JournalError:
            raise
        except OSError as exc:
            raise JournalError(
                exc.errno, f"cannot read journal: {exc}", str(self.legacy_path)
            ) from exc
        try:
            data = _read_fd(fd)
        except OSError as exc:
            raise JournalError(
                exc.errno, f"cannot read journal: {exc}", str(self.legacy_path)
            ) from exc
        finally:
            os.close(fd)
        return _parse_legacy(data, boot, self.legacy_path)

    def _replay_paths(self, boot: str) -> _Live:
        """Replay the journal files by path, without writing (peek, read-only start)."""
        files: list[bytes | None] = []
        for path in self.paths:
            try:
                fd = _open_checked(path, os.O_RDONLY)
            except FileNotFoundError:
                files.append(None)
                continue
            except JournalError:
                raise
            except OSError as exc:
                raise JournalError(exc.errno, f"cannot read journal: {exc}", str(path)) from exc
            try:
                files.append(_read_fd(fd))
            except OSError as exc:
                raise JournalError(exc.errno, f"cannot read journal: {exc}", str(path)) from exc
            finally:
                os.close(fd)
        image = _choose(files, boot)[1]
        return image.live if image is not None else _Live()

    def _prepare_files(self) -> tuple[int, int]:
        """Open (creating and preallocating where needed) both journal files.

        _Full if the file system has no room for them: files created here are
        removed again, so that a full file system gets its space back.
        """
        fds: list[int] = []
        created: list[Path] = []
        path, step = self.paths[0], "open"
        try:
            for path in self.paths:
                try:
                    step = "open"
                    fd = _open_checked(path, os.O_RDWR)
                except FileNotFoundError:
                    step = "create"
                    fd = _open_checked(path, os.O_RDWR | os.O_CREAT | os.O_EXCL)
                    created.append(path)
                fds.append(fd)
                step = f"preallocate {self.capacity} bytes for"
                self._preallocate(fd)
            if created:
                path, step = self.state_dir, "sync"
                fsync_directory(self.state_dir)
        except BaseException as exc:
            for fd in fds:
                os.close(fd)
            if isinstance(exc, OSError) and not isinstance(exc, JournalError):
                if exc.errno in FULL_ERRNOS:
                    for made in created:
                        with contextlib.suppress(OSError):
                            made.unlink()
                    raise _Full(f"cannot {step} {path} ({_describe(exc)})") from exc
                raise JournalError(
                    exc.errno, f"cannot {step} journal file: {exc}", str(path)
                ) from exc
            raise
        return fds[0], fds[1]

    def _preallocate(self, fd: int) -> None:
        info = os.fstat(fd)
        if info.st_size >= self.capacity and info.st_blocks * 512 >= self.capacity:
            return  # allocated already: needs no room
        try:
            os.posix_fallocate(fd, 0, self.capacity)
        except OSError as exc:
            if exc.errno not in _NO_FALLOCATE:
                raise
            offset = info.st_size
            while offset < self.capacity:
                chunk = min(self.capacity - offset, len(_ZEROS))
                _pwrite_all(fd, _ZEROS[:chunk], offset)
                offset += chunk
        os.fsync(fd)

    def _record(
        self, record: dict[str, Any], encoded: tuple[bytes, dict[str, Any]] | None = None,
        *, alone: bool = False,
    ) -> None:
        """Write one record durably; the in-memory state changes only after.

        In place if it fits, else by a compaction of the state after it.
        ``encoded`` is ``_line(record)`` when the caller has it already. A
        record of an open transaction draws on the room that transaction
        reserved; one written ``alone`` (no transaction's) must leave all of
        it, in place or after the compaction.
        """
        self._writable()
        line, applied = encoded or self._line(record)
        promised = sum(self._reserved.values()) if alone else 0
        if self._offset + len(line) + promised <= self.capacity:
            self._write_at(self._current, self._offset, line, "write a journal record")
            self._offset += len(line)
            _apply(self._live, applied)
            return
        after = self._live.copy()
        _apply(after, applied)
        self._compact(after, extra=promised)

    def _line(self, record: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
        """The encoded line of ``record`` and the record as replay will apply it.

        A record replay would stop at is never written: encoding refuses what
        is not JSON (NaN included), and a transaction's steps, the engine's
        values, are decoded again and applied to a scratch state first, so
        that memory holds exactly what replay will read. The journal's own
        records, and progress notes (flat JSON values), read back as written.
        """
        stamped = _with_generation(record, self._generation)
        line = _encode(stamped)  # JSON values only: anything else raises here
        if record["op"] not in _OPAQUE_OPS:
            return line, stamped
        applied = _decode(line[:-1])  # exactly what replay will read back
        assert applied is not None
        _apply(_Live(), applied)  # a record replay would stop at is never written
        return line, applied

    def _compact(self, live: _Live, extra: int = 0) -> None:
        """Write ``live`` alone into the other file, which becomes current.

        ENOSPC, with nothing changed, if it would not leave ``extra`` bytes free.
        """
        generation = self._generation + 1
        payload = _snapshot(live, generation, self._boot)
        if len(payload) + extra > self.capacity:
            wanted = f"{len(payload)} bytes" + (f" and {extra} more reserved" if extra else "")
            raise JournalError(
                errno.ENOSPC,
                f"the live journal state ({wanted}) does not fit the journal capacity "
                f"of {self.capacity} bytes",
                str(self.paths[1 - self._current]),
            )
        target = 1 - self._current
        self._write_at(target, 0, payload, "compact the journal", compaction=True)
        self._current, self._generation = target, generation
        self._offset = len(payload)
        self._live = live

    def _write_at(
        self, index: int, offset: int, data: bytes, what: str, *, compaction: bool = False
    ) -> None:
        """pwrite and fdatasync ``data``; on failure zero it again and raise JournalError."""
        assert self._fds is not None
        fd, path = self._fds[index], self.paths[index]
        try:
            _pwrite_all(fd, data, offset)
            os.fdatasync(fd)
        except OSError as exc:
            if not _zero(fd, offset, len(data)) and compaction:
                # A whole, newer snapshot may remain there and win the next
                # replay over the records written after this failure.
                self._go_read_only(
                    f"a failed compaction into {path} could not be undone ({_describe(exc)})"
                )
            raise JournalError(exc.errno, f"cannot {what}: {exc}", str(path)) from exc
