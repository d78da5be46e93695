"""MountManager contract: refcounts, hold timer, force, stacking, rollback, dry run.

Every test runs against the fake kernel and, as root, the real one inside a
private mount namespace (the ``world`` fixture), so the fake is held to what
the kernel really does.
"""

from __future__ import annotations

import errno
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from lmi_mount.mounts import flags as ms
from lmi_mount.mounts.errors import AlreadyExists, InUse, InvalidRequest, MountError, NotFound
from lmi_mount.mounts.fstab import FstabDocument
from lmi_mount.mounts.holders import HolderTable
from lmi_mount.mounts.options import parse_options
from lmi_mount.mounts.plan import MountSpec
from tests.contract.helpers import mkfs_image
from tests.engine.conftest import KERNELS, World


def tmpfs(world: World, name: str = "mnt", options: str = "size=1m") -> MountSpec:
    return MountSpec("tmpfs", world.dir(name), "tmpfs", parse_options(options))


def bind(
    world: World, source: str = "src", target: str = "dst", options: str = "defaults"
) -> MountSpec:
    return MountSpec(world.dir(source), world.dir(target), None, parse_options(options))


def test_first_holder_mounts_later_holders_share(world: World) -> None:
    with world.manager() as manager:
        spec = tmpfs(world)
        manager.acquire(spec, "alice")
        manager.acquire(spec, "bob")
        assert len(world.mounts_at(spec.target)) == 1, "a second holder must not stack a mount"
        held = manager.held(spec.target)
        assert held is not None and held.holders == ("alice", "bob") and held.made_by_us

        manager.release(spec.target, "alice")
        assert len(world.mounts_at(spec.target)) == 1, (
            "a release with holders left keeps the mount"
        )
        manager.release(spec.target, "bob")
        assert world.mounts_at(spec.target) == [], "the last release unmounts (hold time 0)"
        assert manager.held(spec.target) is None


def test_bind_mount_shares_by_source_directory(world: World) -> None:
    with world.manager() as manager:
        spec = bind(world)
        manager.acquire(spec, "a")
        manager.acquire(spec, "a")
        assert manager.held(spec.target).refcount == 2  # type: ignore[union-attr]
        [record] = world.mounts_at(spec.target)
        assert world.table().user_source(record, world.kernel.loop_backing_file) == spec.source


@pytest.mark.parametrize(
    ("first", "second", "problem"),
    [
        pytest.param("size=1m,noexec", "size=1m,exec", "exec", id="other-boolean"),
        pytest.param("size=1m", "size=1m,ro", "ro", id="read-only-vs-rw"),
    ],
)
def test_other_options_on_a_live_mount_are_in_use(
    world: World, first: str, second: str, problem: str
) -> None:
    with world.manager() as manager:
        manager.acquire(tmpfs(world, options=first), "a")
        with pytest.raises(InUse, match="already a mount point"):
            manager.acquire(tmpfs(world, options=second), "b")
        held = manager.held(world.dir("mnt"))
        assert held is not None and held.holders == ("a",), "a refused acquire changes no refcount"
        assert len(world.mounts_at(world.dir("mnt"))) == 1


def test_never_stacks_on_a_foreign_mount(world: World) -> None:
    target = world.dir("mnt")
    world.kernel.mount("othersrc", target, "tmpfs", 0, "size=2m")
    with world.manager() as manager, pytest.raises(InUse, match="othersrc"):
        manager.acquire(tmpfs(world), "a")
    assert len(world.mounts_at(target)) == 1


def test_foreign_mount_is_shared_but_never_unmounted_by_release(world: World) -> None:
    target = world.dir("mnt")
    world.kernel.mount("tmpfs", target, "tmpfs", 0, "size=1m")
    with world.manager() as manager:
        manager.acquire(tmpfs(world), "a")
        held = manager.held(target)
        assert held is not None and not held.made_by_us
        manager.release(target, "a")
        assert len(world.mounts_at(target)) == 1, "lmi-mount did not make it: it stays"
        assert manager.held(target) is None


def test_hold_timer_delays_unmount_and_acquire_cancels_it(world: World) -> None:
    with world.manager(hold_seconds=30) as manager:
        spec = tmpfs(world)
        manager.acquire(spec, "a")
        manager.release(spec.target, "a")
        held = manager.held(spec.target)
        assert held is not None and held.release_at == world.clock.now + 30
        world.clock.advance(10)
        assert manager.run_due_timers() == []
        manager.acquire(spec, "b")  # during the hold: cancels the timer, same mount
        assert manager.held(spec.target).release_at is None  # type: ignore[union-attr]
        world.clock.advance(60)
        assert manager.run_due_timers() == []
        assert len(world.mounts_at(spec.target)) == 1
        manager.release(spec.target, "b")
        world.clock.advance(29.5)
        assert manager.run_due_timers() == []
        world.clock.advance(1)
        assert manager.run_due_timers() == [spec.target]
        assert world.mounts_at(spec.target) == []
        assert manager.holders() == []


def test_hold_timer_retries_a_busy_unmount(world: World) -> None:
    with world.manager(hold_seconds=1) as manager:
        spec = tmpfs(world)
        manager.acquire(spec, "a")
        manager.release(spec.target, "a")
        world.make_busy(spec.target)
        try:
            world.clock.advance(2)
            assert manager.run_due_timers() == []
            assert len(world.mounts_at(spec.target)) == 1, "busy at the deadline: kept"
        finally:
            world.end_busy()
        world.clock.advance(10)
        assert manager.run_due_timers() == [spec.target]


class TimerRounds:
    """Counts the hold timer's rounds (each reads the next deadline), and
    waits until the timer sleeps again."""

    def __init__(self, manager: Any) -> None:
        self.manager = manager
        self.rounds = 0
        counter = self

        class Counted(HolderTable):
            __slots__ = ()

            def next_deadline(self) -> float | None:
                if threading.current_thread().name == "lmi-mount-hold-timer":
                    counter.rounds += 1
                return super().next_deadline()

        manager._holders.__class__ = Counted

    def settled(self, rounds: int) -> int:
        """The count once at least ``rounds`` rounds ran and the timer sleeps."""
        deadline = time.monotonic() + 10
        while self.rounds < rounds and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(0.05)  # a round the last change asked for would have begun
        with self.manager._wake:  # held by a round that has not reached its wait
            return self.rounds


def test_a_release_that_unmounts_at_once_lets_the_hold_timer_sleep(world: World) -> None:
    # With no hold time, the last release unmounts in the same request. The
    # request woke the hold timer all the same, for a deadline already gone:
    # a thread switch and a round of the timer on every DeleteMount.
    with world.manager(hold_seconds=0, timers=True) as manager:
        rounds = TimerRounds(manager)
        assert rounds.settled(0) == 0
        spec = tmpfs(world)
        for holder in ("a", "b"):
            manager.acquire(spec, holder)
            manager.release(spec.target, holder)
        assert world.mounts_at(spec.target) == []
        assert rounds.settled(0) == 0, "woken for nothing"


def test_a_new_hold_deadline_wakes_the_hold_timer_only_when_it_comes_first(
        world: World) -> None:
    with world.manager(hold_seconds=300, timers=True) as manager:
        rounds = TimerRounds(manager)
        assert rounds.settled(0) == 0
        first, second = tmpfs(world, "first"), tmpfs(world, "second")
        manager.acquire(first, "a")
        assert rounds.settled(0) == 0, "no deadline yet"
        manager.release(first.target, "a")
        assert rounds.settled(1) == 1, "the first deadline: the timer sleeps until it"
        world.clock.advance(10)
        manager.acquire(second, "a")
        manager.release(second.target, "a")
        assert rounds.settled(1) == 1, "a later deadline than the one it sleeps until"
        manager.acquire(first, "b")  # cancels the first deadline: the timer oversleeps nothing
        manager.release(first.target, "b")  # now + 300: after the one it sleeps until
        assert rounds.settled(1) == 1
        manager.acquire(first, "c")
        manager.hold_seconds = 30  # a shorter hold time since
        manager.release(first.target, "c")
        assert rounds.settled(2) == 2, "earlier than the one it sleeps until"
        world.clock.advance(30)
        assert rounds.settled(2) == 2  # (the fake clock moves no timeout: run it by hand)
        assert manager.run_due_timers() == [first.target]


def test_a_deadline_a_rollback_puts_back_wakes_the_hold_timer(world: World) -> None:
    # A review: a request took a mount over during its hold (the deadline
    # went), the timer ran a round meanwhile and found no deadline at all,
    # then the request failed and its rollback put the deadline back. Nothing
    # woke the timer: the mount stayed mounted long past its hold.
    rounds: TimerRounds | None = None

    def failing_fstab_edit(point: str) -> None:
        if point == "before FstabChange" and rounds is not None:
            seen = rounds.rounds
            with manager._wake:
                manager._wake.notify_all()  # a round while the deadline is gone
            assert rounds.settled(seen + 1) == seen + 1
            raise OSError(errno.EIO, "the fstab edit failed")

    with world.manager(hold_seconds=30, timers=True, crash=failing_fstab_edit) as manager:
        spec = tmpfs(world)
        manager.acquire(spec, "a")
        manager.release(spec.target, "a")
        rounds = TimerRounds(manager)
        before = rounds.settled(0)  # the release's round, if it came after the count began
        with pytest.raises(MountError):
            manager.create(spec, current=True, persist=True, holder="b")
        held = manager.held(spec.target)
        assert held is not None and held.release_at == world.clock.now + 30, "put back"
        assert rounds.settled(before + 2) == before + 2, "woken for the deadline put back"
        with manager._wake:
            assert manager._timer_sleeps_until == held.release_at, "the timer sleeps until it"


@pytest.mark.parametrize("hold", [float("inf"), float("nan"), -1.0])
def test_a_hold_time_that_is_no_duration_is_refused(world: World, hold: float) -> None:
    with pytest.raises(InvalidRequest, match="hold time"):
        world.manager(hold_seconds=hold)


def test_a_hold_time_longer_than_a_wait_can_be_keeps_the_timer(world: World) -> None:
    # A review: Condition.wait(1e10) raises OverflowError, which ended the
    # hold timer's thread, and every hold deadline with it.
    with world.manager(hold_seconds=1e10, timers=True) as manager:
        rounds = TimerRounds(manager)
        spec = tmpfs(world)
        manager.acquire(spec, "a")
        manager.release(spec.target, "a")
        with manager._wake:
            manager._wake.notify_all()  # a round that reads the deadline and sleeps again
        assert rounds.settled(1) == 1
        assert manager.timers_alive
        assert len(world.mounts_at(spec.target)) == 1, "held for its hold time"


def test_force_drops_every_holder_and_unmounts_now(world: World) -> None:
    with world.manager(hold_seconds=300) as manager:
        spec = tmpfs(world)
        manager.acquire(spec, "a")
        manager.acquire(spec, "b")
        manager.force_unmount(spec.target)
        assert world.mounts_at(spec.target) == []
        assert manager.held(spec.target) is None


def test_force_while_busy_names_the_process_and_keeps_the_holders(world: World) -> None:
    with world.manager() as manager:
        spec = tmpfs(world)
        manager.acquire(spec, "a")
        manager.acquire(spec, "b")
        pid = world.make_busy(spec.target)
        try:
            with pytest.raises(InUse) as caught:
                manager.force_unmount(spec.target)
        finally:
            world.end_busy()
        assert str(pid) in str(caught.value) and "sleep" in str(caught.value)
        held = manager.held(spec.target)
        assert held is not None and held.holders == ("a", "b"), "a failed force loses no reference"
        assert len(world.mounts_at(spec.target)) == 1


def test_an_instant_of_ebusy_that_nobody_causes_is_waited_out(tmp_path: Path) -> None:
    # A path lookup (another request resolving its own path, a client's stat)
    # pins a mount for an instant, and an unmount then fails EBUSY: the 8-client
    # test saw a release answered In Use with no process named. Nobody uses
    # the mount: the unmount is tried again, briefly.
    world = World("fake", tmp_path)
    with world.manager() as manager:
        spec = tmpfs(world)
        manager.acquire(spec, "a")
        kernel: Any = world.kernel
        kernel.fail_next("umount", errno.EBUSY)
        kernel.fail_next("umount", errno.EBUSY)
        manager.release(spec.target, "a")
        assert world.mounts_at(spec.target) == [] and manager.held(spec.target) is None


def test_lazy_force_detaches_a_busy_mount(world: World) -> None:
    with world.manager() as manager:
        spec = tmpfs(world)
        manager.acquire(spec, "a")
        world.make_busy(spec.target)
        try:
            manager.force_unmount(spec.target, lazy=True)
        finally:
            world.end_busy()
        assert world.mounts_at(spec.target) == []


def test_release_by_a_holder_without_a_reference_is_refused(world: World) -> None:
    with world.manager() as manager:
        spec = tmpfs(world)
        manager.acquire(spec, "alice")
        with pytest.raises(InUse, match=r"'mallory' holds no reference.*alice"):
            manager.release(spec.target, "mallory")
        assert manager.held(spec.target).holders == ("alice",)  # type: ignore[union-attr]


def test_a_mount_replaced_by_hand_is_not_its_old_holders_to_release(world: World) -> None:
    # An administrator unmounts a shared tmpfs and mounts a fresh one there.
    # Reads showed the old holders on the new mount, and one holder's release
    # (DeleteMount with its Holder) then unmounted the administrator's mount.
    with world.manager() as manager:
        spec = tmpfs(world)
        manager.acquire(spec, "a")
        manager.acquire(spec, "b")
        (old,) = world.mounts_at(spec.target)
        world.kernel.unmount(spec.target, expect=old.mount_id)
        world.kernel.mount("tmpfs", spec.target, "tmpfs", 0, "size=2m")
        (status,) = [s for s in manager.status() if s.target == spec.target]
        assert status.held is None
        assert manager.status_at(spec.target).held is None  # type: ignore[union-attr]
        with pytest.raises(InUse, match=r"'a' holds no reference"):
            manager.release(spec.target, "a")
        assert len(world.mounts_at(spec.target)) == 1, "the administrator's mount stays"
        # Unmounting a mount nobody holds is asked without naming a holder.
        manager.delete(spec.target)
        assert world.mounts_at(spec.target) == []


def test_a_mount_covered_by_hand_keeps_its_holders_and_is_never_the_one_unmounted(
    world: World,
) -> None:
    # An administrator mounts a tmpfs over a held one. The held mount was taken
    # for replaced and its holders dropped; the next delete of it unmounted the
    # administrator's mount and left ours (outside review).
    with world.manager() as manager:
        spec = tmpfs(world)
        manager.acquire(spec, "a")
        manager.acquire(spec, "b")
        (ours,) = world.mounts_at(spec.target)
        world.kernel.mount("hand", spec.target, "tmpfs", 0, "size=2m")
        manager.status()
        manager.status_at(spec.target)
        assert manager.held(spec.target).holders == ("a", "b")  # type: ignore[union-attr]

        manager.release(spec.target, "a")  # the mount stays: nothing to unmount
        like_the_top = MountSpec("hand", spec.target, "tmpfs", parse_options("size=2m"))
        for refused in (lambda: manager.release(spec.target, "b"),
                        lambda: manager.modify(spec.target, parse_options("size=3m")),
                        # A request that matches the mount on top was added to
                        # the holders of the one under it (a second review).
                        lambda: manager.acquire(like_the_top, "c"),
                        lambda: manager.delete(spec.target, spec_name="tmpfs", holder="b"),
                        lambda: manager.force_unmount(spec.target)):
            with pytest.raises(InUse, match=r"covered by .*'hand'"):
                refused()
            assert manager.held(spec.target).holders == ("b",)  # type: ignore[union-attr]
            under, top = world.mounts_at(spec.target)
            assert under.mount_id == ours.mount_id
            assert "size=2048k" in top.super_options

        # The administrator's mount, named by its source, is his to remount and
        # unmount; the holders' record of the one under it says what it said.
        manager.modify(spec.target, parse_options("ro"), spec_name="hand")
        held = manager.held(spec.target)
        assert held is not None and (held.holders, held.options) == (("b",), "size=1m")
        manager.delete(spec.target, spec_name="hand")
        assert [m.mount_id for m in world.mounts_at(spec.target)] == [ours.mount_id]
        manager.release(spec.target, "b")
        assert world.mounts_at(spec.target) == []
        assert manager.held(spec.target) is None


def test_a_covered_held_mount_keeps_its_holders_across_a_restart(world: World) -> None:
    # Recovery took the mount on top for the held one, found them different
    # and forgot the holders: ours was left mounted, tracked by nobody (a
    # third review).
    spec = tmpfs(world)
    with world.manager() as manager:
        manager.acquire(spec, "a")
        manager.acquire(spec, "b")
    world.kernel.mount("hand", spec.target, "tmpfs", 0, "size=2m")
    with world.manager() as manager:
        held = manager.held(spec.target)
        assert held is not None and held.holders == ("a", "b")
        world.kernel.unmount(spec.target)  # the administrator's mount, by hand
        manager.release(spec.target, "a")
        manager.release(spec.target, "b")
        assert world.mounts_at(spec.target) == [] and manager.held(spec.target) is None


def test_a_held_mount_hidden_by_a_mount_over_its_parent_is_kept(world: World) -> None:
    # A tmpfs mounted over the directory above a held mount hides it: the
    # mount was taken for vanished, its holders forgotten, and the next
    # CreateMount there made a second one (a third review).
    with world.manager() as manager:
        parent = world.dir("p")
        spec = MountSpec("tmpfs", world.dir("p/x"), "tmpfs", parse_options("size=1m"))
        manager.acquire(spec, "a")
        manager.acquire(spec, "b")
        world.kernel.mount("hand", parent, "tmpfs", 0)
        os.makedirs(spec.target, exist_ok=True)  # the same path, in the new tmpfs
        manager.status()
        manager.release(spec.target, "a")  # the mount stays: nothing to unmount
        for refused in (lambda: manager.release(spec.target, "b"),
                        lambda: manager.acquire(spec, "c")):
            with pytest.raises(InUse, match=r"hidden by a mount made over a directory above"):
                refused()
        assert manager.held(spec.target).holders == ("b",)  # type: ignore[union-attr]
        world.kernel.unmount(parent)  # the administrator's, by hand
        manager.release(spec.target, "b")
        assert world.mounts_at(spec.target) == [] and manager.held(spec.target) is None


def test_the_fstab_line_of_a_covered_held_mount_is_its_own_to_replace(world: World) -> None:
    # Judged by the mount on top, an administrator's bind, the line of the held
    # tmpfs could not be replaced: "a bind mount shares its origin's file
    # system" (a third review).
    with world.manager() as manager:
        spec = tmpfs(world)
        manager.create(spec, holder="a", persist=True)
        world.kernel.mount(world.dir("elsewhere"), spec.target, None, ms.MS_BIND)
        manager.modify(spec.target, parse_options("size=20m"), spec_name="tmpfs",
                       current=False, persist=True)
        assert f"{spec.target} tmpfs size=20m" in world.fstab.read_text()
        assert len(world.mounts_at(spec.target)) == 2


def test_remount_read_only_and_back(world: World) -> None:
    with world.manager() as manager:
        spec = bind(world)
        manager.acquire(spec, "a")
        manager.modify(spec.target, parse_options("ro"))
        [record] = world.mounts_at(spec.target)
        assert "ro" in record.vfs_options
        manager.modify(spec.target, parse_options("rw,noexec"))
        [record] = world.mounts_at(spec.target)
        assert "rw" in record.vfs_options and "noexec" in record.vfs_options


def test_superblock_remount_changes_tmpfs_size(world: World) -> None:
    with world.manager() as manager:
        spec = tmpfs(world, options="size=1m")
        manager.acquire(spec, "a")
        manager.modify(spec.target, parse_options("size=2m"))
        [record] = world.mounts_at(spec.target)
        assert "size=2048k" in record.super_options


def test_mount_and_fstab_line_together(world: World) -> None:
    with world.manager() as manager:
        spec = tmpfs(world)
        manager.create(spec, current=True, persist=True, holder="a")
        document = FstabDocument.parse(world.fstab.read_text())
        entry = document.find_target(spec.target)
        assert entry is not None and (entry.spec, entry.fstype) == ("tmpfs", "tmpfs")
        assert world.fstab.read_text().startswith("# test fstab\n"), "other lines survive"
        manager.delete(spec.target, current=True, persist=True, holder="a")
        assert world.mounts_at(spec.target) == []
        assert world.fstab.read_text() == "# test fstab\n"


def test_failed_fstab_write_undoes_the_mount(world: World) -> None:
    spec = tmpfs(world)
    # The fstab already has a different line for this mount point: the edit
    # is refused after planning... so make the write itself fail instead: the
    # fstab path's directory does not exist.
    with world.manager(fstab_path=world.root / "missing" / "fstab") as manager:
        with pytest.raises(Exception, match="fstab"):
            manager.create(spec, current=True, persist=True, holder="a")
        assert world.mounts_at(spec.target) == [], "the mount was rolled back"
        assert manager.held(spec.target) is None


def test_failed_mount_writes_no_fstab_line(world: World) -> None:
    before = world.fstab.read_text()
    spec = MountSpec("tmpfs", world.dir("mnt"), "no-such-fs-type", parse_options("defaults"))
    with world.manager() as manager:
        with pytest.raises(InvalidRequest, match="no-such-fs-type"):
            manager.create(spec, current=True, persist=True, holder="a")
        assert world.fstab.read_text() == before
        assert manager.holders() == []


@pytest.mark.parametrize(("fstype", "says"), [
    pytest.param("auto", "tries types in turn", id="auto"),
    pytest.param("ramfs,tmpfs", "tries types in turn", id="list"),
    pytest.param("nosuchfs", "unknown here", id="unknown"),
    pytest.param("none", "names no file system", id="none"),
    pytest.param("swap", "swapon", id="swap"),
])
def test_a_type_no_mount_can_have_is_refused_in_a_dry_run_too(
        world: World, fstype: str, says: str) -> None:
    # A DryRun said 0 (and planned "mount auto ...") where the call itself then
    # failed with ENODEV: the type went to the kernel as given (two outside
    # reviews). mount(8) probes "auto" and tries a list in turn; the service
    # mounts the one type it is given, and says so before anything is done.
    spec = MountSpec("tmpfs", world.dir("mnt"), fstype)
    with world.manager() as manager:
        for dry_run in (True, False):
            with pytest.raises(InvalidRequest, match=says) as refused:
                manager.create(spec, current=True, holder="a", dry_run=dry_run)
            assert refused.value.value == fstype
        assert world.mounts_at(spec.target) == []
        if fstype in ("auto", "ramfs,tmpfs"):
            # mount(8) mounts such a line at boot: fstab alone (Mode 2) keeps it.
            manager.create(spec, current=False, persist=True)
            assert f" {fstype} " in world.fstab.read_text()


@pytest.mark.parametrize("holder", [
    pytest.param("", id="empty"), pytest.param(" ", id="blank"),
    pytest.param("a\nb", id="newline"), pytest.param("a\x1b[2Jb", id="escape"),
    pytest.param("a\udcff", id="not-utf8"), pytest.param("x" * 257, id="too-long"),
])
def test_a_holder_name_that_is_no_name_on_one_line_is_refused(
        world: World, holder: str) -> None:
    # Any string was taken (an outside review): a newline split a status line
    # in two, 5,000 characters went into every journal record. A name any
    # user may have (a comma, spaces: "Smith, John" from a users file) is
    # one, and releasing takes any name held (a journal's from before).
    spec = tmpfs(world)
    with world.manager() as manager:
        with pytest.raises(InvalidRequest, match="holder name") as refused:
            manager.create(spec, current=True, holder=holder)
        assert refused.value.value == holder
        assert world.mounts_at(spec.target) == [] and manager.holders() == []
        for name in ("Smith, John", " padded "):
            manager.create(spec, current=True, holder=name)
        assert manager.held(spec.target).holders == ("Smith, John", " padded ")  # type: ignore[union-attr]
        with pytest.raises(InUse, match="holds no reference"):
            manager.delete(spec.target, current=True, holder=holder, release_only=True)
        for name in ("Smith, John", " padded "):
            manager.delete(spec.target, current=True, holder=name, release_only=True)
        assert world.mounts_at(spec.target) == []


def test_busy_unmount_with_fstab_removal_restores_the_line(world: World) -> None:
    with world.manager() as manager:
        spec = tmpfs(world)
        manager.create(spec, current=True, persist=True, holder="a")
        text = world.fstab.read_text()
        world.make_busy(spec.target)
        try:
            with pytest.raises(InUse):
                manager.delete(spec.target, current=True, persist=True, holder="a")
        finally:
            world.end_busy()
        assert world.fstab.read_text() == text, "the removed line is back, byte for byte"
        assert manager.held(spec.target).holders == ("a",)  # type: ignore[union-attr]


def test_busy_unmount_restores_its_line_beside_another_specs_line(world: World) -> None:
    # The line of another spec on the mount point stays through the removal of
    # the named one; the undo must put the named line back beside it (the
    # undo's conflict check looked at the first line of the mount point).
    with world.manager() as manager:
        spec = tmpfs(world)
        manager.create(spec, current=True, persist=True, holder="a")
        with world.fstab.open("a") as fstab:
            fstab.write(f"/dev/sdz1 {spec.target} ext4 noauto 0 0\n")
        text = world.fstab.read_text()
        world.make_busy(spec.target)
        try:
            with pytest.raises(InUse):
                manager.delete(spec.target, spec_name=spec.source, current=True,
                               persist=True, holder="a")
        finally:
            world.end_busy()
        assert world.fstab.read_text() == text, "the removed line is back, byte for byte"
        manager.delete(spec.target, spec_name=spec.source, current=True, persist=True,
                       holder="a")
        assert world.fstab.read_text() == text.replace(
            next(line + "\n" for line in text.splitlines() if line.startswith("tmpfs ")), "")
        assert world.mounts_at(spec.target) == []


def test_fstab_line_for_the_mount_point_already_there(world: World) -> None:
    target = world.dir("mnt")
    world.fstab.write_text(f"/dev/sdz1 {target} ext4 defaults 0 2\n")
    with world.manager() as manager, pytest.raises(AlreadyExists, match="/dev/sdz1"):
        manager.create(tmpfs(world), current=False, persist=True)
    assert world.fstab.read_text() == f"/dev/sdz1 {target} ext4 defaults 0 2\n"


def test_a_line_of_a_mount_point_with_several_lines_is_not_replaced_alone(
    world: World,
) -> None:
    # ModifyMount of the fstab line replaced the first of two lines for the
    # mount point and said nothing of the second, which mount -a still mounts
    # (an outside review). Deleting the lines takes every one of them.
    target = world.dir("mnt")
    text = (f"# keep\ntmpfs {target} tmpfs size=1m 0 0\n"
            f"none {target} tmpfs size=3m 0 0\n")
    world.fstab.write_text(text)
    with world.manager() as manager:
        for named in (None, "none"):  # the second line's spec was NOT_FOUND (a review)
            with pytest.raises(AlreadyExists,
                               match=r"fstab has 2 lines for .* \(lines 2 and 3\)"):
                manager.modify(target, parse_options("size=9m"), spec_name=named,
                               current=False, persist=True)
        assert world.fstab.read_text() == text
        manager.delete(target, current=False, persist=True)
        assert world.fstab.read_text() == "# keep\n"


def test_deleting_the_line_of_one_spec_keeps_the_other_specs_lines(world: World) -> None:
    # DeleteMount of one (spec, mount point) removed every line of the mount
    # point, an overlay stacked on its own lower directory included, which the
    # client never named (an outside review): a line lost. mount -a mounts
    # each line, stacked; the lines of the named spec go, whatever their
    # spelling of the mount point, and the others stay byte for byte.
    target = world.dir("mnt")
    overlay = f"overlay {target}\toverlay lowerdir={target},upperdir=/u,workdir=/w 0 0\n"
    others = f"{overlay}/dev/sdz1 {target}/ ext4 defaults 0 2   \n"
    world.fstab.write_text(f"# keep\ntmpfs {target} tmpfs size=1m 0 0\n{others}"
                           f"tmpfs {target}/ tmpfs size=3m 0 0\n")
    with world.manager() as manager:
        manager.delete(target, spec_name="tmpfs", current=False, persist=True)
        assert world.fstab.read_text() == f"# keep\n{others}"
        # A line after the first of its mount point is named by its spec too.
        manager.delete(target, spec_name="/dev/sdz1", current=False, persist=True)
        assert world.fstab.read_text() == f"# keep\n{overlay}"
        manager.delete(target, spec_name="overlay", current=False, persist=True)
        assert world.fstab.read_text() == "# keep\n"


def test_dry_run_returns_the_plan_and_changes_nothing(world: World) -> None:
    with world.manager() as manager:
        spec = tmpfs(world)
        outcome = manager.create(spec, current=True, persist=True, holder="a", dry_run=True)
        described = outcome.plan.describe()
        assert described[0].startswith("mount tmpfs tmpfs on ")
        assert any(step.startswith("fstab: add line") for step in described)
        assert world.mounts_at(spec.target) == []
        assert world.fstab.read_text() == "# test fstab\n"
        assert manager.holders() == []


@pytest.mark.parametrize(
    ("call", "error"),
    [
        pytest.param(
            lambda m, w: m.release(w.dir("nothing"), "a"), NotFound, id="release-unmounted"
        ),
        pytest.param(
            lambda m, w: m.modify(w.dir("nothing"), parse_options("ro")),
            NotFound,
            id="modify-unknown",
        ),
        pytest.param(
            lambda m, w: m.acquire(MountSpec("tmpfs", "relative/path", "tmpfs"), "a"),
            InvalidRequest,
            id="relative-target",
        ),
        pytest.param(
            lambda m, w: m.acquire(MountSpec("tmpfs", str(w.root / "absent"), "tmpfs"), "a"),
            InvalidRequest,
            id="missing-target",
        ),
        pytest.param(
            lambda m, w: m.acquire(MountSpec(str(w.root / "absent"), w.dir("d"), None), "a"),
            InvalidRequest,
            id="missing-bind-source",
        ),
    ],
)
def test_bad_requests_name_the_value_and_change_nothing(world: World, call, error) -> None:  # type: ignore[no-untyped-def]
    with world.manager() as manager:
        before = world.kernel.read_mountinfo()
        with pytest.raises(error, match="/"):
            call(manager, world)
        assert world.kernel.read_mountinfo() == before
        assert world.fstab.read_text() == "# test fstab\n"


def test_bind_through_another_bind_is_shared_by_directory_identity(world: World) -> None:
    source, middle = world.dir("src"), world.dir("middle")
    world.kernel.mount(source, middle, None, ms.MS_BIND)
    spec = MountSpec(middle, world.dir("dst"), None, parse_options("defaults"))
    with world.manager() as manager:
        manager.acquire(spec, "a")
        # mountinfo names the source through the file system's own mount (src);
        # the request named it through the intermediate bind: one directory.
        manager.acquire(spec, "b")
        assert manager.held(spec.target).holders == ("a", "b")  # type: ignore[union-attr]
        assert len(world.mounts_at(spec.target)) == 1


def test_file_system_remount_keeps_flags_the_goal_does_not_name(world: World) -> None:
    with world.manager() as manager:
        spec = tmpfs(world, options="size=1m,lazytime")
        manager.acquire(spec, "a")
        manager.modify(spec.target, parse_options("size=2m"))
        [record] = world.mounts_at(spec.target)
        assert "size=2048k" in record.super_options
        assert "lazytime" in record.super_options, "a superblock remount must not drop lazytime"
        manager.modify(spec.target, parse_options("size=2m,nolazytime"))
        [record] = world.mounts_at(spec.target)
        assert "lazytime" not in record.super_options


@pytest.mark.parametrize(("selinux", "shared"), [(True, False), (False, True)])
def test_a_mount_without_the_asked_context_is_shared_only_where_selinux_is_off(
        tmp_path: Path, selinux: bool, shared: bool) -> None:
    # The review of the SELinux change: on an SELinux host a mount made
    # without context= counted as one asking for it, and was shared. The
    # fake kernel stands for each host (no real kernel here has SELinux).
    world = World("fake", tmp_path)
    try:
        kernel = world.kernel
        kernel.selinux_enabled = selinux  # type: ignore[misc]
        target = world.dir("mnt")
        kernel.mount("tmpfs", target, "tmpfs", 0, "size=1m")
        asked = tmpfs(world, options="size=1m,context=system_u:object_r:tmp_t:s0")
        with world.manager() as manager:
            if shared:
                manager.acquire(asked, "a")
                held = manager.held(target)
                assert held is not None and held.holders == ("a",)
            else:
                with pytest.raises(InUse, match="context"):
                    manager.acquire(asked, "a")
                assert manager.held(target) is None
        assert len(world.mounts_at(target)) == 1
    finally:
        shutil.rmtree(world.state, ignore_errors=True)


def test_a_mount_busy_with_a_mount_below_it_names_that_mount(world: World) -> None:
    # EBUSY from a mount on a directory inside: the In Use error named nothing
    # (the processes' scan finds none), with Force too (an outside review).
    spec = tmpfs(world)
    inner = f"{spec.target}/q"
    with world.manager() as manager:
        manager.create(spec, current=True, holder="a")
        os.mkdir(inner)
        world.kernel.mount("inner", inner, "tmpfs", 0)
        for force in (False, True):
            with pytest.raises(InUse, match=f"mounted below it: {inner}"):
                manager.delete(spec.target, current=True, holder="a", force=force)
        assert [m.target for m in world.mounts_at(inner)] == [inner]
        world.kernel.unmount(inner)
        manager.delete(spec.target, current=True, force=True)
        assert world.mounts_at(spec.target) == []


def test_a_bind_line_naming_no_flag_drifts_from_a_mount_unlike_its_origin(world: World) -> None:
    # A line "SRC TARGET none bind" gives at boot a bind with its origin's
    # flags; the live bind was ro,nosuid,nodev,noexec on an rw origin and no
    # drift was shown (an outside review: the next boot mounts it rw).
    source, target = world.dir("data"), world.dir("mnt")
    with world.manager() as manager:
        manager.create(MountSpec(source, target, None, parse_options("ro,nosuid,nodev,noexec")),
                       current=True, holder="a")
        world.fstab.write_text(f"{source} {target} none bind 0 0\n")
        [status] = [s for s in manager.status() if s.target == target]
        drifted = {d.name for d in status.drift}
        assert {"allow_write", "allow_suid", "interpret_devices", "allow_execution"} <= drifted
        # A bind naming no flag has its origin's, what such a line asks for.
        manager.delete(target, current=True, holder="a")
        manager.create(MountSpec(source, target, None), current=True, holder="a")
        [status] = [s for s in manager.status() if s.target == target]
        assert status.drift == (), status.drift


def test_a_tmpfs_option_its_line_leaves_out_is_drift(world: World) -> None:
    # tmpfs shows only what differs from its defaults (mm/shmem.c): a size the
    # line leaves out is one the next boot does not give. A ModifyMount with a
    # NULL Goal wrote a line without the live size=16m, and a remount added
    # nr_blocks= to a "defaults" line's mount; neither showed drift (outside
    # reviews).
    spec = MountSpec("tmpfs", world.dir("mnt"), "tmpfs", parse_options("size=1m"))
    with world.manager() as manager:
        manager.create(spec, current=True, holder="a")
        world.fstab.write_text(f"tmpfs {spec.target} tmpfs defaults 0 0\n")
        [status] = [s for s in manager.status() if s.target == spec.target]
        [size] = [d for d in status.drift if d.name == "size"]
        assert size.comparable and str(size).startswith("size: configured (not set), live size=")
        world.fstab.write_text(f"tmpfs {spec.target} tmpfs size=1m 0 0\n")
        [status] = [s for s in manager.status() if s.target == spec.target]
        assert status.drift == (), status.drift


def test_a_last_release_with_a_hold_time_says_when_the_mount_goes(world: World) -> None:
    # With a hold time the release's Plan said only "(0 left)": nothing told the
    # client that the mount goes later, or when (an outside review).
    spec = tmpfs(world)
    with world.manager(hold_seconds=30) as manager:
        manager.create(spec, current=True, holder="a")
        outcome = manager.delete(spec.target, current=True, holder="a")
        assert outcome.plan.describe() == [
            f"holders: a releases {spec.target} (0 left; the hold timer unmounts it in 30 s "
            "unless it is taken again)"]
        assert world.mounts_at(spec.target), "still mounted for its hold time"


def test_deleting_a_line_takes_its_other_spellings_and_names_the_lines_kept(
        world: World) -> None:
    # Removing the lines of the named spec only (not every line of the mount
    # point) kept a line naming the same source otherwise (a trailing slash,
    # a link to it), which mounts it again at boot; and the Plan did not say
    # which lines it left (a second review).
    source = world.dir("data")
    link = f"{world.dir('links')}/data"
    os.symlink(source, link)
    target = world.dir("mnt")
    same = (f"{source} {target} none bind 0 0\n{source}/ {target} none bind 0 0\n"
            f"{link} {target} none bind 0 0\n")
    other = f"/dev/sdz1 {target} ext4 noauto 0 0\n"
    world.fstab.write_text(same + other)
    with world.manager() as manager:
        outcome = manager.delete(target, spec_name=source, current=False, persist=True)
        assert world.fstab.read_text() == other
        assert f"note: kept line '/dev/sdz1 {target} ext4 noauto 0 0' (another source on " \
               "this mount point)" in outcome.plan.describe()


def test_a_source_is_the_same_by_its_names_not_by_what_is_mounted_on_it(
        world: World) -> None:
    # Two specs compared with stat(2) were "the same" while one was mounted on
    # the other's path: a DeleteMount of one removed the other mount's line,
    # and the same request did otherwise once it was unmounted (a review).
    first, second, target = world.dir("a"), world.dir("b"), world.dir("mnt")
    lines = f"{first} {target} none bind 0 0\n{second} {target} none bind 0 0\n"
    world.fstab.write_text(lines)
    with world.manager() as manager:
        manager.create(MountSpec(first, second, None), current=True, holder="a")
        manager.delete(target, spec_name=second, current=False, persist=True)
        assert world.fstab.read_text() == f"{first} {target} none bind 0 0\n"


@pytest.mark.parametrize("world", [k for k in KERNELS if k.id == "real"], indirect=True)
def test_a_loop_device_s_name_finds_its_image_s_line(world: World) -> None:
    # A reference by the kernel's name of a loop mount (/dev/loopN) unmounted
    # it and left the image's line, which mounts it again at boot (a review).
    image = mkfs_image(Path(world.dir("images")), "ext4")
    target = world.dir("mnt")
    with world.manager() as manager:
        manager.create(MountSpec(image, target, "ext4"), current=True, persist=True, holder="a")
        [record] = world.mounts_at(target)
        assert record.source.startswith("/dev/loop")
        manager.delete(target, spec_name=record.source, current=True, persist=True,
                       holder="a")
        assert image not in world.fstab.read_text()
        assert world.mounts_at(target) == []


def test_a_holder_name_with_spaces_or_a_comma_is_quoted_in_the_plan(world: World) -> None:
    # "root" and "root " are two holders, and the Plan printed both bare (a
    # review); a name that holds white space or a comma is quoted, as
    # lmi-mount status quotes it.
    spec = tmpfs(world)
    with world.manager() as manager:
        outcome = manager.create(spec, current=True, holder="root ")
        assert f'holders: "root " acquires {spec.target} (first holder)' in \
            outcome.plan.describe()
        outcome = manager.create(spec, current=True, holder="Smith, John")
        assert f'holders: "Smith, John" shares {spec.target} (reference 2)' in \
            outcome.plan.describe()
        outcome = manager.delete(spec.target, current=True, holder="root ")
        assert outcome.plan.describe()[0] == \
            f'holders: "root " releases {spec.target} (1 left)'
