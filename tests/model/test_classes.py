"""The compiled LMI classes against the OpenLMI Mounting Model draft (seed 002).

The tables below are the contract written out by hand from the draft and the
model decisions of ARCHITECTURE.md, not read from the MOF: class names,
superclasses, keys, the properties and methods each class declares or
overrides, every parameter with its direction, and the ValueMap/Values of the
return codes and of Mode.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pytest
from pywbem import CIMParameter, CIMProperty

from lmi_mount.cim.model import Model


@dataclass(frozen=True)
class T:
    """A property or parameter type: CIM type, array, REF class, EmbeddedInstance class."""

    type: str
    array: bool = False
    ref: str | None = None
    embedded: str | None = None


def ref(classname: str) -> T:
    return T("reference", ref=classname)


STRING, BOOLEAN, UINT16, UINT32, DATETIME = (
    T("string"),
    T("boolean"),
    T("uint16"),
    T("uint32"),
    T("datetime"),
)
STRING_ARRAY = T("string", array=True)
CIM_ERROR = T("string", embedded="CIM_Error")


@dataclass(frozen=True)
class P:
    """A method parameter: name, type, and direction (the In and Out qualifiers)."""

    name: str
    type: T
    inp: bool = True
    out: bool = False


def out(name: str, type_: T) -> P:
    return P(name, type_, inp=False, out=True)


@dataclass(frozen=True)
class C:
    """A class: superclass, keys (inherited ones too), its own properties and methods."""

    superclass: str
    keys: frozenset[str]
    association: bool = False
    properties: dict[str, T] = field(default_factory=dict)
    methods: dict[str, list[P]] = field(default_factory=dict)


def keys(*names: str) -> frozenset[str]:
    return frozenset(names)


# The draft's return codes of CreateMount, ModifyMount and DeleteMount.
SERVICE_RC_VALUEMAP = [
    "0", "1", "2", "3", "4", "5", "6", "..", "4096", "4097", "4098..32767", "32768..65535",
]  # fmt: skip
SERVICE_RC_VALUES = [
    "Job Completed with No Error", "Not Supported", "Unknown", "Timeout", "Failed",
    "Invalid Parameter", "In Use", "DMTF Reserved", "Method Parameters Checked - Job Started",
    "Size Not Supported", "Method Reserved", "Vendor Specific",
]  # fmt: skip
# The draft's return codes of CreateSetting.
SETTING_RC_VALUEMAP = ["0", "1", "2", "3", "4", "5", "..", "32768..65535"]
SETTING_RC_VALUES = [
    "Success", "Not Supported", "Unspecified Error", "Timeout", "Failed", "Invalid Parameter",
    "DMTF Reserved", "Vendor Specific",
]  # fmt: skip
MODE_VALUEMAP = ["0", "1", "2", "3", "4", "5", "6", "..", "32768", "32769"]
MODE_VALUES = [
    "Mode 0", "Mode 1", "Mode 2", "Mode 3", "Mode 4", "Mode 5", "Mode 6", "DMTF Reserved",
    "Mode 32768", "Mode 32769",
]  # fmt: skip

JOB = out("Job", ref("CIM_ConcreteJob"))
MODE = P("Mode", UINT16)
EXTENSIONS_OUT = [out("Error", CIM_ERROR), P("DryRun", BOOLEAN), out("Plan", STRING_ARRAY)]

SETTING_BOOLEANS = (
    "SynchronousIO", "SynchronousDirectoryUpdates", "UpdateAccessTimes", "UpdateFullAccessTimes",
    "UpdateRelativeAccessTimes", "UpdateDirectoryAccessTimes", "InterpretDevices",
    "AllowMandatoryLock", "AllowExecution", "AllowSUID", "AllowWrite", "Silent",
)  # fmt: skip

CIM_SYSTEM_KEYS = ("SystemCreationClassName", "SystemName", "CreationClassName", "Name")

EXPECTED: dict[str, C] = {
    "LMI_MountedFileSystemSetting": C(
        "CIM_SettingData",
        keys("InstanceID"),
        properties={
            **dict.fromkeys(SETTING_BOOLEANS, BOOLEAN),
            "OtherOptions": STRING_ARRAY,
            "Dump": BOOLEAN,
            "FileSystemCheckOrder": UINT16,  # the draft's "int"
        },
    ),
    "LMI_MountedFileSystem": C(
        "CIM_ManagedElement",
        keys("FileSystemSpec", "MountPointPath"),
        properties={
            "FileSystemType": STRING,
            "FileSystemSpec": STRING,
            "MountPointPath": STRING,
            "ReferenceCount": UINT32,
            "Holders": STRING_ARRAY,
        },
    ),
    "LMI_MountedFileSystemCapabilities": C(
        "CIM_Capabilities",
        keys("InstanceID"),
        properties={"SupportedAsynchronousMethods": T("uint16", array=True)},
        methods={"CreateSetting": [out("MountSetting", ref("LMI_MountedFileSystemSetting")),
                                   P("Options", STRING)]},
    ),
    "LMI_MountConfigurationService": C(
        "CIM_Service",
        keys(*CIM_SYSTEM_KEYS),
        methods={
            "CreateMount": [
                JOB,
                out("Mount", ref("LMI_MountedFileSystem")),
                P("FileSystem", ref("CIM_FileSystem")),
                P("MountPoint", STRING),
                P("FileSystemSpec", STRING),
                P("FileSystemType", STRING),
                P("Goal", ref("LMI_MountedFileSystemSetting")),
                MODE,
                P("Holder", STRING),
                *EXTENSIONS_OUT,
            ],
            "ModifyMount": [
                JOB,
                P("Mount", ref("LMI_MountedFileSystem"), inp=True, out=True),
                P("Goal", ref("LMI_MountedFileSystemSetting")),
                MODE,
                *EXTENSIONS_OUT,
                P("Force", BOOLEAN),
            ],
            "DeleteMount": [
                JOB,
                P("Mount", ref("LMI_MountedFileSystem")),
                MODE,
                P("Holder", STRING),
                P("Force", BOOLEAN),
                *EXTENSIONS_OUT,
            ],
        },
    ),
    "LMI_ComputerSystem": C("CIM_ComputerSystem", keys("CreationClassName", "Name")),
    "LMI_UnixDirectory": C(
        "CIM_UnixDirectory",
        keys(
            "CSCreationClassName",
            "CSName",
            "FSCreationClassName",
            "FSName",
            "CreationClassName",
            "Name",
        ),
    ),
    "LMI_LocalFileSystem": C(
        "CIM_LocalFileSystem", keys("CSCreationClassName", "CSName", "CreationClassName", "Name")
    ),
    "LMI_HostedMount": C(
        "CIM_Dependency",
        keys("Antecedent", "Dependent"),
        association=True,
        properties={
            "Antecedent": ref("CIM_ComputerSystem"),
            "Dependent": ref("LMI_MountedFileSystem"),
        },
    ),
    "LMI_MountedFileSystemElementSettingData": C(
        "CIM_ElementSettingData",
        keys("ManagedElement", "SettingData"),
        association=True,
        properties={
            "ManagedElement": ref("LMI_MountedFileSystem"),
            "SettingData": ref("LMI_MountedFileSystemSetting"),
        },
    ),
    "LMI_MountElementCapabilities": C(
        "CIM_ElementCapabilities",
        keys("ManagedElement", "Capabilities"),
        association=True,
        properties={
            "ManagedElement": ref("LMI_MountConfigurationService"),
            "Capabilities": ref("LMI_MountedFileSystemCapabilities"),
        },
    ),
    "LMI_MountPoint": C(
        "CIM_Dependency",
        keys("Antecedent", "Dependent"),
        association=True,
        # The draft swapped these two types; its descriptions say which is which.
        properties={
            "Antecedent": ref("CIM_Directory"),
            "Dependent": ref("LMI_MountedFileSystem"),
        },
    ),
    "LMI_AttachedFileSystem": C(
        "CIM_Dependency",
        keys("Antecedent", "Dependent"),
        association=True,
        properties={
            "Antecedent": ref("CIM_FileSystem"),
            "Dependent": ref("LMI_MountedFileSystem"),
        },
    ),
    "LMI_HostedMountService": C(
        "CIM_HostedService",
        keys("Antecedent", "Dependent"),
        association=True,
        properties={
            "Antecedent": ref("CIM_ComputerSystem"),
            "Dependent": ref("LMI_MountConfigurationService"),
        },
    ),
    "LMI_MountJob": C(
        "CIM_ConcreteJob",
        keys("InstanceID"),
        properties={
            "TimeBeforeRemoval": DATETIME,
            "JobInParameters": T("string", embedded="CIM_ManagedElement"),
            "JobOutParameters": T("string", embedded="CIM_ManagedElement"),
        },
        methods={"GetError": [out("Error", CIM_ERROR)]},
    ),
    "LMI_AffectedMountJobElement": C(
        "CIM_AffectedJobElement",
        keys("AffectedElement", "AffectingElement"),
        association=True,
        properties={
            "AffectedElement": ref("CIM_ManagedElement"),
            "AffectingElement": ref("LMI_MountJob"),
        },
    ),
    "LMI_OwningMountJobElement": C(
        "CIM_OwningJobElement",
        keys("OwningElement", "OwnedElement"),
        association=True,
        properties={
            "OwningElement": ref("LMI_MountConfigurationService"),
            "OwnedElement": ref("LMI_MountJob"),
        },
    ),
}

# The lmi-mount extensions of ARCHITECTURE.md, by element.
EXTENSIONS = [
    ("LMI_MountedFileSystem", "ReferenceCount", None),
    ("LMI_MountedFileSystem", "Holders", None),
    *(
        ("LMI_MountConfigurationService", method, param)
        for method, params in EXPECTED["LMI_MountConfigurationService"].methods.items()
        for param in ("Holder", "Force", "Error", "DryRun", "Plan")
        if any(p.name == param for p in params)
    ),
]

# Typos of the draft that must not come back (its "Mouting", "ommited",
# "CIM_ManageElement", and the class names it never defined).
DRAFT_TYPOS = re.compile(
    r"Mouting|ommited|Systebm|CIM_ManageElement\b|\bLMI_Mount\b|\bLMI_MountSetting\b|"
    r"\bLMI_FileSystem\b|\bMountedFileSystem\b"
)


def type_of(element: CIMProperty | CIMParameter) -> T:
    embedded = element.qualifiers.get("EmbeddedInstance")
    return T(
        element.type,
        array=bool(element.is_array),
        ref=element.reference_class,
        embedded=embedded.value if embedded is not None else None,
    )


def direction(param: CIMParameter) -> tuple[bool, bool]:
    """(In, Out) with the DMTF defaults In = true, Out = false (qualifiers.mof)."""
    inp = param.qualifiers.get("In")
    outp = param.qualifiers.get("Out")
    return (True if inp is None else bool(inp.value), False if outp is None else bool(outp.value))


CLASS_CASES = [pytest.param(name, spec, id=name) for name, spec in EXPECTED.items()]
PROPERTY_CASES = [
    pytest.param(cname, pname, ptype, id=f"{cname}.{pname}")
    for cname, spec in EXPECTED.items()
    for pname, ptype in spec.properties.items()
]
METHOD_CASES = [
    pytest.param(cname, mname, params, id=f"{cname}.{mname}")
    for cname, spec in EXPECTED.items()
    for mname, params in spec.methods.items()
]


def test_the_lmi_classes_are_exactly_the_expected_ones(model: Model) -> None:
    assert sorted(model.lmi_classnames) == sorted(EXPECTED)


@pytest.mark.parametrize(("classname", "spec"), CLASS_CASES)
def test_class_superclass_keys_and_kind(model: Model, classname: str, spec: C) -> None:
    cls = model.get_class(classname)
    assert cls.classname == classname
    assert cls.superclass == spec.superclass
    got_keys = {
        n for n, p in cls.properties.items() if "Key" in p.qualifiers and p.qualifiers["Key"].value
    }
    assert got_keys == spec.keys
    association = cls.qualifiers.get("Association")
    assert bool(association and association.value) == spec.association
    assert cls.qualifiers["Version"].value == "0.1.0"
    assert cls.qualifiers["Description"].value


@pytest.mark.parametrize(("classname", "spec"), CLASS_CASES)
def test_class_declares_exactly_the_expected_elements(
    model: Model, classname: str, spec: C
) -> None:
    assert sorted(model.own_properties(classname)) == sorted(spec.properties)
    assert sorted(model.own_methods(classname)) == sorted(spec.methods)


@pytest.mark.parametrize(("classname", "propname", "expected"), PROPERTY_CASES)
def test_property_type(model: Model, classname: str, propname: str, expected: T) -> None:
    prop = model.get_class(classname).properties[propname]
    assert prop.name == propname
    assert type_of(prop) == expected
    assert prop.qualifiers["Description"].value


@pytest.mark.parametrize(("classname", "methodname", "expected"), METHOD_CASES)
def test_method_parameters(
    model: Model, classname: str, methodname: str, expected: list[P]
) -> None:
    method = model.get_class(classname).methods[methodname]
    assert method.return_type == "uint32"
    got = [P(p.name, type_of(p), *direction(p)) for p in method.parameters.values()]
    assert got == expected
    assert method.qualifiers["Description"].value
    assert all(p.qualifiers["Description"].value for p in method.parameters.values())


@pytest.mark.parametrize(
    ("methodname",), [pytest.param(m, id=m) for m in ("CreateMount", "ModifyMount", "DeleteMount")]
)
def test_service_return_codes_and_mode_are_the_drafts(model: Model, methodname: str) -> None:
    method = model.get_class("LMI_MountConfigurationService").methods[methodname]
    assert method.qualifiers["ValueMap"].value == SERVICE_RC_VALUEMAP
    assert method.qualifiers["Values"].value == SERVICE_RC_VALUES
    mode = method.parameters["Mode"]
    assert mode.qualifiers["ValueMap"].value == MODE_VALUEMAP
    assert mode.qualifiers["Values"].value == MODE_VALUES


def test_create_setting_return_codes_are_the_drafts(model: Model) -> None:
    method = model.get_class("LMI_MountedFileSystemCapabilities").methods["CreateSetting"]
    assert method.qualifiers["ValueMap"].value == SETTING_RC_VALUEMAP
    assert method.qualifiers["Values"].value == SETTING_RC_VALUES


def test_supported_asynchronous_methods_values_are_the_drafts(model: Model) -> None:
    prop = model.get_class("LMI_MountedFileSystemCapabilities").properties[
        "SupportedAsynchronousMethods"
    ]
    assert prop.qualifiers["ValueMap"].value == ["0", "1", "2"]
    assert prop.qualifiers["Values"].value == ["CreateMount", "ModifyMount", "DeleteMount"]


def test_mount_job_is_removed_a_minute_after_it_ends(model: Model) -> None:
    # ARCHITECTURE: jobs are kept TimeBeforeRemoval (60 s) after they end.
    prop = model.get_class("LMI_MountJob").properties["TimeBeforeRemoval"]
    assert str(prop.value) == "00000000000100.000000:000"


def test_get_error_is_not_deprecated_on_the_mount_job(model: Model) -> None:
    # CIM_ConcreteJob 2.49 deprecates GetError; Deprecated is Restricted, so
    # the override in LMI_MountJob is a plain, callable method again.
    method = model.get_class("LMI_MountJob").methods["GetError"]
    assert "Deprecated" not in method.qualifiers
    assert "GetErrors" in model.get_class("LMI_MountJob").methods


@pytest.mark.parametrize(
    ("classname", "method", "element"),
    [pytest.param(c, m, e, id=f"{c}.{m}({e})" if e else f"{c}.{m}") for c, m, e in EXTENSIONS],
)
def test_extension_descriptions_say_so(
    model: Model, classname: str, method: str, element: str | None
) -> None:
    cls = model.get_class(classname)
    target = cls.properties[method] if element is None else cls.methods[method].parameters[element]
    assert target.qualifiers["Description"].value.startswith("lmi-mount extension. ")


def all_descriptions(model: Model) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for name in EXPECTED:
        cls = model.get_class(name)
        found.append((name, cls.qualifiers["Description"].value))
        for prop in model.own_properties(name).values():
            found.append((f"{name}.{prop.name}", prop.qualifiers["Description"].value))
        for method in model.own_methods(name).values():
            found.append((f"{name}.{method.name}", method.qualifiers["Description"].value))
            for param in method.parameters.values():
                where = f"{name}.{method.name}({param.name})"
                found.append((where, param.qualifiers["Description"].value))
    return found


def test_no_draft_typo_survives(model: Model) -> None:
    found = all_descriptions(model)
    assert len(found) > 60
    typos = [(where, m.group()) for where, text in found if (m := DRAFT_TYPOS.search(text))]
    assert typos == []
