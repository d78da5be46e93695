"""The indication watcher's sleep and wake-up around the first subscription, on a
stand-in model (no kernel): what a new subscriber is told, and how soon."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pywbem import CIMInstance, CIMInstanceName

from lmi_mount.cim import events
from lmi_mount.cim.events import ModelRead
from lmi_mount.server.indications import IndicationService
from lmi_mount.server.subscriptions import destination_key


class Factory:
    """Indications that name their source's key only."""

    def creation(self, source: CIMInstance) -> CIMInstance:
        return CIMInstance("CIM_InstCreation", {"Source": source["K"]})

    def deletion(self, source: CIMInstance) -> CIMInstance:
        return CIMInstance("CIM_InstDeletion", {"Source": source["K"]})

    def modification(self, source: CIMInstance, previous: CIMInstance) -> CIMInstance:
        return CIMInstance("CIM_InstModification", {"Source": source["K"]})

    def loss_alert(self, lost: int, destination: str, filter_name: str) -> CIMInstance:
        return CIMInstance("CIM_AlertIndication", {})


def route(name: str) -> Any:
    destination = CIMInstance(
        "CIM_ListenerDestinationCIMXML", {"Name": name, "Destination": "http://127.0.0.1:9/"},
        path=CIMInstanceName("CIM_ListenerDestinationCIMXML", {"Name": name}))
    return SimpleNamespace(destination=destination, destination_id=destination_key(destination))


def model_with(*names: str) -> ModelRead:
    instances = {}
    for name in names:
        instance = CIMInstance("X", {"K": name}, path=CIMInstanceName("X", {"K": name}))
        instances[events.instance_key(instance.path)] = instance
    return ModelRead(instances, {})


class World:
    def __init__(self, tmp_path: Path) -> None:
        self.model = model_with()
        self.store = SimpleNamespace(routes=(), on_change=None)
        self.published: list[tuple[str, str]] = []
        (tmp_path / "fstab").write_text("")
        self.service = IndicationService(
            self.store, Factory(),  # type: ignore[arg-type]
            read_model=lambda: self.model, is_subclass=lambda a, b: True,
            namespace="root/cimv2", fstab_path=tmp_path / "fstab")
        self.service.publish = self._publish  # type: ignore[method-assign]

    def _publish(self, found: Any, namespace: str | None = None) -> None:
        self.published.extend((i.classname, i["Source"]) for i in found)

    def subscribe(self, *names: str) -> None:
        assert self.store.on_change is not None
        self.store.on_change(tuple(route(n) for n in names))

    def until(self, condition: Callable[[], bool], seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.005)
        return condition()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    world = World(tmp_path)
    world.service.start()
    yield world
    world.service.close()


def test_a_change_right_after_the_first_subscription_is_reported_at_once(
        world: World) -> None:
    # The first build drained the subscription's wake-up and the call's together
    # while it slept, then waited for the 5 s resync to read.
    time.sleep(0.05)
    for attempt in range(5):
        world.subscribe("a")
        world.model = model_with(f"x{attempt}")
        world.service.poke()  # the subscriber's next call changed holders
        assert world.until(lambda: world.published, 1.0), f"attempt {attempt}: not within 1 s"
        world.published.clear()
        world.subscribe()
        world.model = model_with()
        time.sleep(0.05)


def test_a_new_subscriber_is_not_told_of_changes_from_before_it_subscribed(
        world: World) -> None:
    world.subscribe("a")
    world.model = model_with("x")
    world.service.poke()
    assert world.until(lambda: world.published == [("CIM_InstCreation", "x")], 2.0)
    world.subscribe()  # the last subscription goes
    world.model = model_with()  # x goes by a call nobody listens to: no wake-up
    world.service.poke()
    world.subscribe("b")  # b's baseline: no x
    world.service.poke()
    time.sleep(0.3)
    assert world.published == [("CIM_InstCreation", "x")], "b was told of x's deletion"


def test_a_first_subscription_whose_baseline_cannot_be_read_still_delivers(
        world: World) -> None:
    # The store has kept the subscription when its routes are set: the first
    # build let the failed read end there, and the subscription, kept across
    # restarts, delivered nothing until the routes changed again.
    def failing() -> ModelRead:
        raise OSError("mountinfo cannot be read just now")

    world.service._read_model = failing  # type: ignore[method-assign]
    world.subscribe("a")
    world.service._read_model = lambda: world.model  # type: ignore[method-assign]
    assert world.service._routes, "the subscription got no routes"
    time.sleep(0.1)  # the watcher's first read is its baseline
    world.model = model_with("x")
    world.service.poke()
    assert world.until(lambda: world.published == [("CIM_InstCreation", "x")], 2.0)
