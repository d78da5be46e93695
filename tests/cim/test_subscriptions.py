"""Subscriptions in root/interop against a real broker on the fake kernel: who may
subscribe, what is refused (named), and what a restart keeps."""

from __future__ import annotations

import json
import os
import time
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
    Uint64,
)

from lmi_mount.cim.broker import Caller
from lmi_mount.cim.events import IndicationFactory
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
                                 subscriptions_file=state / "subscriptions.json",
                                 system_name="host.example")
    front = InteropBroker(broker, system_name="host.example", version="1", classes=classes,
                          indications=service)
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
    subscription = subscription_to(front, caller, filter_name, **destination_values)
    return front.create_instance(INTEROP, subscription, caller=caller)


def subscription_to(front: InteropBroker, caller: Caller = ADMIN, filter_name: str = "f",
                    more: dict[str, Any] | None = None, **destination_values: Any
                    ) -> CIMInstance:
    """A subscription (with ``more`` of its properties) to a filter and a
    destination made for it, not yet made itself."""
    found = front.create_instance(INTEROP, filter_instance(Name=filter_name), caller=caller)
    handler = front.create_instance(INTEROP, destination(**destination_values), caller=caller)
    return CIMInstance("CIM_IndicationSubscription",
                       properties={"Filter": found, "Handler": handler, **(more or {})})


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
    # root/interop was said to be read-only, though subscriptions are made there.
    pytest.param(CIMInstance("CIM_ListenerDestination", properties={"Destination": "http://l"}),
                 CIM_ERR_NOT_SUPPORTED, "CIM_ListenerDestination is abstract: create a "
                 "CIM_ListenerDestinationCIMXML", id="abstract-destination"),
    pytest.param(CIMInstance("CIM_ManagedElement", properties={"Caption": "x"}),
                 CIM_ERR_NOT_SUPPORTED, "only CIM_IndicationFilter, "
                 "CIM_ListenerDestinationCIMXML and CIM_IndicationSubscription instances are "
                 "created in root/interop, not CIM_ManagedElement", id="abstract-of-several"),
    pytest.param(CIMInstance("CIM_Namespace", properties={"Name": "root/x"}),
                 CIM_ERR_NOT_SUPPORTED, "only CIM_IndicationFilter, "
                 "CIM_ListenerDestinationCIMXML and CIM_IndicationSubscription instances are "
                 "created in root/interop, not CIM_Namespace", id="read-only-class"),
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


@pytest.mark.parametrize(("instance", "status", "named"), [
    pytest.param(filter_instance("SELECT * FROM CIM_Nope"), 15, "'CIM_Nope' does not exist",
                 id="unknown-class"),
    pytest.param(filter_instance("SELECT * FROM CIM_InstCreation WHERE SourceInstance ISA "
                                 "LMI_Nothing"), 15, "'LMI_Nothing', which does not exist",
                 id="isa-unknown-class"),
    # A review: after an ISA, the embedded instance's class is known; these
    # could never hold and their subscriptions silently got nothing.
    pytest.param(filter_instance("SELECT * FROM CIM_InstCreation WHERE SourceInstance ISA "
                                 "LMI_MountedFileSystem AND SourceInstance.ReferenceCount = '1'"),
                 15, "cannot compare a number with a string", id="embedded-type"),
    pytest.param(filter_instance("SELECT * FROM CIM_InstCreation WHERE SourceInstance ISA "
                                 "LMI_MountedFileSystem AND SourceInstance.Holders = 'alice'"),
                 15, "array property 'SourceInstance.Holders'", id="embedded-array"),
    pytest.param(destination("http://user:secret@127.0.0.1:5990"), CIM_ERR_INVALID_PARAMETER,
                 "must not hold credentials", id="credentials-in-url"),
    # An outside review: port 0 went to port 80; a target or host that no
    # request can carry failed every send, later, with a traceback per loss.
    pytest.param(destination("http://127.0.0.1:0/"), CIM_ERR_INVALID_PARAMETER,
                 "'http://127.0.0.1:0/' names port 0", id="port-0"),
    pytest.param(destination("http://127.0.0.1:5990/a b"), CIM_ERR_INVALID_PARAMETER,
                 "white space or control characters", id="space-in-path"),
    pytest.param(destination("http://127.0.0.1:5990/a\r\nX-Evil: 1"),
                 CIM_ERR_INVALID_PARAMETER, "white space or control characters",
                 id="crlf-in-path"),
    pytest.param(destination("http://a..b:5990/"), CIM_ERR_INVALID_PARAMETER,
                 "host 'a..b' is no host name", id="empty-label"),
    pytest.param(destination(f"http://{'a' * 64}.example:5990/"), CIM_ERR_INVALID_PARAMETER,
                 "is no host name", id="long-label"),
    pytest.param(destination(PersistenceType=Uint16(4)), CIM_ERR_INVALID_PARAMETER,
                 "PersistenceType must be 2 (Permanent) or 3 (Transient), not 4",
                 id="persistence-4"),
    pytest.param(destination(PersistenceType=Uint16(1)), CIM_ERR_INVALID_PARAMETER,
                 "not 1", id="persistence-other"),
    pytest.param(destination(Name="d" * 5000), CIM_ERR_INVALID_PARAMETER,
                 "Name is 5000 characters long; at most 1024", id="long-name"),
    pytest.param(destination("http://127.0.0.1:5990/" + "p" * 5000), CIM_ERR_INVALID_PARAMETER,
                 "Destination is 5022 characters long; at most 1024", id="long-url"),
    pytest.param(filter_instance(SourceNamespaces=["root/cimv2"] * 100),
                 CIM_ERR_INVALID_PARAMETER, "SourceNamespaces has 100 elements; at most 16",
                 id="many-namespaces"),
])
def test_what_could_never_work_is_refused_when_made(
        front: InteropBroker, instance: CIMInstance, status: int, named: str) -> None:
    # The first build answered the unknown class with "internal error: KeyError" and
    # took the others, which then matched nothing or showed a password to readers.
    with pytest.raises(CIMError) as refused:
        front.create_instance(INTEROP, instance, caller=ADMIN)
    assert refused.value.status_code == status
    assert named in refused.value.status_description
    assert "secret" not in refused.value.status_description


def test_a_subscription_is_made_enabled_or_disabled_only(front: InteropBroker) -> None:
    # SubscriptionState 7 was taken on CreateInstance, and the subscription
    # then silently had no route (an outside review).
    subscription = subscription_to(front, more={"SubscriptionState": Uint16(7)})
    with pytest.raises(CIMError) as refused:
        front.create_instance(INTEROP, subscription, caller=ADMIN)
    assert refused.value.status_code == CIM_ERR_INVALID_PARAMETER
    assert "SubscriptionState must be 2 (Enabled) or 4 (Disabled), not 7" in str(refused.value)
    assert list(front.enumerate_instances(INTEROP, "CIM_IndicationSubscription")) == []


def test_a_subscription_that_would_end_by_itself_is_refused(front: InteropBroker) -> None:
    # A review: SubscriptionDuration was taken and echoed back, then ignored:
    # indications went on after it (the schema says they MUST NOT). DSP1054
    # lets a service refuse what it does not support.
    subscription = subscription_to(front, more={"SubscriptionDuration": Uint64(1)})
    with pytest.raises(CIMError) as refused:
        front.create_instance(INTEROP, subscription, caller=ADMIN)
    assert refused.value.status_code == CIM_ERR_NOT_SUPPORTED
    assert "SubscriptionDuration" in str(refused.value)
    assert list(front.enumerate_instances(INTEROP, "CIM_IndicationSubscription")) == []
    del subscription["SubscriptionDuration"]  # none: until it is deleted
    front.create_instance(INTEROP, subscription, caller=ADMIN)


def test_the_indication_service_leads_to_its_capabilities(front: InteropBroker) -> None:
    # DSP1054: a console finds MaxActiveSubscriptions and the like from the
    # service by CIM_ElementCapabilities, which root/interop did not have (a review).
    [service] = front.enumerate_instance_names(INTEROP, "CIM_IndicationService")
    [capabilities] = front.associators(INTEROP, service, assoc_class="CIM_ElementCapabilities",
                                       result_class="CIM_IndicationServiceCapabilities")
    assert capabilities["SubscriptionsPersisted"] is True
    [link] = front.enumerate_instances(INTEROP, "CIM_ElementCapabilities")
    assert link["ManagedElement"].classname == "CIM_IndicationService"
    assert front.get_instance(INTEROP, link.path)["Capabilities"].classname == (
        "CIM_IndicationServiceCapabilities")
    assert front.get_class(INTEROP, "CIM_ElementCapabilities").classname == (
        "CIM_ElementCapabilities")


def test_keys_a_client_leaves_out_are_the_service_s(front: InteropBroker) -> None:
    made = CIMInstance("CIM_IndicationFilter", properties={
        "Name": "bare", "Query": "SELECT * FROM CIM_InstCreation"})
    path = front.create_instance(INTEROP, made, caller=ADMIN)
    assert path["SystemName"] == "host.example"
    assert path["SystemCreationClassName"] == "CIM_ComputerSystem"


def test_a_subscription_is_disabled_and_enabled_by_its_state(
        front: InteropBroker) -> None:
    path = subscribe(front)
    subscription = front.get_instance(INTEROP, path)
    subscription["SubscriptionState"] = Uint16(4)
    front.modify_instance(INTEROP, subscription, property_list=["SubscriptionState"],
                          caller=ADMIN)
    assert front.subscriptions.routes == ()
    subscription["SubscriptionState"] = Uint16(2)
    front.modify_instance(INTEROP, subscription, property_list=["SubscriptionState"],
                          caller=ADMIN)
    assert len(front.subscriptions.routes) == 1
    subscription["SubscriptionState"] = Uint16(9)
    with pytest.raises(CIMError) as refused:
        front.modify_instance(INTEROP, subscription, caller=ADMIN)
    assert "SubscriptionState must be 2 (Enabled) or 4 (Disabled), not 9" in str(refused.value)
    with pytest.raises(CIMError) as refused:
        front.modify_instance(INTEROP, subscription, caller=READER)
    assert refused.value.status_code == CIM_ERR_ACCESS_DENIED


def test_a_kept_file_with_a_bad_record_keeps_the_others_and_itself(
        fake_world: CimWorld, tmp_path: Path) -> None:
    front, service = interop(fake_world, tmp_path)
    subscribe(front)
    subscribe(front, filter_name="f2", Name="d2")
    service.close()
    fake_world.close()
    kept = tmp_path / "subscriptions.json"
    records = json.loads(kept.read_text())
    [bad] = [r for r in records if r["properties"].get("Name") == "f2"]
    bad["properties"]["Query"] = "SELECT * FROM LMI_MountedFileSystem"
    kept.write_text(json.dumps(records))
    os.chmod(kept, 0o600)
    again, service = interop(fake_world, tmp_path)
    try:
        names = sorted(d["Name"] for d in again.enumerate_instances(
            INTEROP, "CIM_ListenerDestinationCIMXML"))
        assert names == ["d", "d2"]
        [subscription] = again.enumerate_instances(INTEROP, "CIM_IndicationSubscription")
        assert subscription["Filter"]["Name"] == "f"
        asides = list(tmp_path.glob("subscriptions.json.rejected-*"))
        assert len(asides) == 1, asides
        assert "LMI_MountedFileSystem" in asides[0].read_text()
    finally:
        service.close()


def test_subscriptions_kept_before_the_limits_of_new_ones_survive_a_restart(
        fake_world: CimWorld, tmp_path: Path) -> None:
    # The limits a new subscription meets (string sizes, PersistenceType's
    # ValueMap) were applied to the kept file too: a restart after the
    # upgrade dropped what an earlier version had taken (an outside review).
    front, service = interop(fake_world, tmp_path)
    subscribe(front)
    service.close()
    fake_world.close()
    kept = tmp_path / "subscriptions.json"
    records = json.loads(kept.read_text())
    for record in records:
        if record["class"] == "CIM_IndicationFilter":
            record["properties"]["Description"] = "x" * 5000
        if record["class"] == "CIM_ListenerDestinationCIMXML":
            record["properties"]["PersistenceType"] = 4
        if record["class"] == "CIM_IndicationSubscription":
            record["properties"]["SubscriptionState"] = 3
    kept.write_text(json.dumps(records))
    os.chmod(kept, 0o600)
    again, service = interop(fake_world, tmp_path)
    try:
        [subscription] = again.enumerate_instances(INTEROP, "CIM_IndicationSubscription")
        assert again.subscriptions.routes == ()  # state 3 sends nothing, as before
        # Sent back unchanged (a console's edit of another property) it is taken.
        again.modify_instance(INTEROP, subscription, caller=ADMIN)
        subscription["SubscriptionState"] = Uint16(2)
        again.modify_instance(INTEROP, subscription, caller=ADMIN)
        assert len(again.subscriptions.routes) == 1
        assert list(tmp_path.glob("subscriptions.json.rejected-*")) == []
    finally:
        service.close()


def test_a_planted_link_is_neither_read_nor_overwritten(
        fake_world: CimWorld, tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (tmp_path / "subscriptions.json").symlink_to(victim)
    front, service = interop(fake_world, tmp_path)
    try:
        subscribe(front)
    finally:
        service.close()
    assert victim.read_text() == "precious\n"


def test_the_watcher_sleeps_while_nobody_subscribes(
        fake_world: CimWorld, tmp_path: Path) -> None:
    """Changes nobody is told of cost nothing: the first build woke, settled and
    waited for quiet on every mount change and fstab write with no subscriber."""
    front, service = interop(fake_world, tmp_path)
    woken: list[float] = []

    def counting_quiet(timeout: float) -> bool:
        woken.append(timeout)
        return True

    service._wait_quiet = counting_quiet  # type: ignore[method-assign]
    service.start()
    try:
        fstab = Path(service._fstab_path)
        for n in range(5):
            fstab.write_text(f"tmpfs /mnt/{n} tmpfs defaults 0 0\n")
        service.poke()  # after each call the server pokes: nobody listens, nothing wakes
        time.sleep(0.3)
        assert woken == []
        subscribe(front)
        fstab.write_text("tmpfs /mnt/x tmpfs defaults 0 0\n")
        deadline = time.monotonic() + 10
        while not woken and time.monotonic() < deadline:
            time.sleep(0.02)
        assert woken, "a subscriber's change never woke the watcher"
    finally:
        service.close()


def test_an_indication_carries_its_source_without_a_path_and_leaves_the_model_s_alone(
        fake_world: CimWorld) -> None:
    broker = fake_world.connect().broker
    factory = IndicationFactory(broker.model, broker.context.projector)
    path = CIMInstanceName("LMI_MountedFileSystem", namespace="root/cimv2", keybindings={
        "FileSystemSpec": "tmpfs", "MountPointPath": "/mnt/a"})
    before = CIMInstance("LMI_MountedFileSystem", path=path,
                         properties={"MountPointPath": "/mnt/a", "ReferenceCount": Uint16(1)})
    after = CIMInstance("LMI_MountedFileSystem", path=path,
                        properties={"MountPointPath": "/mnt/a", "ReferenceCount": Uint16(2)})
    modification = factory.modification(after, before)
    assert modification["SourceInstance"].path is None
    assert modification["PreviousInstance"].path is None
    assert (before.path, after.path) == (path, path)  # the model's instances keep theirs
    assert modification["SourceInstance"]["ReferenceCount"] == 2
    assert modification["PreviousInstance"]["ReferenceCount"] == 1
    assert modification["ChangedPropertyNames"] == ["ReferenceCount"]
    assert modification["SourceInstanceModelPath"].startswith(
        "root/cimv2:LMI_MountedFileSystem.")
