"""System mounts are not taken away by one call: the root and the API file systems.

The first build unmounted /dev/shm for a DeleteMount nobody held, and /proc,
/sys and /run were as open. A mount lmi-mount did not make under a protected
mount point is neither unmounted nor remounted without Force; lmi-mount's
own mounts there are released as usual.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lmi_mount.mounts.errors import InvalidRequest
from lmi_mount.mounts.options import parse_options
from lmi_mount.mounts.plan import MountSpec
from tests.contract.helpers import mkfs_image
from tests.engine.conftest import World
from tests.support.skips import requires_root, requires_tool


def test_the_root_file_system_is_not_remounted_without_force(world: World) -> None:
    with world.manager() as engine, pytest.raises(InvalidRequest,
                                                  match="/ is a system mount") as refused:
        engine.modify("/", parse_options("ro"), dry_run=True)
    assert refused.value.value == "/"


def test_a_system_mount_is_not_unmounted_without_force(world: World) -> None:
    system = world.dir("sys")
    target = world.dir("sys/shm")
    world.kernel.mount("tmpfs", target, "tmpfs", 0)  # made by the system, not by us
    with world.manager(protected=(system,)) as engine:
        with pytest.raises(InvalidRequest, match=f"under {system}.*unless Force is true"):
            engine.delete(target)
        with pytest.raises(InvalidRequest, match="will not remount it unless Force"):
            engine.modify(target, parse_options("ro"))
        assert world.mounts_at(target), "still mounted"
        engine.delete(target, force=True)
        assert world.mounts_at(target) == []


def test_lmi_mounts_own_mounts_under_a_protected_point_are_released(world: World) -> None:
    system = world.dir("run")
    target = world.dir("run/ours")
    with world.manager(protected=(system,)) as engine:
        engine.acquire(MountSpec("tmpfs", target, "tmpfs"), "a")
        engine.modify(target, parse_options("ro"))
        engine.release(target, "a")
        assert world.mounts_at(target) == []


def test_the_root_protects_itself_not_every_mount_below_it(world: World) -> None:
    target = world.dir("anywhere")
    world.kernel.mount("tmpfs", target, "tmpfs", 0)
    with world.manager() as engine:  # the default list: / /proc /sys /dev /run
        engine.delete(target)
    assert world.mounts_at(target) == []


def test_a_reused_mount_id_does_not_make_a_system_mount_ours(world: World) -> None:
    if world.kind == "fake":
        return  # the fake hands out unique ids too, but the point is the kernel's reuse
    mine, system = world.dir("mine"), world.dir("sys")
    target = world.dir("sys/shm")
    with world.manager(protected=(system,)) as engine:
        engine.acquire(MountSpec("tmpfs", mine, "tmpfs"), "a")
        held = engine.held(mine)
        assert held is not None
        world.kernel.unmount(mine)  # behind the engine's back
        world.kernel.mount("tmpfs", target, "tmpfs", 0)  # Linux gives it the freed id
        with pytest.raises(InvalidRequest, match="unless Force is true"):
            engine.delete(target)
        assert world.mounts_at(target)


@pytest.mark.root
@requires_root
@pytest.mark.private_namespace
@requires_tool("mkfs.ext4")
def test_remounting_a_file_system_a_system_mount_shows_takes_force(tmp_path: Path) -> None:
    # The same ext4 mounted on a protected point and elsewhere: a read-only
    # remount of the second changes the first (one superblock).
    world = World("real", tmp_path)
    image = mkfs_image(tmp_path, "ext4")
    system, other = world.dir("sys/disk"), world.dir("other")
    world.kernel.mount(image, system, "ext4", 0)
    world.kernel.mount(image, other, "ext4", 0)
    with world.manager(protected=(world.dir("sys"),)) as engine:
        with pytest.raises(InvalidRequest, match=f"mounted on {system}, a system mount"):
            engine.modify(other, parse_options("ro"))
        assert "rw" in world.mounts_at(system)[0].super_options


def test_a_file_system_also_mounted_outside_keeps_its_options_even_with_force(
        world: World) -> None:
    # lmi-mountd --sandbox remounted, in its private mount namespace, a tmpfs
    # the host had mounted before the sandbox started: one superblock, so the
    # host's mount grew from 8 to 32 MiB (an outside review). Such a file
    # system's options are refused, Force or not; the mount's own flags are
    # this namespace's and still change.
    target = world.dir("host")
    world.kernel.mount("tmpfs", target, "tmpfs", 0, "size=1m")
    [record] = world.mounts_at(target)
    with world.manager(shared_file_systems={(record.major, record.minor)}) as engine:
        for force in (False, True):
            with pytest.raises(InvalidRequest, match="mounted outside this mount namespace"
                               ) as refused:
                engine.modify(target, parse_options("size=2m"), force=force)
            assert refused.value.value == target
        [after] = world.mounts_at(target)
        assert after.super_options == record.super_options
        engine.modify(target, parse_options("nosuid,nodev"), force=True)
        assert {"nosuid", "nodev"} <= set(world.mounts_at(target)[0].vfs_options)
