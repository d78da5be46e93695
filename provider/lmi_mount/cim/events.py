"""Indications of the Mounting Model: what changed between two reads of the engine.

Owns: the part of the model that indications describe (each mount's
LMI_MountedFileSystem and settings, and the drift of each mount from its
fstab line), the diff of two reads into DSP1054 lifecycle indications
(CIM_InstCreation, CIM_InstDeletion, CIM_InstModification with
PreviousInstance and ChangedPropertyNames) and CIM_AlertIndication when a
mount drifts or comes back, and the CIM_InstModification of an LMI_MountJob
whose state changed.

The diff is by instance path, whoever made the change (this service, mount(8)
by hand, systemd, an fstab edit): a read is the model as a client would
enumerate it, so an indication says what a client would have seen change.

Must not know: who is told or how (``server/indications.py``), threads, I/O.
"""

from __future__ import annotations

import copy
import itertools
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from pywbem import CIMDateTime, CIMInstance, CIMInstanceName, Uint16

from lmi_mount.cim import names
from lmi_mount.cim.jobs import Job
from lmi_mount.cim.model import Model
from lmi_mount.cim.projection import GoalSetting, Projector
from lmi_mount.cim.providers.base import Context, View
from lmi_mount.engine import MountStatus

INST_CREATION: Final = "CIM_InstCreation"
INST_DELETION: Final = "CIM_InstDeletion"
INST_MODIFICATION: Final = "CIM_InstModification"
ALERT: Final = "CIM_AlertIndication"

# CIM_AlertIndication values: AlertType 1 "Other" (OtherAlertType says which),
# PerceivedSeverity 2 "Information" / 3 "Degraded/Warning", ProbableCause 1
# "Other", AlertingElementFormat 2 "CIMObjectPath".
_OTHER: Final = Uint16(1)
_INFORMATION: Final = Uint16(2)
_WARNING: Final = Uint16(3)
_OBJECT_PATH: Final = Uint16(2)
DRIFT_ALERT_TYPE: Final = "Mount drift"
#: MessageIDs of the alerts (DSP0228-style: owning entity prefix, number).
DRIFTED: Final = "LMI0001"
BACK_IN_LINE: Final = "LMI0002"
LOST: Final = "LMI0003"
OWNING_ENTITY: Final = "lmi-mount"

InstanceKey = tuple[str, tuple[tuple[str, Any], ...]]


#: Keys whose values are class names, which CIM compares without case.
_CLASS_NAME_KEYS: Final = frozenset(("creationclassname", "systemcreationclassname"))


def instance_key(path: CIMInstanceName) -> InstanceKey:
    """A hashable identity of an instance path: class and keys, names without case,
    and values that are class names (CreationClassName) without case too."""
    keys = tuple(sorted((name.lower(), _hashable(name, value))
                        for name, value in path.keybindings.items()))
    return path.classname.lower(), keys


def _hashable(name: str, value: Any) -> Any:
    if isinstance(value, CIMInstanceName):
        return instance_key(value)
    if isinstance(value, str) and name.lower() in _CLASS_NAME_KEYS:
        return value.lower()
    return value


#: Numbers of model reads, for ``ModelRead.base``.
_serials = itertools.count(1)


@dataclass(frozen=True)
class ModelRead:
    """The mounts, their settings and their drift, as of one read of the engine."""

    instances: dict[InstanceKey, CIMInstance]
    #: mount point -> (the mount's path, what drifted), for mounts that drift.
    drift: dict[str, tuple[CIMInstanceName, tuple[str, ...]]]
    #: mount point -> how many live mounts it has (a drift that ended with
    #: the mount's end is no agreement with the line).
    mounted: dict[str, int] = field(default_factory=dict)
    #: The read this one was made from (its ``serial``), the keys of the
    #: instances it took away from that one and those it added (projected
    #: again, or new; last in ``instances``, in this order): ``changes`` from
    #: that read looks at these alone.
    base: int | None = None
    removed: tuple[InstanceKey, ...] = ()
    added: tuple[InstanceKey, ...] = ()
    serial: int = field(default_factory=lambda: next(_serials))

#: A projected instance and its ``instance_key``, kept together across reads.
_Keyed = tuple[InstanceKey, CIMInstance]
_Entry = tuple[MountStatus, list[_Keyed]]


def _path(instance: CIMInstance) -> CIMInstanceName:
    assert instance.path is not None
    return instance.path


class FstabUnreadable(Exception):
    """fstab could not be read (a directory, a FIFO): no read of the model now."""


class ModelReader:
    """Reads what the indications describe, projecting only the mounts whose state
    changed since the last read: a change on a host with thousands of mounts
    costs one engine read, not thousands of projections nor a walk of every
    instance. The engine keeps a status object while its mount and line do
    not change; the instances of the statuses it kept are carried over."""

    def __init__(self, context: Context) -> None:
        self._context = context
        #: The statuses of the last read by id (held here: no id is reused
        #: while it is a key) with their instances, and that read. One value,
        #: replaced whole: two reads at once (a first subscriber's baseline
        #: and the watcher's) each patch a consistent pair.
        self._last: tuple[dict[int, _Entry], ModelRead | None] = ({}, None)

    def read(self) -> ModelRead:
        """The model now; ``FstabUnreadable`` while fstab cannot be read, whose
        lines are then not known to be gone (a read without them would report
        every one deleted, and back again once it can be read)."""
        view = View(self._context)
        unreadable = [p for p in view.fstab_problems if p.kind == "unreadable"]
        if unreadable:
            raise FstabUnreadable(str(unreadable[0]))
        statuses = view.statuses
        last, last_read = self._last
        ids = set(map(id, statuses))
        gone_ids = last.keys() - ids
        new_ids = ids - last.keys()
        # A status made anew with the same values (an fstab line without a live
        # mount is one on every read) keeps the instances of the one it replaces.
        replaced = {(last[n][0].spec, last[n][0].target): n for n in gone_ids}
        kept: set[int] = set()
        made: dict[int, _Entry] = {}
        added: list[_Entry] = []
        for status in (s for s in statuses if id(s) in new_ids) if new_ids else ():
            number = replaced.get((status.spec, status.target))
            if number is not None and last[number][0] == status:
                made[id(status)] = (status, last[number][1])
                kept.add(number)
            else:
                made[id(status)] = entry = (status, _project(view.projector, status))
                added.append(entry)
        removed = [entry for n, entry in last.items() if n in gone_ids and n not in kept] \
            if gone_ids else []
        current = dict(last)
        for number in gone_ids:
            del current[number]
        current.update(made)
        if last_read is None:
            read = _model_read([current[id(s)] for s in statuses])
        else:
            read = _patched(last_read, removed, added)
        self._last = (current, read)
        return read


def _project(projector: Projector, status: MountStatus) -> list[_Keyed]:
    projected = [projector.mounted_file_system(status)]
    projected += [setting for setting, _, _ in projector.settings_of(status)]
    return [(instance_key(_path(i)), i) for i in projected]


def _drift_of(status: MountStatus, keyed: list[_Keyed]
              ) -> tuple[CIMInstanceName, tuple[str, ...]]:
    return _path(keyed[0][1]), tuple(str(d) for d in status.drift)


def _model_read(entries: Iterable[_Entry]) -> ModelRead:
    instances: dict[InstanceKey, CIMInstance] = {}
    drift: dict[str, tuple[CIMInstanceName, tuple[str, ...]]] = {}
    mounted: dict[str, int] = {}
    for status, keyed in entries:
        for key, instance in keyed:
            instances[key] = instance
        if status.drift:
            drift[status.target] = _drift_of(status, keyed)
        _count_mounted(mounted, status, 1)
    return ModelRead(instances, drift, mounted)


def _count_mounted(mounted: dict[str, int], status: MountStatus, step: int) -> None:
    if status.live is None:
        return
    count = mounted.get(status.target, 0) + step
    if count > 0:
        mounted[status.target] = count
    else:
        mounted.pop(status.target, None)


def _patched(before: ModelRead, removed: list[_Entry], added: list[_Entry]) -> ModelRead:
    """``before`` without the instances of the ``removed`` statuses and with those of
    the ``added`` ones (last, in their order)."""
    instances = dict(before.instances)
    drift = dict(before.drift)
    mounted = dict(before.mounted)
    removed_keys: list[InstanceKey] = []
    added_keys: list[InstanceKey] = []
    for status, keyed in removed:
        for key, _ in keyed:
            instances.pop(key, None)
            removed_keys.append(key)
        if status.drift:
            drift.pop(status.target, None)
        _count_mounted(mounted, status, -1)
    for status, keyed in added:
        for key, instance in keyed:
            instances.pop(key, None)  # a key added again goes last too
            instances[key] = instance
            added_keys.append(key)
        if status.drift:
            drift[status.target] = _drift_of(status, keyed)
        _count_mounted(mounted, status, 1)
    return ModelRead(instances, drift, mounted, base=before.serial,
                     removed=tuple(removed_keys), added=tuple(added_keys))


class IndicationFactory:
    """Builds the indication instances, typed from the model's classes."""

    def __init__(self, model: Model, projector: Projector) -> None:
        self._model = model
        self._projector = projector
        self._host = projector.host
        # IndicationIdentifier: unique within this process's life, and not
        # reused by the next one (DSP1054 lets a listener drop duplicates by it).
        self._prefix = f"{OWNING_ENTITY}:{os.getpid()}:{int(datetime.now(UTC).timestamp())}"
        self._numbers = itertools.count(1)

    def _indication(self, classname: str, values: dict[str, Any]) -> CIMInstance:
        values = {
            "IndicationIdentifier": f"{self._prefix}:{next(self._numbers)}",
            "IndicationTime": CIMDateTime(datetime.now(UTC)),
            **values,
        }
        return CIMInstance.from_class(self._model.get_class(classname), property_values=values,
                                      include_missing_properties=False, include_path=False)

    def _lifecycle(self, classname: str, source: CIMInstance,
                   extra: dict[str, Any] | None = None) -> CIMInstance:
        assert source.path is not None
        return self._indication(classname, {
            "SourceInstance": _without_path(source),
            "SourceInstanceModelPath": _model_path(source.path),
            "SourceInstanceHost": self._host,
            **(extra or {}),
        })

    def creation(self, source: CIMInstance) -> CIMInstance:
        return self._lifecycle(INST_CREATION, source)

    def deletion(self, source: CIMInstance) -> CIMInstance:
        return self._lifecycle(INST_DELETION, source)

    def modification(self, source: CIMInstance, previous: CIMInstance) -> CIMInstance:
        changed = sorted(name for name, prop in source.properties.items()
                         if not _same_value(previous.get(name), prop.value))
        return self._lifecycle(INST_MODIFICATION, source, {
            "PreviousInstance": _without_path(previous),
            "ChangedPropertyNames": changed,
        })

    def drift_alert(self, target: str, mount: CIMInstanceName,
                    drifts: tuple[str, ...], *, drifted: bool,
                    mounted: bool = True) -> CIMInstance:
        """LMI0001 when ``target``'s mount starts to differ from its line; LMI0002
        when that ends: it agrees again, or it is no longer ``mounted``."""
        if drifted:
            message = f"{target} differs from its fstab line: {'; '.join(drifts)}"
            message_id, severity = DRIFTED, _WARNING
        elif mounted:
            message = f"{target} agrees with its fstab line again (was: {'; '.join(drifts)})"
            message_id, severity = BACK_IN_LINE, _INFORMATION
        else:
            message = (f"{target} is no longer mounted: nothing differs from its fstab line "
                       f"now (was: {'; '.join(drifts)})")
            message_id, severity = BACK_IN_LINE, _INFORMATION
        return self._indication(ALERT, {
            "AlertType": _OTHER,
            "OtherAlertType": DRIFT_ALERT_TYPE,
            "PerceivedSeverity": severity,
            "ProbableCause": _OTHER,
            "ProbableCauseDescription": "live mount options differ from the fstab line",
            "AlertingManagedElement": _model_path(mount),
            "AlertingElementFormat": _OBJECT_PATH,
            "SystemCreationClassName": names.COMPUTER_SYSTEM,
            "SystemName": self._host,
            "ProviderName": OWNING_ENTITY,
            "OwningEntity": OWNING_ENTITY,
            "MessageID": message_id,
            "Message": message,
            "MessageArguments": [target, *drifts],
            "EventTime": CIMDateTime(datetime.now(UTC)),
        })

    def goal_setting(self, goal: GoalSetting) -> CIMInstance:
        """The LMI_MountedFileSystemSetting of a goal setting, as GetInstance shows it."""
        return self._projector.goal_setting(goal)

    def job_instance(self, job: Job, time_before_removal: float) -> CIMInstance:
        return self._projector.job(job, time_before_removal)

    def loss_alert(self, lost: int, destination: str, filter_name: str) -> CIMInstance:
        """Said to a destination, in the stream of the subscription of filter
        ``filter_name``, before its first indication after ``lost`` of its were dropped."""
        return self._indication(ALERT, {
            "AlertType": _OTHER,
            "OtherAlertType": "Indications lost",
            "PerceivedSeverity": _WARNING,
            "ProbableCause": _OTHER,
            "ProbableCauseDescription": "the destination did not take indications in time",
            "SystemCreationClassName": names.COMPUTER_SYSTEM,
            "SystemName": self._host,
            "ProviderName": OWNING_ENTITY,
            "OwningEntity": OWNING_ENTITY,
            "MessageID": LOST,
            "Message": f"{lost} indications of filter {filter_name} to {destination} "
                       "were lost",
            "MessageArguments": [str(lost), destination, filter_name],
            "EventTime": CIMDateTime(datetime.now(UTC)),
        })


def changes(before: ModelRead, after: ModelRead,
            factory: IndicationFactory) -> Iterator[CIMInstance]:
    """The indications that take a listener from ``before`` to ``after``: deletions
    (in no set order), then creations and modifications in the order of
    ``after``, then drift alerts.

    When ``after`` was read from ``before`` only the instances it touched can
    differ; otherwise (a subscriber's baseline, a read that failed between)
    every instance is compared."""
    if after.base == before.serial:
        gone_keys: Iterable[InstanceKey] = after.removed
        after_keys: Iterable[InstanceKey] = after.added
    else:
        gone_keys, after_keys = before.instances, after.instances
    for key in gone_keys:
        if key not in after.instances:
            yield factory.deletion(before.instances[key])
    for key in after_keys:
        now = after.instances[key]
        was = before.instances.get(key)
        if was is None:
            yield factory.creation(now)
        elif was is not now and not _same_values(was, now):
            yield factory.modification(now, was)
    for target, (path, drifts) in after.drift.items():
        if before.drift.get(target, (None, ()))[1] != drifts:
            yield factory.drift_alert(target, path, drifts, drifted=True)
    for target, (path, drifts) in before.drift.items():
        if target not in after.drift and instance_key(path) in after.instances:
            yield factory.drift_alert(target, path, drifts, drifted=False,
                                      mounted=target in after.mounted)


def _same_values(a: CIMInstance, b: CIMInstance) -> bool:
    return a.properties.keys() == b.properties.keys() and all(
        _same_value(value, b.get(name)) for name, value in a.items())


def _same_value(a: Any, b: Any) -> bool:
    # pywbem's objects refuse to be compared with None or other types.
    if isinstance(a, CIMInstance) or isinstance(b, CIMInstance):
        return isinstance(a, CIMInstance) and isinstance(b, CIMInstance) and a == b
    return bool(a == b)


def _without_path(instance: CIMInstance) -> CIMInstance:
    """An embedded instance is an INSTANCE, without its path (DSP0201).

    A shallow copy: it shares the properties of ``instance``, an instance of
    a model read that nothing changes afterwards, as nothing changes an
    indication once made (a deep copy cost a tenth of a millisecond each).
    """
    shallow = copy.copy(instance)
    shallow.path = None
    return shallow


def _model_path(path: CIMInstanceName) -> str:
    """The WBEM URI of ``path`` without host: ``root/cimv2:Class.Key="..."``."""
    local = path.copy()
    local.host = None
    return str(local.to_wbem_uri(format="standard")).lstrip("/")


def sources(indications: Iterable[CIMInstance]) -> list[str]:
    """The classes and model paths of a batch, for a log line."""
    return [f"{i.classname} {i.get('SourceInstanceModelPath') or i.get('Message')}"
            for i in indications]
