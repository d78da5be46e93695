"""MountManager: refcounted kernel mounts and fstab edits, executed from plans.

Owns: the writers' locks (one per mount point tree), the holder table and its
journal, the hold timer thread, the execution of plans with rollback,
reconstruction after a restart (seed MountManager WI6), and the read model
that the CIM layer projects (``status``).

Every state change is: read a Snapshot, make a Plan (``mounts.plan``, pure),
execute its steps in order as one journaled transaction, compare every
kernel step's result with the request (the kernel is the judge), and on any
failure undo the executed steps in reverse, so no mount, fstab line or
reference is lost on an error path; after a kill -9, the next start
finishes the undo.

Must not know: CIM names, status codes or the wire. It raises the domain
errors of ``mounts.errors`` only; ``cim/errors.py`` translates them.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import stat
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Final, TypeVar

from lmi_mount.linux import files
from lmi_mount.linux.filesystems import check_fstype
from lmi_mount.linux.journal import (
    DEFAULT_CAPACITY,
    HolderJournal,
    JournalError,
    Transaction,
)
from lmi_mount.linux.kernel import (
    Kernel,
    KernelError,
    helper_problem,
    helper_unstable,
)
from lmi_mount.linux.paths import (
    Anchor,
    PathChecker,
    PathProblem,
    make_directories,
    real_path_now,
    resolved_path,
)
from lmi_mount.linux.processes import ProcessUse, busy_processes, describe
from lmi_mount.mounts import flags as ms
from lmi_mount.mounts.errors import (
    InUse,
    InvalidRequest,
    MountError,
    NotApplied,
    OperationFailed,
)
from lmi_mount.mounts.fstab import (
    FstabConflict,
    FstabDocument,
    FstabEntry,
    FstabError,
    FstabProblem,
    boot_problem,
)
from lmi_mount.mounts.fstab import normalize_target as normalize_fstab_target
from lmi_mount.mounts.holders import HeldMount, HolderTable, holder_problem
from lmi_mount.mounts.mountinfo import (
    MountinfoParser,
    MountRecord,
    MountTable,
    propagation_holds,
)
from lmi_mount.mounts.options import (
    MountOptions,
    OptionDrift,
    OptionError,
    compare,
    from_mountinfo,
    kernel_request,
    mount_point_mode,
    propagation_asked,
    selinux_words,
    setup_words,
    with_defaults,
    with_unnamed_from,
)
from lmi_mount.mounts.plan import (
    FstabChange,
    HolderChange,
    KernelMount,
    KernelRemount,
    KernelUnmount,
    MountSpec,
    Plan,
    Snapshot,
    Step,
    normalize_target,
    plan_create,
    plan_delete,
    plan_expire,
    plan_modify,
    plan_reconcile,
    step_from_record,
    step_record,
)

log = logging.getLogger(__name__)
_T = TypeVar("_T")

# How long a hold timer waits before trying again when its unmount is busy.
BUSY_RETRY_SECONDS = 5.0
# Taking back a mount that did not come up as asked: how often, and how long
# apart while it is busy (a mount made an instant ago is only ever pinned by
# a racing path lookup; a process that got into it keeps it, reported).
TAKE_BACK_ATTEMPTS = 50
TAKE_BACK_BUSY_SECONDS = 0.01
# An unmount that nobody keeps busy (a racing path lookup, see _unmount) is
# tried this many times, TAKE_BACK_BUSY_SECONDS apart.
UNMOUNT_BUSY_ATTEMPTS = 5
# How soon the hold timer looks again at a deadline whose mount point a
# request was working on.
LOCKED_RETRY_SECONDS = 0.2
# The hold timer's longest sleep: it looks again then, whatever its next
# deadline (a wait of a very long hold time overflowed, and ended the thread).
TIMER_SLEEP_SECONDS = 3600.0
# A mount point tree whose request has run longer than SLOW_REQUEST_SECONDS
# takes MAX_WAITING_PER_TREE waiters (each holds a thread); no request waits
# longer than MAX_WAIT_SECONDS for a tree (see MountPointLocks).
MAX_WAITING_PER_TREE = 2
SLOW_REQUEST_SECONDS = 2.0
MAX_WAIT_SECONDS = 30.0
RECHECK_SECONDS = 0.5
#: How long after a request becomes slow its waiters look again.
_SLOW_MARGIN = 0.001


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a request did (or, for a dry run, would do)."""

    plan: Plan
    target: str | None
    dry_run: bool = False
    #: The source as the engine resolved it (realpath of a bind source or
    #: image): the name the mount is known by afterwards.
    source: str | None = None


@dataclass(frozen=True, slots=True)
class MountStatus:
    """One mount as the read side sees it: live, configured in fstab, or both."""

    spec: str
    target: str
    fstype: str | None
    live: MountRecord | None
    live_options: MountOptions | None
    fstab: FstabEntry | None
    held: HeldMount | None
    drift: tuple[OptionDrift, ...]
    #: A mount lmi-mount holds that this one covers (made over it by hand): its
    #: holders are not this mount's, but a reader must not think none are there.
    covers: HeldMount | None = None

    @property
    def configured(self) -> MountSpec | None:
        return MountSpec.from_fstab(self.fstab) if self.fstab is not None else None


@dataclass(frozen=True, slots=True)
class EngineState:
    """A consistent read of the engine: the kernel's table and the model's mounts."""

    table: MountTable
    statuses: tuple[MountStatus, ...]
    source_of: Callable[[MountRecord], str]
    #: Lines of fstab that are no entry, and duplicate mount points (by line).
    fstab_problems: tuple[FstabProblem, ...] = ()


CrashHook = Callable[[str], None]


def _live_status(record: MountRecord, entry: FstabEntry | None, held: HeldMount | None,
                 spec: str, source_drift: OptionDrift | None = None,
                 covers: HeldMount | None = None, *, selinux: bool | None = None,
                 origin: MountRecord | None = None) -> MountStatus:
    """The status of a live mount, with its fstab line (drift per option, and
    ``source_drift``, see ``_source_drift``) if any; ``spec`` is the line's, or
    the source the table gives (``_spec_of``); ``selinux``: whether the host
    has SELinux enabled (``compare``); ``origin``: for a bind line, the mount
    its source directory is on (``_origin_of``)."""
    live_options = from_mountinfo(record.vfs_options, record.super_options)
    drift: tuple[OptionDrift, ...] = ()
    if entry is not None:
        configured = MountSpec.from_fstab(entry)
        # A flag the line does not name is mount(8)'s default at the next boot
        # (rw, suid, dev, exec, relatime, ...): a "defaults" line whose mount
        # was remounted ro,noexec by hand drifts. A bind's unnamed flags are
        # its origin's: a bind made ro of an rw origin, whose line names no
        # flag, drifts (it showed none, an outside review).
        if configured.fstype is not None:
            wanted = with_defaults(configured.options)
        elif origin is not None:
            wanted = with_unnamed_from(
                configured.options,
                from_mountinfo(origin.vfs_options, origin.super_options), per_mount_only=True)
        else:
            wanted = configured.options
        # A bind line sets no file system option: a bind shows its origin's.
        drift = tuple(compare(wanted, live_options, fstype=record.fstype, selinux=selinux,
                              unset_shown=configured.fstype is not None))
        # Propagation is the mount's state too (mountinfo's optional fields),
        # though no option field shows it: a "shared" line's mount made
        # private is not what the next boot gives.
        propagation = propagation_asked(configured.options)
        if propagation is not None and not propagation_holds(propagation[1], record):
            drift = (*drift, OptionDrift("propagation", propagation[0], record.propagation))
        if source_drift is not None:
            drift = (source_drift, *drift)
    return MountStatus(
        spec=spec,
        target=record.target,
        fstype=record.fstype,
        live=record,
        live_options=live_options,
        fstab=entry,
        held=held,
        drift=drift,
        covers=covers,
    )


def _origin_of(entry: FstabEntry | None, table: MountTable) -> MountRecord | None:
    """The mount a bind line's source directory is on (whose per-mount flags a
    bind of it takes at boot); None for another line, or no source."""
    if entry is None or not entry.spec.startswith("/") or \
            MountSpec.from_fstab(entry).fstype is not None:
        return None
    return table.containing(entry.spec)


def _covered_by(record: MountRecord, held: Mapping[str, HeldMount],
                table: MountTable) -> HeldMount | None:
    """The held mount at ``record``'s mount point that ``record`` covers (it is in
    the table under it, by its id and, where known, its unique id), or None."""
    found = held.get(record.target)
    if found is None or found.mount_id is None or found.mount_id == record.mount_id:
        return None
    below = table.by_id.get(found.mount_id)
    if below is None or below.target != record.target or (
            found.unique_id is not None and below.unique_id not in (None, found.unique_id)):
        return None
    return found


def _spec_of(record: MountRecord, entry: FstabEntry | None,
             source_of: Callable[[MountRecord], str]) -> str:
    return entry.spec if entry is not None else source_of(record)


#: File systems whose source is a name the line gives (no device to resolve).
_NAMED_SOURCES: Final = frozenset({"tmpfs", "ramfs"})


def _source_drift(record: MountRecord, entry: FstabEntry | None,
                  source_of: Callable[[MountRecord], str],
                  same_directory: Callable[[str, str], bool]) -> OptionDrift | None:
    """Whether the live mount on a line's mount point is another than the line's,
    where that can be told without a guess: a bind line's directory against
    the directory the mount shows (a symlinked spelling of it is the same),
    or a tmpfs line's name against the mount's. Paired by mount point alone,
    another source mounted there passed for the line's mount (a review). A
    device named by tag or path is not resolved here."""
    if entry is None:
        return None
    if "bind" in entry.options.split(",") or "rbind" in entry.options.split(","):
        live = source_of(record)
        if live == entry.spec or same_directory(entry.spec, live):
            return None
        return OptionDrift("source", entry.spec, live)
    if (entry.fstype == record.fstype and record.fstype in _NAMED_SOURCES
            and record.source != entry.spec):
        return OptionDrift("source", entry.spec, record.source)
    return None


#: What a live status was made of (record, line, holders, spec), the status, and
#: the origin of a bind line (``_origin_of``).
_StatusInputs = tuple[MountRecord, FstabEntry | None, HeldMount | None, str, MountStatus,
                      MountRecord | None]


def _spellings(path: str) -> list[str]:
    """The keys a request on ``path`` locks: the path as spelled, as it resolves
    now (``/x/link`` and ``/x/real`` name one mount point), and the directory
    itself (device and inode: through a bind, ``/srv/d`` and ``/alias/d`` are
    one directory, and with shared propagation a mount on one is a mount on
    the other). A path swapped while it is resolved locks what it was; the
    open that follows then finds another path and refuses (``_check_locked``)."""
    # Path lookups only, no descriptor: these keys are taken before the lock,
    # and a descriptor open on a mount point, even O_PATH, keeps it busy for the
    # unmount of the request that holds it (EBUSY).
    keys = {path, normalize_target(_realpath(path) or path)}
    with contextlib.suppress(OSError):
        found = os.stat(path)
        keys.add(f"{_INODE}{found.st_dev}:{found.st_ino}")
    return sorted(keys)


def _same_device_node(first: str, second: str) -> bool:
    """Whether both paths are block device nodes of one device number."""
    try:
        one, other = os.stat(first), os.stat(second)
    except OSError:
        return False
    return (stat.S_ISBLK(one.st_mode) and stat.S_ISBLK(other.st_mode)
            and one.st_rdev == other.st_rdev)


def _check_holder(holder: str) -> None:
    problem = holder_problem(holder)
    if problem is not None:
        raise InvalidRequest(f"{problem}: {holder[:80]!r}", value=holder)


def _refuse_live_type(fstype: str) -> None:
    """InvalidRequest for a type no mount can have now: the kernel step mounts the
    one type it is given, and a DryRun must say so as the call does (it said 0,
    and the call then failed with ENODEV). An fstab line alone may keep
    ``auto`` or a list, which mount(8) probes or tries in turn at boot."""
    if fstype == "auto" or "," in fstype:
        raise InvalidRequest(
            f"file system type {fstype!r} is one mount(8) tries types in turn for (probing "
            "the device for 'auto'); lmi-mount mounts the one type it is given: name it "
            f"(a line for fstab alone, Mode 2, may keep {fstype!r})", value=fstype)
    if fstype == "none":
        raise InvalidRequest("file system type 'none' names no file system (a bind mount "
                             "is FileSystemType NULL)", value=fstype)
    if fstype == "swap":
        raise InvalidRequest("file system type 'swap' is swap space, which swapon(8) "
                             "enables; nothing mounts it", value=fstype)
    check = check_fstype(fstype)
    problem = check.problem or check.warning  # a missing helper: nothing to mount with now
    if problem is not None:
        raise InvalidRequest(problem, value=fstype)


def _refuse_setup(options: MountOptions) -> None:
    """InvalidRequest for a live mount of ``options`` that ask mount(8) to set the
    source up first (``setup_words``): the service would mount the whole image,
    other bytes or unverified ones."""
    setup = setup_words(options)
    if setup:
        raise InvalidRequest(
            f"option {setup[0]!r} asks mount(8) to set the source up first (a loop device "
            "over part of an image, or dm-verity), which lmi-mount does not do: it would "
            "mount the whole image, other bytes or unverified ones. The fstab line alone "
            "(Mode 2) is mount(8)'s to mount at boot", value=setup[0])


#: Lock keys that name a directory by device and inode; they match only themselves.
_INODE: Final = "inode:"


def _realpath(path: str) -> str | None:
    """``os.path.realpath`` (``real_path_now``), or None when a symlink on the way
    vanishes meanwhile (realpath reads a link found by lstat: a racing rename
    makes it raise)."""
    try:
        return real_path_now(path)
    except OSError:
        return None


def _check_locked(resolved: str, locked: Sequence[str]) -> None:
    """OperationFailed (EAGAIN) if the path a request opened is none it locked: a
    symlink on the way changed between the lock and the open."""
    if not any(resolved == path or resolved.startswith(path.rstrip("/") + "/")
               for path in locked if not path.startswith(_INODE)):
        raise OperationFailed(
            f"{locked[0]} changed while the request was checked (it now leads to "
            f"{resolved}); nothing was done, try again", value=resolved, errno=errno.EAGAIN)


def _overlap(one: str, other: str) -> bool:
    """Whether requests on lock keys ``one`` and ``other`` touch one tree (a path
    and the paths above and below it; a directory's inode key itself only)."""
    if one == other or "/" in (one, other):
        return True
    if one.startswith(_INODE) or other.startswith(_INODE):
        return False
    return other.startswith(one + "/") or one.startswith(other + "/")


class _Holding:
    """One request's paths in MountPointLocks (compared by identity)."""

    __slots__ = ("exclusive", "shared", "since", "wakeup")

    def __init__(self, exclusive: Sequence[str], shared: Sequence[str], since: float) -> None:
        self.exclusive = tuple(sorted(set(exclusive)))
        self.shared = tuple(sorted(set(shared)))
        self.since = since
        #: Set while it waits: notified when a request it conflicts with goes.
        self.wakeup: threading.Condition | None = None

    def conflicts(self, other: _Holding) -> bool:
        return (any(_overlap(a, b) for a in self.exclusive
                    for b in other.exclusive + other.shared)
                or any(_overlap(a, b) for a in self.shared for b in other.exclusive))


class MountPointLocks:
    """The writers' locks: one per mount point, and a mount point's tree with it.

    A request holds its mount point exclusively, and a bind's source shared.
    Two requests wait for each other when a path of one is a path of the
    other or above it, unless both hold it shared: a mount on ``/srv``
    hides ``/srv/data``, ``/srv`` cannot be unmounted while ``/srv/data``
    is mounted, and a bind of ``/srv`` must see ``/srv`` before or after a
    change, not during it; binds of one source onto different mount points
    go together. ``/`` is above everything (start-up and close hold it).
    Requests on unrelated trees run side by side, so a mount(8) helper that
    takes minutes (an NFS server that does not answer) holds up its own tree
    only.

    A request's paths are taken all at once or not at all, so requests
    cannot deadlock; waiters go in the order they came (one on ``/srv`` is
    not overtaken by a stream of requests on ``/srv/a``, ``/srv/b``...),
    except that one stuck behind a slow request holds nobody back. Every
    waiter holds a thread, so a tree whose request has run for more
    than ``slow_seconds`` (a mount helper waiting for its server) takes at
    most ``max_waiting`` waiters and refuses the next at once (InUse), and
    no waiter waits longer than ``max_wait_seconds``: requests queued
    behind a helper that hangs for minutes would hold every thread, one
    helper timeout after another. Requests that take milliseconds queue
    freely. Not reentrant.
    """

    def __init__(self, max_waiting: int = MAX_WAITING_PER_TREE,
                 slow_seconds: float = SLOW_REQUEST_SECONDS,
                 max_wait_seconds: float = MAX_WAIT_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_waiting = max_waiting
        self.slow_seconds = slow_seconds
        self.max_wait_seconds = max_wait_seconds
        self._clock = clock
        self._lock = threading.Lock()
        # Notified whenever a request ends (``wait_quiet``). A waiter has a
        # condition of its own on the same lock, notified only when a request
        # it conflicts with ends or gives up: waking every waiter at every
        # release woke those on every other mount point too, each to take the
        # lock and find itself still blocked.
        self._changed = threading.Condition(self._lock)
        self._held: list[_Holding] = []
        self._waiting: list[_Holding] = []

    def acquire(self, paths: Sequence[str], *, shared: Sequence[str] = (),
                blocking: bool = True, limited: bool = True) -> _Holding | None:
        """Take ``paths`` (and ``shared``); the token to release, or None when not
        ``blocking`` and they are taken. ``limited=False`` waits however many
        wait already (start-up and close)."""
        holding = _Holding(paths, shared, self._clock())
        with self._changed:
            if self._free(holding, self._waiting):
                self._held.append(holding)
                return holding
            if not blocking:
                return None
            now = self._clock()
            running = self._oldest_conflict(holding)
            ahead = [w for w in self._waiting if holding.conflicts(w)]
            if (limited and running is not None and len(ahead) >= self.max_waiting
                    and now - running.since > self.slow_seconds):
                raise self._busy(holding, f"{len(ahead)} requests already wait for", running)
            holding.wakeup = wakeup = threading.Condition(self._lock)
            self._waiting.append(holding)
            deadline = now + self.max_wait_seconds
            taken = False
            try:
                while not self._free(holding, self._waiting[:self._waiting.index(holding)]):
                    remaining = deadline - self._clock()
                    if limited and remaining <= 0:
                        raise self._busy(holding, f"waited {self.max_wait_seconds:g} s for",
                                         self._oldest_conflict(holding))
                    # Woken when a request it conflicts with ends or gives up,
                    # when a running request becomes slow (a waiter ahead
                    # stuck behind it holds this one back no longer), and now
                    # and then.
                    wait = min(remaining, RECHECK_SECONDS) if limited else RECHECK_SECONDS
                    soon = self._next_slow()
                    wakeup.wait(wait if soon is None else min(wait, soon))
                taken = True
            finally:
                self._waiting.remove(holding)
                holding.wakeup = None
                if not taken:
                    # Those behind it waited for it too: one may go now.
                    self._wake(holding)
            holding.since = self._clock()
            self._held.append(holding)
        return holding

    def release(self, holding: _Holding) -> None:
        with self._changed:
            self._held.remove(holding)
            self._wake(holding)

    def _wake(self, gone: _Holding) -> None:
        """Tell the waiters that ``gone`` no longer holds or waits. Only those it
        conflicts with can go now; the others wait for somebody else. Called
        with the lock held."""
        for waiter in self._waiting:
            if waiter.wakeup is not None and waiter.conflicts(gone):
                waiter.wakeup.notify()
        self._changed.notify_all()

    def wait_quiet(self, timeout: float) -> bool:
        """Wait until no request runs but slow ones (running over ``slow_seconds``),
        at most ``timeout`` seconds; whether it is so. A reader of the whole
        state (the indications' watcher) then sees no request half done."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not all(self._clock() - h.since > self.slow_seconds for h in self._held):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                # A request ends (notified) or becomes slow (nobody says so).
                soon = self._next_slow()
                self._changed.wait(left if soon is None else min(left, soon))
            return True

    def _next_slow(self) -> float | None:
        """Seconds until the next running request becomes slow (a little after, so
        that it is), or None when none will. Called with the lock held."""
        now = self._clock()
        coming = [h.since + self.slow_seconds - now for h in self._held
                  if now - h.since <= self.slow_seconds]
        return max(0.0, min(coming)) + _SLOW_MARGIN if coming else None

    def waiting(self) -> list[tuple[str, ...]]:
        """The exclusive paths of the requests waiting, oldest first."""
        with self._changed:
            return [w.exclusive for w in self._waiting]

    def _oldest_conflict(self, holding: _Holding) -> _Holding | None:
        return min((h for h in self._held if holding.conflicts(h)),
                   key=lambda h: h.since, default=None)

    def _busy(self, holding: _Holding, what: str, running: _Holding | None) -> InUse:
        paths = ", ".join(holding.exclusive)
        since = (f"; a request on {', '.join(running.exclusive)} has run for "
                 f"{self._clock() - running.since:.0f} s" if running is not None else "")
        return InUse(f"{what} {paths} or a mount point above or below it{since}; "
                     "try again later", value=holding.exclusive[0] if holding.exclusive else None)

    def _free(self, holding: _Holding, ahead: Sequence[_Holding]) -> bool:
        """No holder conflicts, nor an earlier waiter that will go soon. A waiter
        stuck behind a slow request (a hanging helper) holds nobody back: one
        on ``/srv`` behind ``/srv/nfs`` must not stall ``/srv/a`` for 30 s."""
        if any(holding.conflicts(other) for other in self._held):
            return False
        now = self._clock()
        return not any(holding.conflicts(other) and not self._stuck(other, now)
                       for other in ahead if other is not holding)

    def _stuck(self, waiter: _Holding, now: float) -> bool:
        return any(waiter.conflicts(held) and now - held.since > self.slow_seconds
                   for held in self._held)

    @contextlib.contextmanager
    def holding(self, paths: Sequence[str], *, shared: Sequence[str] = (),
                limited: bool = True) -> Iterator[None]:
        token = self.acquire(paths, shared=shared, limited=limited)
        assert token is not None
        try:
            yield
        finally:
            self.release(token)


@dataclass(frozen=True, slots=True)
class Anchors:
    """The descriptors a request's kernel mount goes through (see linux.paths)."""

    target: Anchor
    source: Anchor | None = None


#: The fstab systemd generates mount units from (systemd-fstab-generator(8)).
SYSTEM_FSTAB = Path("/etc/fstab")


#: File systems whose content lives only as long as they are mounted.
MEMORY_FSTYPES = frozenset({"tmpfs", "ramfs"})

#: Mount points whose mounts the system itself needs: the root mount, and the
#: API file systems (systemd's /proc, /sys, /dev, /run) with every mount below
#: them. Unmounting or remounting one that lmi-mount did not make takes Force.
DEFAULT_PROTECTED = ("/", "/proc", "/sys", "/dev", "/run")


def _room_after_begin(begin_size: int, steps: int) -> int:
    """Journal bytes a plan writes after its begin record: per step one record
    (holder set or forget) and progress notes (a mount's two name its path),
    as many again for its undo, and its end. A step's record is never longer
    than the step in the begin record, so three times the begin record bounds
    them, with room for the notes."""
    return 3 * begin_size + 512 + 256 * steps


def _with_identity(step: Step, identity: tuple[int, int | None] | None) -> Step:
    """``step``, a holder record being restored, with the ids of the mount an undo
    made again (``identity``); any other step unchanged."""
    if identity is None or not isinstance(step, HolderChange) or step.after is None:
        return step
    return replace(step, after=replace(step.after, mount_id=identity[0],
                                       unique_id=identity[1]))


def _naming_made(step: HolderChange, target: str, ids: tuple[int, int | None]) -> HolderChange:
    """``step``, the holder record of the mount a step of the same plan just made
    at ``target``, with that mount's ids (``_mount`` returns them): no look at
    the path again, which would name whatever is on top of it by then."""
    after = step.after
    if (after is None or after.target != target or after.unique_id is not None
            or after.mount_id not in (None, ids[0])):
        return step
    result = _with_identity(step, ids)
    assert isinstance(result, HolderChange)
    return result


def _unique_named(identity: tuple[int, int | None] | None, record: MountRecord) -> int | None:
    """The unique id in ``identity`` (read at ``record``'s mount point) if it is
    ``record``'s mount's: None where the kernel has none, or where the path
    showed another mount (one made over it between the two reads, whose id
    must not name it)."""
    return identity[1] if identity is not None and identity[0] == record.mount_id else None


def _holder_key(held: HeldMount | None) -> tuple[object, ...] | None:
    """What a holder record says, without the ids the engine fills in on write."""
    if held is None:
        return None
    return (held.source, held.fstype, held.options, held.made_by_us, held.holders)


def _default_after_fstab_edit(fstab_path: Path) -> Callable[[], object]:
    """``systemctl daemon-reload`` after edits of the system's fstab only.

    systemd acts on the units it generated from /etc/fstab until a reload
    (FIELD_NOTES); a scratch fstab (tests, ``--sandbox``) is nothing to it.
    """
    if fstab_path.resolve() == SYSTEM_FSTAB.resolve():
        return files.reload_systemd
    return lambda: None


class MountManager:
    """The refcounted mount manager (seed MountManager: acquire, release, force, reconstruct).

    ``kernel`` is a LinuxKernel or the FakeKernel; ``fstab_path`` and
    ``state_dir`` are injected (the state directory belongs in ``/run``: the
    journal must survive a restart of the service, not a reboot, exactly like
    libmount's utab). ``hold_seconds`` is the hold time after the last release
    (0: unmount at once). ``clock`` must be monotonic and go at the rate of
    ``time.monotonic``, which the hold timer's waits use (a fake clock that
    jumps ahead is followed by ``run_due_timers``). ``crash`` is a test hook
    called with a step name before and after every step.

    An ``observer`` reads the journal without taking the state directory's
    lock, changes nothing and runs no timer: ``lmi-mount status`` and dry
    runs beside a running service use one. ``journal_capacity`` is the size
    of each of the journal's two preallocated files (see linux.journal).
    ``fstab_backups`` earlier versions of fstab are kept beside it.
    ``protected`` mount points, with everything below them, are not
    unmounted or remounted unless they are mounts of ours or ``force``
    says so. ``shared_file_systems`` (device numbers, major and minor) are
    file systems mounted outside this mount namespace too: their options,
    which are their superblock's, never change, ``force`` or not (a
    sandbox's copies of the host's mounts); nor do those of a file system
    that ``elsewhere`` (device number to where else it is mounted, or None)
    finds mounted outside it when the remount is planned (one the host
    mounted after the sandbox started).
    """

    def __init__(
        self,
        kernel: Kernel,
        *,
        fstab_path: str | Path,
        state_dir: str | Path,
        hold_seconds: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        paths: PathChecker | None = None,
        processes: Callable[[str], list[ProcessUse]] | None = None,
        after_fstab_edit: Callable[[], object] | None = None,
        boot_id_path: str | Path = "/proc/sys/kernel/random/boot_id",
        crash: CrashHook | None = None,
        timers: bool = True,
        observer: bool = False,
        journal_capacity: int = DEFAULT_CAPACITY,
        fstab_backups: int = files.DEFAULT_BACKUPS,
        protected: Sequence[str] = DEFAULT_PROTECTED,
        shared_file_systems: Collection[tuple[int, int]] = (),
        elsewhere: Callable[[tuple[int, int]], str | None] | None = None,
    ) -> None:
        if not (math.isfinite(hold_seconds) and hold_seconds >= 0):
            raise InvalidRequest(f"hold time {hold_seconds!r} is not a number of seconds, "
                                 "0 or more", value=hold_seconds)
        if fstab_backups < 0:
            raise InvalidRequest(f"fstab backups {fstab_backups!r} is negative",
                                 value=fstab_backups)
        self.fstab_backups = fstab_backups
        self.protected = tuple(normalize_target(path) for path in protected)
        self.shared_file_systems = frozenset(shared_file_systems)
        self._elsewhere = elsewhere
        self.kernel = kernel
        self.fstab_path = Path(fstab_path)
        self.hold_seconds = float(hold_seconds)
        self._clock = clock
        self._paths = paths or PathChecker()
        self._processes = processes or busy_processes
        self._after_fstab_edit = after_fstab_edit or _default_after_fstab_edit(self.fstab_path)
        self._crash = crash or (lambda step: None)
        self._journal = HolderJournal(state_dir, boot_id_path=boot_id_path,
                                      capacity=journal_capacity)
        self._holders = HolderTable()
        self._locks = MountPointLocks()
        # Wakes the hold timer when a deadline comes before the one it sleeps
        # until (or on close).
        self._wake = threading.Condition()
        # The deadline the hold timer sleeps until (None: until woken), under _wake.
        self._timer_sleeps_until: float | None = None
        # Orders publications: the last one made shows the latest holders.
        self._publish_lock = threading.Lock()
        self._closed = False
        self._started = False
        self._timers_enabled = timers and not observer
        self.observer = observer
        self._timer_thread: threading.Thread | None = None
        # The transaction each thread's _execute is running (``_note``).
        self._running = threading.local()
        #: The holders as the last finished operation left them, for readers.
        self._published: Mapping[str, HeldMount] = MappingProxyType({})
        # Reads are cached while what they came from is unchanged: the mount
        # table by the kernel's version, fstab by its content, the state by both
        # and the holders. Statuses and records are immutable, so sharing is safe.
        self._cache_lock = threading.Lock()
        self._table_cache: tuple[int, MountTable] | None = None
        self._mountinfo = MountinfoParser()
        self._fstab_cache: tuple[files.FileVersion, FstabDocument] | None = None
        self._sources: tuple[MountTable | None, dict[int, str]] = (None, {})
        self._state_cache: (
            tuple[MountTable, FstabDocument, Mapping[str, HeldMount], EngineState] | None
        ) = None
        #: The live statuses of the last state read, by id of their record.
        self._live_statuses: dict[int, _StatusInputs] = {}

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> MountManager:
        """Open the journal, reconstruct the holders (WI6) and start the hold timer."""
        with self._locks.holding(["/"], limited=False):
            if self._started:
                return self
            self._reconstruct()
            self._started = True
            self._publish()
        if self._timers_enabled:
            self._timer_thread = threading.Thread(
                target=self._timer_loop, name="lmi-mount-hold-timer", daemon=True
            )
            self._timer_thread.start()
        return self

    @property
    def timers_alive(self) -> bool:
        """Whether the hold timer runs (or was not asked for)."""
        thread = self._timer_thread
        return not self._timers_enabled or self._closed or (
            thread is not None and thread.is_alive())

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify_all()
        if self._timer_thread is not None:
            self._timer_thread.join(timeout=5)
        # Requests under way finish (and journal their end) first; those
        # that come later are refused (``_request``).
        with self._locks.holding(["/"], limited=False):
            self._journal.close()

    def __enter__(self) -> MountManager:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- requests ------------------------------------------------------------------

    def create(
        self,
        spec: MountSpec,
        *,
        current: bool = True,
        persist: bool = False,
        holder: str = "root",
        dry_run: bool = False,
    ) -> Outcome:
        """Mount (``current``) and/or add the fstab line (``persist``) of ``spec``."""
        self.check_create(spec, holder=holder)
        # The descriptors are opened under the locks: one open on a live mount
        # would keep it busy for a concurrent unmount.
        target = self._fstab_only_target(normalize_target(spec.target), current)
        exclusive = _spellings(target)
        shared = (_spellings(normalize_target(spec.source))
                  if spec.fstype is None and spec.source.startswith("/") else [])
        with self._request(exclusive, shared), self._opened(
                spec, mounting=current, persist=persist, dry_run=dry_run) as (
                    spec, anchors, notes):
            _check_locked(spec.target, exclusive)
            if anchors is not None and anchors.source is not None:
                _check_locked(anchors.source.path, shared)
            snap = self._snapshot([spec.target])
            plan = plan_create(spec, snap, current=current, persist=persist, holder=holder)
            if any(isinstance(step, KernelMount) for step in plan.steps):
                notes += self._kept_options_note(spec, snap)
            if notes:
                plan = replace(plan, notes=plan.notes + notes)
            outcome = self._run(plan, spec.target, dry_run, anchors)
            source = self._known_source(spec, persist=persist)
            return outcome if source == outcome.source else replace(outcome, source=source)

    @staticmethod
    def check_create(spec: MountSpec, *, holder: str) -> None:
        """InvalidRequest for what no ``create`` of ``spec`` by ``holder`` can do,
        found from the request alone, before anything, dry runs included (a
        DryRun of an empty spec said it would mount). The CIM provider asks
        before a job starts: 4096 says the parameters were checked."""
        _check_holder(holder)
        if not spec.source:
            raise InvalidRequest("the file system spec (the source) must not be empty",
                                 value=spec.source)
        if spec.fstype == "":
            raise InvalidRequest("the file system type must not be empty: NULL (no type) "
                                 "asks for a bind mount", value=spec.fstype)
        normalize_target(spec.target)

    def modify(
        self,
        target: str,
        options: MountOptions | None,
        *,
        spec_name: str | None = None,
        current: bool = True,
        persist: bool = False,
        dump: int | None = None,
        passno: int | None = None,
        dry_run: bool = False,
        force: bool = False,
    ) -> Outcome:
        """Remount (``current``) and/or replace the fstab line (``persist``) of ``target``;
        ``force`` lets it remount a protected system mount. ``options`` None is a
        Goal of NULL (see ``plan_modify``)."""
        target = self._fstab_only_target(normalize_target(target), current)
        if current and options is not None:
            # A live mount keeps its source as it was set up: a line that asks
            # for a part of it would not be what is mounted.
            _refuse_setup(options)
        with self._request(_spellings(target)):
            snap = self._snapshot([target])
            plan = plan_modify(
                target,
                spec_name,
                options,
                snap,
                current=current,
                persist=persist,
                dump=dump,
                passno=passno,
            )
            self._refuse_protected(plan, snap, force)
            return self._run(plan, target, dry_run)

    def delete(
        self,
        target: str,
        *,
        spec_name: str | None = None,
        current: bool = True,
        persist: bool = False,
        holder: str = "root",
        force: bool = False,
        lazy: bool = False,
        dry_run: bool = False,
        release_only: bool = False,
    ) -> Outcome:
        """Release or unmount (``current``) and/or remove the fstab line (``persist``).

        ``release_only`` (``holder`` was named by the caller): a mount nobody
        holds is refused (InUse), not unmounted (see ``plan_delete``). The
        holder's name is not checked: a release finds only names held.
        """
        target = self._fstab_only_target(normalize_target(target), current)
        with self._request(_spellings(target)):
            snap = self._snapshot([target])
            plan = plan_delete(
                target,
                spec_name,
                snap,
                current=current,
                persist=persist,
                holder=holder,
                force=force,
                lazy=lazy,
                release_only=release_only,
            )
            self._refuse_protected(plan, snap, force)
            return self._run(plan, target, dry_run)

    # The seed's MountManager names, for code that thinks in references.

    def acquire(self, spec: MountSpec, holder: str) -> Outcome:
        return self.create(spec, current=True, persist=False, holder=holder)

    def release(self, target: str, holder: str) -> Outcome:
        return self.delete(target, current=True, persist=False, holder=holder,
                           release_only=True)

    def force_unmount(self, target: str, *, lazy: bool = False) -> Outcome:
        return self.delete(target, current=True, persist=False, force=True, lazy=lazy)

    def run_due_timers(self) -> list[str]:
        """Unmount every mount whose hold time has ended; returns their targets.

        The timer thread calls this; tests with ``timers=False`` call it with a
        fake clock to step through time.
        """
        return self._expire_due()[0]

    def _expire_due(self) -> tuple[list[str], bool]:
        """``run_due_timers``, and whether a deadline was left to a busy mount point."""
        expired: list[str] = []
        skipped = False
        now = self._clock()
        for due in self._holders.due(now):
            # A mount point a request is working on is skipped, not waited
            # for: a slow request (a mount(8) helper) must not hold up every
            # other deadline. The timer looks again shortly. The keys are a
            # request's (``_spellings``): an alias through a bind is no way around.
            token = self._locks.acquire(_spellings(due.target), blocking=False)
            if token is None:
                skipped = True
                continue
            try:
                held = self._holders.get(due.target)
                if held is None or held.generation != due.generation:
                    continue  # changed between the look and the lock
                try:
                    snap = self._snapshot([held.target])
                    self._run(plan_expire(held.target, held.generation, snap), held.target,
                              False)
                    expired.append(held.target)
                except InUse as exc:
                    # Busy at the deadline: keep the mount and try again later,
                    # rather than detach it under its users.
                    log.warning("hold time of %s ended but it is busy: %s", held.target, exc)
                    self._postpone(held)
                except MountError as exc:
                    log.error("hold time of %s ended but unmount failed: %s", held.target, exc)
                    self._postpone(held)
                except Exception:
                    # A defect met on one mount point: that one is tried again
                    # later, and the deadlines after it are not held back (it
                    # would come first again every round).
                    log.exception("hold time of %s ended but it could not be handled; "
                                  "trying again in %.0f s", held.target, BUSY_RETRY_SECONDS)
                    self._postpone(held)
                self._publish()
            finally:
                self._locks.release(token)
        return expired, skipped

    def _postpone(self, held: HeldMount) -> None:
        """Try the deadline of ``held`` again in BUSY_RETRY_SECONDS, if its record is
        still the one the timer read: an expiry that failed after its holder step
        (the mount gone, the record forgotten) must not bring the record back."""
        current = self._holders.get(held.target)
        if current is not None and current.generation == held.generation:
            self._holders.restore(replace(current, release_at=self._clock() + BUSY_RETRY_SECONDS))

    # -- reads ---------------------------------------------------------------------

    # Reads take no engine lock: they see the holders as the last finished
    # operation left them (``_publish``), so a mount(8) helper that keeps a
    # writer waiting for minutes never keeps a reader waiting.

    def holders(self) -> list[HeldMount]:
        return sorted(self._published.values(), key=lambda h: h.target)

    def held(self, target: str) -> HeldMount | None:
        return self._published.get(normalize_target(target))

    def held_live(self, target: str) -> HeldMount | None:
        """The holder record of the mount point ``target`` (as spelled: doubled
        and trailing slashes aside, nothing resolved) while its mount lives
        there: asked by the mount's never-reused id, statmount(2) without a
        mount table or a path lookup, so a method's reference to a mount the
        service holds costs the same on a host with thousands of mounts.
        Without unique ids (before Linux 6.8) by its mount id in the table
        (``mount_table``, kept while the kernel reports no change), as the
        table-based check did: a mount made there by hand since with the same
        id passes too, and the request's plan tells them apart. A mount
        hidden by one made over it by hand is still there; one moved away
        (``mount --move``) is not. None when nothing is held there."""
        found = self._published.get(normalize_fstab_target(target))
        if found is None or found.mount_id is None:
            return None
        record = (self.kernel.find_mount(found.mount_id, found.unique_id)
                  if found.unique_id is not None and self.kernel.asks_by_unique_id
                  else self.mount_table().by_id.get(found.mount_id))
        return found if record is not None and record.target == found.target else None

    def read_fstab(self) -> FstabDocument:
        """The fstab as it is now; parsed again only when its content changed."""
        text, version = files.read_versioned(self.fstab_path)
        with self._cache_lock:
            cached = self._fstab_cache
            if cached is not None and cached[0] == version:
                return cached[1]
        document = FstabDocument.parse(text)
        with self._cache_lock:
            self._fstab_cache = (version, document)
        return document

    def fstab_for_reading(self) -> FstabDocument:
        """``read_fstab`` for a read of the state: a file that cannot be read
        (a directory, a FIFO) is a problem it reports, not a failure of every
        read. Plans read it strictly: nothing is planned on a file not read."""
        try:
            return self.read_fstab()
        except files.FileReadError as exc:
            return FstabDocument.unreadable(str(exc))

    def _fstab_for_plan(self) -> FstabDocument:
        """``read_fstab`` for a plan: a file that cannot be read fails the request
        with what is wrong with it (OperationFailed), not an internal error."""
        try:
            return self.read_fstab()
        except files.FileReadError as exc:
            raise self._domain_error(exc) from exc

    def mount_table(self) -> MountTable:
        """The kernel's mount table now; parsed again only when the kernel says it changed.

        The version is taken before the text is read, so a change that lands
        in between only causes one more read next time, never a stale table.
        """
        version = self.kernel.mount_table_version()
        with self._cache_lock:
            cached = self._table_cache
            if version is not None and cached is not None and cached[0] == version:
                return cached[1]
        table = MountTable(self._mountinfo.parse(self.kernel.read_mountinfo()))
        with self._cache_lock:
            self._table_cache = (version, table) if version is not None else None
            self._sources = (table, {})
        return table

    def status(self) -> list[MountStatus]:
        """Every mount the model shows (see ``state``)."""
        return list(self.state().statuses)

    def wait_quiet(self, timeout: float) -> bool:
        """Wait, at most ``timeout`` seconds, until no request is half done (slow
        ones, waiting for a helper, aside); whether it is so."""
        return self._locks.wait_quiet(timeout)

    def state(self) -> EngineState:
        """One consistent read: the mount table and every mount the model shows.

        The statuses are the union of live mounts and fstab lines. A live mount
        and the fstab line of the same mount point are one status (keyed by
        the fstab spec); live mounts without a line and lines without a live
        mount stand alone. Drift compares the line's options with the live
        ones, per option.
        """
        held = self._published
        table = self.mount_table()
        fstab = self.fstab_for_reading()
        with self._cache_lock:
            cached = self._state_cache
            if (cached is not None and cached[0] is table and cached[1] is fstab
                    and cached[2] == held):
                return cached[3]
        source_of = self._source_resolver(table)
        # Swap lines and other non-mounts ("none swap sw") have no mount point.
        # Of several lines for one mount point, the first is the one systemd
        # uses (mount -a mounts each, stacked); the others are reported
        # (``fstab.problems()``).
        by_target: dict[str, FstabEntry] = {}
        for line in fstab.entries():
            if line.entry.target.startswith("/"):
                by_target.setdefault(normalize_fstab_target(line.entry.target), line.entry)
        # A status is a function of its record, line, holders, spec and, for a
        # bind line, its origin's record alone: those of the last read that are
        # all the same objects (records of unchanged mountinfo lines are
        # reused, ``MountinfoParser``) keep their status, so a change on a host
        # with thousands of mounts makes one.
        known = self._live_statuses
        made: dict[int, _StatusInputs] = {}
        statuses = []
        # Listed after the table was read: a held mount listed lives now, so it
        # lived then, and the table's record of its mount id is it.
        live = self.kernel.live_mount_ids()
        for record in table.visible():
            entry = by_target.get(record.target)
            holder = self._held_by(record, held, live)
            covers = _covered_by(record, held, table) if holder is None else None
            spec = _spec_of(record, entry, source_of)
            other = _source_drift(record, entry, source_of, self.kernel.same_file)
            origin = _origin_of(entry, table)
            last = known.get(id(record))  # the entry holds its record: no id reuse
            if last is not None and last[0] is record and last[1] is entry \
                    and last[2] is holder and last[3] == spec and other is None \
                    and last[4].covers is covers and last[5] is origin \
                    and not any(d.name == "source" for d in last[4].drift):
                status = last[4]
            else:
                status = _live_status(record, entry, holder, spec, other, covers,
                                      selinux=self.kernel.selinux_enabled, origin=origin)
            made[id(record)] = (record, entry, holder, spec, status, origin)
            statuses.append(status)
        self._live_statuses = made
        live_targets = {status.target for status in statuses}
        for target, entry in by_target.items():
            if target not in live_targets:
                statuses.append(
                    MountStatus(entry.spec, target, entry.fstype, None, None, entry, None, ())
                )
        state = EngineState(table, tuple(statuses), source_of, tuple(fstab.problems()))
        with self._cache_lock:
            self._state_cache = (table, fstab, held, state)
        return state

    def status_at(self, target: str) -> MountStatus | None:
        """The status ``state()`` shows for mount point ``target``, read for it alone:
        a CIM GetInstance or a method's Mount reference needs one mount, not all."""
        table = self.mount_table()
        record = table.at(target)
        if record is not None and record.target != target:
            record = None  # state() names it by its own spelling only
        entry = self.fstab_for_reading().find_target(target)
        if record is not None:
            source_of = self._source_resolver(table)
            held = self._published
            holder = self._held_by(record, held)
            return _live_status(record, entry, holder, _spec_of(record, entry, source_of),
                                _source_drift(record, entry, source_of, self.kernel.same_file),
                                _covered_by(record, held, table) if holder is None else None,
                                selinux=self.kernel.selinux_enabled,
                                origin=_origin_of(entry, table))
        if entry is None or normalize_fstab_target(entry.target) != target:
            return None
        return MountStatus(entry.spec, target, entry.fstype, None, None, entry, None, ())

    def _held_by(self, record: MountRecord, held: Mapping[str, HeldMount],
                 live: frozenset[int] | None = None) -> HeldMount | None:
        """The holder record of the live ``record``: none for a mount made at a held
        mount point since (by hand, after its holders' mount went), which the
        next request there forgets (``plan_reconcile``), but a read must not
        show as theirs meanwhile. ``live``: the unique ids of the mounts that
        lived after ``record`` was read (``Kernel.live_mount_ids``), if known."""
        found = held.get(record.target)
        if found is None or (found.mount_id is not None and found.mount_id != record.mount_id):
            return None
        # By its unique id, never by its path: a read's path lookup would pin
        # the mount while a request unmounts it (EBUSY to that request).
        listed = live is not None and found.mount_id is not None and found.unique_id in live
        if found.unique_id is not None and not listed and \
                self.kernel.is_mount(record.mount_id, found.unique_id) is False:
            return None
        return found

    def live_source(self, record: MountRecord) -> str:
        """What ``status`` calls the source of the live ``record`` (of the current table)."""
        return self._source_resolver(self.mount_table())(record)

    def check_invariants(self) -> None:
        """Assert WI2/WI3 on the holder table (tests call it under load)."""
        self._holders.check()

    # -- internals -----------------------------------------------------------------

    @contextlib.contextmanager
    def _request(self, paths: Sequence[str], shared: Sequence[str] = ()) -> Iterator[None]:
        """Hold a request's mount points; refused once ``close`` has begun."""
        with self._locks.holding(paths, shared=shared):
            if self._closed:
                raise OperationFailed("lmi-mount is stopping: the request was not started",
                                      value=paths[0] if paths else None)
            yield

    @contextlib.contextmanager
    def _opened(
        self, spec: MountSpec, *, mounting: bool, persist: bool, dry_run: bool = False
    ) -> Iterator[tuple[MountSpec, Anchors | None, tuple[str, ...]]]:
        """Check a request's source, mount point and type before any plan is made;
        yields the spec to plan with, the descriptors to mount through, and
        warnings for the Plan.

        The source stays as the client spelled it (the fstab line carries it:
        ``UUID=...``, a by-id link, a symlink, a network share); where it
        resolves now is ``kernel_source``, for the kernel step only. To mount,
        the mount point (and a bind source) is opened once, and the kernel
        step mounts through the descriptors, so what was checked is what is
        mounted (see linux.paths). Only mounting needs the source and mount
        point to exist now; a line for fstab alone (``persist``) must pass the
        boot checks instead: a type this machine knows (a well-known network
        or FUSE type with a warning), no field mount(8) would misread. A
        missing mount point is made first where the options ask it
        (``X-mount.mkdir``, as mount(8) does; not in a dry run, which says so).
        """
        target = normalize_target(spec.target)
        # No system call and no fstab line can carry a NUL (libmount refuses one).
        for role, value in (("source", spec.source), ("file system type", spec.fstype or "")):
            if "\0" in value:
                raise InvalidRequest(f"{role} {value!r} contains a NUL character", value=value)
        if mounting:
            _refuse_setup(spec.options)
        try:
            requested = kernel_request(spec.options)
        except OptionError:
            requested = None  # refused with its own message when the plan runs
        try:
            # mount(8) refuses a line with a bad mode too, at boot.
            mkdir = mount_point_mode(spec.options)
        except OptionError as exc:
            raise InvalidRequest(str(exc), value=exc.value) from exc
        if spec.fstype is not None and requested is not None and requested.flags & ms.MS_BIND:
            word = "rbind" if requested.flags & ms.MS_REC else "bind"
            raise InvalidRequest(
                f"a bind mount has no file system type (FileSystemType NULL), not "
                f"{spec.fstype!r} with the option {word}", value=spec.fstype)
        notes: list[str] = []
        with contextlib.ExitStack() as stack:
            try:
                source_anchor = None
                kernel_source: str | None = None
                is_file = False
                if spec.fstype is None:
                    if not spec.source.startswith("/"):
                        raise PathProblem(
                            f"bind source {spec.source!r} is not an absolute path", spec.source)
                    if mounting:
                        source_anchor = stack.enter_context(
                            self._paths.open_bind_source(spec.source))
                        kernel_source, is_file = source_anchor.path, source_anchor.is_file
                else:
                    if mounting:
                        kernel_source = self._paths.device_source(spec.source)
                    # Also for fstab-only modes: the line would run at boot.
                    if self.kernel.uses_helper(spec.fstype):
                        problem = helper_problem(kernel_source or spec.source, target,
                                                 spec.fstype,
                                                 requested.data if requested is not None else "")
                        if problem is not None:
                            raise PathProblem(problem, spec.source)
                    if mounting:
                        _refuse_live_type(spec.fstype)
                    if persist:
                        check = check_fstype(spec.fstype)
                        if check.problem is not None:
                            raise PathProblem(check.problem, spec.fstype)
                        if check.warning is not None:
                            log.warning("%s", check.warning)
                            notes.append(f"warning: {check.warning}")
                anchors = None
                if mounting and spec.fstype is not None and self.kernel.uses_helper(spec.fstype):
                    # Before anything is made: a dry run says so too.
                    unstable = helper_unstable(spec.source, target, spec.fstype)
                    if unstable is not None:
                        raise PathProblem(unstable, target)
                to_make = mounting and mkdir is not None and not os.path.lexists(target)
                if to_make:
                    assert mkdir is not None
                    verb = "would make" if dry_run else "made"
                    if not dry_run:
                        try:
                            made = make_directories(target, mkdir)
                        except OSError as exc:
                            raise PathProblem(f"mount point {target!r} could not be made "
                                              f"(X-mount.mkdir): {exc.strerror}", target,
                                              exc.errno or errno.EIO) from exc
                        log.info("made %s for the mount on %s (X-mount.mkdir)",
                                 ", ".join(made), target)
                    notes.append(f"{verb} the mount point {target} (X-mount.mkdir, mode "
                                 f"{mkdir:04o})")
                if mounting and not (dry_run and to_make):  # nothing to open in a dry run
                    anchor = stack.enter_context(
                        self._paths.open_mount_point(target, file_ok=is_file))
                    target = anchor.path
                    anchors = Anchors(anchor, source_anchor)
                elif os.path.lexists(target):
                    # The name the kernel and the instances use, as Mode 1
                    # writes it, resolved as a mount is (no user's link leads
                    # it out of his tree); a mount point still to be made
                    # (systemd makes it at boot) is kept as given.
                    target = resolved_path(target, "mount point")
            except PathProblem as exc:
                raise InvalidRequest(str(exc), value=exc.path) from exc
            planned = replace(spec, target=target,
                              kernel_source=kernel_source if kernel_source != spec.source
                              else None)
            if persist:
                try:
                    problem = boot_problem(planned.fstab_entry())
                except (FstabError, OptionError) as exc:
                    raise InvalidRequest(str(exc), value=getattr(exc, "value", None)) from exc
                if problem is not None:
                    raise InvalidRequest(problem, value=spec.source
                                         if problem.startswith("spec") else target)
            yield planned, anchors, tuple(notes)

    def _fstab_only_target(self, target: str, current: bool) -> str:
        """The mount point a request that touches fstab alone names: a line's as it
        is written (the service lists it so), else its real path, as CreateMount
        writes it, so that a symlinked spelling finds the line. A request that
        unmounts or remounts keeps the path as given: the kernel steps walk it
        without following symlinks (see linux.paths)."""
        if current or not os.path.lexists(target):
            return target
        if self.fstab_for_reading().find_target(target) is not None:
            return target  # a line written through a symlink is found as written
        try:
            return resolved_path(target, "mount point")
        except PathProblem as exc:  # a user's link out of his tree leads to no line
            raise InvalidRequest(str(exc), value=exc.path) from exc

    def _refuse_protected(self, plan: Plan, snap: Snapshot, force: bool) -> None:
        """InvalidRequest if ``plan`` unmounts or remounts a system mount (under a
        ``protected`` mount point) that lmi-mount did not make, unless ``force``;
        or, ``force`` or not, changes the options of a file system mounted
        outside this namespace too (``shared_file_systems``, ``elsewhere``)."""
        for step in plan.steps:
            if isinstance(step, KernelRemount) and step.superblock:
                record = snap.live(step.target)
                if record is None:
                    continue
                device = (record.major, record.minor)
                where = ("it was there when lmi-mountd --sandbox started"
                         if device in self.shared_file_systems
                         else self._elsewhere(device) if self._elsewhere is not None else None)
                if where is not None:
                    raise InvalidRequest(
                        f"the file system on {step.target} is mounted outside this mount "
                        f"namespace too ({where}): its options would change in those "
                        "mounts as well; it will not remount it, Force or not (a mount's "
                        "own flags, such as nosuid or noexec, change here alone)",
                        value=step.target)
        if force:
            return
        for step in plan.steps:
            if not isinstance(step, (KernelUnmount, KernelRemount)):
                continue
            root = self._protected_root(step.target)
            if isinstance(step, KernelRemount) and step.superblock:
                # A file system's options are its superblock's: remounting
                # another mount of the root device changes the root too.
                shared = self._protected_sharer(step.target, snap)
                if shared is not None:
                    raise InvalidRequest(
                        f"{step.target} is the file system mounted on {shared}, a system "
                        "mount: its file system options change there too; it will not "
                        "remount it unless Force is true", value=step.target)
            if root is not None and not self._made_by_us(step.target, snap):
                under = "" if root == step.target else f" (it is under {root})"
                verb = "unmount" if isinstance(step, KernelUnmount) else "remount"
                raise InvalidRequest(
                    f"{step.target} is a system mount{under} that lmi-mount did not make: "
                    f"it will not {verb} it unless Force is true", value=step.target)

    def _made_by_us(self, target: str, snap: Snapshot) -> bool:
        """Whether the mount on ``target`` is one this engine made and holds, under
        its own name or, renamed, under its old one (``_same_mount`` decides)."""
        record = snap.live(target)
        return record is not None and any(
            held.made_by_us and (held.target == target or held.mount_id == record.mount_id)
            and self._same_mount(held, record)
            for held in snap.holders)

    def _protected_root(self, target: str) -> str | None:
        """The protected mount point ``target`` is, or is under ("/" is the root
        mount itself; any other is a tree of mounts), or None."""
        return next((p for p in self.protected if target == p or
                     (p != "/" and target.startswith(p + "/"))), None)

    def _protected_sharer(self, target: str, snap: Snapshot) -> str | None:
        """A protected mount point whose mount shows the file system mounted on
        ``target`` (same device), or None."""
        record = snap.live(target)
        if record is None:
            return None
        return next((other.target for other in snap.table
                     if (other.major, other.minor) == (record.major, record.minor)
                     and other.target != target
                     and self._protected_root(other.target) is not None), None)

    def _known_source(self, spec: MountSpec, *, persist: bool) -> str:
        """The source ``status`` names the mount by: its fstab line's spec when it
        has one, else a loop device's backing file, else the source as resolved."""
        if persist:
            return spec.source
        return self.kernel.loop_backing_file(spec.kernel_name) or spec.kernel_name

    def _source_resolver(self, table: MountTable) -> Callable[[MountRecord], str]:
        # Resolved sources live as long as their table: a bind's origin and a
        # loop's backing file do not change while the mount table does not.
        with self._cache_lock:
            if self._sources[0] is table:
                cache = self._sources[1]
            else:
                cache = {}
                self._sources = (table, cache)

        def source_of(record: MountRecord) -> str:
            if record.mount_id not in cache:
                cache[record.mount_id] = table.user_source(record, self.kernel.loop_backing_file)
            return cache[record.mount_id]

        return source_of

    def _snapshot(self, targets: Sequence[str] | None = None) -> Snapshot:
        """The state a plan is made from, read lazily (see Snapshot).

        ``targets`` are the mount points the request is about: what is mounted
        there is read on its own (``Kernel.mount_at``, one statmount(2) where
        the kernel has it), and only their holders are reconciled with the
        kernel first. Without ``targets`` every holder is, from the table.
        """
        snap = Snapshot(
            table_reader=self.mount_table,
            fstab_reader=self._fstab_for_plan,
            holders=self._holders,
            source_of_table=self._source_resolver,
            now=self._clock(),
            hold_seconds=self.hold_seconds,
            same_directory=self.kernel.same_file,
            same_source=self._same_source,
            identity=self.kernel.mount_identity,
            find_mount=self.kernel.find_mount,
            live_reader=self.kernel.mount_at if targets is not None else None,
            uses_helper=self.kernel.uses_helper,
            selinux=self.kernel.selinux_enabled,
        )
        reconcile = plan_reconcile(snap, targets)
        if reconcile:
            log.info("mounts changed outside lmi-mount: %s", "; ".join(reconcile.describe()))
            self._execute(reconcile)
        return snap

    def _same_source(self, first: str, second: str) -> bool:
        """Whether two fstab specs name one source (``Snapshot.same_source``), by
        their names as mount(8) resolves them (a tag to its device, a path to
        its real one, links followed), then one device node (its number) or a
        loop device and its image. Not stat(2) of the paths: it answers for
        whatever is mounted on them now (a review: a bind on one path made two
        lines "the same")."""
        if first == second:
            return True
        try:
            one, other = (self._paths.device_source(spec) for spec in (first, second))
        except PathProblem:  # a tag that names no device, or several
            return False
        if one == other:
            return True
        if not (one.startswith("/") and other.startswith("/")):
            return False
        backing = self.kernel.loop_backing_file
        return _same_device_node(one, other) or other == backing(one) or one == backing(other)

    def _run(
        self, plan: Plan, target: str | None, dry_run: bool, anchors: Anchors | None = None
    ) -> Outcome:
        plan = self._with_selinux_note(plan)
        if not dry_run:
            self._execute(plan, anchors)
        return Outcome(plan, target, dry_run)

    def _wake_timer_if_sooner(self) -> None:
        """Wake the hold timer if a deadline now comes before the one it sleeps
        until: a new one, or one a rollback put back (a review: the timer had
        run a round while the failing request had taken it away, and slept on
        without a deadline). Not for one that went within the plan (a release
        with no hold time unmounts at once: a wake per DeleteMount for
        nothing), nor for a later one, nor for one that went away (the timer
        finds nothing due)."""
        with self._wake:
            deadline = self._holders.next_deadline()
            if deadline is not None and (self._timer_sleeps_until is None
                                         or deadline < self._timer_sleeps_until):
                self._wake.notify_all()

    def _with_selinux_note(self, plan: Plan) -> Plan:
        """``plan``, saying which SELinux options its mounts and remounts leave
        out where SELinux is not enabled (the kernel does so, as mount(8))."""
        words: list[str] = []
        for step in plan.steps:
            if isinstance(step, KernelMount) and step.spec.fstype is not None:
                words += selinux_words(step.spec.options)
            elif isinstance(step, KernelRemount) and step.superblock:
                words += selinux_words(step.options)
        if not words or self.kernel.selinux_enabled:
            return plan
        return replace(plan, notes=(*plan.notes, f"SELinux is not enabled on this host: "
                                    f"{', '.join(dict.fromkeys(words))} left out of the "
                                    "mount, as mount(8) does"))

    def _execute(self, plan: Plan, anchors: Anchors | None = None) -> None:
        """Run ``plan`` as one transaction: whole, or undone (now, or at the next start).

        The plan is journaled before its first step, and the space every record
        it may write (its undo's included) is reserved first, so a full state
        file system refuses the request before anything changes instead of
        stranding a mount half way. ``end`` is durable before the caller
        answers: an operation without it is rolled back at the next start
        (kill -9), one with it is whole.
        """
        try:
            self._execute_steps(plan, anchors)
        finally:
            if any(isinstance(step, HolderChange) and any(
                    held is not None and held.release_at is not None
                    for held in (step.before, step.after)) for step in plan.steps):
                # A hold deadline was set, or taken and perhaps put back.
                self._wake_timer_if_sooner()

    def _execute_steps(self, plan: Plan, anchors: Anchors | None) -> None:
        if self.observer:
            self._observe(plan)
            self._publish()
            return
        if not plan:
            return
        if len(plan.steps) == 1 and isinstance(plan.steps[0], HolderChange):
            self._execute_holder_change(plan.steps[0])
            return
        records = [step_record(step) for step in plan.steps]
        try:
            txn = self._journal.begin(plan.operation, records,
                                      room=lambda size: _room_after_begin(size, len(records)))
        except OSError as exc:
            raise self._domain_error(exc) from exc
        self._crash("transaction begun")
        done: list[tuple[Step, object]] = []
        made: tuple[str, tuple[int, int | None]] | None = None
        outer, self._running.txn = getattr(self._running, "txn", None), txn
        try:
            for step in plan.steps:
                name = type(step).__name__
                self._crash(f"before {name}")
                if made is not None and isinstance(step, HolderChange):
                    step = _naming_made(step, *made)
                try:
                    result = self._apply(step, anchors)
                    done.append((step, result))
                    if isinstance(step, KernelMount):
                        assert isinstance(result, tuple)
                        made = step.spec.target, result
                except files.FileWriteError as exc:
                    if isinstance(step, FstabChange) and exc.texts is not None:
                        # The new fstab is in place, though not known durable
                        # (its directory's fsync failed): undone with the rest.
                        done.append((step, exc.texts))
                    raise
                self._crash(f"after {name}")
            self._journal.end(txn)
        except Exception as exc:
            self._roll_back(plan, done)
            try:
                self._journal.end(txn)
            except OSError as failure:
                # The next start undoes it again. Its undo is idempotent, but
                # a later request could make the state it left once more (the
                # same holder taking the same mount), and that would be
                # undone too: no change is taken until a restart has recovered.
                self._journal.stop(f"the end of the rolled back {plan.operation!r} could "
                                   f"not be recorded ({failure})")
                log.error("lmi-mount refuses changes until it is restarted: %s",
                          self._journal.read_only_reason)
            raise self._domain_error(exc) from exc
        finally:
            self._running.txn = outer
            self._holders.check()
            self._publish()

    def _execute_holder_change(self, step: HolderChange) -> None:
        """A plan of one holder step is a transaction of one record.

        Its ``set`` or ``forget`` line is written whole or not at all (replay
        stops at a torn line, by its CRC), and memory changes only after it is
        durable: a ``begin`` and an ``end`` around it would cost two more
        records, the larger one carrying the step, for nothing to finish or
        undo. It must leave the room the transactions begun beside it (other
        mount points) reserved, and is refused (ENOSPC) before anything
        changes when it cannot: a review's stream of them filled a journal
        under a begun release, which then failed after its unmount. This is
        the common case of a shared mount: every holder but the first and the
        last.
        """
        self._crash("before HolderChange")
        try:
            self._set_holders(step, alone=True)
        except Exception as exc:
            raise self._domain_error(exc) from exc
        finally:
            self._holders.check()
            self._publish()
        self._crash("after HolderChange")

    def _publish(self) -> None:
        """Make the holders as they are now what readers see."""
        with self._publish_lock:
            self._published = MappingProxyType({held.target: held for held in self._holders})

    def _note(self, note: dict[str, object]) -> None:
        """Record what a step of the running transaction made (see ``_recover``)."""
        txn = getattr(self._running, "txn", None)
        if txn is not None:
            self._journal.progress(txn, note)

    def _observe(self, plan: Plan) -> None:
        """An observer follows holder changes in memory (reconcile) and refuses the rest."""
        for step in plan.steps:
            if not isinstance(step, HolderChange):
                raise OperationFailed(
                    f"this engine only observes the state directory: cannot {step.describe()}",
                    value=str(self._journal.state_dir),
                )
            if step.after is None:
                if step.target in self._holders:
                    self._holders.forget(step.target)
            else:
                self._holders.restore(step.after)

    def _roll_back(self, plan: Plan, done: list[tuple[Step, object]]) -> None:
        # An undone unmount mounts again: a new mount, whose ids the holder
        # records restored after it must carry (a plan is about one mount).
        remade: tuple[int, int | None] | None = None
        remade_at: str | None = None
        for step, memo in reversed(done):
            try:
                if isinstance(step, FstabChange):
                    self._undo_fstab(step, memo)
                elif (isinstance(step, KernelUnmount) and step.remount is not None
                      and step.remount.fstype in MEMORY_FSTYPES):
                    # Mounting it again would give an empty file system under
                    # the old name and holders: the unmount stands (the next
                    # read forgets its holders), as recovery finishes it.
                    log.error("rollback of %r: %s stays unmounted (a %s cannot be mounted "
                              "again with its content)", plan.operation, step.target,
                              step.remount.fstype)
                else:
                    undo = step.undo()
                    if undo is not None:
                        result = self._apply(_with_identity(undo, remade))
                        if isinstance(undo, KernelMount):
                            assert isinstance(result, tuple)
                            remade, remade_at = result, undo.spec.target
            except Exception:
                # Nothing more can be done automatically; the log names the step
                # so an administrator can finish it by hand.
                log.exception("rollback of %r failed at step: %s", plan.operation, step.describe())
        if remade is not None and remade_at is not None:
            self._adopt_remade(plan, remade_at, remade)

    def _adopt_remade(self, plan: Plan, target: str, remade: tuple[int, int | None]) -> None:
        """The holder record of a mount a rollback made again carries the new
        mount's ids: a holder step undone after the mount has them already; one
        that failed, or came before, left the old ones, and the next look would
        take the new mount for someone else's and forget its holders."""
        held = self._holders.get(target)
        if held is None or (held.mount_id, held.unique_id) == remade:
            return
        try:
            self._set_holders(HolderChange(
                target, held, replace(held, mount_id=remade[0], unique_id=remade[1]),
                "the mount made again by the rollback"))
        except Exception:
            log.exception("rollback of %r: the holders of %s keep the ids of the mount "
                          "before it", plan.operation, target)

    def _apply(self, step: Step, anchors: Anchors | None = None) -> object:
        if isinstance(step, KernelMount):
            return self._mount(step, anchors)
        if isinstance(step, KernelRemount):
            self._remount(step)
            return None
        if isinstance(step, KernelUnmount):
            self._unmount(step)
            self._note({"unmounted": step.mount_id, "target": step.target})
            return None
        if isinstance(step, FstabChange):
            return self._edit_fstab(step)
        if isinstance(step, HolderChange):
            self._set_holders(step)
            return None
        raise AssertionError(f"unknown step {step!r}")

    def _mount(self, step: KernelMount, anchors: Anchors | None) -> tuple[int, int | None]:
        """Mount as ``step`` asks, verified; returns the new mount's (id, unique id)."""
        spec = step.spec
        flags, data, clear = step.request()
        # The transaction's begin record (see _execute) holds this step: if the
        # process dies right after the mount, the next start takes it back.
        target: str | Anchor = spec.target
        source: str | Anchor = spec.kernel_name
        if anchors is not None and anchors.target.path == spec.target:
            target = anchors.target
            if spec.fstype is None and anchors.source is not None:
                source = anchors.source
        # Proof for a restart that the mount is ours. Where the kernel names
        # a new mount before attaching it, its never-reused unique id is noted
        # first, so no instant exists at which the mount is attached and not
        # noted; elsewhere (mount(2), helpers) it is noted right after.
        noted: list[int] = []
        # What is at the path before: a mount that a restart finds there and
        # that is not this one was made by this step, even where the kernel
        # names it only after it is attached (mount(2), a helper that goes on
        # mounting while this process is killed). See _unnoted_mount.
        if not self.kernel.names_before_attaching(spec.fstype):
            over = self.kernel.mount_identity(spec.target)
            self._note({"mounting": spec.target, "over": list(over) if over else None})
            self._crash("mount about to be made")

        def attaching(unique: int) -> None:
            self._note({"attaching": unique, "target": spec.target})
            noted.append(unique)
            self._crash("mount noted, not attached")

        record = self.kernel.mount(source, target, spec.fstype, flags, data, clear=clear,
                                   attaching=attaching)
        self._crash("mount attached")
        unique = noted[0] if noted else None
        if unique is None:
            unique = self._unique_of(record)
            self._note({"mounted": record.mount_id, "target": spec.target,
                        "device": [record.major, record.minor], "root": record.root,
                        "unique": unique})
        try:
            differences = self._mount_differences(spec, record)
            if not differences:
                record, differences = self._propagate(spec.options, record)
        except Exception:
            left = self._take_back(record, unique, recursive=spec.recursive)
            if left is not None:
                log.error("the mount of %s failed half way and %s", spec.describe(), left)
            raise
        if differences:
            # Not what was asked: take it away again (it was never reported).
            left = self._take_back(record, unique, recursive=spec.recursive)
            rolled = "rolled back" if left is None else f"NOT rolled back: {left}"
            raise NotApplied(
                f"mount of {spec.describe()} did not come up as asked ({rolled}): "
                + "; ".join(differences),
                value=spec.target,
                differences=differences,
            )
        return record.mount_id, unique

    def _unmount(self, step: KernelUnmount) -> None:
        """umount2 as ``step`` asks. EBUSY with no process using the mount is a
        path lookup pinning it for an instant (another request resolving its
        path, a client's stat) or a mount on it: tried again, briefly, before
        it is an error."""
        for attempt in range(UNMOUNT_BUSY_ATTEMPTS):
            try:
                self.kernel.unmount(step.target, ms.MNT_DETACH if step.lazy else 0,
                                    expect=step.mount_id, recursive=step.recursive)
                return
            except KernelError as exc:
                if (exc.errno != errno.EBUSY or attempt == UNMOUNT_BUSY_ATTEMPTS - 1
                        or any(use.pid != os.getpid() for use in self._processes(step.target))):
                    raise
            time.sleep(TAKE_BACK_BUSY_SECONDS)

    def _take_back(self, record: MountRecord, unique: int | None, *,
                   recursive: bool) -> str | None:
        """Unmount the mount this engine made, wherever it is now; None when done,
        else what is left and where.

        It is looked for by its unique id (or its id: alive, an id is not
        reused), at the path the kernel shows now: its mount point may have
        been renamed meanwhile. Mounts on it go too only for an rbind (they
        are its own copies); on any other, they are someone else's: EBUSY.
        """
        target = record.target
        for _ in range(TAKE_BACK_ATTEMPTS):
            try:
                self.kernel.unmount(target, expect=record.mount_id, recursive=recursive)
                return None
            except KernelError as exc:
                now = self.kernel.find_mount(record.mount_id, unique)
                if now is None or (now.major, now.minor, now.root) != (
                        record.major, record.minor, record.root):
                    return None  # gone (its id, if seen again, is another mount's)
                if exc.errno == errno.EBUSY:
                    # Nobody has used it yet: a path lookup racing with the
                    # unmount (a rename of its parent) pins it for an instant.
                    time.sleep(TAKE_BACK_BUSY_SECONDS)
                elif exc.errno not in (errno.ELOOP, errno.ENOENT, errno.ENOTDIR, errno.ESTALE):
                    return str(exc)  # refused: looking again will not help
                target = now.target  # its mount point may have been moved: there it is
        log.error("could not take back the mount %d (%s) now on %s", record.mount_id,
                  record.source, target)
        return f"the mount is left on {target!r}"

    def _remount(self, step: KernelRemount) -> None:
        flags, data = step.request()
        record = self.kernel.mount(None, step.target, None, flags, data, expect=step.mount_id)
        differences = self._option_differences(step.options, record)
        if step.superblock and step.options.allow_write and record.superblock_read_only:
            # The mount's own flag is rw, and writes fail with EROFS all the same.
            differences.append("the file system stays read-only (its superblock is ro)")
        if not differences:
            record, differences = self._propagate(step.options, record)
        if record.target != step.target:
            differences.insert(0, f"remounted {record.target!r}, not {step.target!r}")
        if differences:
            left = self._undo_remount(step)
            rolled = "rolled back" if not left else f"rolled back except {', '.join(left)}"
            raise NotApplied(
                f"remount of {step.target} did not take ({rolled}): " + "; ".join(differences),
                value=step.target,
                differences=differences,
            )

    def _undo_remount(self, step: KernelRemount) -> list[str]:
        """Remount to the options before ``step``; returns what could not be restored.

        A file system option the kernel did not show before (a default, such
        as tmpfs's size) cannot be set back by name: it is reported, not hidden.
        """
        undo = step.undo()
        assert isinstance(undo, KernelRemount)
        flags, data = undo.request()
        try:
            record = self.kernel.mount(None, step.target, None, flags, data,
                                       expect=step.mount_id)
        except KernelError as exc:
            log.error("could not undo the remount of %s: %s", step.target, exc)
            return [f"the undo failed: {exc}"]
        left = self._option_differences(step.previous, record)
        shown_before = {option.partition("=")[0] for option in step.previous.other_options}
        live = from_mountinfo(record.vfs_options, record.super_options)
        left += [f"{option} (its earlier value was not shown by the kernel)"
                 for option in live.other_options if option.partition("=")[0] not in shown_before]
        return left

    def _propagate(
        self, options: MountOptions, record: MountRecord
    ) -> tuple[MountRecord, list[str]]:
        """Apply the propagation type the options name (``shared``, ``rslave``, ...:
        a separate call after the mount, as mount(8) makes it) and check it."""
        propagation = kernel_request(options).propagation
        if not propagation:
            return record, []
        record = self.kernel.mount(None, record.target, None, propagation,
                                   expect=record.mount_id)
        if propagation_holds(propagation, record):
            return record, []
        return record, [f"propagation is {record.propagation}, not as asked"]

    def _mount_differences(self, spec: MountSpec, record: MountRecord) -> list[str]:
        """How the mount the kernel reports differs from ``spec`` (rule 11: the
        kernel is the judge); empty when it is the mount asked for."""
        differences = []
        if record.target != spec.target:
            differences.append(
                f"it is on {record.target!r}, not {spec.target!r} (the path was changed "
                "while mounting)"
            )
        if spec.fstype is None:
            if not self.kernel.same_file(spec.kernel_name, record.target):
                differences.append(f"it does not show {spec.source!r}")
        elif not self.kernel.uses_helper(spec.fstype):
            if record.fstype != spec.fstype:
                differences.append(f"its type is {record.fstype!r}, not {spec.fstype!r}")
            backing = self.kernel.loop_backing_file(record.source)
            if spec.kernel_name not in (record.source, backing):
                differences.append(f"its source is {record.source!r}, not {spec.kernel_name!r}")
        return differences + self._option_differences(spec.options, record)

    def _option_differences(self, options: MountOptions, record: MountRecord) -> list[str]:
        live = from_mountinfo(record.vfs_options, record.super_options)
        return [
            f"{drift} (live: {','.join(record.vfs_options)} / {','.join(record.super_options)})"
            for drift in compare(options, live, fstype=record.fstype,
                                 selinux=self.kernel.selinux_enabled)
            if drift.comparable
        ]

    def _kept_options_note(self, spec: MountSpec, snap: Snapshot) -> tuple[str, ...]:
        """A warning for a mount of a file system that is mounted already: the
        kernel keeps that superblock, and its options, for the new mount. The
        request's file system options that it does not show are in force only
        if they are its defaults: CreateMount said 0 for errors=remount-ro on
        such a mount (a review), and refusing them refused the defaults that
        file systems never show (data=ordered, barrier=1; a second review).
        An option shown with another value fails the mount's read-back. In
        this mount namespace only: a mount in another is not seen."""
        # A tmpfs is new with every mount, whatever its source says; a device or
        # image is named by a path (btrfs shows a device number of major 0).
        if spec.fstype is None or spec.fstype in MEMORY_FSTYPES or \
                self.kernel.uses_helper(spec.fstype) or not spec.kernel_name.startswith("/"):
            return ()
        for other in snap.table:
            if other.root != "/" or other.target == spec.target or \
                    spec.kernel_name not in (other.source,
                                             self.kernel.loop_backing_file(other.source)):
                continue
            live = from_mountinfo(other.vfs_options, other.super_options)
            unshown = [str(drift.configured) for drift in compare(
                spec.options, live, fstype=other.fstype, selinux=self.kernel.selinux_enabled)
                       if drift.live is None and isinstance(drift.configured, str)]
            if not unshown:
                return ()
            return (f"warning: {spec.kernel_name} is mounted already on {other.target}, and "
                    "a new mount of it keeps that file system's options: "
                    f"{', '.join(unshown)} not shown there, in force only if the file "
                    "system's defaults",)
        return ()

    def _set_holders(self, step: HolderChange, *, alone: bool = False) -> None:
        """Record and make ``step``'s holders; ``alone``: a transaction of its own
        (see ``_execute_holder_change``), not a step of a begun one."""
        after = step.after
        if after is not None and after.unique_id is None:
            identity = self.kernel.mount_identity(after.target)
            if identity is not None and (after.mount_id in (None, identity[0])):
                after = replace(after, mount_id=identity[0], unique_id=identity[1])
        if after is None:
            self._journal.forget(step.target, alone=alone)
            if step.target in self._holders:
                self._holders.forget(step.target)
        else:
            self._journal.set(after, alone=alone)
            self._holders.restore(after)

    def _edit_fstab(self, step: FstabChange) -> tuple[str, str]:
        before_after = files.edit_file(
            self.fstab_path, lambda text: step.apply(FstabDocument.parse(text)).render(),
            backups=self.fstab_backups,
        )
        self._after_fstab_edit()
        return before_after

    def _undo_fstab(self, step: FstabChange, memo: object) -> None:
        """Put back the fstab text from before ``step``, byte for byte when possible."""
        assert isinstance(memo, tuple)
        before, after = (str(text) for text in memo)
        inverse = step.undo()
        assert isinstance(inverse, FstabChange)

        def undone(text: str) -> str:
            if text == after:
                return before
            # Someone (another mount point's request, an administrator)
            # edited the file since: undo only our line, keep theirs.
            return inverse.apply(FstabDocument.parse(text)).render()

        # One edit under the fstab lock: the comparison and the write see the
        # same text, whatever other writers do meanwhile.
        files.edit_file(self.fstab_path, undone, backups=self.fstab_backups)
        self._after_fstab_edit()

    def _mounts_below(self, target: str) -> list[str]:
        """The mount points of the mounts inside ``target``'s tree, by path."""
        prefix = target.rstrip("/") + "/"
        return sorted({record.target for record in self.mount_table()
                       if record.target.startswith(prefix)})

    def _domain_error(self, exc: Exception) -> MountError:
        if isinstance(exc, MountError):
            return exc
        if isinstance(exc, KernelError):
            if exc.errno == errno.EBUSY:
                # This process's own descriptors (an anchor) are not a user to name.
                users = [use for use in (self._processes(exc.target) if exc.target else [])
                         if use.pid != os.getpid()]
                detail = f"; in use by {describe(users)}" if users else ""
                below = self._mounts_below(exc.target) if exc.target and not users else []
                if below:
                    # The kernel's other reason, which no process scan shows.
                    detail = (f"; mounted below it: {', '.join(below[:5])}"
                              + (f" and {len(below) - 5} more" if len(below) > 5 else "")
                              + " (unmount those first)")
                return InUse(
                    f"{exc}{detail}",
                    value=exc.target,
                    processes=[describe([use]) for use in users],
                )
            if exc.errno in (errno.ENODEV, errno.ENOTBLK, errno.ENOENT, errno.ENOTDIR):
                return InvalidRequest(str(exc), value=exc.source or exc.target)
            return OperationFailed(str(exc), value=exc.target, errno=exc.errno)
        if isinstance(exc, FstabConflict):
            return OperationFailed(str(exc), value=exc.value, errno=errno.EAGAIN)
        if isinstance(exc, (OptionError, FstabError)):
            return InvalidRequest(str(exc), value=getattr(exc, "value", None))
        if isinstance(exc, files.ConflictError):
            return OperationFailed(str(exc), value=exc.path, errno=errno.EAGAIN)
        if isinstance(exc, files.FileError):
            return OperationFailed(str(exc), value=exc.path, errno=getattr(exc, "errno", None))
        if isinstance(exc, OSError):  # JournalError and the like
            return OperationFailed(str(exc), value=exc.filename, errno=exc.errno)
        raise exc

    def _reconstruct(self) -> None:
        """Rebuild the holders from the journal and the kernel's mount table (WI6).

        First every transaction the journal shows begun and not ended (kill -9)
        is undone, or finished (see ``_recover``). Then journaled mounts still
        live with the same mount id keep their holders; vanished or replaced
        ones are forgotten. An intent (written by the first build, before
        transactions) whose mount is live becomes a mount of ours with no
        holder: the client never got an answer, so no reference is invented
        for it. Mounts of ours with no holder start their hold timer; mounts
        the service did not make are never unmounted.
        """
        try:
            state = self._journal.peek() if self.observer else self._journal.open()
        except JournalError as exc:
            raise OperationFailed(str(exc), value=exc.filename, errno=exc.errno) from exc
        if self._journal.read_only:
            log.warning("state directory is full or read-only: lmi-mount serves reads and "
                        "refuses changes (%s)", self._journal.read_only_reason)
        if self._writes_journal:
            for txn in sorted(state.transactions.values(), key=lambda t: -t.txn):
                self._recover(txn, state.mounts)
        table = self.mount_table()
        source_of = self._source_resolver(table)
        now = self._clock()
        for held in state.mounts.values():
            record = table.at(held.target)
            if record is None or not self._same_mount(held, record):
                # Its mount point may have been renamed, or another mount made
                # over it or over a directory above it: the unique id finds it
                # (a mount id alone may be a later mount's by now), and the
                # hold timer and releases find it the same way.
                record = self._found_by_unique_id(held)
                if record is not None and record.target != held.target:
                    log.info("reconstruct: %s is now on %s (its mount point was renamed)",
                             held.target, record.target)
                elif record is not None:
                    log.info("reconstruct: %s is under another mount, made over it or "
                             "above it", held.target)
            if record is None:
                log.info("reconstruct: %s vanished while lmi-mount was down", held.target)
                self._journaled(self._journal.forget, held.target)
                continue
            self._holders.restore(replace(held, release_at=None, generation=0))
        for intent in state.intents.values():
            if intent.target in self._holders:
                continue
            record = table.at(intent.target)
            if record is not None and source_of(record) == intent.source:
                made = HeldMount(
                    intent.target,
                    intent.source,
                    intent.fstype,
                    intent.options,
                    made_by_us=True,
                    mount_id=record.mount_id,
                    unique_id=self._unique_of(record),
                )
                log.info("reconstruct: %s was mounted but not recorded; holding it", intent.target)
                self._journaled(self._journal.set, made)
                self._holders.restore(made)
            else:
                self._journaled(self._journal.forget, intent.target)
        for held in list(self._holders):
            if held.made_by_us and not held.holders:
                self._holders.start_hold(held.target, now=now, hold_seconds=self.hold_seconds)
        self._holders.check()

    def _recover(self, txn: Transaction, mounts: dict[str, HeldMount]) -> None:
        """Undo what an interrupted transaction (kill -9 before its ``end``) had done.

        Its steps are undone in reverse, each only if the machine shows it
        applied (the process may have died before or after any step), so the
        operation ends up absent: it was never acknowledged. ``mounts`` is the
        replayed holder state, updated in place.
        """
        try:
            steps = [step_from_record(record) for record in txn.steps]
        except (KeyError, TypeError, ValueError) as exc:
            log.error("transaction %d (%s) in the journal is unreadable (%s): left as it is",
                      txn.txn, txn.operation, exc)
            return
        if self._rolls_forward(steps, txn.progress):
            # An unmount of a memory file system cannot be undone (mounting it
            # again gives an empty one): the operation is finished instead.
            log.warning("finishing %s (transaction %d), interrupted after it unmounted a "
                        "memory file system", txn.operation, txn.txn)
            for step in steps:
                try:
                    self._forward_step(step, mounts)
                except Exception:
                    log.exception("recovery of %r: could not finish %s", txn.operation,
                                  step.describe())
            self._journal.end(txn.txn)
            return
        log.warning("rolling back %s (transaction %d), interrupted before it finished",
                    txn.operation, txn.txn)
        # As in _roll_back; a recovery killed after it mounted again left a note.
        remade = self._remade_by_a_recovery(steps, txn.progress)
        for step in reversed(steps):
            try:
                remade = self._recover_step(step, mounts, txn.progress, remade,
                                            txn=txn.txn) or remade
            except Exception:
                log.exception("recovery of %r: could not undo %s", txn.operation,
                              step.describe())
        self._journal.end(txn.txn)

    def _rolls_forward(self, steps: list[Step], progress: tuple[dict[str, object], ...]) -> bool:
        """Whether the transaction unmounted a memory file system (noted, or the
        mount it meant is gone: the process may have died before the note)."""
        noted = {note.get("target") for note in progress if "unmounted" in note}
        for step in steps:
            if not isinstance(step, KernelUnmount) or (
                    step.remount is not None and step.remount.fstype not in MEMORY_FSTYPES):
                continue
            if step.target in noted:
                return True
            table = self.mount_table()
            if step.mount_id is not None and step.mount_id not in table.by_id \
                    and table.at(step.target) is None:
                return True
        return False

    def _forward_step(self, step: Step, mounts: dict[str, HeldMount]) -> None:
        """Make ``step`` applied if it is not yet (the roll-forward of ``_recover``)."""
        if isinstance(step, HolderChange):
            if _holder_key(mounts.get(step.target)) == _holder_key(step.after):
                return
            if step.after is None:
                self._journal.forget(step.target)
                mounts.pop(step.target, None)
            else:
                self._journal.set(step.after)
                mounts[step.target] = step.after
        elif isinstance(step, FstabChange):
            if step.line_now(self.read_fstab()) != step.entry:
                self._edit_fstab(step)
        elif isinstance(step, KernelUnmount):
            record = self.mount_table().at(step.target)
            held = mounts.get(step.target)
            identity = self.kernel.mount_identity(step.target)
            foreign = (held is not None and held.unique_id is not None
                       and identity is not None and identity[1] != held.unique_id)
            if record is not None and record.mount_id == step.mount_id and not foreign:
                self.kernel.unmount(step.target, expect=step.mount_id, recursive=step.recursive)

    def _recover_step(self, step: Step, mounts: dict[str, HeldMount],
                      progress: tuple[dict[str, object], ...] = (),
                      remade: tuple[int, int | None] | None = None, *, txn: int,
                      ) -> tuple[int, int | None] | None:
        """Undo ``step`` of transaction ``txn`` if the machine shows it applied;
        returns the (id, unique id) of a mount it made again (an undone
        unmount), else None.

        A holder record is restored with the ids it had, or with ``remade``'s
        when a recovery mounted its mount again: never with whatever mount its
        path reaches now, which may be anyone's. The mount made again is
        noted as ``_mount`` notes its own (before, what is at the path; after,
        its ids), so that a recovery killed in turn leaves its ids to the next
        (``_remade_by_a_recovery``).
        """
        if isinstance(step, HolderChange):
            current = mounts.get(step.target)
            if _holder_key(current) != _holder_key(step.after):
                return None  # not applied (or already undone)
            undo = _with_identity(step.undo(), remade)
            assert isinstance(undo, HolderChange)
            before = undo.after
            if before is None:
                self._journal.forget(step.target)
                mounts.pop(step.target, None)
                return None
            self._journal.set(before)
            mounts[step.target] = before
        elif isinstance(step, FstabChange):
            found = step.line_now(self.read_fstab())
            if found == step.entry and found != step.previous:
                inverse = step.undo()
                assert isinstance(inverse, FstabChange)
                self._edit_fstab(inverse)
        elif isinstance(step, KernelMount):
            # Only a mount this transaction noted as its own is taken back,
            # wherever it is now: one that merely looks the same at the path
            # may be someone else's, made while the service was down.
            for note in progress:
                if note.get("target") == step.spec.target and (
                        "attaching" in note or "mounted" in note):
                    ours = self._noted_mount(note)
                    if ours is not None:
                        left = self._take_back(*ours, recursive=step.spec.recursive)
                        if left is not None:
                            log.error("recovery could not take back %s: %s",
                                      ours[0].target, left)
                    return None
            about = next((note for note in progress
                          if note.get("mounting") == step.spec.target), None)
            made = self._unnoted_mount(step.spec, about) if about is not None else None
            if made is not None:
                log.warning("recovery: taking back %s, made by the interrupted request "
                            "before it could note it", step.spec.target)
                left = self._take_back(*made, recursive=step.spec.recursive)
                if left is not None:
                    log.error("recovery could not take back %s: %s", step.spec.target, left)
            elif self.mount_table().at(step.spec.target) is not None:
                log.warning("recovery: %s is mounted, but no record says this service "
                            "mounted it: left as it is", step.spec.target)
        elif isinstance(step, KernelUnmount):
            if step.remount is not None and self.mount_table().at(step.target) is None:
                flags, data, clear = KernelMount(step.remount).request()
                over = self.kernel.mount_identity(step.target)
                self._journal.progress(txn, {"remounting": step.target,
                                             "over": list(over) if over else None})
                record = self.kernel.mount(step.remount.kernel_name, step.target,
                                           step.remount.fstype, flags, data, clear=clear)
                self._crash("recovery mount made, not noted")
                unique = self._unique_of(record)
                self._journal.progress(txn, {
                    "remade": record.mount_id, "target": step.target, "unique": unique,
                    "device": [record.major, record.minor], "root": record.root})
                self._crash("recovery mounted again")
                return record.mount_id, unique
        elif self.mount_table().at(step.target) is not None:  # KernelRemount: idempotent
            undo = step.undo()
            assert isinstance(undo, KernelRemount)
            flags, data = undo.request()
            self.kernel.mount(None, step.target, None, flags, data, expect=step.mount_id)
        return None

    def _remade_by_a_recovery(self, steps: list[Step], progress: tuple[dict[str, object], ...]
                              ) -> tuple[int, int | None] | None:
        """The (id, unique id) of the mount an earlier, interrupted recovery of these
        ``steps`` made again, if it lives: by its note, else (killed between
        the mount and its note) found as ``_unnoted_mount`` finds a step's."""
        for note in progress:
            if "remade" in note:
                found = self._noted_mount({**note, "mounted": note["remade"]})
                if found is not None:
                    return found[0].mount_id, found[1]
        for note in progress:
            step = next((step for step in steps if isinstance(step, KernelUnmount)
                         and step.remount is not None
                         and step.target == note.get("remounting")), None)
            if step is not None and step.remount is not None:
                made = self._unnoted_mount(step.remount, note)
                if made is not None:
                    return made[0].mount_id, made[1]
        return None

    def _unnoted_mount(self, spec: MountSpec, about: dict[str, object]
                       ) -> tuple[MountRecord, int | None] | None:
        """The mount an interrupted KernelMount step of ``spec`` made without noting
        it (killed between mount(2) and the note): at its path now, not the one
        ``about`` (the note written before) says was there, and of its source
        and type. Someone else's mount of the same source at the same path,
        made while the service was down, cannot be told from it."""
        identity = self.kernel.mount_identity(spec.target)
        record = self.mount_table().at(spec.target)
        if identity is None or record is None or record.target != spec.target:
            return None
        if about.get("over") == list(identity):
            return None  # what was there before the step
        if spec.fstype is None:
            # A bind: its root is the source directory itself.
            if not self.kernel.same_file(spec.source, spec.target):
                return None
        elif self.kernel.uses_helper(spec.fstype):
            # A helper's mount may show another type (ntfs-3g's is fuseblk).
            if record.source != spec.kernel_name:
                return None
        elif record.fstype != spec.fstype or (
                # An image is mounted from the loop device it gets.
                not os.path.isfile(spec.kernel_name) and record.source != spec.kernel_name):
            return None
        return record, _unique_named(identity, record)

    def _unique_of(self, record: MountRecord) -> int | None:
        """The never-reused id of the live mount ``record``, asked at its mount
        point (see ``_unique_named``)."""
        return _unique_named(self.kernel.mount_identity(record.target), record)

    def _noted_mount(self, note: dict[str, object]) -> tuple[MountRecord, int | None] | None:
        """The live mount a progress note of ``_mount`` names, and its unique id;
        None when it is gone (or the note is not a mount's)."""
        unique = note.get("unique", note.get("attaching"))
        unique = unique if isinstance(unique, int) else None
        if "attaching" in note:
            # Noted before it was attached: it lives only if the move happened.
            record = self.kernel.find_mount(None, unique) if unique is not None else None
            return (record, unique) if record is not None else None
        mount_id = note.get("mounted")
        if not isinstance(mount_id, int):
            return None
        record = self.kernel.find_mount(mount_id, unique)
        # Without a unique id, an id may have been given to a later mount:
        # the device and root tell.
        if record is None or ([record.major, record.minor] != note.get("device")
                              or record.root != note.get("root")):
            return None
        return record, unique

    def _found_by_unique_id(self, held: HeldMount) -> MountRecord | None:
        """The held mount wherever it is, found by its never-reused unique id and
        proved so without a path (a path reaches the mount on top); None
        without unique ids, or when it is gone."""
        if held.unique_id is None or held.mount_id is None \
                or not self.kernel.asks_by_unique_id:
            return None  # by its mount id alone it would be unproved
        return self.kernel.find_mount(held.mount_id, held.unique_id)

    def _same_mount(self, held: HeldMount, record: MountRecord) -> bool:
        """Is the live ``record`` the mount ``held`` describes? Mount ids are
        reused at once, so the unique id decides where the kernel has one."""
        if held.mount_id is not None and record.mount_id != held.mount_id:
            return False
        if held.unique_id is not None:
            identity = self.kernel.mount_identity(record.target)
            return identity is not None and identity[1] == held.unique_id
        return True

    @property
    def read_only_reason(self) -> str | None:
        """Why this engine refuses changes (its journal cannot be written), or None."""
        return self._journal.read_only_reason if self._journal.read_only else None

    @property
    def _writes_journal(self) -> bool:
        """False for an observer, and for an engine whose journal is read-only (a
        full state file system): it reconstructs in memory and refuses changes."""
        return not self.observer and not self._journal.read_only

    def _journaled(self, record: Callable[[_T], None], value: _T) -> None:
        """Write a reconstruction record, unless this engine cannot write the journal."""
        if self._writes_journal:
            record(value)

    def _timer_loop(self) -> None:
        retry_at: float | None = None  # a round skipped or failed: not before then
        while True:
            with self._wake:
                if self._closed:
                    return
                deadline = self._holders.next_deadline()
                if deadline is not None and retry_at is not None:
                    deadline = max(deadline, retry_at)
                now = self._clock()
                timeout = (TIMER_SLEEP_SECONDS if deadline is None
                           else min(max(0.0, deadline - now), TIMER_SLEEP_SECONDS))
                if timeout > 0:
                    self._timer_sleeps_until = now + timeout
                    self._wake.wait(timeout)
                    continue
                # Running a round: a deadline set meanwhile is read at its end.
                self._timer_sleeps_until = float("-inf")
            try:
                _, skipped = self._expire_due()
                retry_at = self._clock() + LOCKED_RETRY_SECONDS if skipped else None
            except Exception:
                # One bad round must not end every hold timer: log it and
                # try again after the busy retry interval.
                log.exception("the hold timer failed; it tries again in %.0f s",
                              BUSY_RETRY_SECONDS)
                retry_at = self._clock() + BUSY_RETRY_SECONDS
