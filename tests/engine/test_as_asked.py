"""Requests come up exactly as asked, or fail naming what could not be done.

Regression tests for the first build (a "read-only, no-exec" bind came up
writable; "failed: Invalid argument" where the kernel had its own words) and
for an outside review of the second one (``atime`` dropped on a remount,
``mand`` left behind by a "rolled back" remount, file system options on a
bind or ignored by a remount reported as applied, a FUSE type naming any
program to run as root). Each runs on the fake and, as root, on the kernel.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from lmi_mount.engine import MountManager
from lmi_mount.linux.kernel import LinuxKernel
from lmi_mount.mounts.errors import InvalidRequest, MountError
from lmi_mount.mounts.flags import MS_NODEV, MS_NOEXEC, MS_NOSUID
from lmi_mount.mounts.options import parse_options, same_meaning, with_unnamed_at_defaults
from lmi_mount.mounts.plan import MountSpec
from tests.contract.helpers import mkfs_image
from tests.engine.conftest import KERNELS, World
from tests.support.skips import requires_tool


def vfs(world: World, target: str) -> tuple[str, ...]:
    [record] = world.mounts_at(target)
    return record.vfs_options


def test_a_read_only_no_exec_bind_is_read_only_and_no_exec(world: World) -> None:
    with world.manager() as engine:
        source = world.dir("src")
        (Path(source) / "script").write_text("#!/bin/sh\nexit 0\n")
        (Path(source) / "script").chmod(0o755)
        target = world.dir("dst")
        engine.create(MountSpec(source, target, None, parse_options("ro,noexec")), holder="a")
        assert vfs(world, target)[0] == "ro" and "noexec" in vfs(world, target)
        if isinstance(world.kernel, LinuxKernel):  # the files are real: probe them
            with pytest.raises(OSError):
                (Path(target) / "new").write_text("x")
            with pytest.raises(PermissionError):
                subprocess.run([f"{target}/script"], check=False)
        # A second holder with the same Goal shares it (it is live as asked).
        engine.create(MountSpec(source, target, None, parse_options("ro,noexec")), holder="b")
        assert engine.held(target).holders == ("a", "b")  # type: ignore[union-attr]


def test_atime_on_a_noatime_mount_gives_the_default_mode(world: World) -> None:
    with world.manager() as engine:
        target = world.dir("mnt")
        engine.create(MountSpec("tmpfs", target, "tmpfs", parse_options("noatime")),
                      holder="a")
        engine.modify(target, parse_options("atime"))
        assert "noatime" not in vfs(world, target) and "relatime" in vfs(world, target)


def test_file_system_options_on_a_bind_are_refused_before_anything(world: World) -> None:
    with world.manager() as engine:
        source, target = world.dir("src"), world.dir("dst")
        for options in ("size=1m", "sync", "lazytime"):
            with pytest.raises(InvalidRequest, match="bind mount shares"):
                engine.create(MountSpec(source, target, None, parse_options(options)),
                              holder="a")
        assert world.mounts_at(target) == []


def test_a_remount_option_tmpfs_ignores_is_refused_not_reported_done(world: World) -> None:
    with world.manager() as engine:
        target = world.dir("mnt")
        engine.create(MountSpec("tmpfs", target, "tmpfs", parse_options("size=1m")),
                      holder="a")
        before = world.mounts_at(target)
        for options in ("mode=0700", "uid=65534"):
            with pytest.raises(InvalidRequest, match="a remount ignores it"):
                engine.modify(target, parse_options(options))
        assert world.mounts_at(target) == before
        engine.modify(target, parse_options("size=2m"))  # what a remount can change


@pytest.mark.parametrize("program, fstype, options", [
    pytest.param("sh#", "fuse", "defaults", id="interpreter-before-hash"),
    pytest.param("sh#", "fuse3", "defaults", id="fuse3-interpreter-before-hash"),
    pytest.param("sh#", "fuseblk", "defaults", id="fuseblk-interpreter-before-hash"),
    pytest.param("", "fuse./tmp/evil", "defaults", id="program-path-in-type"),
    pytest.param("", "fuse3.python3", "defaults", id="interpreter-in-type"),
    pytest.param("", "fuse.sshfs", "ssh_command=/tmp/evil", id="command-option"),
    pytest.param("sh#", "nfs", "defaults", id="hash-in-another-helper-type"),
])
@pytest.mark.parametrize("current", [True, False], ids=["mount", "fstab-only"])
def test_a_fuse_type_cannot_choose_a_file_to_run(
    world: World, program: str, fstype: str, options: str, current: bool
) -> None:
    script = Path(world.dir("files")) / "script"
    script.write_text("touch /tmp/pwned\n")
    spec = MountSpec(f"{program}{script}", world.dir("mnt"), fstype, parse_options(options))
    with world.manager() as engine, pytest.raises(InvalidRequest, match="run"):
        engine.create(spec, current=current, persist=not current, holder="a")
    assert world.fstab.read_text() == "# test fstab\n", "no line that runs it at boot"


@pytest.mark.root
@pytest.mark.private_namespace
def test_the_kernel_explains_a_refused_option_in_its_own_words(tmp_path: Path) -> None:
    world = World("real", tmp_path)
    with world.manager() as engine:
        with pytest.raises(MountError) as raised:
            engine.create(MountSpec("tmpfs", world.dir("mnt"), "tmpfs",
                                    parse_options("bogusopt")), holder="a")
        assert "tmpfs: Unknown parameter 'bogusopt'" in str(raised.value)
        engine.create(MountSpec("tmpfs", world.dir("mnt"), "tmpfs"), holder="a")
        with pytest.raises(InvalidRequest, match="dirsync"):
            engine.modify(world.dir("mnt"), parse_options("dirsync"))


@pytest.mark.root
@pytest.mark.private_namespace
def test_a_rolled_back_remount_leaves_no_mand_behind(tmp_path: Path) -> None:
    world = World("real", tmp_path)
    with world.manager() as engine:
        target = world.dir("mnt")
        engine.create(MountSpec("tmpfs", target, "tmpfs", parse_options("size=1m")),
                      holder="a")
        assert "mand" not in world.mounts_at(target)[0].super_options
        try:
            engine.modify(target, parse_options("mand"))
            applied = True
        except MountError:
            applied = False  # then it must really not be there
        # The reply and the kernel agree, whichever way the kernel went.
        assert ("mand" in world.mounts_at(target)[0].super_options) == applied


@pytest.mark.root
@pytest.mark.private_namespace
@pytest.mark.parametrize("word, tag", [("shared", "shared:"), ("unbindable", "unbindable")])
def test_a_propagation_option_is_live(tmp_path: Path, word: str, tag: str) -> None:
    world = World("real", tmp_path)
    with world.manager() as engine:
        target = world.dir("mnt")
        engine.create(MountSpec("tmpfs", target, "tmpfs", parse_options(word)), holder="a")
        [record] = world.mounts_at(target)
        assert any(field.startswith(tag) for field in record.optional_fields), record
        engine.modify(target, parse_options("private"))
        [record] = world.mounts_at(target)
        assert record.propagation == "private"


def test_modify_of_a_bind_cannot_change_its_origins_file_system(world: World) -> None:
    with world.manager() as engine:
        origin, target = world.dir("origin"), world.dir("dst")
        engine.create(MountSpec("tmpfs", origin, "tmpfs", parse_options("size=10m")),
                      holder="a")
        engine.create(MountSpec(origin, target, None), current=True, persist=True, holder="a")
        before = world.mounts_at(origin)
        for options in ("size=1m", "sync"):
            with pytest.raises(InvalidRequest, match="bind mount shares"):
                engine.modify(target, parse_options(options), current=True, persist=True)
        assert world.mounts_at(origin) == before
        assert "size" not in world.fstab.read_text()


# -- the util-linux maintainer's review -------------------------------------------------


def test_a_writable_remount_of_a_bind_of_a_read_only_file_system_makes_it_writable(
        world: World) -> None:
    """The bind's own flag was rw and its superblock ro: the plan saw nothing to
    change, ModifyMount answered done, and writes still failed with EROFS."""
    with world.manager() as engine:
        origin, target = world.dir("origin"), world.dir("dst")
        engine.create(MountSpec("tmpfs", origin, "tmpfs", parse_options("size=1m")), holder="a")
        engine.create(MountSpec(origin, target, None), holder="a")
        engine.modify(origin, parse_options("ro"))  # the file system's own mount: superblock
        [bind] = world.mounts_at(target)
        assert bind.vfs_options[0] == "rw" and bind.super_options[0] == "ro"
        outcome = engine.modify(target, parse_options("rw"))
        assert outcome.plan.steps
        [bind] = world.mounts_at(target)
        assert bind.vfs_options[0] == "rw" and bind.super_options[0] == "rw"
        if isinstance(world.kernel, LinuxKernel):
            (Path(target) / "new").write_text("x")
        status = engine.status_at(target)
        assert status is not None and not status.drift


def _tree_with_a_submount(world: World, engine: MountManager) -> tuple[str, str]:
    """A tmpfs ``tree`` with a tmpfs on ``tree/sub``, held by "a", and an empty
    directory to bind it onto."""
    tree, target = world.dir("tree"), world.dir("dst")
    engine.create(MountSpec("tmpfs", tree, "tmpfs"), holder="a")
    sub = Path(tree) / "sub"
    sub.mkdir()
    engine.create(MountSpec("tmpfs", str(sub), "tmpfs"), holder="a")
    return tree, target


def test_modify_of_an_rbind_applies_to_its_submounts_as_create_does(world: World) -> None:
    """Created from ``rbind,ro`` the whole tree is read-only; a ModifyMount to
    ``ro`` made the top read-only and left a writable hole below it."""
    with world.manager() as engine:
        tree, target = _tree_with_a_submount(world, engine)
        engine.create(MountSpec(tree, target, None, recursive=True), holder="a")
        engine.modify(target, parse_options("ro"))
        for path in (target, f"{target}/sub"):
            [record] = world.mounts_at(path)
            assert record.vfs_options[0] == "ro", path
        engine.modify(target, parse_options("rw"))
        for path in (target, f"{target}/sub"):
            [record] = world.mounts_at(path)
            assert record.vfs_options[0] == "rw", path
        if isinstance(world.kernel, LinuxKernel):  # the files are real: probe them
            (Path(target) / "sub" / "f").write_text("x")


def test_rbind_as_an_option_is_an_rbind_its_holder_can_release(world: World) -> None:
    """OtherOptions ["rbind"] (a CIM client's way to ask for one) made a kernel
    rbind that its holder record called a plain bind, wrote ``bind,rbind`` to
    fstab, and every release then failed with EBUSY on the submounts."""
    with world.manager() as engine:
        tree, target = _tree_with_a_submount(world, engine)
        engine.create(MountSpec(tree, target, None, parse_options("rbind,ro")), holder="h",
                      persist=True)
        before = world.fstab.read_text()
        assert before.splitlines()[-1] == f"{tree} {target} none rbind,ro 0 0"
        held = engine.held(target)
        assert held is not None and held.recursive
        if isinstance(world.kernel, LinuxKernel):
            [record] = world.mounts_at(f"{target}/sub")
            assert record.vfs_options[0] == "ro"
        engine.delete(target, holder="h", persist=True)
        assert not world.mounts_at(target) and not world.mounts_at(f"{target}/sub")
        assert f" {target} " not in world.fstab.read_text()


def test_modify_takes_the_bind_word_of_its_mount_and_refuses_another(world: World) -> None:
    with world.manager() as engine:
        source, target = world.dir("src"), world.dir("dst")
        engine.create(MountSpec(source, target, None, recursive=True), holder="h", persist=True)
        engine.modify(target, parse_options("rbind,ro"), persist=True)
        assert world.fstab.read_text().splitlines()[-1] == f"{source} {target} none rbind,ro 0 0"
        before = world.fstab.read_text()
        for words in ("bind,rw", "rw,bind"):
            with pytest.raises(InvalidRequest, match="rbind"):
                engine.modify(target, parse_options(words), persist=True)
        assert world.fstab.read_text() == before
        engine.delete(target, holder="h", persist=True)


def test_a_remount_keeps_in_the_holder_record_what_the_goal_did_not_name(
        world: World) -> None:
    """The record took the Goal's words alone: after ``rshared`` on a mount made
    ``ro,rslave`` it said ``rshared`` of a mount the kernel showed read-only, and
    a second holder asking ``ro,rslave`` was compared with that."""
    with world.manager() as engine:
        target = world.dir("mnt")
        engine.create(MountSpec("tmpfs", target, "tmpfs", parse_options("ro,size=1m,noatime")),
                      holder="a")
        engine.modify(target, parse_options("nosuid,size=2m"))
        held = engine.held(target)
        assert held is not None
        assert same_meaning(parse_options(held.options),
                            parse_options("ro,noatime,nosuid,size=2m")), held.options
        engine.modify(target, parse_options("rw,relatime"))
        held = engine.held(target)
        assert held is not None
        assert same_meaning(parse_options(held.options),
                            parse_options("rw,relatime,nosuid,size=2m")), held.options
        engine.release(target, "a")


def test_mode_1_remounts_to_what_the_new_line_will_mount_at_the_next_boot(
        world: World) -> None:
    """ModifyMount with Mode 1 replaced the line with the Goal and merged the Goal
    into the live mount: the line said defaults where the mount kept noatime
    and nosuid, so the next boot would mount something else than today's."""
    with world.manager() as engine:
        target = world.dir("mnt")
        engine.create(MountSpec("tmpfs", target, "tmpfs",
                                parse_options("noatime,nosuid,size=1m,nofail")),
                      current=True, persist=True, holder="a")
        engine.modify(target, parse_options("ro"), current=True, persist=True)
        assert world.fstab.read_text().splitlines()[-1] == f"tmpfs {target} tmpfs ro 0 0"
        [record] = world.mounts_at(target)
        assert record.vfs_options[0] == "ro"
        assert "noatime" not in record.vfs_options and "nosuid" not in record.vfs_options
        assert "relatime" in record.vfs_options
        # Only the size stays: a remount cannot unset a tmpfs's size, and the
        # line gives the default at the next boot. That is drift (a review
        # found it unreported).
        status = engine.status_at(target)
        assert status is not None
        assert [str(d) for d in status.drift] == [
            "size: configured (not set), live size=1024k"]
        # Its holders asked for what the line says: a second holder asking the
        # same shares it.
        engine.create(MountSpec("tmpfs", target, "tmpfs", parse_options("ro")), holder="b")
        assert engine.held(target).holders == ("a", "b")  # type: ignore[union-attr]
        engine.release(target, "b")
        # A remount alone (Mode 32768) changes only what it names, as before.
        engine.modify(target, parse_options("noexec"))
        [record] = world.mounts_at(target)
        assert {"ro", "noexec", "relatime"} <= set(record.vfs_options)
        engine.delete(target, holder="a", current=True, persist=True)


@pytest.mark.parametrize(("source", "fstype", "named"), [
    ("", "tmpfs", "file system spec"), ("tmpfs", "", "file system type")])
def test_an_empty_spec_or_type_is_refused_before_anything_even_in_a_dry_run(
        world: World, source: str, fstype: str, named: str) -> None:
    """A DryRun of FileSystemSpec '' said it would mount; the real call mounted,
    found the source 'none' and took the mount back."""
    with world.manager() as engine:
        target = world.dir("mnt")
        for dry_run in (True, False):
            with pytest.raises(InvalidRequest, match=named):
                engine.create(MountSpec(source, target, fstype), holder="a", dry_run=dry_run)
        assert not world.mounts_at(target)


def test_mode_1_on_a_bind_keeps_its_origins_flags_as_the_next_boot_will(world: World) -> None:
    with world.manager() as engine:
        origin, target = world.dir("origin"), world.dir("dst")
        engine.create(MountSpec("tmpfs", origin, "tmpfs", parse_options("nosuid")), holder="a")
        engine.create(MountSpec(origin, target, None), current=True, persist=True, holder="a")
        engine.modify(target, parse_options("ro"), current=True, persist=True)
        [record] = world.mounts_at(target)
        assert record.vfs_options[0] == "ro" and "nosuid" in record.vfs_options
        assert world.fstab.read_text().splitlines()[-1] == f"{origin} {target} none bind,ro 0 0"
        engine.delete(target, holder="a", current=True, persist=True)


# -- the review of this session's ModifyMount changes ----------------------------------


def test_an_rbind_remount_leaves_a_mount_made_under_it_later_alone(world: World) -> None:
    """The remount of an rbind's submounts took every mount below it: alice's own
    mount under the rbind, with its own holder record and fstab line, became
    read-only and said nothing."""
    with world.manager() as engine:
        tree, target = _tree_with_a_submount(world, engine)
        (Path(tree) / "other").mkdir()
        (Path(target) / "other").mkdir()  # the fake kernel's bind shows no files
        engine.create(MountSpec(tree, target, None, recursive=True), holder="a")
        engine.create(MountSpec("tmpfs", f"{target}/other", "tmpfs"), holder="alice",
                      persist=True)
        engine.modify(target, parse_options("ro"))
        [copy] = world.mounts_at(f"{target}/sub")
        [alices] = world.mounts_at(f"{target}/other")
        assert copy.vfs_options[0] == "ro" and alices.vfs_options[0] == "rw"


@pytest.mark.root
@pytest.mark.private_namespace
def test_an_rbind_with_a_stacked_submount_can_be_remounted(tmp_path: Path) -> None:
    """Each submount was remounted through its path, where the lower mount of a
    stack is not found: every remount of such an rbind failed with ESTALE."""
    world = World("real", tmp_path)
    with world.manager() as engine:
        tree, target = _tree_with_a_submount(world, engine)
        subprocess.run(["mount", "-t", "tmpfs", "upper", f"{tree}/sub"], check=True)
        engine.create(MountSpec(tree, target, None, recursive=True), holder="a")
        engine.modify(target, parse_options("ro"))
        # The one a path reaches is the upper: it is read-only now.
        assert Path(f"{target}/sub").stat() and world.mounts_at(f"{target}/sub")[-1]
        with pytest.raises(OSError):
            (Path(target) / "sub" / "f").write_text("x")


def test_mode_1_on_a_bind_gives_it_its_origins_flags_and_the_named_ones(world: World) -> None:
    """A bind's Mode 1 merged the Goal into the bind's own flags: the line said
    ``bind,nosuid`` (read-write at the next boot, its origin being so) and the
    mount stayed read-only, its record too, with no drift shown."""
    with world.manager() as engine:
        origin, target = world.dir("origin"), world.dir("dst")
        engine.create(MountSpec("tmpfs", origin, "tmpfs"), holder="a")
        engine.create(MountSpec(origin, target, None, parse_options("ro,nodev")),
                      current=True, persist=True, holder="a")
        engine.modify(target, parse_options("nosuid"), current=True, persist=True)
        [record] = world.mounts_at(target)
        assert record.vfs_options[0] == "rw" and "nosuid" in record.vfs_options
        assert "nodev" not in record.vfs_options
        held = engine.held(target)
        assert held is not None and same_meaning(parse_options(held.options),
                                                 parse_options("nosuid"))


def _mode_1(world: World, engine: MountManager, made: str, goal: str) -> str:
    """A tmpfs mounted and in fstab with ``made``, then ModifyMount Mode 1 to ``goal``."""
    target = world.dir("mnt")
    engine.create(MountSpec("tmpfs", target, "tmpfs", parse_options(made)),
                  current=True, persist=True, holder="a")
    engine.modify(target, parse_options(goal), current=True, persist=True)
    return target


def test_mode_1_resets_the_flag_words_its_goal_does_not_name(world: World) -> None:
    with world.manager() as engine:
        target = _mode_1(world, engine, "size=4m,lazytime", "size=4m")
        [record] = world.mounts_at(target)
        assert "lazytime" not in record.vfs_options + record.super_options


def test_mode_1_asks_nothing_of_what_a_remount_cannot_change() -> None:
    """``mand`` is ignored by the kernel and ``dirsync`` is not in its remount
    mask: a default for them made every Mode 1 of such a mount fail."""
    goal = with_unnamed_at_defaults(parse_options("ro"))
    assert goal.allow_mandatory_lock is None and goal.synchronous_directory_updates is None
    assert goal.allow_write is False and goal.allow_suid is True


# -- the re-review of the ModifyMount fixes ----------------------------------------------


def test_mode_1_on_an_rbind_gives_its_copies_only_what_the_goal_names(world: World) -> None:
    """The copies got the top's origin's flags: Mode 1 "ro" took nosuid, nodev,
    noexec and noatime away from a submount that had them."""
    with world.manager() as engine:
        tree, target = world.dir("tree"), world.dir("dst")
        engine.create(MountSpec("tmpfs", tree, "tmpfs"), holder="a")
        (Path(tree) / "sub").mkdir()
        engine.create(MountSpec("tmpfs", f"{tree}/sub", "tmpfs",
                                parse_options("nosuid,nodev,noexec,noatime")), holder="a")
        engine.create(MountSpec(tree, target, None, recursive=True), current=True,
                      persist=True, holder="a")
        engine.modify(target, parse_options("ro"), current=True, persist=True)
        [copy] = world.mounts_at(f"{target}/sub")
        assert copy.vfs_options[0] == "ro"
        assert {"nosuid", "nodev", "noexec", "noatime"} <= set(copy.vfs_options)


def test_a_bind_of_a_bind_takes_the_flags_of_its_own_source(world: World) -> None:
    """The origin was found by device and root: for a source that is itself a
    bind of a whole tmpfs, the tmpfs's first mount, whose flags are not the
    source's."""
    with world.manager() as engine:
        fs, source, target = world.dir("fs"), world.dir("src"), world.dir("dst")
        engine.create(MountSpec("tmpfs", fs, "tmpfs"), holder="a")
        engine.create(MountSpec(fs, source, None, parse_options("nosuid,nodev,noexec")),
                      holder="a")
        engine.create(MountSpec(source, target, None), current=True, persist=True, holder="a")
        engine.modify(target, parse_options("ro"), current=True, persist=True)
        [record] = world.mounts_at(target)
        assert record.vfs_options[0] == "ro"
        assert {"nosuid", "nodev", "noexec"} <= set(record.vfs_options)


def test_mode_1_without_a_remount_still_brings_the_record_to_the_line(world: World) -> None:
    with world.manager() as engine:
        target = _mode_1(world, engine, "dirsync", "defaults")
        held = engine.held(target)
        assert held is not None and same_meaning(parse_options(held.options),
                                                 parse_options("defaults")), held.options


@pytest.mark.root
@pytest.mark.private_namespace
def test_a_propagation_already_in_effect_needs_no_remount(tmp_path: Path) -> None:
    """A propagation word remounted on every call, so a playbook's second run
    reported a change. (The fake kernel models private propagation only.)"""
    world = World("real", tmp_path)
    with world.manager() as engine:
        target = world.dir("mnt")
        engine.create(MountSpec("tmpfs", target, "tmpfs", parse_options("rw,shared")),
                      holder="a")
        for words in ("rw,shared", "shared"):
            assert not engine.modify(target, parse_options(words)).plan.steps, words
        assert engine.modify(target, parse_options("private")).plan.steps
        assert not engine.modify(target, parse_options("private")).plan.steps


@requires_tool("mksquashfs")
@pytest.mark.parametrize("world", [k for k in KERNELS if k.id == "real"], indirect=True)
def test_a_remount_refused_over_a_read_only_file_system_is_rolled_back_to_what_it_was(
        world: World) -> None:
    # squashfs: the mount's own flag is rw, its superblock ro. A remount naming
    # AllowWrite=True failed as it must, and its rollback made the mount's own
    # flag ro: the undo took the state the check had read ro for the comparison.
    image = mkfs_image(Path(world.dir("images")), "squashfs", files={"f": "x"})
    target = world.dir("sq")
    with world.manager() as engine:
        engine.create(MountSpec(str(image), target, "squashfs", parse_options("defaults")),
                      holder="a")
        before = vfs(world, target)
        assert before[0] == "rw"
        with pytest.raises(MountError, match="stays read-only"):
            engine.modify(target, parse_options("rw,noexec"))
        assert vfs(world, target) == before


@pytest.mark.parametrize("world", [k for k in KERNELS if k.id == "real"], indirect=True)
def test_a_remount_of_an_rbind_lifts_no_restriction_of_its_submount_copies(
        world: World) -> None:
    # Its creation gives the copies of the source's submounts what it sets and
    # never what it lifts; a remount with the same Goal (rw, suid, dev, exec
    # named, and nosuid) made a nodev,noexec copy dev and exec (a review).
    source, target = Path(world.dir("src")), world.dir("dst")
    world.kernel.mount("srcfs", str(source), "tmpfs", 0, "size=1m")
    (source / "sub").mkdir()
    world.kernel.mount("subfs", str(source / "sub"), "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                       "size=1m")
    with world.manager() as engine:
        engine.create(MountSpec(str(source), target, None, parse_options("rbind"),
                                recursive=True), holder="a")
        assert {"nodev", "noexec"} <= set(vfs(world, f"{target}/sub"))
        engine.modify(target, parse_options("rw,nosuid,dev,exec"))
        copy = set(vfs(world, f"{target}/sub"))
        assert {"nosuid", "nodev", "noexec"} <= copy, copy
        assert "nosuid" in vfs(world, target) and "nodev" not in vfs(world, target)


@pytest.mark.private_namespace
@requires_tool("mkfs.ext4")
@pytest.mark.parametrize("api", ["new", "legacy"])
def test_an_undone_release_mounts_a_mount_asked_by_tag_again(
        tmp_path: Path, api: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # A review: the undo of an unmount remounted from the source as the
    # holder asked it ("LABEL=data"), which the kernel cannot look up: a
    # failed release left the mount unmounted. The kernel is given what is
    # mounted (the device, or an image's file).
    from lmi_mount.linux.paths import PathChecker
    image = mkfs_image(tmp_path, "ext4", files={"f": "data"})
    monkeypatch.setattr(PathChecker, "device_source",
                        lambda self, source: image if source == "LABEL=data" else source)
    target = tmp_path / "t"
    target.mkdir()
    armed: list[bool] = []

    def crash(point: str) -> None:
        if armed and point == "after KernelUnmount":
            raise OSError(5, "the release fails after its unmount")

    engine = MountManager(LinuxKernel(mount_api=api), fstab_path=tmp_path / "fstab",
                          state_dir=tmp_path / "state", timers=False, crash=crash).start()
    (tmp_path / "fstab").write_text("")
    engine.create(MountSpec("LABEL=data", str(target), "ext4", parse_options("ro")),
                  holder="alice")
    armed.append(True)
    with pytest.raises(MountError):
        engine.delete(str(target), holder="alice")
    assert (target / "f").read_text() == "data", "mounted again"
    held = engine.held(str(target))
    assert held is not None and held.holders == ("alice",)
    armed.clear()
    engine.delete(str(target), holder="alice")
    engine.close()


@pytest.mark.root
@pytest.mark.private_namespace
@pytest.mark.parametrize("kind", ["bind", "tmpfs"])
def test_a_restriction_that_did_not_take_is_never_attached(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    # A mount the read-back finds without its nosuid is taken back, but it was
    # reachable until then (an outside review's setuid race relied on such a
    # moment). The detached mount is looked at first (fstatfs of its
    # descriptor) and never attached. The kernel here stands for one that
    # dropped the restriction: its attribute calls do nothing.
    from lmi_mount.linux import mountapi

    world = World("real", tmp_path, mount_api="new")
    monkeypatch.setattr(mountapi, "mount_setattr", lambda *args, **kwargs: None)
    fsmount = mountapi.fsmount
    monkeypatch.setattr(mountapi, "fsmount", lambda context, attrs: fsmount(context, 0))
    attached = []
    move_mount = mountapi.move_mount
    monkeypatch.setattr(mountapi, "move_mount",
                        lambda *args, **kwargs: attached.append(args) or move_mount(*args,
                                                                                 **kwargs))
    target = world.dir("mnt")
    spec = (MountSpec(world.dir("src"), target, None, parse_options("nosuid,nodev"))
            if kind == "bind" else MountSpec("tmpfs", target, "tmpfs",
                                             parse_options("size=1m,nosuid,nodev")))
    before = Path("/proc/self/mountinfo").read_text()
    with world.manager() as engine, pytest.raises(MountError, match="nosuid") as raised:
        engine.create(spec, holder="a")
    assert "not attached" in str(raised.value)
    assert attached == [], "the mount without its restrictions was never reachable"
    assert Path("/proc/self/mountinfo").read_text() == before


@contextlib.contextmanager
def fused(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """A squashfuse mount (its directory, its daemon's pid), made in the test's
    own namespace; its daemon is gone afterwards."""
    image = mkfs_image(tmp_path, "squashfs", files={"f": "x"})
    source = tmp_path / "fused"
    source.mkdir()
    subprocess.run(["squashfuse", str(image), str(source)], check=True)
    (pid,) = [int(p) for p in subprocess.run(["pgrep", "-f", f"squashfuse {image}"],
                                              capture_output=True, text=True,
                                              check=True).stdout.split()]
    try:
        yield source, pid
    finally:
        subprocess.run(["umount", "-l", str(source)], check=False)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.root
@pytest.mark.private_namespace(timeout=120)
@requires_tool("squashfuse")
@requires_tool("mksquashfs")
def test_a_restricted_bind_of_a_fuse_mount_does_not_ask_its_daemon(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # statfs(2) of a FUSE mount asks its daemon: the look at a detached bind
    # before its move failed once the daemon was dead, and waited while it was
    # stopped (an outside review). Only the read-back after the move checks it.
    looked = []
    fstatvfs = os.fstatvfs
    monkeypatch.setattr(os, "fstatvfs", lambda fd: looked.append(fd) or fstatvfs(fd))
    world = World("real", tmp_path, mount_api="new")
    with fused(tmp_path) as (source, _), world.manager() as engine:
        engine.create(MountSpec(str(source), world.dir("mnt"), None,
                                parse_options("nosuid,nodev")), holder="a")
        (made,) = world.mounts_at(world.dir("mnt"))
        assert {"nosuid", "nodev"} <= set(made.vfs_options) and looked == []
        engine.create(MountSpec(world.dir("plain"), world.dir("mnt2"), None,
                                parse_options("nosuid")), holder="a")
        assert len(looked) == 1, "a bind of a file system of the kernel's own is looked at"


@pytest.mark.root
@pytest.mark.private_namespace(timeout=120)
@requires_tool("squashfuse")
@requires_tool("mksquashfs")
def test_a_bind_of_a_dead_fuse_mount_is_refused_naming_it(tmp_path: Path) -> None:
    # Its daemon killed, the mount answers ENOTCONN: the request got the bare
    # OSError, naming neither the source nor the mount point.
    with fused(tmp_path) as (source, pid):
        os.kill(pid, signal.SIGKILL)
        world = World("real", tmp_path, mount_api="new")
        target = world.dir("mnt")
        with world.manager() as engine, pytest.raises(InvalidRequest) as refused:
            engine.create(MountSpec(str(source), target, None, parse_options("nosuid")),
                          holder="a")
        assert f"bind source {str(source)!r}" in str(refused.value)
        assert "not connected" in str(refused.value)
        assert world.mounts_at(target) == []
