"""Refcount state of held mounts: who holds which mount and when it is released.

Owns: the holder table and its invariants (seed MountManager WI2: the reference
count equals the references held, never negative; WI3: the last release starts a
hold deadline, a new acquire cancels it, force drops everything), with hold
timers as plain data (a deadline on a monotonic clock the caller passes in).

Must not know: the kernel, files, clocks, threads or CIM. The engine owns the
clock and the timer thread; this module only says which deadline is due.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Final

#: The longest holder name (characters): a name, not a payload carried into
#: every journal record and instance.
MAX_HOLDER_LENGTH: Final = 256


class HolderError(ValueError):
    """A holder operation that the state does not allow (names the holder and target)."""


def holder_problem(name: str) -> str | None:
    """Why ``name`` cannot name a new holder, or None: a name must be something,
    on one line (logs, ``lmi-mount status``), as text, and not a payload. Any
    user name the service accepts is one (``Smith, John`` from a users file,
    the holders of a journal written before this rule: a review found them
    refused); listings quote a name that holds a comma or white space."""
    if not name.strip():
        return "a holder name must not be empty or blank"
    if len(name) > MAX_HOLDER_LENGTH:
        return f"a holder name is at most {MAX_HOLDER_LENGTH} characters, not {len(name)}"
    # Cc: control characters (newline, escape); Cs: bytes that were not UTF-8.
    odd = next((c for c in name if unicodedata.category(c) in ("Cc", "Cs")), None)
    if odd is not None:
        return f"a holder name must not hold the character {odd!r}"
    return None


def shown_holder(name: str) -> str:
    """``name`` as plans and listings show it: quoted (JSON's string) when it holds
    a comma, white space or a leading quote, so that ``root`` and ``"root "``,
    ``a,b`` and ``"a,b"`` read apart."""
    if "," in name or name.startswith('"') or any(c.isspace() for c in name):
        return json.dumps(name)
    return name


def shown_holders(names: Sequence[str]) -> str:
    """Holders comma-separated, each as ``shown_holder`` shows it."""
    return ",".join(shown_holder(name) for name in names)


@dataclass(frozen=True, slots=True)
class HeldMount:
    """One mount that lmi-mount tracks, by its mount point.

    ``holders`` has one entry per reference (a holder that acquired twice
    appears twice), so ``refcount == len(holders)`` by construction (WI2).
    ``made_by_us`` says whether the service mounted it: only such mounts are
    ever unmounted when their hold time ends. ``mount_id`` is mountinfo's id
    of the mount when it was made or adopted, and ``unique_id`` the kernel's
    never-reused id (statx STATX_MNT_ID_UNIQUE) where it has one: after a
    restart they tell the same mount from a different one at the same path
    (mount ids alone are reused at once). ``release_at`` is the hold
    deadline (monotonic seconds) while the mount has no holder, else None.
    ``generation`` changes on every transition so a timer that was armed for
    an older state never acts on a newer one.
    """

    target: str
    source: str
    fstype: str | None
    options: str
    made_by_us: bool
    mount_id: int | None = None
    unique_id: int | None = None
    holders: tuple[str, ...] = ()
    release_at: float | None = None
    generation: int = 0
    #: A recursive bind (rbind): its submounts go and come back with it.
    recursive: bool = False

    @property
    def refcount(self) -> int:
        return len(self.holders)


@dataclass(slots=True)
class HolderTable:
    """The mutable table of held mounts, keyed by mount point.

    Every mutator checks its precondition and raises HolderError before it
    changes anything, so a refused operation leaves the table as it was.
    Each mutator changes one entry in one dictionary assignment, and every
    walk over the table walks a copy taken in one step, so writers of
    different mount points may share the table (the engine serializes
    writers of one mount point).
    """

    _mounts: dict[str, HeldMount] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self._mounts)

    def __iter__(self) -> Iterator[HeldMount]:
        return iter(list(self._mounts.values()))

    def __contains__(self, target: object) -> bool:
        return target in self._mounts

    def get(self, target: str) -> HeldMount | None:
        return self._mounts.get(target)

    def require(self, target: str) -> HeldMount:
        held = self._mounts.get(target)
        if held is None:
            raise HolderError(f"lmi-mount holds no mount at {target!r}")
        return held

    def register(self, mount: HeldMount) -> HeldMount:
        """Start tracking ``mount`` (made by us or adopted); refuses a second one."""
        if mount.target in self._mounts:
            raise HolderError(f"a mount at {mount.target!r} is already tracked")
        self._mounts[mount.target] = mount
        return mount

    def forget(self, target: str) -> HeldMount:
        """Stop tracking the mount at ``target`` (it was unmounted or vanished)."""
        return self._mounts.pop(self.require(target).target)

    def restore(self, mount: HeldMount) -> None:
        """Put back an exact earlier state of one mount (rollback of a plan)."""
        self._mounts[mount.target] = mount

    def acquire(self, target: str, holder: str) -> HeldMount:
        """Add one reference for ``holder``; cancels a running hold deadline (WI3)."""
        if not holder:
            raise HolderError("a holder name must not be empty")
        held = self.require(target)
        return self._set(held, holders=(*held.holders, holder), release_at=None)

    def release(self, target: str, holder: str, *, now: float, hold_seconds: float) -> HeldMount:
        """Remove one reference of ``holder``.

        When it was the last reference of a mount the service made, the hold
        deadline starts at ``now + hold_seconds``; a mount the service did not
        make gets no deadline (it is never unmounted by a timer).
        """
        held = self.require(target)
        if holder not in held.holders:
            names = ", ".join(sorted(set(held.holders))) or "nobody"
            raise HolderError(
                f"holder {holder!r} holds no reference on {target!r} (held by {names})"
            )
        # Remove the most recent reference of this holder: references of one
        # holder are interchangeable, and the order of the others is kept.
        index = len(held.holders) - 1 - held.holders[::-1].index(holder)
        holders = held.holders[:index] + held.holders[index + 1 :]
        assert len(holders) == held.refcount - 1 >= 0, "refcount went negative (WI2)"
        release_at = now + hold_seconds if not holders and held.made_by_us else None
        return self._set(held, holders=holders, release_at=release_at)

    def drop_holders(self, target: str) -> HeldMount:
        """Drop every reference and cancel the deadline (emergency force, WI3)."""
        held = self.require(target)
        return self._set(held, holders=(), release_at=None)

    def start_hold(self, target: str, *, now: float, hold_seconds: float) -> HeldMount:
        """Start the hold deadline of a mount we made that has no holder (restart, WI6)."""
        held = self.require(target)
        if held.holders:
            raise HolderError(f"{target!r} still has {held.refcount} holder(s)")
        if not held.made_by_us:
            raise HolderError(f"{target!r} was not mounted by lmi-mount: no hold timer")
        return self._set(held, release_at=now + hold_seconds)

    def due(self, now: float) -> list[HeldMount]:
        """Mounts whose hold deadline has passed, earliest first."""
        due = [
            m for m in list(self._mounts.values())
            if m.release_at is not None and m.release_at <= now
        ]
        return sorted(due, key=lambda m: (m.release_at, m.target))

    def next_deadline(self) -> float | None:
        deadlines = [m.release_at for m in list(self._mounts.values())
                     if m.release_at is not None]
        return min(deadlines) if deadlines else None

    def check(self) -> None:
        """Assert the table's invariants (WI2, WI3); cheap enough to call after each plan."""
        for target, held in list(self._mounts.items()):
            assert target == held.target, f"table key {target!r} != {held.target!r}"
            assert held.refcount >= 0, f"negative refcount on {target!r} (WI2)"
            assert all(held.holders), f"empty holder name on {target!r}"
            if held.holders:
                assert held.release_at is None, f"{target!r} has holders and a hold deadline"
            if held.release_at is not None:
                assert held.made_by_us, f"hold deadline on a foreign mount {target!r}"

    def _set(self, held: HeldMount, **changes: object) -> HeldMount:
        updated = replace(held, generation=held.generation + 1, **changes)  # type: ignore[arg-type]
        self._mounts[held.target] = updated
        return updated
