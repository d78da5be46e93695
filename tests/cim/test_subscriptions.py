"""Subscriptions in root/interop against a real broker on the fake kernel: who may
subscribe, what is refused (named), and what a restart keeps."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pywbem import (
    CIM_ERR_ACCESS_DENIED,
    CIM_ERR_FAILED,
    CIM_ERR_INVALID_PARAMETER,
    CIM_ERR_NOT_FOUND,
    CIM_ERR_NOT_SUPPORTED,
    CIMError,
    CIMInstance,
    CIMInstanceName,
    Uint16,
)

from lmi_mount.cim.broker import Caller
from lmi_mount.server.config import IndicationSettings
from lmi_mount.server.indications import IndicationService, indication_service
from lmi_mount.server.interop import InteropBroker, load_interop_classes
from tests.cim.conftest import CimWorld

INTEROP = "root/interop"
ADMIN = Caller(user="alice", may_write=True)
READER = Caller(user="bob", may_write=False)


def interop(world: CimWorld, state: Path) -> tuple[InteropBroker, IndicationService]:
    conn = world.connect()
    broker = conn.broker
    classes = load_interop_classes(broker.model.mof_dir)
    service = indication_service(broker, IndicationSettings(), get_interop_class=classes.get,
                                 interop_namespace=INTEROP,
                                 subscriptions_file=state / "subscriptions.json")
    front = InteropBroker(broker, system_name="host.example", version="1", classes=classes,
                          subscriptions=service.store, indications=service)
    return front, service


@pytest.fixture
def front(fake_world: CimWorld, tmp_path: Path) -> Iterator[InteropBroker]:
    broker, service = interop(fake_world, tmp_path)
    yield broker
    service.close()


def filter_instance(query: str = "SELECT * FROM CIM_InstCreation", **more: Any) -> CIMInstance:
    return CIMInstance("CIM_IndicationFilter", properties={
        "Name": "f", "SystemName": "host.example", "Query": query, "QueryLanguage": "WQL",
        **more})



def destination(url: str = "http://127.0.0.1:5990", **more: Any) -> CIMInstance:
    return CIMInstance("CIM_ListenerDestinationCIMXML", properties={
        "Name": "d", "SystemName": "host.example", "Destination": url, **more})


def subscribe(front: InteropBroker, caller: Caller = ADMIN, filter_name: str = "f",
              **destination_values: Any) -> CIMInstanceName:
    found = front.create_instance(INTEROP, filter_instance(Name=filter_name), caller=caller)
    handler = front.create_instance(INTEROP, destination(**destination_values), caller=caller)
    subscription = CIMInstance("CIM_IndicationSubscription",
                               properties={"Filter": found, "Handler": handler})
    return front.create_instance(INTEROP, subscription, caller=caller)


def test_a_reader_may_read_subscriptions_but_not_make_or_remove_them(
        front: InteropBroker) -> None:
    with pytest.raises(CIMError) as refused:
        front.create_instance(INTEROP, filter_instance(), caller=READER)
    assert refused.value.status_code == CIM_ERR_ACCESS_DENIED
    path = subscribe(front)
    assert [s.path for s in front.enumerate_instances(
        INTEROP, "CIM_IndicationSubscription")] == [path]
    with pytest.raises(CIMError) as refused:
        front.delete_instance(INTEROP, path, caller=READER)
    assert refused.value.status_code == CIM_ERR_ACCESS_DENIED


@pytest.mark.parametrize(("instance", "status", "named"), [
    pytest.param(filter_instance("SELECT * FROM LMI_MountedFileSystem"),
                 CIM_ERR_INVALID_PARAMETER, "LMI_MountedFileSystem is no indication class",
                 id="not-an-indication"),
    pytest.param(filter_instance("SELECT * FROM CIM_InstCreation WHERE Nope = 1"),
                 15, "has no property 'Nope'", id="bad-property"),
    pytest.param(filter_instance(QueryLanguage="XQuery"), 14, "'XQuery'", id="language"),
    pytest.param(filter_instance(SourceNamespaces=["root/elsewhere"]),
                 CIM_ERR_INVALID_PARAMETER, "'root/elsewhere' is not served",
                 id="namespace"),
    pytest.param(destination("ftp://listener"), CIM_ERR_INVALID_PARAMETER,
                 "'ftp://listener' must be an http or https URL", id="scheme"),
    pytest.param(destination("http://listener:99999"), CIM_ERR_INVALID_PARAMETER,
                 "'http://listener:99999' is no URL", id="port"),
    pytest.param(destination(Protocol=Uint16(3)), CIM_ERR_INVALID_PARAMETER,
                 "Protocol 3 is not supported", id="protocol"),
    pytest.param(CIMInstance("CIM_IndicationFilter", properties={"Name": "x", "Flavour": "y"}),
                 CIM_ERR_INVALID_PARAMETER, "no property 'Flavour'", id="unknown-property"),
])
def test_a_bad_subscription_part_is_refused_naming_the_value(
        front: InteropBroker, instance: CIMInstance, status: int, named: str) -> None:
    with pytest.raises(CIMError) as refused:
        front.create_instance(INTEROP, instance, caller=ADMIN)
    assert refused.value.status_code == status
    assert named in refused.value.status_description


def test_a_subscription_needs_what_it_names_and_holds_it(front: InteropBroker) -> None:
    found = front.create_instance(INTEROP, filter_instance(), caller=ADMIN)
    missing = CIMInstanceName("CIM_ListenerDestinationCIMXML", {
        "SystemCreationClassName": "CIM_ComputerSystem", "SystemName": "host.example",
        "CreationClassName": "CIM_ListenerDestinationCIMXML", "Name": "nobody"},
        namespace=INTEROP)
    with pytest.raises(CIMError) as refused:
        front.create_instance(INTEROP, CIMInstance("CIM_IndicationSubscription", properties={
            "Filter": found, "Handler": missing}), caller=ADMIN)
    assert refused.value.status_code == CIM_ERR_NOT_FOUND and "nobody" in str(refused.value)
    path = subscribe(front, filter_name="f2", Name="d2")
    with pytest.raises(CIMError) as refused:
        front.delete_instance(INTEROP, path["Filter"], caller=ADMIN)
    assert refused.value.status_code == CIM_ERR_FAILED
    assert "delete the subscription first" in refused.value.status_description
    with pytest.raises(CIMError) as refused:
        front.create_instance(INTEROP, CIMInstance("CIM_ObjectManager"), caller=ADMIN)
    assert refused.value.status_code == CIM_ERR_NOT_SUPPORTED


def test_permanent_subscriptions_survive_a_restart_and_transient_ones_do_not(
        fake_world: CimWorld, tmp_path: Path) -> None:
    front, service = interop(fake_world, tmp_path)
    kept = subscribe(front)
    transient = front.create_instance(
        INTEROP, destination(Name="t", PersistenceType=Uint16(3)), caller=ADMIN)
    front.create_instance(INTEROP, CIMInstance("CIM_IndicationSubscription", properties={
        "Filter": kept["Filter"], "Handler": transient}), caller=ADMIN)
    assert len(list(front.enumerate_instances(INTEROP, "CIM_IndicationSubscription"))) == 2
    service.close()
    fake_world.close()  # the engine too: the next one takes its state directory
    again, service = interop(fake_world, tmp_path)
    try:
        [subscription] = again.enumerate_instances(INTEROP, "CIM_IndicationSubscription")
        assert subscription["Handler"]["Name"] == "d"
        assert [d["Name"] for d in again.enumerate_instances(
            INTEROP, "CIM_ListenerDestinationCIMXML")] == ["d"]
        assert (tmp_path / "subscriptions.json").stat().st_mode & 0o777 == 0o600
    finally:
        service.close()
