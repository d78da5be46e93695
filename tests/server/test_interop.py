"""interop: root/interop as pywbem's WBEMServer and pywbemcli find it, served in front of
the broker, read-only, from the DMTF classes in mof/interop (unchanged, complete)."""

from __future__ import annotations

import importlib.util
import re
import sys
import zipfile
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from pywbem import CIMError, CIMInstance, CIMInstanceName, WBEMServer

from lmi_mount.cim.model import Model
from lmi_mount.server.interop import (
    BRAND,
    InteropBroker,
    class_view,
    load_interop_classes,
)
from tests.server.conftest import Running
from tests.support.standin_broker import StandInBroker

MOF = Path(__file__).resolve().parents[2] / "mof"
INTEROP = "root/interop"


@pytest.fixture(scope="module")
def interop(model: Model) -> InteropBroker:
    return InteropBroker(StandInBroker(model), system_name="host.example", version="9.8.7")


def test_wbem_server_finds_brand_namespaces_and_profiles(running: Running) -> None:
    server = WBEMServer(running.connect())
    assert server.interop_ns == INTEROP
    assert server.brand == BRAND and server.version is not None
    assert sorted(server.namespaces) == ["root/cimv2", INTEROP]
    assert sorted((p["RegisteredName"], p["RegisteredVersion"]) for p in server.profiles) == [
        ("OpenLMI-Mounting", "0.1.0"), ("Profile Registration", "1.0.0")]
    assert server.cimom_inst["ElementName"] == BRAND


def test_the_mounting_model_is_a_profile_consoles_select(running: Running) -> None:
    # A console asks the interop namespace which profiles a host implements
    # and follows each to its central instance; OpenLMI's own scripts chose
    # their commands by the RegisteredName and version of such a profile.
    server = WBEMServer(running.connect())
    # pywbem names the organization by RegisteredOrganization's value map:
    # "Other", which OtherRegisteredOrganization spells out.
    (profile,) = server.get_selected_profiles("Other", "OpenLMI-Mounting")
    assert profile["OtherRegisteredOrganization"] == "OpenLMI"
    assert profile["InstanceID"] == "OpenLMI+OpenLMI-Mounting+0.1.0"
    (central,) = server.get_central_instances(
        profile.path, central_class="LMI_MountConfigurationService",
        scoping_class="CIM_ComputerSystem", scoping_path=["CIM_ComputerSystem"])
    assert (central.classname, central.namespace) == ("LMI_MountConfigurationService",
                                                      "root/cimv2")
    assert server.conn.GetInstance(central)["ElementName"] == "mounts"
    (link,) = server.conn.References(profile.path, ResultClass="CIM_ElementConformsToProfile")
    assert link["ManagedElement"].namespace == "root/cimv2"
    # The instances themselves too, from the namespace they live in.
    for result_class in (None, "LMI_MountConfigurationService", "CIM_Service"):
        (service,) = server.conn.Associators(profile.path,
                                             AssocClass="CIM_ElementConformsToProfile",
                                             ResultClass=result_class)
        assert service.path.namespace == "root/cimv2" and service["ElementName"] == "mounts"
    assert server.conn.AssociatorNames(profile.path, ResultClass="CIM_ObjectManager") == []


def test_namespaces_are_managed_by_the_object_manager(running: Running) -> None:
    conn = running.connect()
    (manager,) = conn.EnumerateInstanceNames("CIM_ObjectManager", namespace=INTEROP)
    namespaces = conn.AssociatorNames(manager, AssocClass="CIM_NamespaceInManager")
    assert sorted(n["Name"] for n in namespaces) == ["root/cimv2", INTEROP]
    assert len(conn.References(manager, ResultClass="CIM_NamespaceInManager")) == 2
    # Other interop namespace names do not exist (pywbem tries "interop" first).
    with pytest.raises(CIMError) as caught:
        conn.EnumerateInstanceNames("CIM_Namespace", namespace="interop")
    assert caught.value.status_code_name == "CIM_ERR_INVALID_NAMESPACE"


def test_interop_classes(interop: InteropBroker) -> None:
    names = interop.enumerate_class_names(INTEROP, deep_inheritance=True)
    assert {"CIM_ObjectManager", "CIM_Namespace", "CIM_RegisteredProfile",
            "CIM_NamespaceInManager", "CIM_ElementConformsToProfile"} <= set(names)
    # Nothing of the model leaks into the interop namespace.
    assert not [n for n in names if n.startswith("LMI_")]
    manager = interop.get_class(INTEROP, "CIM_ObjectManager", local_only=False)
    assert manager.superclass == "CIM_WBEMService" and "ElementName" in manager.properties
    assert interop.get_qualifier(INTEROP, "Key").name == "Key"
    with pytest.raises(CIMError) as caught:
        interop.get_class(INTEROP, "LMI_MountedFileSystem")
    assert caught.value.status_code_name == "CIM_ERR_INVALID_CLASS"


def test_other_namespaces_go_to_the_broker(interop: InteropBroker) -> None:
    assert interop.namespaces() == ["root/cimv2", INTEROP]
    assert interop.get_class("root/cimv2", "LMI_MountedFileSystem").classname == (
        "LMI_MountedFileSystem")
    with pytest.raises(CIMError) as caught:
        interop.get_class("root/other", "CIM_ObjectManager")
    assert caught.value.status_code_name == "CIM_ERR_INVALID_NAMESPACE"


def test_instances_shaped_as_asked(interop: InteropBroker) -> None:
    (manager,) = interop.enumerate_instances(INTEROP, "CIM_ObjectManager",
                                             property_list=["ElementName", "Description"])
    assert dict(manager.items()) == {
        "ElementName": BRAND, "Description": f"{BRAND} CIM-XML server version 9.8.7"}
    assert manager.path.namespace == INTEROP and manager.path["SystemName"] == "host.example"
    everything = list(interop.enumerate_instances(INTEROP, "CIM_ManagedElement",
                                                  deep_inheritance=False))
    assert {i.classname for i in everything} == {"CIM_ObjectManager", "CIM_Namespace",
                                                  "CIM_RegisteredProfile"}
    assert all(set(i.properties) <= {"InstanceID", "Caption", "Description", "ElementName",
                                     "Generation"} for i in everything)
    got = interop.get_instance(INTEROP, manager.path, include_class_origin=True)
    assert got.properties["ElementName"].class_origin == "CIM_ManagedElement"


@pytest.mark.parametrize(("operation", "expected"), [
    pytest.param(lambda b, p: b.delete_instance(INTEROP, p, caller=None),
                 "CIM_ERR_NOT_SUPPORTED", id="delete"),
    pytest.param(lambda b, p: b.create_instance(INTEROP, CIMInstance("CIM_Namespace"),
                                                caller=None), "CIM_ERR_NOT_SUPPORTED",
                 id="create"),
    pytest.param(lambda b, p: b.invoke_method(INTEROP, p, "StopService", {}, caller=None),
                 "CIM_ERR_METHOD_NOT_AVAILABLE", id="method"),
    pytest.param(lambda b, p: b.invoke_method(INTEROP, p, "Explode", {}, caller=None),
                 "CIM_ERR_METHOD_NOT_FOUND", id="no-method"),
    pytest.param(lambda b, p: b.get_instance(INTEROP, CIMInstanceName(
        "CIM_ObjectManager", {"Name": "other"}, namespace=INTEROP)), "CIM_ERR_NOT_FOUND",
        id="no-instance"),
])
def test_read_only(interop: InteropBroker, operation: object, expected: str) -> None:
    (path,) = interop.enumerate_instance_names(INTEROP, "CIM_ObjectManager")
    with pytest.raises(CIMError) as caught:
        operation(interop, path)  # type: ignore[operator]
    assert caught.value.status_code_name == expected


def test_class_view_leaves_the_model_alone(model: Model) -> None:
    cls = model.get_class("LMI_MountedFileSystem")
    before = cls.tocimxmlstr()
    view = class_view(cls, local_only=True, include_qualifiers=False,
                      include_class_origin=False, property_list=["MountPointPath"])
    assert list(view.properties) == ["MountPointPath"] and not view.qualifiers
    assert not view.properties["MountPointPath"].qualifiers
    assert cls.tocimxmlstr() == before


def test_local_only_keeps_what_a_class_overrides(model: Model) -> None:
    # A review: LocalOnly dropped the overridden association ends of
    # LMI_MountPoint and LMI_MountJob's overrides, marked propagated.
    def local(name: str) -> Any:
        return class_view(model.get_class(name), local_only=True, include_qualifiers=False,
                          include_class_origin=True, property_list=None)

    mount_point = local("LMI_MountPoint")
    assert {"Antecedent", "Dependent"} <= set(mount_point.properties)
    assert mount_point.properties["Antecedent"].propagated is False
    job = local("LMI_MountJob")
    assert "TimeBeforeRemoval" in job.properties and "GetError" in job.methods
    assert "Name" not in job.properties  # inherited as it is: not local


def test_class_operations_through_the_server_leave_the_model_alone(
        running: Running, model: Model) -> None:
    before = model.get_class("LMI_MountedFileSystem").tocimxmlstr()
    conn = running.connect()
    conn.GetClass("LMI_MountedFileSystem", IncludeQualifiers=False, LocalOnly=False)
    conn.ExecQuery("WQL", "SELECT * FROM LMI_MountedFileSystem")
    assert model.get_class("LMI_MountedFileSystem").tocimxmlstr() == before


def test_interop_classes_compile_once(model: Model) -> None:
    assert load_interop_classes(model.mof_dir) is load_interop_classes(model.mof_dir)


def test_committed_interop_mof_is_the_dmtf_files_unchanged() -> None:
    """mof/interop holds DMTF files (their copyright line intact), each included once, and
    none that mof/dmtf already has."""
    entry = (MOF / "interop" / "interop.mof").read_text(encoding="utf-8")
    includes = re.findall(r'#pragma include \("([^"]+)"\)', entry)
    dmtf = re.findall(r'#pragma include \("([^"]+)"\)',
                      (MOF / "dmtf" / "dmtf.mof").read_text(encoding="utf-8"))
    assert includes and not set(includes) & set(dmtf)
    on_disk = {p.relative_to(MOF / "interop").as_posix()
               for p in (MOF / "interop").rglob("*.mof")} - {"interop.mof"}
    assert on_disk == set(includes)
    for path in includes:
        assert "DMTF" in (MOF / "interop" / path).read_text(encoding="utf-8")[:400], path
    assert "except interop.mof" in (MOF / "interop" / "LICENSE").read_text(encoding="utf-8")


def load_interop_extract() -> ModuleType:
    spec = importlib.util.spec_from_file_location("lmi_mount_interop_extract",
                                                  MOF / "interop" / "extract.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_committed_interop_files_are_exactly_what_the_seeds_need(tmp_path: Path) -> None:
    # Rebuild a schema archive from the committed DMTF files of both directories
    # and let extract.py recompute the closure of its seeds: same files, same order.
    extract = load_interop_extract()
    dmtf = re.findall(r'#pragma include \("([^"]+)"\)',
                      (MOF / "dmtf" / "dmtf.mof").read_text(encoding="utf-8"))
    interop = re.findall(r'#pragma include \("([^"]+)"\)',
                         (MOF / "interop" / "interop.mof").read_text(encoding="utf-8"))
    files = {p: (MOF / "dmtf" / p).read_text(encoding="utf-8") for p in dmtf}
    files.update({p: (MOF / "interop" / p).read_text(encoding="utf-8") for p in interop})
    notice = "// Copyright 2099 Distributed Management Task Force, Inc. (DMTF).\n"
    order = ["qualifiers.mof", "qualifiers_optional.mof",
             *[p for p in files if p != "qualifiers.mof"]]
    archive = tmp_path / "schema.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("cim_schema_2.49.0.mof",
                    notice + "".join(f'#pragma include ("{p}")\n' for p in order))
        zf.writestr("qualifiers_optional.mof", "")
        for name, text in files.items():
            zf.writestr(name, text)
    out = tmp_path / "out"
    out.mkdir()
    assert extract.extract(archive, out, MOF / "dmtf" / "dmtf.mof") == interop
    for path in interop:
        assert (out / path).read_text(encoding="utf-8") == files[path]


def test_each_profile_leads_to_its_central_instance(running: Running) -> None:
    """``pywbemcli profile centralinsts`` showed no central instance: the profiles
    were advertised without CIM_ElementConformsToProfile."""
    server = WBEMServer(running.connect())
    for profile in server.profiles:
        central = server.get_central_instances(profile.path)
        expected = {"Profile Registration": "CIM_ObjectManager",
                    "Indications": "CIM_IndicationService",
                    "OpenLMI-Mounting": "LMI_MountConfigurationService",
                    }[profile["RegisteredName"]]
        assert [path.classname for path in central] == [expected], profile["RegisteredName"]
        assert server.conn.GetInstance(central[0])


def test_the_configuration_service_leads_back_to_its_profile(running: Running) -> None:
    # DSP1033: from a central instance, in its own namespace, a client finds
    # the registered profiles it conforms to. The service led nowhere: only
    # the way from the profile (in root/interop) to it was served.
    conn = running.connect()
    (service,) = conn.EnumerateInstanceNames("LMI_MountConfigurationService",
                                             namespace="root/cimv2")
    for filters in ({"AssocClass": "CIM_ElementConformsToProfile"},
                    {"ResultClass": "CIM_RegisteredProfile"},
                    {"AssocClass": "CIM_ElementConformsToProfile", "Role": "ManagedElement",
                     "ResultRole": "ConformantStandard"},
                    {}):
        profiles = [p for p in conn.Associators(service, **filters)
                    if p.classname == "CIM_RegisteredProfile"]
        assert [(p.path.namespace, p["RegisteredName"]) for p in profiles] == [
            (INTEROP, "OpenLMI-Mounting")], filters
        (name,) = [n for n in conn.AssociatorNames(service, **filters)
                   if n.classname == "CIM_RegisteredProfile"]
        assert name.namespace == INTEROP
        assert conn.GetInstance(name)["InstanceID"] == profiles[0]["InstanceID"]
    assert conn.AssociatorNames(service, AssocClass="CIM_ElementConformsToProfile",
                                Role="ConformantStandard") == []
    (link,) = conn.References(service, ResultClass="CIM_ElementConformsToProfile")
    assert link.path.namespace == INTEROP
    assert link["ConformantStandard"].namespace == INTEROP
    assert [n.namespace for n in conn.ReferenceNames(
        service, ResultClass="CIM_ElementConformsToProfile", Role="ManagedElement")] == [INTEROP]
    # Another element of the model conforms to nothing.
    (mount,) = conn.EnumerateInstanceNames("LMI_MountedFileSystem", namespace="root/cimv2")[:1]
    assert conn.AssociatorNames(mount, AssocClass="CIM_ElementConformsToProfile") == []
