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
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from pywbem import CIMDateTime, CIMInstance, CIMInstanceName, Uint16

from lmi_mount.cim import names
from lmi_mount.cim.jobs import Job
from lmi_mount.cim.model import Model
from lmi_mount.cim.projection import Projector
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


@dataclass(frozen=True)
class ModelRead:
    """The mounts, their settings and their drift, as of one read of the engine."""

    instances: dict[InstanceKey, CIMInstance]
    #: mount point -> (the mount's path, what drifted), for mounts that drift.
    drift: dict[str, tuple[CIMInstanceName, tuple[str, ...]]]


#: A projected instance and its ``instance_key``, kept together across reads.
_Keyed = tuple[InstanceKey, CIMInstance]


def _path(instance: CIMInstance) -> CIMInstanceName:
    assert instance.path is not None
    return instance.path


class ModelReader:
    """Reads what the indications describe, projecting only the mounts whose state
    changed since the last read (the others' instances are the same objects):
    a change on a host with thousands of mounts costs one engine read, not
    thousands of projections."""

    def __init__(self, context: Context) -> None:
        self._context = context
        self._last: dict[tuple[str, str], tuple[MountStatus, list[_Keyed]]] = {}

    def read(self) -> ModelRead:
        view = View(self._context)
        projector = view.projector
        instances: dict[InstanceKey, CIMInstance] = {}
        drift: dict[str, tuple[CIMInstanceName, tuple[str, ...]]] = {}
        seen: dict[tuple[str, str], tuple[MountStatus, list[_Keyed]]] = {}
        for status in view.statuses:
            key = (status.spec, status.target)
            last = self._last.get(key)
            if last is not None and (last[0] is status or last[0] == status):
                keyed = last[1]  # the same objects, keys and all: ``changes`` skips them
            else:
                projected = [projector.mounted_file_system(status)]
                projected += [setting for setting, _, _ in projector.settings_of(status)]
                keyed = [(instance_key(_path(i)), i) for i in projected]
            seen[key] = (status, keyed)
            for instance_id, instance in keyed:
                instances[instance_id] = instance
            if status.drift:
                drift[status.target] = (_path(keyed[0][1]),
                                        tuple(str(d) for d in status.drift))
        self._last = seen
        return ModelRead(instances, drift)


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
                    drifts: tuple[str, ...], *, drifted: bool) -> CIMInstance:
        if drifted:
            message = f"{target} differs from its fstab line: {'; '.join(drifts)}"
            message_id, severity = DRIFTED, _WARNING
        else:
            message = f"{target} agrees with its fstab line again (was: {'; '.join(drifts)})"
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
    """The indications that take a listener from ``before`` to ``after``: deletions,
    then creations and modifications in the order of ``after``, then drift alerts."""
    for key, gone in before.instances.items():
        if key not in after.instances:
            yield factory.deletion(gone)
    for key, now in after.instances.items():
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
            yield factory.drift_alert(target, path, drifts, drifted=False)


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
