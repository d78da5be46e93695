"""A local user who owns a parent directory swaps it while the engine works.

Found by an outside review of the new mount code, each reproduced here
before the fix: DeleteMount unmounted, and ModifyMount remounted, an
unrelated mount reached through a parent directory swapped for a symlink;
a rename of the parent between the check and the mount stacked a second
mount and dropped the first one's holders; an rbind could not be deleted,
and one that failed its verification stayed mounted. The judge is the
kernel's mount table. The swaps happen at the engine's crash points (the
moments a racing user would need), on the real kernel, in a private mount
namespace, on both mount interfaces.
"""

from __future__ import annotations

import errno
import os
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from lmi_mount.engine import MountManager
from lmi_mount.linux.kernel import KernelError, LinuxKernel, MountApi
from lmi_mount.linux.paths import Anchor, PathChecker
from lmi_mount.mounts.errors import InUse, InvalidRequest, MountError, OperationFailed
from lmi_mount.mounts.flags import MS_RDONLY
from lmi_mount.mounts.mountinfo import MountRecord, MountTable, parse_mountinfo
from lmi_mount.mounts.options import parse_options
from lmi_mount.mounts.plan import MountSpec
from tests.contract.helpers import mkfs_image
from tests.engine.conftest import World
from tests.support.deep_paths import longer_than_path_max
from tests.support.skips import requires_root, requires_tool

pytestmark = [pytest.mark.root, requires_root,
              pytest.mark.parametrize("api", ["new", "legacy"])]


def at(path: str | Path) -> MountRecord | None:
    return MountTable(parse_mountinfo(Path("/proc/self/mountinfo").read_text())).at(str(path))


class Scene:
    """``r/d/mnt`` (the user owns ``r``), and root's victim mount at ``victim/mnt``."""

    def __init__(self, base: Path, api: MountApi) -> None:
        self.base = base
        self.mnt = base / "r/d/mnt"
        self.mnt.mkdir(parents=True)
        self.victim = base / "victim/mnt"
        self.victim.mkdir(parents=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m,nosuid,noexec", "victimfs",
                        str(self.victim)], check=True)
        (base / "fstab").write_text("")
        self.api = api

    def engine(self, **options: object) -> MountManager:
        return MountManager(LinuxKernel(mount_api=self.api), fstab_path=self.base / "fstab",
                            state_dir=self.base / "state", timers=False, **options).start()

    def swap_parent(self) -> None:
        os.rename(self.base / "r/d", self.base / "r/e")
        os.symlink(self.base / "victim", self.base / "r/d")

    def at_step(self, step: str) -> Callable[[str], None]:
        def crash(name: str) -> None:
            if name == step:
                self.swap_parent()
        return crash


@pytest.mark.private_namespace
def test_delete_never_unmounts_what_a_swapped_parent_leads_to(tmp_path: Path,
                                                              api: MountApi) -> None:
    scene = Scene(tmp_path, api)
    engine = scene.engine(crash=scene.at_step("before KernelUnmount"))
    engine.create(MountSpec("tmpfs", str(scene.mnt), "tmpfs", parse_options("size=1m")),
                  holder="me")
    with pytest.raises(MountError) as raised:
        engine.delete(str(scene.mnt), holder="me")
    assert "symbolic link" in str(raised.value)
    victim = at(scene.victim)
    assert victim is not None and victim.source == "victimfs", "root's mount was taken"
    ours = at(tmp_path / "r/e/mnt")
    assert ours is not None and ours.source == "tmpfs", "ours is still there, not lost"
    engine.close()


@pytest.mark.private_namespace
def test_modify_never_remounts_what_a_swapped_parent_leads_to(tmp_path: Path,
                                                              api: MountApi) -> None:
    scene = Scene(tmp_path, api)
    engine = scene.engine(crash=scene.at_step("before KernelRemount"))
    engine.create(MountSpec("tmpfs", str(scene.mnt), "tmpfs", parse_options("size=1m")),
                  holder="me")
    before = at(scene.victim)
    with pytest.raises(MountError):
        engine.modify(str(scene.mnt), parse_options("ro,suid,exec"))
    after = at(scene.victim)
    assert before is not None and after is not None
    assert (after.vfs_options, after.super_options) == (before.vfs_options, before.super_options)
    engine.close()


@pytest.mark.private_namespace
def test_a_parent_renamed_between_check_and_mount_never_stacks(tmp_path: Path,
                                                               api: MountApi) -> None:
    scene = Scene(tmp_path, api)

    class Renaming(PathChecker):
        """Renames the parent away and back around the check, as a racing user."""

        def open_mount_point(self, target: str, *, file_ok: bool = False) -> Anchor:
            anchor = super().open_mount_point(target, file_ok=file_ok)
            os.rename(tmp_path / "r/d", tmp_path / "r/e")
            anchor.path = anchor.current_path()  # what the engine read: r/e/mnt
            os.rename(tmp_path / "r/e", tmp_path / "r/d")
            return anchor

    alice = MountSpec("tmpfs", str(scene.mnt), "tmpfs", parse_options("size=1m"))
    with scene.engine() as engine:
        engine.create(alice, holder="alice")
    with scene.engine(paths=Renaming()) as engine:
        bob = MountSpec("tmpfs", str(scene.mnt), "tmpfs", parse_options("size=2m"))
        # The path opened is not the one locked: refused before any plan
        # (the first build found the stack in the plan: "a mount point already").
        with pytest.raises(OperationFailed, match="changed while the request was checked"):
            engine.create(bob, holder="bob")
        table = MountTable(parse_mountinfo(Path("/proc/self/mountinfo").read_text()))
        assert len(table.mounts_at(str(scene.mnt))) == 1, "never stacked"
        held = engine.held(str(scene.mnt))
        assert held is not None and held.holders == ("alice",), "alice keeps her hold"


@pytest.mark.private_namespace
def test_an_rbind_is_deleted_with_its_submounts(tmp_path: Path, api: MountApi) -> None:
    scene = Scene(tmp_path, api)
    source = tmp_path / "src"
    source.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "srcfs", str(source)], check=True)
    (source / "sub").mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "subfs", str(source / "sub")], check=True)
    with scene.engine() as engine:
        engine.create(MountSpec(str(source), str(scene.mnt), None, recursive=True),
                      holder="me")
        assert at(scene.mnt / "sub") is not None
        engine.delete(str(scene.mnt), holder="me")
        assert at(scene.mnt) is None and at(scene.mnt / "sub") is None
        # Refused as asked (lazytime is a superblock flag a bind cannot set):
        # nothing of the rbind is left behind.
        with pytest.raises(MountError, match="lazytime"):
            engine.create(MountSpec(str(source), str(scene.mnt), None,
                                    parse_options("lazytime"), recursive=True), holder="me")
        assert at(scene.mnt) is None and at(scene.mnt / "sub") is None
    assert at(source / "sub") is not None, "the origin's own submount stays"


@pytest.mark.private_namespace
@pytest.mark.kernel
@requires_tool("squashfuse")
@requires_tool("mksquashfs")
def test_a_helper_mount_that_lands_elsewhere_is_taken_back(tmp_path: Path,
                                                          api: MountApi) -> None:
    # mount(8) takes the mount point as a path: a swap while it starts makes it
    # mount elsewhere. The result is compared with the table before, and what
    # it made elsewhere is taken back; the reply says where it went.
    scene = Scene(tmp_path, api)
    image = mkfs_image(tmp_path, "squashfs", files={"f": "x"})
    wrapper = tmp_path / "mount-after-a-swap"
    wrapper.write_text(
        "#!/bin/sh\n"
        f"mv {tmp_path}/r/d {tmp_path}/r/e && ln -s {tmp_path}/victim {tmp_path}/r/d\n"
        'exec mount "$@"\n')
    wrapper.chmod(0o755)
    kernel = LinuxKernel(mount_api=api, mount_program=str(wrapper))
    with MountManager(kernel, fstab_path=tmp_path / "fstab", state_dir=tmp_path / "state",
                      timers=False) as engine, pytest.raises(MountError, match="not on"):
        engine.create(MountSpec(image, str(scene.mnt), "fuse.squashfuse",
                                parse_options("ro")), holder="me")
    victim = at(scene.victim)
    assert victim is not None and victim.source == "victimfs", "nothing left on the victim"
    table = MountTable(parse_mountinfo(Path("/proc/self/mountinfo").read_text()))
    assert not [r for r in table if r.fstype.startswith("fuse")], "no helper mount is left"


@pytest.mark.private_namespace
@pytest.mark.kernel
@requires_tool("squashfuse")
@requires_tool("mksquashfs")
def test_a_helper_that_mounts_nowhere_takes_back_no_other_helper_s_mount(
        tmp_path: Path, api: MountApi) -> None:
    # Helpers of two mount points run side by side. One reports success without
    # mounting (its stray search looks for new mounts of its type) while the
    # other's mount came up meanwhile: that mount is the other's, never a stray.
    image = mkfs_image(tmp_path, "squashfs", files={"f": "x"})
    lazy, busy, go = tmp_path / "lazy", tmp_path / "busy", tmp_path / "go"
    lazy.mkdir()
    busy.mkdir()
    wrapper = tmp_path / "mount-or-not"
    wrapper.write_text(
        "#!/bin/sh\n"
        'eval "last=\\${$#}"\n'
        f'if [ "$last" = {lazy} ]; then\n'
        f"    while [ ! -e {go} ]; do sleep 0.01; done; exit 0\n"
        "fi\n"
        'exec mount "$@"\n')
    wrapper.chmod(0o755)
    kernel = LinuxKernel(mount_api=api, mount_program=str(wrapper))
    failures: list[KernelError] = []

    def mount_lazily() -> None:
        try:
            kernel.mount(str(image), str(lazy), "fuse.squashfuse", MS_RDONLY)
        except KernelError as exc:
            failures.append(exc)

    thread = threading.Thread(target=mount_lazily)
    thread.start()
    try:
        made = kernel.mount(str(image), str(busy), "fuse.squashfuse", MS_RDONLY)
    finally:
        go.touch()
        thread.join(30)
    assert [f.errno for f in failures] == [errno.ESTALE], failures
    assert "mounted on nowhere" in str(failures[0])
    live = at(busy)
    assert live is not None and live.mount_id == made.mount_id, "the other helper's mount stays"
    kernel.unmount(str(busy), 0, expect=made.mount_id)


@pytest.mark.private_namespace
def test_a_propagation_change_never_reaches_another_mount(tmp_path: Path,
                                                          api: MountApi) -> None:
    # Right after the kernel mount, the parent is swapped for a symlink to a
    # directory holding root's shared mount: the propagation change that
    # follows must not make that mount private, and ours must not stay behind.
    scene = Scene(tmp_path, api)
    subprocess.run(["mount", "--make-shared", str(scene.victim)], check=True)
    kernel = LinuxKernel(mount_api=api)
    mount = kernel.mount

    def mount_then_swap(*args: object, **kwargs: object) -> MountRecord:
        record = mount(*args, **kwargs)  # type: ignore[arg-type]
        if args[2] == "tmpfs":  # the new mount, not the propagation change
            scene.swap_parent()
        return record

    kernel.mount = mount_then_swap  # type: ignore[method-assign]
    with MountManager(kernel, fstab_path=tmp_path / "fstab", state_dir=tmp_path / "state",
                      timers=False) as engine, pytest.raises(MountError):
        engine.create(MountSpec("tmpfs", str(scene.mnt), "tmpfs", parse_options("private")),
                      holder="me")
    victim = at(scene.victim)
    assert victim is not None and "shared:" in " ".join(victim.optional_fields), victim
    assert at(tmp_path / "r/e/mnt") is None, "our mount was taken back where it went"


@pytest.mark.private_namespace
@pytest.mark.parametrize("read", ["a request after the rename", "a table cached before it"])
def test_the_hold_timer_finds_a_mount_whose_mount_point_was_renamed(
    tmp_path: Path, api: MountApi, read: str
) -> None:
    # Released with a hold time, then the owner of the parent renames it: the
    # mount must still go when the hold time ends, not stay forever untracked.
    # A rename is no mount event: a table cached before it still shows the
    # old path, and the timer must look the mount up afresh.
    world = World("real", tmp_path, mount_api=api)
    source, target = world.dir("source"), world.dir("parent/mnt")
    with world.manager(hold_seconds=10) as engine:
        engine.acquire(MountSpec(source, target, None), "a")
        engine.release(target, "a")
        if read == "a table cached before it":
            engine.status()
        (tmp_path / "parent").rename(tmp_path / "renamed")
        if read == "a request after the rename":
            engine.acquire(MountSpec(source, world.dir("other"), None), "b")  # a reconcile
        world.clock.advance(11)
        engine.run_due_timers()
        assert at(tmp_path / "renamed/mnt") is None
        assert engine.held(target) is None


@pytest.mark.private_namespace
def test_a_held_mount_renamed_while_the_service_was_down_is_kept_and_released(
    tmp_path: Path, api: MountApi
) -> None:
    world = World("real", tmp_path, mount_api=api)
    source, target = world.dir("source"), world.dir("parent/mnt")
    with world.manager() as engine:
        engine.acquire(MountSpec(source, target, None), "a")
    (tmp_path / "parent").rename(tmp_path / "renamed")
    identity = world.kernel.mount_identity("/")
    with world.manager() as engine:
        held = engine.held(target)
        if identity is None or identity[1] is None:
            # Without unique mount ids (Linux < 6.8) a mount id alone cannot
            # prove, after a restart, that the mount is still ours.
            assert held is None and at(tmp_path / "renamed/mnt") is not None
            return
        assert held is not None and held.holders == ("a",)
        engine.release(target, "a")  # the holder's reference names the old path
        assert at(tmp_path / "renamed/mnt") is None
        assert engine.held(target) is None


@pytest.mark.private_namespace
@pytest.mark.parametrize("where", ["elsewhere", "same path"])
def test_a_reused_mount_id_never_makes_a_foreign_mount_ours(
    tmp_path: Path, api: MountApi, where: str
) -> None:
    # Linux gives a freed mount id to the next mount at once: a mount made by
    # someone else after ours went away must not be unmounted by our timer.
    world = World("real", tmp_path, mount_api=api)
    target = world.dir("a")
    with world.manager(hold_seconds=10) as engine:
        engine.acquire(MountSpec("tmpfs", target, "tmpfs"), "me")
        engine.release(target, "me")
        old_id = at(target).mount_id  # type: ignore[union-attr]
        subprocess.run(["umount", target], check=True)
        foreign = target if where == "same path" else world.dir("other")
        subprocess.run(["mount", "-t", "tmpfs", "foreign", foreign], check=True)
        (Path(foreign) / "data").write_text("theirs")
        assert at(foreign).mount_id == old_id, "the kernel reused the id"  # type: ignore[union-attr]
        world.clock.advance(11)
        engine.run_due_timers()
        assert (Path(foreign) / "data").read_text() == "theirs"


@pytest.mark.private_namespace
def test_taking_back_a_failed_mount_leaves_what_someone_stacked_on_it(
    tmp_path: Path, api: MountApi
) -> None:
    # Between our mount and its propagation change someone mounts on a
    # directory in it: the take-back of our failed mount must not unmount theirs with it
    # (only an rbind's submounts are its own).
    target = tmp_path / "mnt"
    target.mkdir()
    kernel = LinuxKernel(mount_api=api)
    mount = kernel.mount

    def mount_then_stack(*args: object, **kwargs: object) -> MountRecord:
        if args[2] != "tmpfs":  # the propagation change fails
            raise KernelError(errno.EIO, "mount", str(target))
        record = mount(*args, **kwargs)  # type: ignore[arg-type]
        (target / "sub").mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "theirs", str(target / "sub")], check=True)
        (target / "sub/data").write_text("theirs")
        return record

    kernel.mount = mount_then_stack  # type: ignore[method-assign]
    with MountManager(kernel, fstab_path=tmp_path / "fstab", state_dir=tmp_path / "state",
                      timers=False) as engine, pytest.raises(MountError):
        engine.create(MountSpec("tmpfs", str(target), "tmpfs", parse_options("private")),
                      holder="me")
    assert (target / "sub/data").read_text() == "theirs"


def renamed_scene(tmp_path: Path, api: MountApi) -> tuple[World, str, str]:
    """A real world with a bind source and a mount point ``p/a``."""
    world = World("real", tmp_path, mount_api=api)
    return world, world.dir("source"), world.dir("p/a")


def hold_then_rename(engine: MountManager, world: World, source: str, target: str) -> None:
    """``x`` holds a bind on ``p/a``; then ``p`` is renamed ``q`` and a new ``p/a`` made."""
    engine.acquire(MountSpec(source, target, None), "x")
    (world.root / "p").rename(world.root / "q")
    world.dir("p/a")


@pytest.mark.private_namespace
def test_a_release_by_the_old_path_finds_the_renamed_mount_not_the_one_there_now(
    tmp_path: Path, api: MountApi
) -> None:
    # The holder's reference names the old path; someone has mounted their
    # own file system there since the rename. The release is about ours.
    world, source, target = renamed_scene(tmp_path, api)
    with world.manager() as engine:
        hold_then_rename(engine, world, source, target)
        subprocess.run(["mount", "-t", "tmpfs", "foreign", target], check=True)
        (Path(target) / "data").write_text("theirs")
        engine.release(target, "x")
        assert engine.held(target) is None
    assert (Path(target) / "data").read_text() == "theirs"
    assert at(tmp_path / "q/a") is None, "ours is released where it is"


@pytest.mark.private_namespace
def test_mounting_again_on_the_old_path_of_a_renamed_held_mount_is_refused_clearly(
    tmp_path: Path, api: MountApi
) -> None:
    world, source, target = renamed_scene(tmp_path, api)
    with world.manager() as engine:
        hold_then_rename(engine, world, source, target)
        with pytest.raises(InUse, match=r"now on .*q/a.*renamed") as refused:
            engine.acquire(MountSpec(source, target, None), "y")
        assert refused.value.value == target
        engine.release(target, "x")
        engine.acquire(MountSpec(source, target, None), "y")
        engine.release(target, "y")


@pytest.mark.private_namespace
def test_a_mount_point_swapped_for_a_magic_link_stops_no_other_hold_timer(
    tmp_path: Path, api: MountApi
) -> None:
    # The owner of a parent renames it (the mount goes with it) and leaves a
    # symlink to /proc/self/ns/net where the mount point was: the kernel names
    # that "net:[...]", no path. The first build of the O_PATH lock keys raised
    # on it in the hold timer, every round, and no held mount expired again.
    world = World("real", tmp_path, mount_api=api)
    source, hostile, victim = world.dir("source"), world.dir("user/mnt"), world.dir("v/mnt")
    with world.manager(hold_seconds=10) as engine:
        for target, holder in ((hostile, "a"), (victim, "b")):
            engine.acquire(MountSpec(source, target, None), holder)
            engine.release(target, holder)
            world.clock.advance(1)
        (tmp_path / "user").rename(tmp_path / "user2")
        (tmp_path / "user").mkdir()
        os.symlink("/proc/self/ns/net", tmp_path / "user/mnt")
        world.clock.advance(60)
        engine.run_due_timers()
        assert at(tmp_path / "v/mnt") is None and engine.held(victim) is None


@pytest.mark.private_namespace
def test_releasing_an_rbind_of_a_shared_tree_unmounts_none_of_the_originals(
    tmp_path: Path, api: MountApi
) -> None:
    # systemd makes / shared: an rbind's submounts are peers of the originals,
    # and unmounting a peer unmounts the original too (umount propagation),
    # as ``umount -R`` does unless the tree is made rslave first. The first
    # build unmounted the host's own submount when it released the rbind.
    base = tmp_path / "base"
    base.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "base", str(base)], check=True)
    subprocess.run(["mount", "--make-shared", str(base)], check=True)
    (base / "src" / "sub").mkdir(parents=True)
    (base / "tgt").mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "sub", str(base / "src" / "sub")], check=True)
    world = World("real", tmp_path, mount_api=api)
    source, target = str(base / "src"), str(base / "tgt")
    with world.manager(hold_seconds=0) as engine:
        engine.acquire(MountSpec(source, target, None, recursive=True), "a")
        assert at(base / "tgt" / "sub") is not None
        engine.release(target, "a")
        assert at(target) is None and at(base / "tgt" / "sub") is None
        assert at(base / "src" / "sub") is not None, "the original submount went too"


@pytest.mark.private_namespace
def test_a_held_mount_renamed_then_covered_is_kept_and_never_the_one_unmounted(
    tmp_path: Path, api: MountApi
) -> None:
    # The parent renamed, then a tmpfs mounted over the held mount where it is
    # now: the mount at its new path was taken for another one and its
    # holders were forgotten, leaving our mount untracked (a second review).
    world = World("real", tmp_path, mount_api=api)
    source, target = world.dir("source"), world.dir("parent/mnt")
    with world.manager() as engine:
        engine.acquire(MountSpec(source, target, None), "a")
        engine.acquire(MountSpec(source, target, None), "b")
        (tmp_path / "parent").rename(tmp_path / "renamed")
        moved = str(tmp_path / "renamed/mnt")
        world.kernel.mount("admin", moved, "tmpfs", 0)
        engine.status()
        engine.release(target, "a")  # the mount stays: nothing to unmount
        for refused in (lambda: engine.release(target, "b"),
                        lambda: engine.force_unmount(target)):
            with pytest.raises(InUse, match=r"renamed/mnt' is covered by another mount "
                                            r"\('admin'"):
                refused()
        held = engine.held(target)
        assert held is not None and held.holders == ("b",)
        assert [m.fstype for m in world.mounts_at(moved)][1:] == ["tmpfs"]
        assert len(world.mounts_at(moved)) == 2
        world.kernel.unmount(moved)  # the administrator's, by hand
        engine.release(target, "b")
        assert world.mounts_at(moved) == [] and engine.held(target) is None


NOBODY = 65534


class UserTree:
    """``u`` owned by a local user (nobody), beside root's ``victim`` directory and
    a root-only disk image: what a request naming a path under ``u`` may reach."""

    def __init__(self, base: Path, api: MountApi) -> None:
        self.base = base
        self.user = base / "u"
        self.user.mkdir()
        os.chown(self.user, NOBODY, NOBODY)
        self.victim = base / "victim"
        self.victim.mkdir(mode=0o700)
        (base / "fstab").write_text("")
        self.api = api

    def engine(self) -> MountManager:
        return MountManager(LinuxKernel(mount_api=self.api), fstab_path=self.base / "fstab",
                            state_dir=self.base / "state", timers=False).start()

    def user_path(self, name: str, *, link_to: str | None = None, directory: bool = False
                  ) -> str:
        """``u/name``, made by the user: a symlink to ``link_to``, or a directory."""
        path = self.user / name
        if link_to is not None:
            path.symlink_to(link_to)
            os.lchown(path, NOBODY, NOBODY)
        elif directory:
            path.mkdir()
            os.chown(path, NOBODY, NOBODY)
        return str(path)


@pytest.mark.private_namespace
@pytest.mark.parametrize("link", ["absolute", "relative"])
def test_a_user_s_symlink_never_leads_root_s_mount_out_of_the_user_s_tree(
        tmp_path: Path, api: MountApi, link: str) -> None:
    # A review: nobody's symlink u/mnt -> /etc, and CreateMount of u/mnt
    # mounted over /etc (Mode 1 wrote "/etc" into fstab): root followed a
    # link that a user owns out of that user's tree, which systemd's
    # chase(CHASE_SAFE) refuses as an unsafe transition.
    tree = UserTree(tmp_path, api)
    target = str(tree.victim) if link == "absolute" else "../victim"
    mnt = tree.user_path("mnt", link_to=target)
    src = tree.user_path("src", link_to=target)
    own = tree.user_path("own", directory=True)
    engine = tree.engine()
    for spec in (MountSpec("tmpfs", mnt, "tmpfs", parse_options("size=1m")),
                 MountSpec(src, own, None, parse_options("bind"))):
        for current, persist in ((True, False), (True, True), (False, True)):
            if not current and spec.target == own:
                continue  # a line alone does not open its bind source
            with pytest.raises(MountError) as caught:
                engine.create(spec, holder="alice", current=current, persist=persist)
            assert "symbolic link" in str(caught.value) and "u/" in str(caught.value), caught.value
            assert at(tree.victim) is None and at(own) is None
    assert (tmp_path / "fstab").read_text() == ""
    # Nor does a request on fstab alone find root's line through the link.
    line = f"tmpfs {tree.victim} tmpfs defaults 0 0\n"
    (tmp_path / "fstab").write_text(line)
    with pytest.raises(MountError):
        engine.delete(mnt, current=False, persist=True)
    assert (tmp_path / "fstab").read_text() == line
    engine.close()


@pytest.mark.private_namespace
def test_a_user_s_symlink_within_the_user_s_tree_is_followed(tmp_path: Path,
                                                             api: MountApi) -> None:
    tree = UserTree(tmp_path, api)
    real = tree.user_path("real", directory=True)
    mnt = tree.user_path("mnt", link_to="real")
    engine = tree.engine()
    engine.create(MountSpec("tmpfs", mnt, "tmpfs", parse_options("size=1m")), holder="alice")
    record = at(real)
    assert record is not None and record.fstype == "tmpfs"
    engine.delete(real, holder="alice")
    engine.close()


@pytest.mark.private_namespace
@requires_tool("mkfs.ext4")
def test_a_user_s_image_link_never_reaches_root_s_image(tmp_path: Path, api: MountApi) -> None:
    # A review: root-only victim.img mounted for a request on nobody's
    # u/disk.img (a symlink), read-write, its mount count raised.
    tree = UserTree(tmp_path, api)
    victim = mkfs_image(tree.victim, "ext4")
    disk = tree.user_path("disk.img", link_to=victim)
    own = tree.user_path("mnt", directory=True)
    before = (Path(victim).stat().st_mtime_ns, Path(victim).read_bytes()[:2048])
    engine = tree.engine()
    with pytest.raises(MountError) as caught:
        engine.create(MountSpec(disk, own, "ext4", parse_options("defaults")), holder="alice")
    assert "symbolic link" in str(caught.value), caught.value
    assert at(own) is None
    assert (Path(victim).stat().st_mtime_ns, Path(victim).read_bytes()[:2048]) == before
    engine.close()


@pytest.mark.private_namespace
def test_x_mount_mkdir_makes_the_mount_point_as_mount8_does_and_only_in_the_user_s_tree(
        tmp_path: Path, api: MountApi) -> None:
    # A review: X-mount.mkdir was kept for fstab but ignored by the service
    # ("mount point does not exist"), where mount(8) makes the directories.
    tree = UserTree(tmp_path, api)
    engine = tree.engine()
    ours, theirs = tmp_path / "ours/a/b", tmp_path / "theirs/a/b"
    for mode, directory in (("=0750", "x"), ("", "y")):
        options = f"size=1m,X-mount.mkdir{mode}"
        engine.create(MountSpec("tmpfs", str(ours / directory), "tmpfs",
                                parse_options(options)), holder="alice")
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "t", str(theirs / directory)],
                       check=True)
        for path in (Path("a"), Path("a/b"), Path(f"a/b/{directory}")):
            mine, oracle = tmp_path / "ours" / path, tmp_path / "theirs" / path
            if path.name == directory:  # the mount's root: read the directory under it
                engine.delete(str(mine), holder="alice")
                subprocess.run(["umount", str(oracle)], check=True)
            assert (mine.stat().st_mode & 0o7777) == (oracle.stat().st_mode & 0o7777), path
    # A dry run makes nothing; a mode mount(8) cannot parse is refused, named.
    plan = engine.create(MountSpec("tmpfs", str(ours / "z"), "tmpfs",
                                   parse_options("X-mount.mkdir")), holder="a", dry_run=True)
    assert any("would make the mount point" in note for note in plan.plan.notes)
    assert not (ours / "z").exists()
    with pytest.raises(MountError, match=r"X-mount\.mkdir=999"):
        engine.create(MountSpec("tmpfs", str(ours / "w"), "tmpfs",
                                parse_options("X-mount.mkdir=999")), holder="a")
    # Through a user's link out of his tree, nothing is made anywhere.
    tree.user_path("link", link_to=str(tree.victim))
    with pytest.raises(MountError, match="symbolic link"):
        engine.create(MountSpec("tmpfs", str(tree.user / "link/new"), "tmpfs",
                                parse_options("X-mount.mkdir")), holder="a")
    assert not (tree.victim / "new").exists()
    engine.close()


@pytest.mark.private_namespace
@pytest.mark.parametrize("mode", [
    pytest.param(0o1777, id="sticky-for-all"),  # /tmp
    pytest.param(0o2775, id="group-writable"),  # root:staff, as /usr/local may be
])
def test_a_user_s_link_in_a_directory_others_may_write_is_not_followed(
        tmp_path: Path, api: MountApi, mode: int) -> None:
    # Reviews: nobody's relative /tmp/x -> ../etc passed (/tmp is root's) and
    # took a mount over the root-only directory, and so did his link in a
    # directory his group may write; the kernel's fs.protected_symlinks rule,
    # applied whatever the sysctl says and to group-writable ones, refuses it.
    tree = UserTree(tmp_path, api)
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(mode)
    (shared / "x").symlink_to("../victim")
    os.lchown(shared / "x", NOBODY, NOBODY)
    (shared / "mine").symlink_to("../victim")  # root's own link there is followed
    engine = tree.engine()
    with pytest.raises(MountError, match="others may write"):
        engine.create(MountSpec("tmpfs", str(shared / "x"), "tmpfs", parse_options("size=1m")),
                      holder="a")
    assert at(tree.victim) is None
    engine.create(MountSpec("tmpfs", str(shared / "mine"), "tmpfs", parse_options("size=1m")),
                  holder="a")
    assert at(tree.victim) is not None
    engine.delete(str(tree.victim), holder="a")
    engine.close()


@pytest.mark.private_namespace
@requires_tool("mkfs.ext4")
def test_a_loop_device_is_reused_only_for_the_very_file_it_backs(tmp_path: Path,
                                                                  api: MountApi) -> None:
    # A review got root: once nobody's mounted image was deleted, sysfs showed
    # its backing file as "x.img (deleted)"; his link of that name to root's
    # image made root's mount reuse nobody's loop device (his file system).
    tree = UserTree(tmp_path, api)
    theirs = Path(mkfs_image(tree.user, "ext4", files={"who": "nobody"}))
    os.chown(theirs, NOBODY, NOBODY)
    ours = Path(mkfs_image(tree.victim, "ext4", files={"who": "root"}))
    first, second = tree.user_path("m1", directory=True), str(tmp_path / "m2")
    os.mkdir(second)
    engine = tree.engine()
    engine.create(MountSpec(str(theirs), first, "ext4", parse_options("ro")), holder="a")
    theirs.unlink()
    deleted = theirs.with_name(theirs.name + " (deleted)")
    deleted.symlink_to(ours)
    os.lchown(deleted, NOBODY, NOBODY)
    engine.create(MountSpec(str(ours), second, "ext4", parse_options("ro")), holder="a")
    assert (Path(second) / "who").read_text() == "root"
    mounted = [at(first), at(second)]
    assert None not in mounted and mounted[0].source != mounted[1].source  # type: ignore[union-attr]
    engine.delete(second, holder="a")
    engine.delete(first, holder="a")
    engine.close()


@pytest.mark.private_namespace
def test_an_image_name_is_opened_once_and_must_be_a_file_or_a_device(
        tmp_path: Path, api: MountApi) -> None:
    # A review: the file was told from a device by its name, and the kernel
    # given the name again: nobody swapping his image for a link to root's
    # device had it mounted; a FIFO there hung the request for ever.
    tree = UserTree(tmp_path, api)
    own = tree.user_path("mnt", directory=True)
    fifo = tree.user / "pipe.img"
    os.mkfifo(fifo)
    os.chown(fifo, NOBODY, NOBODY)
    kernel = LinuxKernel(mount_api=api)
    with pytest.raises(KernelError) as caught:
        kernel.mount(str(fifo), own, "ext4", 0)
    assert caught.value.errno == errno.ENOTBLK
    loop = subprocess.run(["losetup", "-f"], capture_output=True, text=True,
                          check=True).stdout.strip()
    device = tree.user_path("disk.img", link_to=loop)  # nobody's link to root's device
    with pytest.raises(KernelError) as caught:
        kernel.mount(device, own, "ext4", 0)
    assert caught.value.errno == errno.ENOLINK and at(own) is None


@pytest.mark.private_namespace
@pytest.mark.kernel
@requires_tool("squashfuse")
@requires_tool("mksquashfs")
def test_a_helper_is_given_only_names_no_user_can_change(tmp_path: Path, api: MountApi) -> None:
    # A review: mount(8) and squashfuse take names, not the descriptors the
    # service checked; nobody swapped his mount point for a link to a root
    # directory, or his image for a link to root's 0600 image, as they started.
    tree = UserTree(tmp_path, api)
    theirs = Path(mkfs_image(tree.user, "squashfs", files={"f": "x"}))
    ours = Path(mkfs_image(tree.victim, "squashfs", files={"f": "y"}))
    user_mnt = tree.user_path("mnt", directory=True)
    root_mnt = tmp_path / "m"
    root_mnt.mkdir()
    engine = tree.engine()
    for source, target, role in ((str(ours), user_mnt, "mount point"),
                                 (str(theirs), str(root_mnt), "source")):
        with pytest.raises(MountError, match=f"given the {role} by name"):
            engine.create(MountSpec(source, target, "fuse.squashfuse", parse_options("ro")),
                          holder="a")
    assert at(user_mnt) is None and at(root_mnt) is None
    # Names only root can change are given as they are.
    engine.create(MountSpec(str(ours), str(root_mnt), "fuse.squashfuse", parse_options("ro")),
                  holder="a")
    assert (root_mnt / "f").read_text() == "y"
    engine.delete(str(root_mnt), holder="a")
    engine.close()


@pytest.mark.private_namespace
@requires_tool("mkfs.ext4")
@requires_tool("losetup")
def test_a_tag_that_names_two_devices_names_none(tmp_path: Path, api: MountApi) -> None:
    # A review: nobody made his image with root's label (and UUID, public in
    # fstab); libblkid named the device probed last, and root's LABEL= mount
    # got nobody's file system with root's flags.
    tree = UserTree(tmp_path, api)
    images = [tmp_path / "victim/root.img", tree.user / "u.img"]
    for image in images:
        with open(image, "wb") as stream:
            stream.truncate(16 << 20)
        subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "lmi-dup-test", str(image)], check=True)
    target = str(tmp_path / "tools")
    os.mkdir(target)
    devices = []
    engine = tree.engine()
    try:
        for image in images:
            devices.append(subprocess.run(["losetup", "-f", "--show", str(image)], check=True,
                                          capture_output=True, text=True).stdout.strip())
        with pytest.raises(MountError) as caught:
            engine.create(MountSpec("LABEL=lmi-dup-test", target, "ext4", parse_options("ro")),
                          holder="a")
        assert "names 2 devices" in str(caught.value)
        assert all(device in str(caught.value) for device in devices)
        assert at(target) is None
        # One match is no better when it is an image's: its maker wrote its
        # label (a review: nobody's image, root's disk absent, was mounted).
        subprocess.run(["losetup", "-d", devices.pop()], check=True)
        with pytest.raises(MountError, match="a loop device over an image"):
            engine.create(MountSpec("LABEL=lmi-dup-test", target, "ext4", parse_options("ro")),
                          holder="a")
        assert at(target) is None
    finally:
        engine.close()
        for device in devices:
            subprocess.run(["losetup", "-d", device], check=False)


@pytest.mark.private_namespace
@pytest.mark.kernel
@requires_tool("squashfuse")
@requires_tool("mksquashfs")
def test_a_helper_source_is_checked_in_every_spelling_and_before_anything_is_made(
        tmp_path: Path, api: MountApi) -> None:
    # A review: "squashfuse#/home/nobody/y.img" (type fuse) and a relative
    # source skipped the checks; a dry run said it would mount, and
    # X-mount.mkdir left directories behind before the refusal.
    tree = UserTree(tmp_path, api)
    ours = Path(mkfs_image(tree.victim, "squashfs", files={"f": "y"}))
    link = tree.user_path("y.img", link_to=str(ours))
    target = tmp_path / "m"
    target.mkdir()
    engine = tree.engine()
    for source, fstype, said in ((f"squashfuse#{link}", "fuse", "by name"),
                                 (link, "fuse.squashfuse", "symbolic link")):
        with pytest.raises(MountError, match=said):
            engine.create(MountSpec(source, str(target), fstype, parse_options("ro")),
                          holder="a", dry_run=True)
    with pytest.raises(MountError, match="relative path"):
        engine.create(MountSpec("y.img", str(target), "fuse.squashfuse", parse_options("ro")),
                      holder="a")
    made = tree.user / "new/dir"
    with pytest.raises(MountError, match="by name"):
        engine.create(MountSpec(str(ours), str(made), "fuse.squashfuse",
                                parse_options("ro,X-mount.mkdir")), holder="a")
    assert not (tree.user / "new").exists() and at(target) is None
    engine.close()


@pytest.mark.private_namespace
@requires_tool("mksquashfs")
def test_links_in_a_user_s_image_lead_nowhere_out_of_it(tmp_path: Path, api: MountApi) -> None:
    # A review: nobody's squashfs made with -all-root shows his links as
    # root's; once mounted for him, a mount at a path through one landed on
    # root's 0700 directory. On an image, owners are what its maker wrote.
    tree = UserTree(tmp_path, api)
    content = tmp_path / "content"
    content.mkdir()
    (content / "abs").symlink_to(tree.victim)
    (content / "rel").symlink_to("../../victim")
    (content / "own").mkdir()
    (content / "inside").symlink_to("own")
    image = tree.user / "his.sqfs"
    subprocess.run(["mksquashfs", str(content), str(image), "-all-root", "-quiet", "-noappend",
                    "-no-progress"], check=True, stdout=subprocess.DEVNULL)
    os.chown(image, NOBODY, NOBODY)
    mnt = tree.user_path("mnt", directory=True)
    engine = tree.engine()
    engine.create(MountSpec(str(image), mnt, "squashfs", parse_options("ro,nosuid,nodev")),
                  holder="nobody")
    for link in ("abs", "rel"):
        with pytest.raises(MountError, match="its maker wrote"):
            engine.create(MountSpec("tmpfs", f"{mnt}/{link}", "tmpfs",
                                    parse_options("size=1m")), holder="a")
        assert at(tree.victim) is None
    # A link that stays in the image is followed.
    engine.create(MountSpec("tmpfs", f"{mnt}/inside", "tmpfs", parse_options("size=1m")),
                  holder="a")
    assert at(f"{mnt}/own") is not None
    engine.delete(f"{mnt}/own", holder="a")
    engine.delete(mnt, holder="nobody")
    engine.close()


@pytest.mark.private_namespace
@pytest.mark.parametrize("role", ["mount point", "bind source"])
def test_a_path_longer_than_path_max_is_an_invalid_request_naming_it(
        tmp_path: Path, api: MountApi, role: str) -> None:
    # A review got OSError "File name too long: '/proc/self/fd/8'" for a live
    # mount there; fstab lines were refused by name already.
    scene = Scene(tmp_path, api)
    deep = longer_than_path_max(tmp_path / "r")
    spec = (MountSpec("tmpfs", deep, "tmpfs", parse_options("size=1m")) if role == "mount point"
            else MountSpec(deep, str(scene.mnt), None))
    before = Path("/proc/self/mountinfo").read_text()
    engine = scene.engine()
    with pytest.raises(InvalidRequest, match="longer than PATH_MAX") as refused:
        engine.create(spec, holder="me")
    assert f"{role} {deep[:40]!r}" in str(refused.value) and refused.value.value == deep
    assert Path("/proc/self/mountinfo").read_text() == before
    assert engine.holders() == [] and (tmp_path / "fstab").read_text() == ""
