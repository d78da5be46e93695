"""A mount made from ``/dev/loopN`` is named, and found, by either of its names.

The first build returned a ``Mount`` reference naming ``/dev/loopN`` while the
instance was named by the loop's backing file: GetInstance and DeleteMount of
the returned reference answered NOT_FOUND.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from lmi_mount.engine import MountManager
from lmi_mount.linux.kernel import LinuxKernel
from lmi_mount.mounts.plan import MountSpec
from tests.contract.helpers import mkfs_image
from tests.support.skips import requires_fs, requires_root, requires_tool

pytestmark = [pytest.mark.root, pytest.mark.kernel, requires_root, requires_fs("ext4"),
              requires_tool("mkfs.ext4"), requires_tool("losetup")]


@pytest.mark.private_namespace
@pytest.mark.parametrize("delete_by", ["device", "backing file"])
def test_loop_device_spec_gives_a_reference_that_resolves(tmp_path: Path, delete_by: str) -> None:
    image = mkfs_image(tmp_path, "ext4")
    device = subprocess.run(["losetup", "--find", "--show", image], check=True,
                            capture_output=True, text=True).stdout.strip()
    try:
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
    finally:
        subprocess.run(["losetup", "-d", device], check=False)
