"""What every provider shares: the service context, the per-request view, the base class.

Owns: ``Context`` (the long-lived pieces a provider may use: engine,
projector, goal settings, jobs, configuration), ``View`` (one consistent read
of the engine per request, computed lazily and at most once), and
``Provider`` (the operations a class family may implement; the defaults say
NOT_SUPPORTED, or derive GetInstance from the enumeration).

Must not know: XML, HTTP, pywbem_mock, kernel calls.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from pywbem import (
    CIM_ERR_METHOD_NOT_AVAILABLE,
    CIM_ERR_NOT_SUPPORTED,
    CIMClassName,
    CIMError,
    CIMInstance,
    CIMInstanceName,
)

from lmi_mount.cim.jobs import JobManager
from lmi_mount.cim.paths import same_path
from lmi_mount.cim.projection import GoalSetting, Projector
from lmi_mount.engine import EngineState, MountManager, MountStatus
from lmi_mount.linux.paths import VolumeStats
from lmi_mount.mounts.fstab import FstabProblem, normalize_target
from lmi_mount.mounts.mountinfo import MountRecord


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling: the server fills it from authentication."""

    user: str | None = None
    may_write: bool = True


@dataclass(slots=True)
class Context:
    """The long-lived state the providers share (one per broker)."""

    engine: MountManager
    projector: Projector
    jobs: JobManager
    volume_stats: Callable[[str], VolumeStats | None]
    max_goal_settings: int = 1000
    default_holder: str = "cim"
    goals: dict[str, GoalSetting] = field(default_factory=dict)
    goals_lock: threading.Lock = field(default_factory=threading.Lock)
    #: Told of each change of a goal setting, (before, after), None for none:
    #: the indications (goals are no part of the engine's state they read).
    goal_listeners: list[Callable[[GoalSetting | None, GoalSetting | None], None]] = field(
        default_factory=list)

    def set_goal(self, goal: GoalSetting) -> None:
        """Make or replace a goal setting. Called with ``goals_lock`` held, so that
        listeners hear the changes in the order they were made."""
        before = self.goals.get(goal.instance_id)
        self.goals[goal.instance_id] = goal
        for listener in self.goal_listeners:
            listener(before, goal)

    def drop_goal(self, instance_id: str) -> bool:
        """Delete a goal setting; whether there was one. ``goals_lock`` held."""
        before = self.goals.pop(instance_id, None)
        if before is None:
            return False
        for listener in self.goal_listeners:
            listener(before, None)
        return True


class View:
    """One request's consistent read of the engine, computed on first use: the whole
    state for enumerations, or one read per mount point for point lookups made
    before any enumeration."""

    def __init__(self, context: Context) -> None:
        self.context = context
        self.projector = context.projector
        self._state: EngineState | None = None
        self._by_key: dict[tuple[str, str], MountStatus] | None = None
        self._by_target: dict[str, MountStatus] | None = None
        # Point lookups before any enumeration: one read per mount point.
        self._points: dict[str, MountStatus | None] = {}
        # Per device number, the mount that shows its file system whole.
        self._wholes: dict[tuple[int, int], MountRecord] | None = None

    @property
    def state(self) -> EngineState:
        if self._state is None:
            self._state = self.context.engine.state()
        return self._state

    @property
    def fstab_problems(self) -> tuple[FstabProblem, ...]:
        """The lines of fstab that are no entry or repeat a mount point."""
        if self._state is not None:
            return self._state.fstab_problems
        return tuple(self.context.engine.fstab_for_reading().problems())

    @property
    def statuses(self) -> tuple[MountStatus, ...]:
        return self.state.statuses

    def status(self, spec: str, target: str) -> MountStatus | None:
        """The mount a (FileSystemSpec, MountPointPath) key names. A live mount is
        also found by the kernel's name of its source (``/dev/loop3`` where the
        instance is named by the loop's backing file, or the reverse). A mount
        point spelled with a trailing or doubled slash names the same one."""
        target = normalize_target(target)
        if self._state is None:
            # Read the one mount point only (a GetInstance, a method's Mount
            # reference): the whole state costs a pass over every mount.
            point = self.status_at(target)
            if point is None or point.spec == spec or _held_as(point, spec):
                return point
            if point.live is not None and spec in (
                    point.live.source, self.context.engine.live_source(point.live)):
                return point
            return None
        if self._by_key is None:
            self._by_key = {(s.spec, s.target): s for s in self.statuses}
        found = self._by_key.get((spec, target))
        if found is None:
            at = self.status_at(target)
            if at is not None and (_held_as(at, spec) or (at.live is not None and spec in (
                    at.live.source, self.state.source_of(at.live)))):
                return at
        return found

    def status_at(self, target: str) -> MountStatus | None:
        target = normalize_target(target)
        if self._state is None:
            if target not in self._points:
                self._points[target] = self.context.engine.status_at(target)
            return self._points[target]
        if self._by_target is None:
            self._by_target = {s.target: s for s in self.statuses}
        return self._by_target.get(target)

    def containing_fs_name(self, target: str) -> str:
        """The name of the file system the directory ``target`` lives on.

        For a live mount that is its parent mount's file system; for a mount
        point that is not mounted, the one of the mount that contains the path.
        """
        table = self.state.table
        record = table.at(target)
        parent = table.by_id.get(record.parent_id) if record is not None else None
        if parent is None:
            parent = table.containing(target)
        return self.file_system_of(parent)[0] if parent is not None else ""

    def file_system_of(self, record: MountRecord) -> tuple[str, MountRecord]:
        """The name of the file system the live ``record`` shows, and the mount that
        shows it whole (its root), else ``record``.

        A file system is a superblock: its device number. One on a device is
        named as its whole mount's source is known (the device, a loop's image
        file); one without a device (major 0: tmpfs, overlay, a btrfs
        subvolume) is a new one with every superblock whatever its source
        says, so its device number is part of its name (``tmpfs@0:52``). A
        bind shows the file system of its origin. Every tmpfs had been one
        "tmpfs", with the figures of whichever came first (an outside review).
        """
        if self._wholes is None:
            # A mount a path reaches, so that statvfs(3) of its mount point
            # reads this file system, not one mounted over it (a review): the
            # root mount first, else any mount of the device.
            self._wholes = {}
            visible = self.state.table.visible()
            for other in [r for r in visible if r.root == "/"] + visible:
                self._wholes.setdefault((other.major, other.minor), other)
        whole = self._wholes.get((record.major, record.minor), record)
        name = self.state.source_of(whole) if whole.root == "/" else whole.source
        if record.major == 0:
            name = f"{name}@{record.major}:{record.minor}"
        return name, whole

    def goals(self) -> list[GoalSetting]:
        with self.context.goals_lock:
            return list(self.context.goals.values())


def _held_as(status: MountStatus, spec: str) -> bool:
    """Whether ``spec`` is the source the mount's holders asked for (the Mount a
    CreateMount returned): a bind of a whole disk's file system is shown by the
    disk's name, which mountinfo cannot tell from a second mount of it."""
    return status.held is not None and status.held.source == spec


def shown(value: Any) -> str:
    """``value`` as a message names it: an instance path as its WBEM URI (what a
    client wrote), anything else as its repr."""
    if isinstance(value, (CIMInstanceName, CIMClassName)):
        return str(value.to_wbem_uri())
    return repr(value)


class Provider(ABC):
    """A class family's operations; a provider overrides what its classes support."""

    #: The classes this provider serves, as the model spells them.
    classnames: tuple[str, ...] = ()
    #: Association classes among them.
    associations: tuple[str, ...] = ()
    #: Methods that change nothing (lower case): readers may call them.
    read_only_methods: frozenset[str] = frozenset()

    @abstractmethod
    def instances(self, view: View, classname: str) -> Iterator[CIMInstance]:
        """Every instance of ``classname`` (one of ``classnames``), with its path."""

    def get(self, view: View, path: CIMInstanceName) -> CIMInstance | None:
        """The instance at ``path``, or None. The default scans the enumeration."""
        return next(
            (i for i in self.instances(view, path.classname) if same_path(i.path, path)), None
        )

    def exists(self, view: View, path: CIMInstanceName) -> bool:
        """Whether ``path`` names an instance; providers answer it without building one
        where they can (a method call only needs to know its target exists)."""
        return self.get(view, path) is not None

    def references_to(
        self, view: View, classname: str, path: CIMInstanceName
    ) -> Iterator[CIMInstance]:
        """Association instances of ``classname`` that refer to ``path``.

        The default filters the enumeration; providers of per-mount
        associations answer from the one mount instead.
        """
        for instance in self.instances(view, classname):
            if any(
                isinstance(v, CIMInstanceName) and same_path(v, path) for v in instance.values()
            ):
                yield instance

    def invoke(
        self,
        view: View,
        path: CIMInstanceName,
        method: str,
        params: Mapping[str, Any],
        caller: Caller,
    ) -> tuple[Any, dict[str, Any]]:
        # The broker found the method declared: the model has it, this service not.
        raise CIMError(CIM_ERR_METHOD_NOT_AVAILABLE,
                       f"{path.classname}.{method} is declared by the model but not implemented "
                       "by lmi-mount")

    def modify(self, view: View, instance: CIMInstance, property_list: list[str] | None) -> None:
        raise CIMError(
            CIM_ERR_NOT_SUPPORTED, f"instances of {instance.classname} cannot be modified"
        )

    def delete(self, view: View, path: CIMInstanceName) -> None:
        raise CIMError(CIM_ERR_NOT_SUPPORTED, f"instances of {path.classname} cannot be deleted")
