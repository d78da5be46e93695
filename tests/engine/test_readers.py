"""Readers never wait for a writer: a mount(8) helper can take minutes (an NFS server
that does not answer), and the first build's status and enumerations waited behind it
on the engine lock, stalling every worker of the server."""

from __future__ import annotations

import ctypes
import errno
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from lmi_mount.mounts.options import parse_options
from lmi_mount.mounts.plan import MountSpec
from tests.engine.conftest import World
from tests.support.skips import requires_root


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


def test_a_read_after_each_change_shows_what_a_point_read_makes_anew(world: World) -> None:
    # state() keeps the statuses whose record, line, holders and spec are the
    # same objects as at its last read (on a host with thousands of mounts a
    # change makes one status); status_at makes its status anew. After each
    # change, read both.
    data, bind, other = (world.dir(name) for name in ("data", "bind", "other"))
    with world.manager() as engine:
        steps = [
            lambda: engine.acquire(MountSpec("tmpfs", data, "tmpfs"), "a"),
            lambda: engine.acquire(MountSpec(data, bind, None), "a"),
            lambda: engine.acquire(MountSpec("tmpfs", data, "tmpfs"), "b"),  # holders only
            lambda: engine.create(MountSpec("tmpfs", other, "tmpfs", parse_options("noexec")),
                                  persist=True, holder="a"),
            lambda: engine.modify(other, parse_options("exec")),  # its line's drift
            lambda: engine.release(data, "b"),
            # The bind's origin goes: its spec changes, its mountinfo line does not.
            lambda: engine.release(data, "a"),
        ]
        bind_specs = []
        for step in steps:
            step()
            statuses = engine.state().statuses
            for status in statuses:
                assert engine.status_at(status.target) == status, status.target
            bind_specs.append(next((s.spec for s in statuses if s.target == bind), None))
        assert bind_specs[-1] != bind_specs[-2], "the test no longer changes a spec alone"
        engine.release(bind, "a")
        engine.delete(other, persist=True, holder="a")


def test_a_state_read_asks_nothing_of_the_kernel_per_held_mount(world: World) -> None:
    # Whether a held mount is still the one its holders hold was one
    # statmount(2) per held mount per read: 53 ms a read beside 2,000 held
    # mounts. One listing of the live mounts' unique ids answers them all.
    targets = [world.dir(f"m{n}") for n in range(20)]
    with world.manager() as engine:
        for target in targets:
            engine.acquire(MountSpec("tmpfs", target, "tmpfs"), "a")
        asked: list[int] = []
        kernel: Any = engine.kernel
        is_mount = kernel.is_mount

        def counted(mount_id: int, unique_id: int) -> bool | None:
            asked.append(unique_id)
            return bool(is_mount(mount_id, unique_id))

        kernel.is_mount = counted
        try:
            engine.release(targets[0], "a")  # a change: the next read is a new one
            statuses = {s.target: s for s in engine.state().statuses}
        finally:
            kernel.is_mount = is_mount
        assert asked == []
        assert all(statuses[t].held is not None for t in targets[1:])
        assert targets[0] not in statuses
        for target in targets[1:]:
            engine.release(target, "a")


@pytest.mark.root
@pytest.mark.private_namespace
@requires_root
def test_reads_never_keep_an_administrator_s_umount_busy(tmp_path: Path) -> None:
    # A path lookup holds the mount it passes for an instant, and umount(2)
    # then fails with EBUSY. Reads (GetInstance, a method's Mount reference,
    # enumerations) run beside anything, so they take no path to a mount
    # point: a reference check that opened the mount point made an
    # administrator's umount fail 10 to 18 times in 300 (outside review).
    world = World("real", tmp_path)
    held, by_hand = world.dir("held"), world.dir("by-hand")
    libc = ctypes.CDLL(None, use_errno=True)
    with world.manager() as engine:
        engine.acquire(MountSpec("tmpfs", held, "tmpfs"), "a")
        stop = threading.Event()
        reads = [0]

        def reader() -> None:
            while not stop.is_set():
                engine.status_at(by_hand)
                engine.status_at(held)
                reads[0] += 1

        thread = threading.Thread(target=reader, daemon=True)
        thread.start()
        busy = 0
        try:
            for _ in range(300):
                if libc.mount(b"by-hand", os.fsencode(by_hand), b"tmpfs", 0, None) != 0:
                    raise OSError(ctypes.get_errno(), "mount")
                while libc.umount2(os.fsencode(by_hand), 0) != 0:
                    if ctypes.get_errno() != errno.EBUSY:
                        raise OSError(ctypes.get_errno(), "umount2")
                    busy += 1
        finally:
            stop.set()
            thread.join(10)
        assert reads[0] > 0
        assert busy == 0, f"{busy} umounts found the mount busy beside {reads[0]} reads"
        engine.release(held, "a")


def test_a_held_mount_is_proved_live_by_one_question_to_the_kernel(world: World) -> None:
    # A method's reference to a held mount (DeleteMount, ModifyMount) is
    # checked by the mount's unique id. That was asked twice, one statmount(2)
    # to learn that it lives and another for its record, on every call.
    target = world.dir("m")
    with world.manager() as engine:
        engine.acquire(MountSpec("tmpfs", target, "tmpfs"), "a")
        kernel: Any = engine.kernel
        asked: list[str] = []
        originals = {name: getattr(kernel, name) for name in ("is_mount", "find_mount")}

        def counted(name: str) -> Any:
            def ask(*args: Any) -> Any:
                asked.append(name)
                return originals[name](*args)
            return ask

        for name in originals:
            setattr(kernel, name, counted(name))
        try:
            assert engine.held_live(target) is not None
            assert len(asked) == 1, asked
            engine.release(target, "a")
            asked.clear()
            assert engine.held_live(target) is None
            assert len(asked) <= 1, asked
        finally:
            for name, original in originals.items():
                setattr(kernel, name, original)
