"""cim/mock.py: the pywbem_mock front end on a broker, driven through the pywbem client API.

The broker here is ``tests.support.standin_broker.StandInBroker`` (the real
compiled model, instances held in memory): these tests are about what the
front end does with a broker, not about what the broker decides.
"""

from __future__ import annotations

import copy
import os
import pickle
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pywbem import (
    CIM_ERR_ACCESS_DENIED,
    CIM_ERR_FAILED,
    CIM_ERR_FILTERED_ENUMERATION_NOT_SUPPORTED,
    CIM_ERR_INVALID_CLASS,
    CIM_ERR_INVALID_ENUMERATION_CONTEXT,
    CIM_ERR_INVALID_OPERATION_TIMEOUT,
    CIM_ERR_METHOD_NOT_FOUND,
    CIM_ERR_NOT_FOUND,
    CIM_ERR_NOT_SUPPORTED,
    CIMClass,
    CIMClassName,
    CIMError,
    CIMInstance,
    CIMInstanceName,
    CIMProperty,
    CIMQualifierDeclaration,
    Uint16,
    Uint32,
)
from pywbem_mock import FakedWBEMConnection, InMemoryObjectStore

from lmi_mount.cim import names
from lmi_mount.cim.mock import (
    DetachedInstanceStore,
    LiveConnection,
    LiveInstanceStore,
    LiveSetupError,
    connect,
    refuse_pywbemcli_cache,
    setup_live,
)
from lmi_mount.cim.model import Model, ModelError, install_model, load_model
from tests.support.standin_broker import StandInBroker, StandInCaller

NS = names.NAMESPACE
REPO = Path(__file__).resolve().parents[2]
ALICE = StandInCaller("alice")


@pytest.fixture(scope="module")
def model() -> Model:
    return load_model()


@dataclass
class Mount:
    """The instances one mount brings: the mount, its setting and two associations."""

    mount: CIMInstanceName
    setting: CIMInstanceName
    esd: CIMInstanceName
    hosted: CIMInstanceName


@dataclass
class World:
    broker: StandInBroker
    system: CIMInstanceName
    service: CIMInstanceName
    mounts: list[Mount]

    def add_mount(self, index: int) -> Mount:
        mount = add_mount(self.broker, self.system, index)
        self.mounts.append(mount)
        return mount


def add_mount(broker: StandInBroker, system: CIMInstanceName, index: int) -> Mount:
    mount = broker.add(
        CIMInstance(
            names.MOUNTED_FILE_SYSTEM,
            properties={
                "FileSystemSpec": f"/dev/vd{index}",
                "MountPointPath": f"/mnt/{index}",
                "FileSystemType": "ext4",
                "ReferenceCount": Uint32(1),
                "Holders": ["alice"],
                "ElementName": f"/mnt/{index}",
            },
        )
    )
    setting = broker.add(
        CIMInstance(
            names.MOUNTED_FILE_SYSTEM_SETTING,
            properties={"InstanceID": f"LMI:setting:{index}", "AllowWrite": True},
        )
    )
    esd = broker.add(
        CIMInstance(
            names.MOUNTED_FILE_SYSTEM_ELEMENT_SETTING_DATA,
            properties={"ManagedElement": mount, "SettingData": setting, "IsCurrent": Uint16(1)},
        )
    )
    hosted = broker.add(
        CIMInstance(names.HOSTED_MOUNT, properties={"Antecedent": system, "Dependent": mount})
    )
    return Mount(mount, setting, esd, hosted)


def build_world(model: Model, mounts: int = 3, **broker_options: Any) -> World:
    broker = StandInBroker(model, writable=[names.MOUNTED_FILE_SYSTEM_SETTING], **broker_options)
    system = broker.add(
        CIMInstance(
            names.COMPUTER_SYSTEM,
            properties={"CreationClassName": names.COMPUTER_SYSTEM, "Name": "host.example"},
        )
    )
    service = broker.add(
        CIMInstance(
            names.MOUNT_CONFIGURATION_SERVICE,
            properties={
                "SystemCreationClassName": names.COMPUTER_SYSTEM,
                "SystemName": "host.example",
                "CreationClassName": names.MOUNT_CONFIGURATION_SERVICE,
                "Name": "lmi-mount",
            },
        )
    )
    world = World(broker, system, service, [])
    for index in range(mounts):
        world.add_mount(index)
    return world


@pytest.fixture
def world(model: Model) -> World:
    return build_world(model)


@pytest.fixture
def conn(world: World) -> LiveConnection:
    return connect(world.broker, caller=ALICE)


def bare(path: CIMInstanceName) -> CIMInstanceName:
    """``path`` without host, with the model's namespace: comparable with the broker's."""
    result = path.copy()
    result.host = None
    result.namespace = result.namespace or NS
    return result


def paths_of(objects: Iterable[CIMInstance | CIMInstanceName]) -> list[CIMInstanceName]:
    return [bare(o.path if isinstance(o, CIMInstance) else o) for o in objects]


def drain(first: Any, pull: Callable[[Any, int], Any], chunk: int = 1) -> list[Any]:
    """Everything an Open* result and the Pull* calls after it return."""
    items = list(first[0])
    eos, context = first.eos, first.context
    while not eos:
        result = pull(context, chunk)
        items.extend(result[0])
        eos, context = result.eos, result.context
    return items


# -- the model and the stores ------------------------------------------------


def test_the_model_is_in_the_namespace_and_the_instance_store_is_live(
    conn: LiveConnection, model: Model
) -> None:
    listed = conn.EnumerateClassNames(namespace=NS, DeepInheritance=True)
    assert sorted(listed) == sorted(c.classname for c in model.classes)
    assert isinstance(conn.cimrepository.get_instance_store(NS), LiveInstanceStore)


def test_embedded_instance_parameters_are_marked_in_the_served_classes(
    conn: LiveConnection,
) -> None:
    # pywbem_mock compares a parameter's embedded_object with the class's;
    # the MOF compiler leaves it None, lmi_mount.cim.model fixes it.
    service = conn.GetClass(names.MOUNT_CONFIGURATION_SERVICE, LocalOnly=False)
    for method in ("CreateMount", "ModifyMount", "DeleteMount"):
        assert service.methods[method].parameters["Error"].embedded_object == "instance"
    job = conn.GetClass(names.MOUNT_JOB, LocalOnly=False)
    assert job.methods["GetError"].parameters["Error"].embedded_object == "instance"


def test_enumerate_classes_honours_include_class_origin(conn: LiveConnection) -> None:
    # pywbem_mock 1.9.1 misspells the parameter and drops it (_wbemconnection_mock.py:1592).
    with_origin = conn.EnumerateClasses(
        DeepInheritance=True, LocalOnly=False, IncludeClassOrigin=True
    )
    without = conn.EnumerateClasses(DeepInheritance=True, LocalOnly=False)
    mount = {c.classname: c for c in with_origin}[names.MOUNTED_FILE_SYSTEM]
    assert mount.properties["ElementName"].class_origin == "CIM_ManagedElement"
    assert mount.properties["FileSystemSpec"].class_origin == names.MOUNTED_FILE_SYSTEM
    assert all(p.class_origin is None for c in without for p in c.properties.values())


def test_the_live_store_reads_the_broker(conn: LiveConnection, world: World) -> None:
    store = conn.cimrepository.get_instance_store(NS)
    everything = set(world.broker.enumerate_instance_names(NS, "CIM_ManagedElement"))
    everything |= set(world.broker.enumerate_instance_names(NS, "CIM_Dependency"))
    everything |= set(world.broker.enumerate_instance_names(NS, "CIM_ElementSettingData"))
    assert set(store.iter_names()) == everything
    assert {i.path for i in store.iter_values()} == everything
    assert store.len() == world.broker.count() == len(everything)
    mount = world.mounts[0].mount
    assert store.object_exists(mount)
    assert store.get(mount)["FileSystemType"] == "ext4"
    missing = CIMInstanceName(
        names.MOUNTED_FILE_SYSTEM, {"FileSystemSpec": "/dev/none", "MountPointPath": "/none"}, NS
    )
    assert not store.object_exists(missing)
    with pytest.raises(KeyError):
        store.get(missing)


def test_writing_into_the_repository_of_a_live_namespace_is_refused(
    conn: LiveConnection, world: World
) -> None:
    extra = CIMInstance(
        names.MOUNTED_FILE_SYSTEM_SETTING,
        properties={"InstanceID": "LMI:setting:direct"},
        path=CIMInstanceName(
            names.MOUNTED_FILE_SYSTEM_SETTING, {"InstanceID": "LMI:setting:direct"}
        ),
    )
    before = world.broker.count()
    with pytest.raises(CIMError) as raised:
        conn.add_cimobjects([extra])
    assert raised.value.status_code == CIM_ERR_NOT_SUPPORTED
    assert "served live by the broker" in raised.value.status_description
    assert world.broker.count() == before


# -- every read is live ---------------------------------------------------------


def _system_open(
    operation: str, pull: str, **options: Any
) -> Callable[[LiveConnection, World], Any]:
    def read(conn: LiveConnection, world: World) -> list[Any]:
        first = getattr(conn, operation)(world.system, MaxObjectCount=1, **options)
        return drain(first, getattr(conn, pull))

    return read


LIVE_READS = [
    pytest.param(
        lambda conn, world: conn.EnumerateInstances(names.MOUNTED_FILE_SYSTEM),
        lambda new: {new.mount},
        id="EnumerateInstances",
    ),
    pytest.param(
        lambda conn, world: conn.EnumerateInstances("CIM_ManagedElement"),
        lambda new: {new.mount, new.setting},
        id="EnumerateInstances-superclass",
    ),
    pytest.param(
        lambda conn, world: conn.EnumerateInstanceNames(names.MOUNTED_FILE_SYSTEM),
        lambda new: {new.mount},
        id="EnumerateInstanceNames",
    ),
    pytest.param(
        lambda conn, world: conn.Associators(world.system),
        lambda new: {new.mount},
        id="Associators",
    ),
    pytest.param(
        lambda conn, world: conn.AssociatorNames(
            world.system, ResultClass=names.MOUNTED_FILE_SYSTEM
        ),
        lambda new: {new.mount},
        id="AssociatorNames",
    ),
    pytest.param(
        lambda conn, world: conn.References(world.system),
        lambda new: {new.hosted},
        id="References",
    ),
    pytest.param(
        lambda conn, world: conn.ReferenceNames(world.system),
        lambda new: {new.hosted},
        id="ReferenceNames",
    ),
    pytest.param(
        lambda conn, world: drain(
            conn.OpenEnumerateInstances(names.MOUNTED_FILE_SYSTEM, MaxObjectCount=1),
            conn.PullInstancesWithPath,
        ),
        lambda new: {new.mount},
        id="OpenEnumerateInstances",
    ),
    pytest.param(
        lambda conn, world: drain(
            conn.OpenEnumerateInstancePaths("CIM_ManagedElement", MaxObjectCount=1),
            conn.PullInstancePaths,
        ),
        lambda new: {new.mount, new.setting},
        id="OpenEnumerateInstancePaths",
    ),
    pytest.param(
        _system_open("OpenAssociatorInstances", "PullInstancesWithPath"),
        lambda new: {new.mount},
        id="OpenAssociatorInstances",
    ),
    pytest.param(
        _system_open("OpenAssociatorInstancePaths", "PullInstancePaths"),
        lambda new: {new.mount},
        id="OpenAssociatorInstancePaths",
    ),
    pytest.param(
        _system_open("OpenReferenceInstances", "PullInstancesWithPath"),
        lambda new: {new.hosted},
        id="OpenReferenceInstances",
    ),
    pytest.param(
        _system_open("OpenReferenceInstancePaths", "PullInstancePaths"),
        lambda new: {new.hosted},
        id="OpenReferenceInstancePaths",
    ),
]
# pywbem's Iter* operations: Enumerate* or Open*/Pull*, as the connection says.
LIVE_READS += [
    pytest.param(
        lambda conn, world, use_pull=use_pull: list(
            connect(
                world.broker, caller=ALICE, use_pull_operations=use_pull
            ).IterAssociatorInstancePaths(world.system, MaxObjectCount=2)
        ),
        lambda new: {new.mount},
        id=f"IterAssociatorInstancePaths-{mode}",
    )
    for use_pull, mode in ((False, "traditional"), (True, "pull"))
] + [
    pytest.param(
        lambda conn, world, use_pull=use_pull: list(
            connect(
                world.broker, caller=ALICE, use_pull_operations=use_pull
            ).IterEnumerateInstances(names.MOUNTED_FILE_SYSTEM, MaxObjectCount=2)
        ),
        lambda new: {new.mount},
        id=f"IterEnumerateInstances-{mode}",
    )
    for use_pull, mode in ((False, "traditional"), (True, "pull"))
]


@pytest.mark.parametrize(("read", "expected"), LIVE_READS)
def test_a_read_sees_what_the_broker_has_at_call_time(
    world: World,
    conn: LiveConnection,
    read: Callable[[LiveConnection, World], list[Any]],
    expected: Callable[[Mount], set[CIMInstanceName]],
) -> None:
    before = paths_of(read(conn, world))
    assert len(before) == len(set(before))
    new = world.add_mount(99)
    after = paths_of(read(conn, world))
    assert set(after) - set(before) == {bare(p) for p in expected(new)}
    assert len(after) == len(set(after))
    world.broker.remove(new.hosted)
    world.broker.remove(new.esd)
    world.broker.remove(new.setting)
    world.broker.remove(new.mount)
    assert sorted(paths_of(read(conn, world)), key=str) == sorted(before, key=str)


def test_get_instance_sees_changes_at_call_time(conn: LiveConnection, world: World) -> None:
    path = world.mounts[0].mount
    assert conn.GetInstance(path)["ReferenceCount"] == 1
    world.broker.remove(path)
    with pytest.raises(CIMError) as raised:
        conn.GetInstance(path)
    assert raised.value.status_code == CIM_ERR_NOT_FOUND
    stored = CIMInstance(
        names.MOUNTED_FILE_SYSTEM,
        properties={
            "FileSystemSpec": "/dev/vd0",
            "MountPointPath": "/mnt/0",
            "ReferenceCount": Uint32(2),
        },
    )
    world.broker.add(stored)
    assert conn.GetInstance(path)["ReferenceCount"] == 2


def test_association_results_carry_the_host_and_enumerations_do_not(
    conn: LiveConnection, world: World
) -> None:
    host = conn.host
    assert {i.path.host for i in conn.Associators(world.system)} == {host}
    assert {p.host for p in conn.AssociatorNames(world.system)} == {host}
    assert {i.path.host for i in conn.References(world.system)} == {host}
    assert {p.host for p in conn.ReferenceNames(world.system)} == {host}
    assert {i.path.host for i in conn.EnumerateInstances(names.MOUNTED_FILE_SYSTEM)} == {None}


def test_class_level_association_queries_come_from_the_model(conn: LiveConnection) -> None:
    assocs = conn.ReferenceNames(CIMClassName(names.MOUNTED_FILE_SYSTEM, namespace=NS))
    classnames = {p.classname for p in assocs}
    assert {names.HOSTED_MOUNT, names.MOUNTED_FILE_SYSTEM_ELEMENT_SETTING_DATA} <= classnames


# -- DSP0200 parameters: passed to the broker, which applies them ------------------


BROKER_ARGUMENTS = [
    pytest.param(
        lambda conn, world: conn.EnumerateInstances(names.MOUNTED_FILE_SYSTEM),
        "enumerate_instances",
        {
            "classname": names.MOUNTED_FILE_SYSTEM,
            "deep_inheritance": True,
            "property_list": None,
            "include_qualifiers": False,
            "include_class_origin": False,
            "local_only": False,
        },
        id="EnumerateInstances-defaults",
    ),
    pytest.param(
        lambda conn, world: conn.EnumerateInstances(
            "CIM_ManagedElement",
            DeepInheritance=False,
            PropertyList="ElementName",
            IncludeQualifiers=True,
            IncludeClassOrigin=True,
            LocalOnly=True,
        ),
        "enumerate_instances",
        {
            "classname": "CIM_ManagedElement",
            "deep_inheritance": False,
            "property_list": ["ElementName"],
            "include_qualifiers": True,
            "include_class_origin": True,
            "local_only": False,  # DSP0200: deprecated, treated as false
        },
        id="EnumerateInstances-all-set",
    ),
    pytest.param(
        lambda conn, world: conn.GetInstance(world.mounts[0].mount),
        "get_instance",
        {
            "property_list": None,
            "include_qualifiers": False,
            "include_class_origin": False,
            "local_only": False,
        },
        id="GetInstance-defaults",
    ),
    pytest.param(
        lambda conn, world: conn.GetInstance(
            world.mounts[0].mount,
            PropertyList=["FileSystemType", "Holders"],
            IncludeClassOrigin=True,
            LocalOnly=True,
        ),
        "get_instance",
        {
            "property_list": ["FileSystemType", "Holders"],
            "include_qualifiers": False,
            "include_class_origin": True,
            "local_only": False,
        },
        id="GetInstance-all-set",
    ),
    pytest.param(
        lambda conn, world: conn.Associators(
            world.mounts[0].mount,
            AssocClass=names.MOUNTED_FILE_SYSTEM_ELEMENT_SETTING_DATA,
            ResultClass=names.MOUNTED_FILE_SYSTEM_SETTING,
            Role="ManagedElement",
            ResultRole="SettingData",
            PropertyList=["InstanceID"],
            IncludeClassOrigin=True,
        ),
        "associators",
        {
            "assoc_class": names.MOUNTED_FILE_SYSTEM_ELEMENT_SETTING_DATA,
            "result_class": names.MOUNTED_FILE_SYSTEM_SETTING,
            "role": "ManagedElement",
            "result_role": "SettingData",
            "property_list": ["InstanceID"],
            "include_qualifiers": False,
            "include_class_origin": True,
        },
        id="Associators",
    ),
    pytest.param(
        lambda conn, world: conn.AssociatorNames(
            world.mounts[0].mount, AssocClass=names.HOSTED_MOUNT, Role="Dependent"
        ),
        "associator_names",
        {
            "assoc_class": names.HOSTED_MOUNT,
            "result_class": None,
            "role": "Dependent",
            "result_role": None,
        },
        id="AssociatorNames",
    ),
    pytest.param(
        lambda conn, world: conn.References(
            world.system, ResultClass=names.HOSTED_MOUNT, Role="Antecedent", PropertyList=[]
        ),
        "references",
        {
            "result_class": names.HOSTED_MOUNT,
            "role": "Antecedent",
            "property_list": [],
            "include_qualifiers": False,
            "include_class_origin": False,
        },
        id="References",
    ),
    pytest.param(
        lambda conn, world: conn.ReferenceNames(world.system, Role="Antecedent"),
        "reference_names",
        {"result_class": None, "role": "Antecedent"},
        id="ReferenceNames",
    ),
    pytest.param(
        lambda conn, world: conn.OpenEnumerateInstances(
            names.MOUNTED_FILE_SYSTEM, DeepInheritance=False, PropertyList=["FileSystemSpec"]
        ),
        "enumerate_instances",
        {
            "classname": names.MOUNTED_FILE_SYSTEM,
            "deep_inheritance": False,
            "property_list": ["FileSystemSpec"],
            "include_qualifiers": False,
        },
        id="OpenEnumerateInstances",
    ),
    pytest.param(
        lambda conn, world: conn.OpenReferenceInstancePaths(world.system, Role="Antecedent"),
        "reference_names",
        {"result_class": None, "role": "Antecedent"},
        id="OpenReferenceInstancePaths",
    ),
    pytest.param(
        lambda conn, world: conn.ModifyInstance(
            CIMInstance(
                names.MOUNTED_FILE_SYSTEM_SETTING,
                properties={"AllowWrite": False},
                path=world.mounts[0].setting,
            ),
            PropertyList=["AllowWrite"],
        ),
        "modify_instance",
        {"property_list": ["AllowWrite"], "caller": ALICE},
        id="ModifyInstance",
    ),
    pytest.param(
        lambda conn, world: conn.DeleteInstance(world.mounts[0].setting),
        "delete_instance",
        {"caller": ALICE},
        id="DeleteInstance",
    ),
]


@pytest.mark.parametrize(("call", "method", "expected"), BROKER_ARGUMENTS)
def test_operations_reach_the_broker_with_the_dsp0200_meaning_of_their_parameters(
    conn: LiveConnection,
    world: World,
    call: Callable[[LiveConnection, World], Any],
    method: str,
    expected: dict[str, Any],
) -> None:
    world.broker.calls.clear()
    call(conn, world)
    assert [c[0] for c in world.broker.calls] == [method]
    _, namespace, arguments = world.broker.calls[0]
    assert namespace == NS
    assert {key: arguments[key] for key in expected} == expected


def test_what_the_broker_returns_reaches_the_client_as_is(
    conn: LiveConnection, world: World
) -> None:
    # IncludeClassOrigin=True: plain pywbem_mock always strips class origin
    # (config.IGNORE_INSTANCE_ICO_PARAM); the broker's answer is kept.
    mount = conn.GetInstance(world.mounts[0].mount, IncludeClassOrigin=True)
    assert mount.properties["ElementName"].class_origin == "CIM_ManagedElement"
    assert mount.properties["FileSystemSpec"].class_origin == names.MOUNTED_FILE_SYSTEM
    assert all(
        p.class_origin is None for p in conn.GetInstance(world.mounts[0].mount).properties.values()
    )
    # PropertyList, including the empty list.
    only = conn.GetInstance(world.mounts[0].mount, PropertyList=["fileSystemType"])
    assert list(only.properties) == ["FileSystemType"]
    assert not conn.GetInstance(world.mounts[0].mount, PropertyList=[]).properties
    # DeepInheritance=False: the properties of the requested class only.
    shallow = conn.EnumerateInstances("CIM_ManagedElement", DeepInheritance=False)
    mounts = [i for i in shallow if i.classname == names.MOUNTED_FILE_SYSTEM]
    assert {tuple(i.properties) for i in mounts} == {("ElementName",)}
    # LocalOnly is treated as false: inherited properties stay.
    assert "ElementName" in conn.GetInstance(world.mounts[0].mount, LocalOnly=True)


# -- errors ---------------------------------------------------------------------------


def _missing_mount() -> CIMInstanceName:
    return CIMInstanceName(
        names.MOUNTED_FILE_SYSTEM, {"FileSystemSpec": "/dev/none", "MountPointPath": "/none"}
    )


BROKER_ERRORS = [
    pytest.param(
        lambda conn, world: conn.GetInstance(_missing_mount()),
        CIM_ERR_NOT_FOUND,
        "no instance",
        id="GetInstance-missing",
    ),
    pytest.param(
        lambda conn, world: conn.EnumerateInstances("LMI_NoSuchClass"),
        CIM_ERR_INVALID_CLASS,
        "'LMI_NoSuchClass'",
        id="EnumerateInstances-unknown-class",
    ),
    pytest.param(
        lambda conn, world: conn.OpenEnumerateInstancePaths("LMI_NoSuchClass"),
        CIM_ERR_INVALID_CLASS,
        "'LMI_NoSuchClass'",
        id="OpenEnumerateInstancePaths-unknown-class",
    ),
    pytest.param(
        lambda conn, world: conn.ModifyInstance(
            CIMInstance(
                names.MOUNTED_FILE_SYSTEM,
                properties={"FileSystemType": "xfs"},
                path=world.mounts[0].mount,
            )
        ),
        CIM_ERR_NOT_SUPPORTED,
        "read-only",
        id="ModifyInstance-read-only-class",
    ),
    pytest.param(
        lambda conn, world: conn.DeleteInstance(
            CIMInstanceName(names.MOUNTED_FILE_SYSTEM_SETTING, {"InstanceID": "LMI:none"})
        ),
        CIM_ERR_NOT_FOUND,
        "LMI:none",
        id="DeleteInstance-missing",
    ),
    pytest.param(
        lambda conn, world: conn.CreateInstance(
            CIMInstance(
                names.MOUNTED_FILE_SYSTEM,
                properties={"FileSystemSpec": "/dev/x", "MountPointPath": "/x"},
            )
        ),
        CIM_ERR_NOT_SUPPORTED,
        "read-only",
        id="CreateInstance-read-only-class",
    ),
    pytest.param(
        lambda conn, world: conn.InvokeMethod(
            "CreateMount",
            CIMInstanceName(
                names.MOUNT_CONFIGURATION_SERVICE,
                {
                    "SystemCreationClassName": names.COMPUTER_SYSTEM,
                    "SystemName": "elsewhere",
                    "CreationClassName": names.MOUNT_CONFIGURATION_SERVICE,
                    "Name": "lmi-mount",
                },
            ),
        ),
        CIM_ERR_NOT_FOUND,
        "elsewhere",
        id="InvokeMethod-missing-target",
    ),
    pytest.param(
        lambda conn, world: conn.InvokeMethod("Explode", world.service),
        CIM_ERR_METHOD_NOT_FOUND,
        "'Explode'",
        id="InvokeMethod-unknown-method",
    ),
]


@pytest.mark.parametrize(("call", "status", "named"), BROKER_ERRORS)
def test_a_broker_error_reaches_the_client_unchanged(
    conn: LiveConnection,
    world: World,
    call: Callable[[LiveConnection, World], Any],
    status: int,
    named: str,
) -> None:
    with pytest.raises(CIMError) as raised:
        call(conn, world)
    assert raised.value.status_code == status
    assert named in raised.value.status_description


def test_the_caller_reaches_the_broker(world: World) -> None:
    reader = connect(world.broker, caller=StandInCaller("bob", may_write=False))
    world.broker.methods[(names.MOUNT_CONFIGURATION_SERVICE.lower(), "createmount")] = (
        lambda broker, path, params, caller: (Uint32(0), {})
    )
    with pytest.raises(CIMError) as raised:
        reader.InvokeMethod("CreateMount", world.service)
    assert raised.value.status_code == CIM_ERR_ACCESS_DENIED
    assert "'bob'" in raised.value.status_description
    assert reader.EnumerateInstanceNames(names.MOUNTED_FILE_SYSTEM)


def test_a_failure_in_the_broker_is_cim_err_failed_with_the_cause_chained(
    conn: LiveConnection, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise ZeroDivisionError("division by zero in the projection")

    monkeypatch.setattr(world.broker, "enumerate_instances", broken)
    with pytest.raises(CIMError) as raised:
        conn.EnumerateInstances(names.MOUNTED_FILE_SYSTEM)
    assert raised.value.status_code == CIM_ERR_FAILED
    assert "ZeroDivisionError: division by zero in the projection" in str(raised.value)
    assert isinstance(raised.value.__cause__, ZeroDivisionError)


def test_queries_run_on_the_server_s_engine(conn: LiveConnection) -> None:
    # pywbem_mock answers NOT_SUPPORTED (and its ExecQuery reply would be
    # malformed); the OpenLMI client flow finds instances by query.
    everything = conn.ExecQuery("WQL", "SELECT * FROM LMI_MountedFileSystem")
    assert everything and all(row.path["MountPointPath"] for row in everything)
    first = everything[0]["MountPointPath"]
    opened = conn.OpenQueryInstances(
        "DMTF:CQL", f"SELECT MountPointPath FROM LMI_MountedFileSystem WHERE "
        f"MountPointPath = '{first}'", ReturnQueryResultClass=True, MaxObjectCount=0)
    assert opened.instances == [] and not opened.eos
    assert set(opened.query_result_class.properties) == {"MountPointPath"}
    rest = conn.PullInstances(opened.context, MaxObjectCount=10)
    assert rest.eos and [row["MountPointPath"] for row in rest.instances] == [first]
    assert set(rest.instances[0].properties) == {"MountPointPath"}


# -- writes and methods -----------------------------------------------------------------


def test_instance_writes_go_to_the_broker(conn: LiveConnection, world: World) -> None:
    setting = world.mounts[0].setting
    conn.ModifyInstance(
        CIMInstance(
            names.MOUNTED_FILE_SYSTEM_SETTING,
            properties={"AllowWrite": False, "ElementName": "ignored"},
            path=setting,
        ),
        PropertyList=["AllowWrite"],
    )
    after = conn.GetInstance(setting)
    assert after["AllowWrite"] is False
    assert after.get("ElementName") is None

    created = conn.CreateInstance(
        CIMInstance(names.MOUNTED_FILE_SYSTEM_SETTING, properties={"InstanceID": "LMI:goal:1"})
    )
    assert created.keybindings["InstanceID"] == "LMI:goal:1"
    assert conn.GetInstance(created)["InstanceID"] == "LMI:goal:1"

    conn.DeleteInstance(created)
    with pytest.raises(CIMError) as raised:
        conn.GetInstance(created)
    assert raised.value.status_code == CIM_ERR_NOT_FOUND
    assert [c[2]["caller"] for c in world.broker.calls if "caller" in c[2]] == [ALICE] * 3


def test_invoke_method_goes_to_the_broker_with_typed_values_and_returns_its_out_params(
    conn: LiveConnection, world: World
) -> None:
    seen: list[tuple[Any, dict[str, Any], Any]] = []
    created = world.mounts[0].mount

    def create_mount(
        broker: StandInBroker, path: Any, params: Any, caller: Any
    ) -> tuple[Any, dict[str, Any]]:
        seen.append((path, {k: params[k] for k in params}, caller))
        # An OUT REF left NULL: plain pywbem_mock raises TypeError on it
        # after the provider ran (_providerdispatcher.py:671).
        return Uint32(0), {"Mount": created, "Job": None, "Error": None}

    world.broker.methods[(names.MOUNT_CONFIGURATION_SERVICE.lower(), "createmount")] = create_mount
    goal = CIMInstance(names.MOUNTED_FILE_SYSTEM_SETTING, properties={"AllowWrite": False})
    rv, out = conn.InvokeMethod(
        "CreateMount",
        world.service,
        [("Mode", Uint16(32768)), ("MountPoint", "/mnt/new"), ("Goal", world.mounts[1].setting)],
        FileSystemSpec="/srv/data",
        DryRun=True,
        Holder=goal,
    )
    assert rv == 0
    assert out["mount"] == created and out["Job"] is None and out["Error"] is None
    (path, params, caller) = seen[0]
    assert bare(path) == bare(world.service) and caller == ALICE
    assert params == {
        "Mode": 32768,
        "MountPoint": "/mnt/new",
        "Goal": world.mounts[1].setting,
        "FileSystemSpec": "/srv/data",
        "DryRun": True,
        "Holder": goal,
    }
    assert isinstance(params["Mode"], Uint16)
    # The values arrive in a case-insensitive mapping, as the interface allows.
    name, _, arguments = world.broker.calls[-1]
    assert name == "invoke_method" and arguments["params"]["mode"] == 32768

    # A class as target (static methods) reaches the broker as a CIMClassName.
    conn.InvokeMethod("CreateMount", names.MOUNT_CONFIGURATION_SERVICE)
    assert isinstance(seen[1][0], CIMClassName) and seen[1][0].namespace == NS


# -- pull operations ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def ten_thousand(model: Model) -> tuple[StandInBroker, set[CIMInstanceName]]:
    broker = StandInBroker(model)
    paths = {
        broker.add(
            CIMInstance(
                names.MOUNTED_FILE_SYSTEM,
                properties={"FileSystemSpec": f"/srv/{i}", "MountPointPath": f"/mnt/{i}"},
            )
        )
        for i in range(10_000)
    }
    return broker, paths


@pytest.mark.parametrize("chunk", [1, 997, 10_000], ids=["chunk-1", "chunk-997", "chunk-all"])
def test_pull_enumeration_of_10k_returns_each_instance_exactly_once(
    ten_thousand: tuple[StandInBroker, set[CIMInstanceName]], chunk: int
) -> None:
    broker, expected = ten_thousand
    conn = connect(broker, caller=ALICE)
    first = conn.OpenEnumerateInstances(names.MOUNTED_FILE_SYSTEM, MaxObjectCount=0)
    assert first.instances == [] and not first.eos
    paths = [i.path for i in drain(first, conn.PullInstancesWithPath, chunk)]
    assert len(paths) == 10_000
    assert set(paths) == expected


def test_pull_operations_follow_dsp0200(
    conn: LiveConnection, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(CIMError) as raised:
        conn.OpenEnumerateInstances(names.MOUNTED_FILE_SYSTEM, OperationTimeout=3600)
    assert raised.value.status_code == CIM_ERR_INVALID_OPERATION_TIMEOUT
    with pytest.raises(CIMError) as raised:
        conn.OpenEnumerateInstancePaths(
            names.MOUNTED_FILE_SYSTEM,
            FilterQueryLanguage="DMTF:FQL",
            FilterQuery="FileSystemType = 'xfs'",
        )
    assert raised.value.status_code == CIM_ERR_FILTERED_ENUMERATION_NOT_SUPPORTED

    # A Pull with MaxObjectCount 0 returns nothing and keeps the enumeration open.
    first = conn.OpenEnumerateInstancePaths(names.MOUNTED_FILE_SYSTEM, MaxObjectCount=1)
    empty = conn.PullInstancePaths(first.context, 0)
    assert empty.paths == [] and not empty.eos and empty.context == first.context
    assert len(first.paths) + len(drain(empty, conn.PullInstancePaths)) == 3

    # Closed contexts are gone.
    opened = conn.OpenEnumerateInstances(names.MOUNTED_FILE_SYSTEM, MaxObjectCount=1)
    conn.CloseEnumeration(opened.context)
    with pytest.raises(CIMError) as raised:
        conn.PullInstancesWithPath(opened.context, 1)
    assert raised.value.status_code == CIM_ERR_INVALID_ENUMERATION_CONTEXT


def test_idle_enumerations_expire_after_their_operation_timeout(conn: LiveConnection) -> None:
    now = [1000.0]
    conn._mainprovider.clock = lambda: now[0]
    short = conn.OpenEnumerateInstancePaths(
        names.MOUNTED_FILE_SYSTEM, MaxObjectCount=1, OperationTimeout=5
    )
    forever = conn.OpenEnumerateInstancePaths(
        names.MOUNTED_FILE_SYSTEM, MaxObjectCount=1, OperationTimeout=0
    )
    now[0] += 4
    kept = conn.PullInstancePaths(short.context, 1)  # each Pull restarts the timer
    now[0] += 4
    assert len(kept.paths) == 1 and len(conn.PullInstancePaths(kept.context, 1).paths) == 1
    again = conn.OpenEnumerateInstancePaths(
        names.MOUNTED_FILE_SYSTEM, MaxObjectCount=1, OperationTimeout=5
    )
    now[0] += 6
    with pytest.raises(CIMError) as raised:
        conn.PullInstancePaths(again.context, 1)
    assert raised.value.status_code == CIM_ERR_INVALID_ENUMERATION_CONTEXT
    now[0] += 10**6
    assert len(drain(forever, conn.PullInstancePaths)) == 3


# -- the schema of a live namespace is fixed; other namespaces stay plain ------------------


SCHEMA_CHANGES = [
    pytest.param(lambda conn: conn.DeleteClass(names.MOUNTED_FILE_SYSTEM), id="DeleteClass"),
    pytest.param(
        lambda conn: conn.CreateClass(CIMClass("LMI_Extra", superclass="CIM_ManagedElement")),
        id="CreateClass",
    ),
    pytest.param(
        lambda conn: conn.ModifyClass(conn.GetClass(names.MOUNTED_FILE_SYSTEM, LocalOnly=False)),
        id="ModifyClass",
    ),
    pytest.param(lambda conn: conn.DeleteQualifier("Description"), id="DeleteQualifier"),
    pytest.param(
        lambda conn: conn.SetQualifier(CIMQualifierDeclaration("Extra", "boolean")),
        id="SetQualifier",
    ),
]


@pytest.mark.parametrize("change", SCHEMA_CHANGES)
def test_schema_changes_in_a_live_namespace_are_not_supported(
    conn: LiveConnection, model: Model, change: Callable[[LiveConnection], Any]
) -> None:
    with pytest.raises(CIMError) as raised:
        change(conn)
    assert raised.value.status_code == CIM_ERR_NOT_SUPPORTED
    assert "fixed" in raised.value.status_description
    assert sorted(conn.EnumerateClassNames(DeepInheritance=True)) == sorted(
        c.classname for c in model.classes
    )
    assert len(conn.EnumerateQualifiers()) == len(model.qualifiers)


def test_a_namespace_the_broker_does_not_serve_stays_a_plain_mock(
    conn: LiveConnection, world: World
) -> None:
    other = "root/other"
    conn.add_namespace(other)
    install_model(conn, other)
    conn.add_cimobjects(
        [
            CIMInstance(
                names.MOUNTED_FILE_SYSTEM_SETTING,
                properties={"InstanceID": "plain"},
                path=CIMInstanceName(names.MOUNTED_FILE_SYSTEM_SETTING, {"InstanceID": "plain"}),
            )
        ],
        namespace=other,
    )
    world.broker.calls.clear()
    found = conn.EnumerateInstances(names.MOUNTED_FILE_SYSTEM_SETTING, namespace=other)
    assert [i["InstanceID"] for i in found] == ["plain"]
    conn.DeleteClass(names.MOUNT_JOB, namespace=other)
    assert world.broker.calls == []


def test_a_second_broker_namespace_gets_the_brokers_classes_and_live_instances(
    model: Model,
) -> None:
    interop = names.INTEROP_NAMESPACE
    broker = StandInBroker(
        model, namespaces={NS: model.lmi_classnames, interop: [names.COMPUTER_SYSTEM]}
    )
    conn = connect(broker, caller=ALICE)
    assert set(conn.namespaces) >= {NS, interop}
    lineage = [names.COMPUTER_SYSTEM]
    while superclass := model.get_class(lineage[-1]).superclass:
        lineage.append(superclass)
    assert "CIM_ManagedElement" in lineage
    assert sorted(conn.EnumerateClassNames(namespace=interop, DeepInheritance=True)) == sorted(
        lineage
    )
    assert conn.EnumerateInstances(names.COMPUTER_SYSTEM, namespace=interop) == []
    broker.add(
        CIMInstance(
            names.COMPUTER_SYSTEM,
            properties={"CreationClassName": names.COMPUTER_SYSTEM, "Name": "interop.example"},
        ),
        namespace=interop,
    )
    (system,) = conn.EnumerateInstances(names.COMPUTER_SYSTEM, namespace=interop)
    assert system["Name"] == "interop.example" and system.path.namespace == interop
    assert isinstance(conn.cimrepository.get_instance_store(interop), LiveInstanceStore)


# -- set-up -------------------------------------------------------------------------------


def test_setup_live_turns_an_existing_connection_live(world: World) -> None:
    plain = FakedWBEMConnection()
    setup_live(plain, world.broker, caller=ALICE)
    assert len(plain.EnumerateInstances(names.MOUNTED_FILE_SYSTEM)) == 3
    world.add_mount(7)
    assert len(plain.EnumerateInstances(names.MOUNTED_FILE_SYSTEM)) == 4
    # pywbem_mock's copy() shares the providers, so copies stay live.
    assert len(plain.copy().EnumerateInstances(names.MOUNTED_FILE_SYSTEM)) == 4
    with pytest.raises(LiveSetupError, match="live already"):
        setup_live(plain, world.broker, caller=ALICE)


def test_setup_refuses_a_namespace_that_already_holds_instances(world: World) -> None:
    plain = FakedWBEMConnection()
    install_model(plain)
    held = CIMInstance(
        names.MOUNTED_FILE_SYSTEM_SETTING,
        properties={"InstanceID": "held"},
        path=CIMInstanceName(names.MOUNTED_FILE_SYSTEM_SETTING, {"InstanceID": "held"}),
    )
    plain.add_cimobjects([held])
    with pytest.raises(LiveSetupError, match=r"'root/cimv2' .* already holds 1 instances"):
        setup_live(plain, world.broker, caller=ALICE)
    store = plain.cimrepository.get_instance_store(NS)
    assert isinstance(store, InMemoryObjectStore) and store.len() == 1


def test_setup_refuses_a_namespace_with_a_different_class_of_the_same_name(
    world: World, model: Model
) -> None:
    plain = FakedWBEMConnection()
    other = model.get_class(names.MOUNTED_FILE_SYSTEM).copy()
    other.properties["Extra"] = CIMProperty("Extra", None, type="string")
    plain.cimrepository.get_class_store(NS).create(other.classname, other)
    with pytest.raises(ModelError, match=names.MOUNTED_FILE_SYSTEM):
        setup_live(plain, world.broker, caller=ALICE)


def test_the_default_caller_is_the_brokers_default(world: World) -> None:
    broker_module = pytest.importorskip("lmi_mount.cim.broker")
    conn = connect(world.broker)
    conn.DeleteInstance(world.mounts[0].setting)
    assert world.broker.calls[-1][2]["caller"] == broker_module.Caller()


def test_copies_share_the_broker_the_lock_and_the_enumerations(
    conn: LiveConnection, world: World
) -> None:
    twin = conn.copy()
    assert isinstance(twin, LiveConnection)
    assert twin.broker is conn.broker and twin.lock is conn.lock
    opened = conn.OpenEnumerateInstancePaths(names.MOUNTED_FILE_SYSTEM, MaxObjectCount=1)
    assert len(drain(opened, twin.PullInstancePaths)) == 3


# -- threads -------------------------------------------------------------------------------


def test_eight_threads_of_mixed_calls_run_without_error_one_operation_at_a_time(
    model: Model,
) -> None:
    world = build_world(model, mounts=20, delay=0.0001)
    broker = world.broker
    serial = iter(range(1000, 10**6))
    serial_lock = threading.Lock()

    def create_mount(
        broker: StandInBroker, path: Any, params: Any, caller: Any
    ) -> tuple[Any, dict[str, Any]]:
        with serial_lock:
            index = next(serial)
        return Uint32(0), {"Mount": add_mount(broker, world.system, index).mount}

    def delete_mount(
        broker: StandInBroker, path: Any, params: Any, caller: Any
    ) -> tuple[Any, dict[str, Any]]:
        mount = params["Mount"]
        for assoc in broker.reference_names(NS, mount):
            broker.remove(assoc)
        broker.remove(mount)
        return Uint32(0), {}

    service = names.MOUNT_CONFIGURATION_SERVICE.lower()
    broker.methods[(service, "createmount")] = create_mount
    broker.methods[(service, "deletemount")] = delete_mount
    conn = connect(broker, caller=ALICE, use_pull_operations=True)
    errors: list[BaseException] = []

    start = threading.Barrier(8)

    def worker(number: int) -> None:
        client = conn.copy() if number % 2 else conn
        start.wait()
        try:
            for round_ in range(12):
                _, out = client.InvokeMethod("CreateMount", world.service)
                mine = out["Mount"]
                assert client.GetInstance(mine)["FileSystemType"] == "ext4"
                assert mine in [bare(p) for p in client.AssociatorNames(world.system)]
                listed = paths_of(
                    client.IterEnumerateInstances("CIM_ManagedElement", MaxObjectCount=7)
                )
                assert len(listed) == len(set(listed)) and bare(mine) in listed
                assert client.References(mine, ResultClass=names.HOSTED_MOUNT)
                client.ModifyInstance(
                    CIMInstance(
                        names.MOUNTED_FILE_SYSTEM_SETTING,
                        properties={"AllowWrite": bool(round_ % 2)},
                        path=world.mounts[number].setting,
                    )
                )
                opened = client.OpenEnumerateInstancePaths(
                    names.MOUNTED_FILE_SYSTEM, MaxObjectCount=3
                )
                client.CloseEnumeration(opened.context)
                client.InvokeMethod("DeleteMount", world.service, Mount=mine)
        except BaseException as exc:  # the test reports every failure of every thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert broker.max_concurrent == 1
    assert len(conn.EnumerateInstanceNames(names.MOUNTED_FILE_SYSTEM)) == 20


# -- pickling and pywbemcli ------------------------------------------------------------------


def test_a_live_connection_refuses_to_be_pickled(conn: LiveConnection) -> None:
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(conn)
    with pytest.raises(TypeError, match="cannot be pickled"):
        copy.deepcopy(conn)


def test_a_pickled_repository_fails_loudly_instead_of_going_empty(
    conn: LiveConnection, model: Model
) -> None:
    # pywbemcli pickles the repository of a named connection.
    restored = pickle.loads(pickle.dumps(conn.cimrepository))
    store = restored.get_instance_store(NS)
    assert isinstance(store, DetachedInstanceStore)
    for read in (lambda: list(store.iter_values()), lambda: store.len()):
        with pytest.raises(CIMError) as raised:
            read()
        assert raised.value.status_code == CIM_ERR_FAILED
        assert "refuse_pywbemcli_cache(globals())" in raised.value.status_description
    assert restored.get_class_store(NS).len() == len(model.classes)


@pytest.mark.parametrize(
    ("script_globals", "refused"),
    [
        pytest.param(
            {"__name__": "pywbemtools.pywbemcli.mockscripts.mock_server"},
            True,
            id="pywbemcli-cache-load",
        ),
        pytest.param(
            {"__name__": "pywbemtools.pywbemcli.mockscripts.mock_server", "CONN": object()},
            False,
            id="pywbemcli-build",
        ),
        pytest.param({"__name__": "mock_server"}, False, id="plain-import"),
        pytest.param({"__name__": "__main__"}, False, id="run-as-script"),
    ],
)
def test_refuse_pywbemcli_cache_raises_only_for_pywbemcli_cache_loads(
    script_globals: dict[str, object], refused: bool
) -> None:
    if refused:
        with pytest.raises(ImportError, match="not cacheable"):
            refuse_pywbemcli_cache(script_globals)
    else:
        refuse_pywbemcli_cache(script_globals)


PYWBEMCLI_SCRIPT = """
from pathlib import Path

from pywbem import CIMInstance

from lmi_mount.cim.mock import refuse_pywbemcli_cache, setup_live
from lmi_mount.cim.model import load_model
from tests.support.standin_broker import StandInBroker, StandInCaller

refuse_pywbemcli_cache(globals())


def setup(conn, server, verbose):
    broker = StandInBroker(load_model())
    for i in range(int((Path(__file__).parent / "count").read_text())):
        broker.add(CIMInstance("LMI_MountedFileSystem", properties={
            "FileSystemSpec": f"/srv/{i}", "MountPointPath": f"/mnt/{i}"}))
    setup_live(conn, broker, caller=StandInCaller("pywbemcli"))
"""


def test_pywbemcli_named_connection_stays_live_across_its_mock_cache(tmp_path: Path) -> None:
    (tmp_path / "live.py").write_text(PYWBEMCLI_SCRIPT, encoding="utf-8")
    home = tmp_path / "home"
    env = dict(
        os.environ,
        PYWBEMCLI_ALT_HOME_DIR=str(home),
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    )
    pywbemcli = [sys.executable, "-m", "pywbemtools.pywbemcli.pywbemcli"]
    beside = Path(sys.executable).with_name("pywbemcli")
    if beside.is_file():
        pywbemcli = [str(beside)]

    def run(*args: str) -> str:
        done = subprocess.run(
            [*pywbemcli, *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def count() -> int:
        out = run("-n", "live", "-o", "plain", "instance", "count", names.MOUNTED_FILE_SYSTEM)
        return int(out.split()[-1])

    (tmp_path / "count").write_text("3")
    run("--mock-server", "live.py", "connection", "save", "live")
    assert count() == 3  # built, then written to the mock cache
    assert list(home.glob(".pywbemcli_mockcache/*/mockenv.pkl"))
    (tmp_path / "count").write_text("5")
    assert count() == 5  # the cache is not loaded: setup() ran again
