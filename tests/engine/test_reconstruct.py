"""Restart and crash: the holders survive a restart and a kill -9 at any step (WI6),
and the refcount invariant holds under concurrent acquire/release (WI2)."""

from __future__ import annotations

import json
import random
import shutil
import threading
from pathlib import Path

import pytest

from lmi_mount.engine import MountManager
from lmi_mount.linux.fake import FakeKernel
from lmi_mount.mounts.errors import MountError
from lmi_mount.mounts.mountinfo import MountTable, parse_mountinfo
from lmi_mount.mounts.options import parse_options
from lmi_mount.mounts.plan import MountSpec
from tests.engine.conftest import World, crash_points, die_at, fresh_dir
from tests.support.namespace import private_namespace


def tmpfs(world: World, name: str = "mnt") -> MountSpec:
    return MountSpec("tmpfs", world.dir(name), "tmpfs", parse_options("size=1m"))


def test_restart_restores_holders(world: World) -> None:
    spec = tmpfs(world)
    with world.manager() as first:
        first.acquire(spec, "a")
        first.acquire(spec, "b")
    with world.manager() as second:
        held = second.held(spec.target)
        assert held is not None and held.holders == ("a", "b") and held.made_by_us
        second.release(spec.target, "a")
        second.release(spec.target, "b")
        assert world.mounts_at(spec.target) == []


def _journal_records(world: World) -> list[str]:
    """The "op" of every record in the state directory's journal files."""
    ops = []
    for path in sorted(world.state.glob("holders.journal.*")):
        text = path.read_bytes().split(b"\0", 1)[0].decode("ascii")
        ops += [json.loads(line)["op"] for line in text.splitlines() if line]
    return ops


def test_a_holder_joining_or_leaving_a_shared_mount_is_one_record(world: World) -> None:
    # A plan of one holder step needs no begin and end around its record: the
    # line is whole or absent. The kill -9 test of release-one-of-two judges it.
    spec = tmpfs(world)
    with world.manager() as manager:
        manager.acquire(spec, "a")
        before = _journal_records(world)
        manager.acquire(spec, "b")
        manager.release(spec.target, "b")
        assert _journal_records(world)[len(before):] == ["set", "set"]
    with world.manager() as again:
        held = again.held(spec.target)
        assert held is not None and held.holders == ("a",)
        again.release(spec.target, "a")
        assert world.mounts_at(spec.target) == []


def test_holder_changes_alone_leave_a_begun_transaction_its_room(world: World) -> None:
    # A holder joining a shared mount is one record, written while a request on
    # another mount point may have begun: it must not spend the room that one
    # reserved for its records (a review's journal filled up under a release,
    # which then failed after its unmount, with its holders still recorded).
    shared, other = tmpfs(world, "shared"), tmpfs(world, "other")
    begun, resume = threading.Event(), threading.Event()

    def pause(point: str) -> None:
        if threading.current_thread().name == "releasing" and point == "transaction begun":
            begun.set()
            resume.wait(10)

    with world.manager(journal_capacity=32768, hold_seconds=0, crash=pause) as manager:
        manager.acquire(shared, "first")
        manager.acquire(other, "last")
        outcome: list[object] = []
        releasing = threading.Thread(
            target=lambda: outcome.append(manager.release(other.target, "last")),
            name="releasing")
        releasing.start()
        assert begun.wait(10)
        joined = 0
        with pytest.raises(MountError):
            for number in range(1000):
                manager.acquire(shared, f"holder-{number:04}-" + "x" * 40)
                joined += 1
        resume.set()
        releasing.join(10)
        assert outcome and world.mounts_at(other.target) == []
        assert manager.held(other.target) is None
        held = manager.held(shared.target)
        assert held is not None and len(held.holders) == joined + 1
        manager.check_invariants()


def test_restart_drops_holders_of_vanished_mounts(world: World) -> None:
    spec = tmpfs(world)
    with world.manager() as first:
        first.acquire(spec, "a")
    world.kernel.unmount(spec.target)
    with world.manager() as second:
        assert second.holders() == []


def test_restart_drops_holders_of_a_replaced_mount(world: World) -> None:
    spec = tmpfs(world)
    with world.manager() as first:
        first.acquire(spec, "a")
    world.kernel.unmount(spec.target)
    world.kernel.mount("tmpfs", spec.target, "tmpfs", 0, "size=1m")  # same look, new mount id
    with world.manager() as second:
        assert second.holders() == []
        second.acquire(spec, "b")  # shares the foreign mount: it will not unmount it
        second.release(spec.target, "b")
        assert len(world.mounts_at(spec.target)) == 1


def test_restart_starts_the_hold_timer_of_our_mounts_without_holders(world: World) -> None:
    spec = tmpfs(world)
    with world.manager(hold_seconds=60) as first:
        first.acquire(spec, "a")
        first.release(spec.target, "a")
    world.clock.advance(1000)  # the old deadline is not durable: a new hold starts
    with world.manager(hold_seconds=60) as second:
        held = second.held(spec.target)
        assert held is not None and held.release_at == world.clock.now + 60
        world.clock.advance(61)
        assert second.run_due_timers() == [spec.target]


def test_reboot_discards_the_journal(world: World) -> None:
    spec = tmpfs(world)
    with world.manager() as first:
        first.acquire(spec, "a")
    world.boot_id.write_text("boot-2\n")
    with world.manager() as second:
        assert second.holders() == []
        assert len(world.mounts_at(spec.target)) == 1, "a mount is never unmounted on a guess"


def test_a_second_engine_on_the_same_state_dir_is_refused(world: World) -> None:
    with world.manager(), pytest.raises(Exception, match="another lmi-mount engine"):
        world.manager()


# -- kill -9 at every step -----------------------------------------------------------


def _assert_consistent(world: World, target: str) -> None:
    """After a crash: tracked iff mounted; holders only if acknowledged; nothing leaks."""
    with world.manager() as manager:
        mounted = world.mounts_at(target)
        held = manager.held(target)
        assert len(mounted) <= 1, "never stacked"
        if held is None:
            if mounted:
                pytest.fail(f"{target} is mounted but lmi-mount lost track of it")
        else:
            assert mounted and mounted[0].mount_id == held.mount_id
            manager.check_invariants()
            if not held.holders:
                assert held.release_at is not None, "our mount with no holder must be timed"
        for h in list(held.holders if held else ()):
            manager.release(target, h)
        manager.run_due_timers()
        assert world.mounts_at(target) == [], "everything releasable was released"


@private_namespace
def test_kill_9_at_every_step_of_acquire_and_release(tmp_path) -> None:  # type: ignore[no-untyped-def]
    def acquire(manager) -> None:  # type: ignore[no-untyped-def]
        manager.acquire(MountSpec("tmpfs", str(tmp_path / "w" / "mnt"), "tmpfs"), "a")

    def release(manager) -> None:  # type: ignore[no-untyped-def]
        manager.release(str(tmp_path / "w" / "mnt"), "a")

    probe = World("real", fresh_dir(tmp_path / "probe"))
    acquire_points = crash_points(probe, lambda m: acquire_in(m, probe))
    release_points = crash_points(probe, lambda m: m.release(probe.dir("mnt"), "a"))
    assert "transaction begun" in acquire_points and len(release_points) >= 2

    for phase, points in (("acquire", acquire_points), ("release", release_points)):
        for point in points:
            world = World("real", fresh_dir(tmp_path / "w"))
            target = world.dir("mnt")
            if phase == "release":
                with world.manager() as setup:
                    acquire(setup)
                die_at(world, point, release)
            else:
                die_at(world, point, acquire)
            _assert_consistent(world, target)
            world.kernel.unmount(target) if world.mounts_at(target) else None
            shutil.rmtree(world.state)
    shutil.rmtree(probe.state)


@private_namespace
@pytest.mark.parametrize("second", ["recovery mount made, not noted", "recovery mounted again"])
def test_a_recovery_killed_after_it_mounted_again_keeps_the_holders(tmp_path: Path,
                                                                    second: str) -> None:
    # WI6 across two kills (a review): a release killed after its unmount is
    # undone at the next start by mounting again; that recovery killed too,
    # the third start restored alice with the first mount's ids, found no
    # such mount, and forgot her: a live mount nobody held or timed.
    world = World("real", fresh_dir(tmp_path / "w"))
    source, target = world.dir("src"), world.dir("mnt")
    spec = MountSpec(source, target, None, parse_options("bind"))
    with world.manager() as setup:
        setup.create(spec, holder="alice", persist=True)
    line = world.fstab.read_text()
    die_at(world, "after KernelUnmount",
           lambda m: m.delete(target, holder="alice", persist=True))
    die_at(world, second, lambda m: None)  # the recovery of the start
    with world.manager() as manager:
        held = manager.held(target)
        mounted = world.mounts_at(target)
        assert held is not None and held.holders == ("alice",), held
        assert len(mounted) == 1 and mounted[0].mount_id == held.mount_id
        assert world.fstab.read_text() == line
        manager.delete(target, holder="alice", persist=True)
    assert world.mounts_at(target) == [] and target not in world.fstab.read_text()


def acquire_in(manager, world: World) -> None:  # type: ignore[no-untyped-def]
    manager.acquire(tmpfs(world), "a")


# -- threads ------------------------------------------------------------------------


def test_threads_keep_the_refcount_equal_to_the_references(world: World) -> None:
    threads, rounds = (8, 400) if world.kind == "fake" else (8, 150)
    targets = [tmpfs(world, f"m{i}") for i in range(3)]
    with world.manager() as manager:
        held_by: dict[str, dict[str, int]] = {f"t{i}": {} for i in range(threads)}
        errors: list[BaseException] = []

        def worker(name: str, seed: int) -> None:
            rng = random.Random(seed)
            mine = held_by[name]
            try:
                for _ in range(rounds):
                    spec = rng.choice(targets)
                    if mine.get(spec.target) and rng.random() < 0.5:
                        manager.release(spec.target, name)
                        mine[spec.target] -= 1
                    else:
                        manager.acquire(spec, name)
                        mine[spec.target] = mine.get(spec.target, 0) + 1
                    if rng.random() < 0.05:
                        manager.check_invariants()
            except BaseException as exc:  # reported below with its thread
                errors.append(exc)

        pool = [threading.Thread(target=worker, args=(n, i)) for i, n in enumerate(held_by)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
        assert not errors, errors
        manager.check_invariants()
        for spec in targets:
            expected = sum(counts.get(spec.target, 0) for counts in held_by.values())
            held = manager.held(spec.target)
            assert (held.refcount if held else 0) == expected
            assert len(world.mounts_at(spec.target)) == (1 if expected else 0)
        for name, counts in held_by.items():
            for target, count in counts.items():
                for _ in range(count):
                    manager.release(target, name)
        assert manager.holders() == []
        assert all(world.mounts_at(spec.target) == [] for spec in targets)


def test_a_mount_made_over_a_helper_s_mount_never_lends_it_its_unique_id(
        tmp_path: Path) -> None:
    # A mount(8) helper names its mount only once attached: its unique id is
    # read at the path, where anyone may have mounted over it already. The
    # holder record then paired our mount's id with the other's unique id (a
    # review): the reference check took our mount for gone, and a release
    # forgot its holders and left it mounted for ever.
    class StackingKernel(FakeKernel):
        def mount(self, source, target, fstype, flags, data="", **options):  # type: ignore[no-untyped-def]
            record = super().mount(source, target, fstype, flags, data, **options)
            if fstype == "fuse.squashfuse":
                super().mount("stranger", record.target, "tmpfs", 0)
            return record

    kernel = StackingKernel()
    target = tmp_path / "mnt"
    target.mkdir()
    image = tmp_path / "image.sqfs"
    image.write_bytes(b"")
    (tmp_path / "fstab").write_text("")
    with MountManager(kernel, fstab_path=tmp_path / "fstab", state_dir=tmp_path / "state",
                      timers=False, after_fstab_edit=lambda: None) as engine:
        engine.create(MountSpec(str(image), str(target), "fuse.squashfuse",
                                parse_options("ro")), holder="a")
        ours, stranger = MountTable(parse_mountinfo(kernel.read_mountinfo())).mounts_at(
            str(target))
        on_top = kernel.mount_identity(str(target))
        assert on_top is not None and on_top[0] == stranger.mount_id
        held = engine.held(str(target))
        assert held is not None and held.mount_id == ours.mount_id
        assert held.unique_id != on_top[1], "the stranger's unique id"
        assert engine.held_live(str(target)) is not None, "ours still lives, under the other"
