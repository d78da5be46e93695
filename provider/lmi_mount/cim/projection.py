"""Live state -> CIM instances: one function per class of the model.

Owns: how engine state (mount statuses, holders, goal settings, jobs) reads as
instances of the Mounting Model, with their keys, InstanceID formats and every
property the model declares (typed from the compiled class; properties with
no value are present and NULL). Every read operation — GetInstance,
enumerations, associations, pull, queries — is served from these functions
(ARCHITECTURE rule 6: one projection for reads).

Must not know: the engine's internals (it reads MountStatus values), the
kernel, XML or pywbem_mock.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from urllib.parse import quote, unquote_to_bytes

from pywbem import (
    CIMDateTime,
    CIMInstance,
    CIMInstanceName,
    CIMProperty,
    NocaseDict,
    Uint16,
    Uint32,
    Uint64,
)

from lmi_mount.cim import names
from lmi_mount.cim.jobs import COMPLETED, EXCEPTION, NEW, RUNNING, STARTING, TERMINATED, Job
from lmi_mount.cim.model import Model, key_names
from lmi_mount.cim.paths import instance_path, same_path
from lmi_mount.engine import MountStatus
from lmi_mount.linux.paths import VolumeStats
from lmi_mount.mounts.fstab import FstabProblem
from lmi_mount.mounts.mountinfo import MountRecord
from lmi_mount.mounts.options import (
    MountOptions,
    is_fstab_only,
    is_propagation,
    with_defaults,
)
from lmi_mount.mounts.plan import MountSpec

# InstanceID formats (DSP0004: "<OrgID>:<LocalID>"; OpenLMI used "LMI:<class>:...").
SETTING_PREFIX: Final = f"LMI:{names.MOUNTED_FILE_SYSTEM_SETTING}:"
GOAL_PREFIX: Final = SETTING_PREFIX + "goal:"
CURRENT_PREFIX: Final = SETTING_PREFIX + "current:"
NEXT_PREFIX: Final = SETTING_PREFIX + "next:"
CAPABILITIES_ID: Final = f"LMI:{names.MOUNTED_FILE_SYSTEM_CAPABILITIES}"
SERVICE_NAME: Final = names.MOUNT_CONFIGURATION_SERVICE

# CIM_ElementSettingData.IsCurrent / IsNext ValueMaps.
IS_CURRENT: Final = Uint16(1)
IS_NOT_CURRENT: Final = Uint16(2)
IS_NEXT: Final = Uint16(1)
IS_NOT_NEXT: Final = Uint16(2)

# The setting's booleans and the MountOptions fields behind them (ARCHITECTURE
# "Setting <-> options").
SETTING_FIELDS: Final = (
    ("AllowWrite", "allow_write"),
    ("AllowSUID", "allow_suid"),
    ("InterpretDevices", "interpret_devices"),
    ("AllowExecution", "allow_execution"),
    ("SynchronousIO", "synchronous_io"),
    ("SynchronousDirectoryUpdates", "synchronous_directory_updates"),
    ("UpdateAccessTimes", "update_access_times"),
    ("UpdateRelativeAccessTimes", "update_relative_access_times"),
    ("UpdateFullAccessTimes", "update_full_access_times"),
    ("UpdateDirectoryAccessTimes", "update_directory_access_times"),
    ("AllowMandatoryLock", "allow_mandatory_lock"),
    ("Silent", "silent"),
)
#: The setting's property of each MountOptions field, for messages a client reads.
PROPERTY_OF_FIELD: Final = {field: cim for cim, field in SETTING_FIELDS}

# The characters that would make a "<spec>|<path>" local ID ambiguous.
_ID_SAFE: Final = "/:=@,+-._~ #!$&'()*;[]{}^`"


def _uint16_or_null(value: int | None) -> Uint16 | None:
    """A number read from fstab as a uint16 property; NULL where it has no such
    value (libmount reads a pass number of -1 or 70000): one line must not
    break every read of its class. None (not set) is NULL too."""
    return Uint16(value) if value is not None and 0 <= value <= 0xFFFF else None


def mount_local_id(spec: str, target: str) -> str:
    """``<spec>|<path>`` with '%' and '|' percent-encoded, so it splits back exactly.

    Paths are bytes to the kernel: a name that is not UTF-8 (held as
    surrogate escapes) is quoted byte for byte, never refused.
    """
    return (f"{quote(os.fsencode(spec), safe=_ID_SAFE)}|"
            f"{quote(os.fsencode(target), safe=_ID_SAFE)}")


def parse_mount_local_id(local_id: str) -> tuple[str, str] | None:
    spec, sep, target = local_id.partition("|")
    if not sep or "|" in target:
        return None
    return os.fsdecode(unquote_to_bytes(spec)), os.fsdecode(unquote_to_bytes(target))


@dataclass(frozen=True, slots=True)
class GoalSetting:
    """A transient setting made by CreateSetting and edited by ModifyInstance."""

    instance_id: str
    options: MountOptions
    #: None (NULL) until a client sets it: a ModifyMount keeps the line's own
    #: freq and pass number, a new line gets 0. A 0 here turned off the fsck
    #: of every line whose options OpenLMI's flow changed.
    dump: bool | None = None
    passno: int | None = None
    element_name: str = ""


class Projector:
    """Builds the instances of one host's model, typed from the compiled classes."""

    def __init__(
        self, model: Model, host: str, namespace: str = names.NAMESPACE, *, validate: bool = False
    ) -> None:
        self.model = model
        self.host = host
        self.namespace = namespace
        self._layouts: dict[str, tuple[tuple[Any, ...], ...]] = {}
        self._declared: dict[str, frozenset[str]] = {}
        self._keys: dict[str, tuple[str, ...]] = {}
        self._validate = validate
        self._service_path: CIMInstanceName | None = None
        for cls in model.classes:
            key = cls.classname.lower()
            self._layouts[key] = tuple(
                (p.name, p.type, p.is_array, p.reference_class, p.embedded_object, p.value)
                for p in cls.properties.values()
            )
            self._declared[key] = frozenset(p.name for p in cls.properties.values())
            self._keys[key] = key_names(cls)

    # -- generic builders ---------------------------------------------------------

    def path(self, classname: str, keys: Mapping[str, Any]) -> CIMInstanceName:
        if self._validate:
            return CIMInstanceName(classname, keybindings=dict(keys), namespace=self.namespace)
        return instance_path(classname, NocaseDict(keys), self.namespace)

    def instance(self, classname: str, values: Mapping[str, Any]) -> CIMInstance:
        """An instance with every declared property, typed as declared, and its path.

        A value for a property the class does not declare is a bug in this
        module, not a client error: it raises KeyError at once. Values are
        given already typed (``Uint32``, ``CIMDateTime``, ...).
        """
        key = classname.lower()
        layout = self._layouts[key]
        unknown = values.keys() - self._declared[key]
        if unknown:
            raise KeyError(f"{classname} declares no {sorted(unknown)}")
        path = self.path(classname, {k: values[k] for k in self._keys[key]})
        if self._validate:
            properties = [
                CIMProperty(
                    name,
                    values.get(name, default),
                    type=type_,
                    is_array=is_array,
                    reference_class=reference_class,
                    embedded_object=embedded,
                )
                for name, type_, is_array, reference_class, embedded, default in layout
            ]
            return CIMInstance(classname, properties=properties, path=path)
        # pywbem's constructors convert and check every value again (about 15 us
        # a property); the values here are typed already, so the slots are
        # filled directly. tests/cim/test_projection.py holds this path to the
        # validating one (``validate=True``) for every class.
        properties = NocaseDict()
        for name, type_, is_array, reference_class, embedded, default in layout:
            prop = CIMProperty.__new__(CIMProperty)
            prop._name = name
            prop._value = values.get(name, default)
            prop._type = type_
            prop._class_origin = None
            prop._array_size = None
            prop._propagated = None
            prop._is_array = is_array
            prop._reference_class = reference_class
            prop._qualifiers = NocaseDict()
            prop._embedded_object = embedded
            properties[name] = prop
        instance = CIMInstance.__new__(CIMInstance)
        instance._classname = classname
        instance._properties = properties
        instance._qualifiers = NocaseDict()
        instance._path = path
        return instance

    # -- the host and the service ---------------------------------------------------

    def computer_system_path(self) -> CIMInstanceName:
        return self.path(
            names.COMPUTER_SYSTEM, {"CreationClassName": names.COMPUTER_SYSTEM, "Name": self.host}
        )

    def computer_system(self) -> CIMInstance:
        return self.instance(
            names.COMPUTER_SYSTEM,
            {
                "CreationClassName": names.COMPUTER_SYSTEM,
                "Name": self.host,
                "NameFormat": "Other",
                "ElementName": self.host,
                "Caption": "The host whose mounts lmi-mount manages",
            },
        )

    def is_service(self, path: CIMInstanceName) -> bool:
        """Whether ``path`` names this host's service (``same_path``): every method
        call asks, against one path made once and never handed out."""
        if self._service_path is None:
            self._service_path = self.service_path()
        return same_path(path, self._service_path)

    def service_path(self) -> CIMInstanceName:
        return self.path(
            names.MOUNT_CONFIGURATION_SERVICE,
            {
                "SystemCreationClassName": names.COMPUTER_SYSTEM,
                "SystemName": self.host,
                "CreationClassName": names.MOUNT_CONFIGURATION_SERVICE,
                "Name": SERVICE_NAME,
            },
        )

    def service(self, fstab_problems: Sequence[FstabProblem] = ()) -> CIMInstance:
        """The service; lines of fstab that are no entry, or repeat a mount point,
        make it Degraded (3), each described in StatusDescriptions."""
        status = [Uint16(3)] if fstab_problems else [Uint16(2)]  # Degraded / OK
        return self.instance(
            names.MOUNT_CONFIGURATION_SERVICE,
            {
                **self.service_path().keybindings,
                "ElementName": "lmi-mount configuration service",
                "Caption": "Mounts, remounts and unmounts file systems and edits /etc/fstab",
                "Started": True,
                "EnabledState": Uint16(2),  # Enabled
                "EnabledDefault": Uint16(2),
                "OperationalStatus": status,
                "StatusDescriptions": ["; ".join(map(str, fstab_problems))]
                if fstab_problems else None,
            },
        )

    def capabilities_path(self) -> CIMInstanceName:
        return self.path(names.MOUNTED_FILE_SYSTEM_CAPABILITIES, {"InstanceID": CAPABILITIES_ID})

    def capabilities(self) -> CIMInstance:
        return self.instance(
            names.MOUNTED_FILE_SYSTEM_CAPABILITIES,
            {
                "InstanceID": CAPABILITIES_ID,
                "ElementName": "lmi-mount capabilities",
                # Every service method may outlast the synchronous window and
                # return a job (CreateMount 0, ModifyMount 1, DeleteMount 2).
                "SupportedAsynchronousMethods": [Uint16(0), Uint16(1), Uint16(2)],
            },
        )

    def hosted_service(self) -> CIMInstance:
        return self.instance(
            names.HOSTED_MOUNT_SERVICE,
            {
                "Antecedent": self.computer_system_path(),
                "Dependent": self.service_path(),
            },
        )

    def element_capabilities(self) -> CIMInstance:
        return self.instance(
            names.MOUNT_ELEMENT_CAPABILITIES,
            {
                "ManagedElement": self.service_path(),
                "Capabilities": self.capabilities_path(),
            },
        )

    # -- mounts -------------------------------------------------------------------

    def mount_path(self, status: MountStatus) -> CIMInstanceName:
        return self.mount_path_of(status.spec, status.target)

    def mount_path_of(self, spec: str, target: str) -> CIMInstanceName:
        return self.path(
            names.MOUNTED_FILE_SYSTEM, {"FileSystemSpec": spec, "MountPointPath": target}
        )

    def mounted_file_system(self, status: MountStatus) -> CIMInstance:
        held = status.held
        fstype = status.fstype
        if status.live is None and status.fstab is not None and status.fstab.fstype == "none":
            fstype = None  # a bind line ("none" + "bind") has no type of its own
        return self.instance(
            names.MOUNTED_FILE_SYSTEM,
            {
                "FileSystemSpec": status.spec,
                "MountPointPath": status.target,
                "FileSystemType": fstype,
                "ReferenceCount": Uint32(held.refcount if held else 0),
                "Holders": list(held.holders) if held else [],
                "ElementName": status.target,
                "Caption": _mount_caption(status),
            },
        )

    def hosted_mount(self, status: MountStatus) -> CIMInstance:
        return self.instance(
            names.HOSTED_MOUNT,
            {
                "Antecedent": self.computer_system_path(),
                "Dependent": self.mount_path(status),
            },
        )

    # -- settings -------------------------------------------------------------------

    def settings_of(self, status: MountStatus) -> list[tuple[CIMInstance, Uint16, Uint16]]:
        """The settings of a mount with their (IsCurrent, IsNext) flags.

        One instance when the live options and the fstab line agree (or only
        one of them exists), two when they drift apart (ARCHITECTURE).
        """
        local = mount_local_id(status.spec, status.target)
        configured = MountSpec.from_fstab(status.fstab) if status.fstab is not None else None
        if status.live_options is not None and configured is not None and not status.drift:
            # One setting for both: the live options, and the line's words the
            # options the kernel shows never hold (noauto, nofail, x-*,
            # comment=, and propagation, which agrees: no drift). Passed back
            # as a Goal, it must write the line with them (the docs say to).
            kept = tuple(word for word in configured.options.other_options
                         if ((is_fstab_only(word) and word != "defaults") or is_propagation(word))
                         and word not in status.live_options.other_options)
            options = dataclasses.replace(
                status.live_options,
                other_options=status.live_options.other_options + kept)
            setting = self._setting(SETTING_PREFIX + local, options, configured, status)
            return [(setting, IS_CURRENT, IS_NEXT)]
        settings = []
        both = status.live_options is not None and configured is not None
        if status.live_options is not None:
            instance_id = (CURRENT_PREFIX if both else SETTING_PREFIX) + local
            settings.append(
                (
                    self._setting(instance_id, status.live_options, configured, status),
                    IS_CURRENT,
                    IS_NOT_NEXT,
                )
            )
        if configured is not None:
            instance_id = (NEXT_PREFIX if both else SETTING_PREFIX) + local
            settings.append(
                (
                    self._setting(
                        instance_id, with_defaults(configured.options), configured, status
                    ),
                    IS_NOT_CURRENT,
                    IS_NEXT,
                )
            )
        return settings

    def _setting(
        self,
        instance_id: str,
        options: MountOptions,
        configured: MountSpec | None,
        status: MountStatus,
    ) -> CIMInstance:
        values = self.setting_values(options)
        values.update(
            {
                "InstanceID": instance_id,
                "ElementName": status.target,
                "Dump": bool(configured.dump) if configured else None,
                "FileSystemCheckOrder": _uint16_or_null(configured.passno) if configured
                else None,
                "ChangeableType": Uint16(1),  # Changeable - Transient: changed through ModifyMount
            }
        )
        return self.instance(names.MOUNTED_FILE_SYSTEM_SETTING, values)

    @staticmethod
    def setting_values(options: MountOptions) -> dict[str, Any]:
        values: dict[str, Any] = {cim: getattr(options, field) for cim, field in SETTING_FIELDS}
        values["OtherOptions"] = list(options.other_options)
        return values

    def goal_setting(self, goal: GoalSetting) -> CIMInstance:
        values = self.setting_values(goal.options)
        values.update(
            {
                "InstanceID": goal.instance_id,
                "ElementName": goal.element_name or "goal setting",
                "Dump": goal.dump,
                "FileSystemCheckOrder": _uint16_or_null(goal.passno),
                "ChangeableType": Uint16(1),
            }
        )
        return self.instance(names.MOUNTED_FILE_SYSTEM_SETTING, values)

    def element_setting_data(
        self, status: MountStatus, setting: CIMInstance, is_current: Uint16, is_next: Uint16
    ) -> CIMInstance:
        return self.instance(
            names.MOUNTED_FILE_SYSTEM_ELEMENT_SETTING_DATA,
            {
                "ManagedElement": self.mount_path(status),
                "SettingData": setting.path,
                "IsCurrent": is_current,
                "IsNext": is_next,
                "IsDefault": Uint16(2),  # Is Not Default
            },
        )

    # -- mount points and file systems --------------------------------------------------

    def directory_path(self, target: str, fs_name: str) -> CIMInstanceName:
        return self.path(
            names.UNIX_DIRECTORY,
            {
                "CSCreationClassName": names.COMPUTER_SYSTEM,
                "CSName": self.host,
                "FSCreationClassName": names.LOCAL_FILE_SYSTEM,
                "FSName": fs_name,
                "CreationClassName": names.UNIX_DIRECTORY,
                "Name": target,
            },
        )

    def directory(self, target: str, fs_name: str) -> CIMInstance:
        return self.instance(
            names.UNIX_DIRECTORY,
            {
                **self.directory_path(target, fs_name).keybindings,
                "ElementName": os.path.basename(target) or "/",
            },
        )

    def mount_point(self, status: MountStatus, fs_name: str) -> CIMInstance:
        return self.instance(
            names.MOUNT_POINT,
            {
                "Antecedent": self.directory_path(status.target, fs_name),
                "Dependent": self.mount_path(status),
            },
        )

    def file_system_path(self, name: str) -> CIMInstanceName:
        return self.path(
            names.LOCAL_FILE_SYSTEM,
            {
                "CSCreationClassName": names.COMPUTER_SYSTEM,
                "CSName": self.host,
                "CreationClassName": names.LOCAL_FILE_SYSTEM,
                "Name": name,
            },
        )

    def file_system(self, name: str, whole: MountRecord,
                    volume: VolumeStats | None) -> CIMInstance:
        """The file system ``name`` that the mount ``whole`` shows (whole where it
        can), with sizes from statvfs(3)."""
        values: dict[str, Any] = {
            **self.file_system_path(name).keybindings,
            "Root": whole.target,
            "FileSystemType": whole.fstype,
            "ElementName": name,
        }
        if volume is not None:
            values.update(
                {
                    "BlockSize": Uint64(volume.block_size),
                    "FileSystemSize": Uint64(volume.size),
                    "AvailableSpace": Uint64(volume.available),
                    "NumberOfFiles": Uint64(volume.files),
                    "MaxFileNameLength": Uint32(volume.name_max),
                    "ReadOnly": volume.read_only,
                    "CaseSensitive": True,
                    "CasePreserved": True,
                }
            )
        return self.instance(names.LOCAL_FILE_SYSTEM, values)

    def attached_file_system(self, status: MountStatus, file_system: str) -> CIMInstance:
        return self.instance(
            names.ATTACHED_FILE_SYSTEM,
            {
                "Antecedent": self.file_system_path(file_system),
                "Dependent": self.mount_path(status),
            },
        )

    # -- jobs ------------------------------------------------------------------------

    def job_path(self, number: int) -> CIMInstanceName:
        return self.path(names.MOUNT_JOB, {"InstanceID": f"LMI:{names.MOUNT_JOB}:{number}"})

    def job(self, job: Job, time_before_removal: float) -> CIMInstance:
        """An LMI_MountJob, with OpenLMI's embedded method parameters.

        JobInParameters is a ``__MethodParameters_<Method>`` instance of the IN
        parameters; JobOutParameters a ``__MethodParameters_<Method>_Result``
        instance with ``__ReturnValue`` and the OUT parameters, once ended.
        """
        now = datetime.now(UTC)
        end = job.finished or now
        start = job.started or job.submitted
        values: dict[str, Any] = {
            "InstanceID": job.instance_id,
            "Name": job.method,
            "ElementName": f"{job.method} job {job.number}",
            "Description": f"{job.method} started by {job.owner or 'an anonymous caller'}",
            "Owner": job.owner,
            "JobState": Uint16(job.state),
            "JobStatus": _JOB_STATUS[job.state],
            "OperationalStatus": _JOB_OPERATIONAL[job.state],
            "TimeSubmitted": CIMDateTime(job.submitted),
            "StartTime": CIMDateTime(job.started) if job.started else None,
            "TimeOfLastStateChange": CIMDateTime(job.finished or job.started or job.submitted),
            "ElapsedTime": CIMDateTime(end - start),
            "PercentComplete": Uint16(100 if job.done else 0),
            # Removed TimeBeforeRemoval after its end (CIM_Job: retained that long).
            "DeleteOnCompletion": True,
            "TimeBeforeRemoval": CIMDateTime(timedelta(seconds=time_before_removal)),
            "JobInParameters": CIMInstance(
                f"__MethodParameters_{job.method}",
                properties=self._parameters(job.method, job.in_parameters),
            ),
        }
        if job.done:
            values["JobOutParameters"] = CIMInstance(
                f"__MethodParameters_{job.method}_Result",
                properties=[CIMProperty("__ReturnValue", job.return_value, type="uint32"),
                            *self._parameters(job.method, job.out_parameters)],
            )
        if job.error is not None:
            values["ErrorCode"] = Uint16(int(job.return_value or 0) & 0xFFFF)
            values["ErrorDescription"] = job.error["Message"]
        return self.instance(names.MOUNT_JOB, values)

    def _parameters(self, method: str, values: Mapping[str, Any]) -> list[CIMProperty]:
        """Method parameters as properties typed by the method's declaration: an
        empty Plan has no value to infer its type from."""
        declared = self.model.get_class(names.MOUNT_CONFIGURATION_SERVICE).methods.get(method)
        properties = []
        for name, value in values.items():
            parameter = declared.parameters.get(name) if declared is not None else None
            if parameter is None or isinstance(value, CIMProperty):
                properties.append(value if isinstance(value, CIMProperty)
                                  else CIMProperty(name, value))
                continue
            embedded = "instance" if "EmbeddedInstance" in parameter.qualifiers else None
            properties.append(CIMProperty(
                parameter.name, value, type=parameter.type, is_array=parameter.is_array,
                reference_class=parameter.reference_class, embedded_object=embedded))
        return properties

    def affected_job_element(self, job: Job, element: CIMInstanceName) -> CIMInstance:
        return self.instance(
            names.AFFECTED_MOUNT_JOB_ELEMENT,
            {
                "AffectingElement": self.job_path(job.number),
                "AffectedElement": element,
                "ElementEffects": [Uint16(5)],  # Edit
            },
        )

    def owning_job_element(self, job: Job) -> CIMInstance:
        return self.instance(
            names.OWNING_MOUNT_JOB_ELEMENT,
            {
                "OwningElement": self.service_path(),
                "OwnedElement": self.job_path(job.number),
            },
        )


# CIM_ConcreteJob.JobState -> JobStatus text and OperationalStatus (DSP1103 Job
# Control profile: 2 OK while running; 17 Completed with 2 OK or 6 Error).
_JOB_STATUS: Final = {
    NEW: "New",
    STARTING: "Starting",
    RUNNING: "Running",
    COMPLETED: "Completed",
    TERMINATED: "Terminated",
    EXCEPTION: "Exception",
}
_JOB_OPERATIONAL: Final = {
    NEW: [Uint16(2)],
    STARTING: [Uint16(2)],
    RUNNING: [Uint16(2)],
    COMPLETED: [Uint16(2), Uint16(17)],
    TERMINATED: [Uint16(2), Uint16(17)],
    EXCEPTION: [Uint16(6), Uint16(17)],
}


def _mount_caption(status: MountStatus) -> str:
    state = []
    if status.live is not None:
        state.append("mounted")
    if status.fstab is not None:
        state.append("in fstab")
    if status.covers is not None:
        holders = ", ".join(status.covers.holders) or "nobody (its hold timer runs)"
        state.append(f"covers a mount lmi-mount holds for {holders}")
    if status.drift:
        state.append("drifted: " + "; ".join(str(d) for d in status.drift))
    return ", ".join(state)
