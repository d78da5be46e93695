"""The durable holder journal: what lmi-mount holds survives a crash or restart.

Owns: the on-disk record of holder state in an injected state directory
(``holders.journal``, JSON lines, one fsync per append), its replay, its
compaction, and the lock that keeps two engines off one state directory.

Format (one JSON object per line, newest last):

* ``{"op": "boot", "boot_id": ...}`` first line: the boot the records belong
  to. Kernel mounts do not survive a reboot, so records of another boot are
  discarded on open.
* ``{"op": "intent", "target": ..., ...}`` written and synced BEFORE a kernel
  mount is attempted: if the process dies between the mount and its ``set``
  record, replay still knows the mount at that path was ours (containerd's
  two-phase activation does the same).
* ``{"op": "set", "target": ..., "holders": [...], ...}`` the full holder state
  of one mount after a change: replay keeps the last ``set`` of each target.
* ``{"op": "forget", "target": ...}`` the mount is no longer tracked.

A torn last line (a crash mid-append) is dropped on open; that record was
never acknowledged to a client, because acknowledgement waits for the fsync.

Must not know: mount logic (what the records mean is the engine's business)
or CIM.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from lmi_mount.mounts.holders import HeldMount

JOURNAL_NAME = "holders.journal"
LOCK_NAME = "lock"


class JournalError(OSError):
    """The journal cannot be opened, locked, read or written (names the path)."""


@dataclass(frozen=True, slots=True)
class Intent:
    """A kernel mount that was about to be made when the record was written."""

    target: str
    source: str
    fstype: str | None
    options: str


@dataclass(slots=True)
class JournalState:
    """What replay recovered: the held mounts and the intents left open."""

    mounts: dict[str, HeldMount] = field(default_factory=dict)
    intents: dict[str, Intent] = field(default_factory=dict)


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
    )


class HolderJournal:
    """Append-only holder journal in ``state_dir``, owned by one process at a time.

    ``boot_id_path`` is injected (``/proc/sys/kernel/random/boot_id``) so that
    tests can simulate a reboot. ``compact_after`` bounds the file: once it
    holds that many records more than the live state needs, it is rewritten
    atomically with one record per live mount.
    """

    def __init__(
        self,
        state_dir: str | os.PathLike[str],
        *,
        boot_id_path: str | os.PathLike[str] = "/proc/sys/kernel/random/boot_id",
        compact_after: int = 1000,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / JOURNAL_NAME
        self._boot_id_path = Path(boot_id_path)
        self._compact_after = compact_after
        self._lock_file: IO[bytes] | None = None
        self._file: IO[bytes] | None = None
        self._records = 0
        self._state = JournalState()

    # -- lifecycle -----------------------------------------------------------

    def open(self) -> JournalState:
        """Lock the state directory, replay the journal, and return what it held."""
        try:
            self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            lock_file = open(self.state_dir / LOCK_NAME, "ab")  # noqa: SIM115 (held open)
        except OSError as exc:
            raise JournalError(
                exc.errno, f"cannot open state directory: {exc}", str(self.state_dir)
            ) from exc
        try:
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            lock_file.close()
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise JournalError(
                    exc.errno,
                    "another lmi-mount engine holds the state directory",
                    str(self.state_dir),
                ) from exc
            raise JournalError(
                exc.errno, f"cannot lock state directory: {exc}", str(self.state_dir)
            ) from exc
        self._lock_file = lock_file
        try:
            boot_id = self._boot_id()
            self._state = self._replay(boot_id)
            # Start every run from a compact file: it bounds replay time and drops
            # a torn tail or the records of a previous boot in one atomic step.
            self._rewrite(boot_id)
        except BaseException:
            self.close()
            raise
        return JournalState(dict(self._state.mounts), dict(self._state.intents))

    def peek(self) -> JournalState:
        """Replay the journal without locking or rewriting it (a read-only observer).

        What a concurrent engine is appending may be missing or torn at the
        end; the observer sees the state as of the last complete record.
        """
        return self._replay(self._boot_id())

    def close(self) -> None:
        for handle in (self._file, self._lock_file):
            if handle is not None:
                handle.close()
        self._file = self._lock_file = None

    def __enter__(self) -> HolderJournal:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- records -------------------------------------------------------------

    def intent(self, intent: Intent) -> None:
        """Record, durably, that a kernel mount at ``intent.target`` is about to be made."""
        self._append(
            {
                "op": "intent",
                "target": intent.target,
                "source": intent.source,
                "fstype": intent.fstype,
                "options": intent.options,
            }
        )
        self._state.intents[intent.target] = intent
        self._maybe_compact()

    def set(self, held: HeldMount) -> None:
        """Record, durably, the full holder state of one mount."""
        self._append(_held_to_record(held))
        self._state.mounts[held.target] = held
        self._state.intents.pop(held.target, None)
        self._maybe_compact()

    def forget(self, target: str) -> None:
        """Record, durably, that the mount at ``target`` is no longer tracked."""
        self._append({"op": "forget", "target": target})
        self._state.mounts.pop(target, None)
        self._state.intents.pop(target, None)
        self._maybe_compact()

    # -- internals -----------------------------------------------------------

    def _boot_id(self) -> str:
        try:
            return self._boot_id_path.read_text(encoding="ascii").strip()
        except OSError:
            # No boot id (an unusual /proc): records then never expire by boot,
            # and replay relies on mount ids alone.
            return ""

    def _replay(self, boot_id: str) -> JournalState:
        state = JournalState()
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return state
        except OSError as exc:
            raise JournalError(exc.errno, f"cannot read journal: {exc}", str(self.path)) from exc
        lines = data.split(b"\n")
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                op = record["op"]
                if op == "boot":
                    if record.get("boot_id", "") != boot_id:
                        return JournalState()  # another boot: no kernel mount of it remains
                elif op == "intent":
                    state.intents[record["target"]] = Intent(
                        str(record["target"]),
                        str(record["source"]),
                        record["fstype"],
                        str(record["options"]),
                    )
                elif op == "set":
                    held = _held_from_record(record)
                    state.mounts[held.target] = held
                    state.intents.pop(held.target, None)
                elif op == "forget":
                    state.mounts.pop(record["target"], None)
                    state.intents.pop(record["target"], None)
                else:
                    raise ValueError(f"unknown op {op!r}")
            except (ValueError, KeyError, TypeError) as exc:
                if number == len(lines) or (number == len(lines) - 1 and not lines[-1]):
                    break  # torn final append: never acknowledged, safe to drop
                raise JournalError(
                    errno.EINVAL, f"corrupt journal record at line {number}: {exc}", str(self.path)
                ) from exc
        return state

    def _rewrite(self, boot_id: str) -> None:
        records: list[dict[str, Any]] = [{"op": "boot", "boot_id": boot_id}]
        records += [_held_to_record(held) for held in self._state.mounts.values()]
        records += [
            {
                "op": "intent",
                "target": i.target,
                "source": i.source,
                "fstype": i.fstype,
                "options": i.options,
            }
            for i in self._state.intents.values()
        ]
        payload = b"".join(json.dumps(r, separators=(",", ":")).encode() + b"\n" for r in records)
        temp = self.path.with_name(f".{JOURNAL_NAME}.tmp")
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, payload)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(temp, self.path)
            dir_fd = os.open(self.state_dir, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            temp.unlink(missing_ok=True)
            raise JournalError(exc.errno, f"cannot write journal: {exc}", str(self.path)) from exc
        if self._file is not None:
            self._file.close()
        self._file = open(self.path, "ab", buffering=0)  # noqa: SIM115 (held open)
        self._records = len(records)

    def _append(self, record: dict[str, Any]) -> None:
        """Append one record and fsync it; the in-memory state changes only after."""
        if self._file is None:
            raise JournalError(errno.EBADF, "journal is not open", str(self.path))
        line = json.dumps(record, separators=(",", ":")).encode() + b"\n"
        fd = self._file.fileno()
        size = os.fstat(fd).st_size
        try:
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        except OSError as exc:
            # Cut a partial line off, or the next append would bury it mid-file
            # where replay must treat it as corruption rather than a torn tail.
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
            raise JournalError(
                exc.errno, f"cannot append to journal: {exc}", str(self.path)
            ) from exc
        self._records += 1

    def _maybe_compact(self) -> None:
        live = len(self._state.mounts) + len(self._state.intents) + 1
        if self._records > live + self._compact_after:
            self._rewrite(self._boot_id())
