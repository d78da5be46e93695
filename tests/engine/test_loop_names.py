"""A mount made from ``/dev/loopN`` is named, and found, by either of its names.

The first build returned a ``Mount`` reference naming ``/dev/loopN`` while the
instance was named by the loop's backing file: GetInstance and DeleteMount of
the returned reference answered NOT_FOUND.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lmi_mount.engine import MountManager
from lmi_mount.linux.kernel import LinuxKernel
from lmi_mount.mounts.errors import InUse
from lmi_mount.mounts.plan import MountSpec
from tests.contract.helpers import loop_device, mkfs_image
from tests.support.skips import requires_fs, requires_root, requires_tool

pytestmark = [pytest.mark.root, pytest.mark.kernel, requires_root, requires_fs("ext4"),
              requires_tool("mkfs.ext4"), requires_tool("losetup")]


@pytest.mark.private_namespace
@pytest.mark.parametrize("delete_by", ["device", "backing file"])
def test_loop_device_spec_gives_a_reference_that_resolves(tmp_path: Path, delete_by: str) -> None:
    image = mkfs_image(tmp_path, "ext4")
    with loop_device(image) as device:
        (tmp_path / "mnt").mkdir()
        (tmp_path / "fstab").write_text("")
        with MountManager(LinuxKernel(), fstab_path=tmp_path / "fstab",
                          state_dir=tmp_path / "state", timers=False) as engine:
            outcome = engine.create(MountSpec(device, str(tmp_path / "mnt"), "ext4"),
                                    holder="t")
            # The reference names the mount as every read names it.
            assert outcome.source == image
            [status] = [s for s in engine.status() if s.target == outcome.target]
            assert status.spec == image
            name = device if delete_by == "device" else image
            engine.delete(str(tmp_path / "mnt"), spec_name=name, holder="t")
            assert not [s for s in engine.status() if s.target == outcome.target]


@pytest.mark.private_namespace
def test_a_spec_that_now_names_another_image_does_not_share_the_mount(tmp_path: Path) -> None:
    # A symlink (a UUID=, a by-id link) that named the mounted image names
    # another one now: a new holder of that spelling wants the other file
    # system, and must not be counted on the mounted one (review of issue 11).
    first = tmp_path / "first"
    second = tmp_path / "second"
    first.mkdir()
    second.mkdir()
    images = [mkfs_image(first, "ext4"), mkfs_image(second, "ext4")]
    current = tmp_path / "current.img"
    current.symlink_to(images[0])
    target = tmp_path / "mnt"
    target.mkdir()
    with MountManager(LinuxKernel(), fstab_path=tmp_path / "fstab",
                      state_dir=tmp_path / "state", timers=False) as engine:
        engine.acquire(MountSpec(str(current), str(target), "ext4"), "a")
        current.unlink()
        current.symlink_to(images[1])
        with pytest.raises(InUse, match="differs from the request"):
            engine.acquire(MountSpec(str(current), str(target), "ext4"), "b")
        held = engine.held(str(target))
        assert held is not None and held.holders == ("a",)
        engine.release(str(target), "a")
