"""Readers never wait for a writer: a mount(8) helper can take minutes (an NFS server
that does not answer), and the first build's status and enumerations waited behind it
on the engine lock, stalling every worker of the server."""

from __future__ import annotations

import threading
from typing import Any

from lmi_mount.linux import mountapi
from lmi_mount.mounts.options import parse_options
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


def test_a_point_read_shows_what_the_whole_state_shows(world: World) -> None:
    # GetInstance and a method's Mount reference read one mount point
    # (MountManager.status_at); enumerations read them all (state). Same answer.
    data, bind, scratch, only_fstab = (world.dir(name) for name in
                                       ("data", "bind", "scratch", "only-fstab"))
    with world.manager() as engine:
        engine.acquire(MountSpec("tmpfs", data, "tmpfs"), "a")
        engine.acquire(MountSpec(data, bind, None), "a")
        engine.create(MountSpec("tmpfs", scratch, "tmpfs", parse_options("noexec")),
                      persist=True, holder="a")
        engine.modify(scratch, parse_options("exec"))  # drift from its line
        engine.create(MountSpec("tmpfs", only_fstab, "tmpfs"), current=False, persist=True)
        statuses = engine.state().statuses
        assert {s.target for s in statuses} >= {data, bind, scratch, only_fstab}
        for status in statuses:
            assert engine.status_at(status.target) == status, status.target
        assert engine.status_at(world.dir("nothing")) is None
        assert engine.status_at(data + "/") is None, "state() knows no other spelling"
        for target in (bind, data, scratch):
            engine.delete(target, persist=target == scratch, holder="a")


def test_the_holder_record_at_a_mount_point_is_the_one_the_point_read_shows(
        world: World) -> None:
    # A method's Mount reference to a held mount is checked with held_at (one
    # mount looked at), not the table: it must agree with status_at, also
    # where someone mounted over a held mount by hand.
    data, bind, covered, nothing = (world.dir(name) for name in
                                    ("data", "bind", "covered", "nothing"))
    with world.manager() as engine:
        engine.acquire(MountSpec("tmpfs", data, "tmpfs"), "a")
        engine.acquire(MountSpec(data, bind, None), "a")
        engine.acquire(MountSpec("tmpfs", covered, "tmpfs"), "a")
        engine.kernel.mount("by-hand", covered, "tmpfs", 0)
        try:
            for target in (data, bind, covered, nothing):
                status = engine.status_at(target)
                assert engine.held_at(target) == (status.held if status else None), target
            held = engine.held_at(bind + "/")  # another spelling of the same mount point
            assert held is not None and held.holders == ("a",) and held.source == data
            assert engine.held_at(covered) is None  # the mount on top is nobody's
            if world.kind == "real" and mountapi.has_mount_ids(unique=True) and \
                    mountapi.available(mountapi.SYS_STATMOUNT):
                reads = []
                kernel: Any = engine.kernel
                read = kernel.read_mountinfo
                kernel.read_mountinfo = lambda: reads.append(1) or read()
                assert engine.held_at(data) is not None
                kernel.read_mountinfo = read
                assert reads == [], "held_at read the whole mount table"
        finally:
            engine.kernel.unmount(covered)
        for target in (bind, data, covered):
            engine.release(target, "a")
