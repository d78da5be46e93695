"""Readers never wait for a writer: a mount(8) helper can take minutes (an NFS server
that does not answer), and the first build's status and enumerations waited behind it
on the engine lock, stalling every worker of the server."""

from __future__ import annotations

import threading
from typing import Any

from lmi_mount.mounts.plan import MountSpec
from tests.engine.conftest import World


def test_status_and_holders_answer_while_a_mount_hangs(world: World) -> None:
    first, slow = world.dir("first"), world.dir("slow")
    with world.manager() as engine:
        engine.acquire(MountSpec("tmpfs", first, "tmpfs"), "a")
        kernel: Any = engine.kernel
        mount = kernel.mount
        entered, release = threading.Event(), threading.Event()

        def hanging_mount(*args: Any, **kwargs: Any) -> Any:
            entered.set()
            release.wait(30)  # a helper waiting for its server
            return mount(*args, **kwargs)

        kernel.mount = hanging_mount
        writer = threading.Thread(
            target=lambda: engine.acquire(MountSpec("tmpfs", slow, "tmpfs"), "b"))
        writer.start()
        try:
            assert entered.wait(10)
            answers: list[object] = []
            reader = threading.Thread(target=lambda: answers.extend(
                [engine.status(), engine.holders(), engine.held(first)]))
            reader.start()
            reader.join(timeout=10)
            assert not reader.is_alive(), "a reader waited for the hanging mount"
            statuses, holders, held = answers
            assert any(status.target == first for status in statuses)  # type: ignore[attr-defined]
            assert held is not None and held.holders == ("a",)
            assert [h.target for h in holders] == [first]  # b's is not done yet
        finally:
            release.set()
            writer.join(timeout=30)
        assert engine.held(slow) is not None
        kernel.mount = mount
        engine.release(first, "a")
        engine.release(slow, "b")
