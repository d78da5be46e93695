"""FakeKernel renders mountinfo exactly as the kernel does: one scenario, two texts.

The same mounts are made on both kernels, on a scratch tmpfs, and their lines
are compared after renaming what legitimately differs: mount ids, anonymous
device minors and loop numbers (renumbered in order of appearance), and the
parent of the scratch tmpfs. Everything else (field order, escapes, option
words and their order, sources, roots) must be byte for byte the same.

The defaults some file systems add (squashfs ``errors=continue``, overlay
``uuid=on``) depend on the kernel version; on a kernel that differs the diff
names the option, to be set in ``FakeKernel(shown_options=...)``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lmi_mount.linux.fake import FakeKernel
from lmi_mount.linux.kernel import Kernel, LinuxKernel
from lmi_mount.mounts.flags import (
    MS_BIND,
    MS_DIRSYNC,
    MS_LAZYTIME,
    MS_NOATIME,
    MS_NODEV,
    MS_NODIRATIME,
    MS_NOEXEC,
    MS_NOSUID,
    MS_NOSYMFOLLOW,
    MS_RDONLY,
    MS_REC,
    MS_REMOUNT,
    MS_STRICTATIME,
    MS_SYNCHRONOUS,
)
from tests.contract.helpers import make_dirs, mkfs_image
from tests.support.namespace import run_in_private_namespace
from tests.support.skips import requires_fs, requires_root, requires_tool

pytestmark = [pytest.mark.root, pytest.mark.kernel, requires_root]


def scenario(kernel: Kernel, base: Path, images: dict[str, str]) -> list[str]:
    """Make every kind of mount the engine uses; return their mountinfo lines.

    Everything happens on a scratch tmpfs, so that the host's file system (its
    device and options) shows in neither text.
    """
    scratch = str(base / "scratch")
    Path(scratch).mkdir()
    kernel.mount("tmpfs", scratch, "tmpfs", 0)
    (
        plain, flagged, strict, weird_source, weird, stacked, rbind_top, rbind_copy,
        remounted, overlay_dir, lower, upper, work, ext4_dir, squash_dir, fuse_dir,
    ) = make_dirs(
        Path(scratch), "plain", "flagged", "strict", "src dir", "we#ird\\ \tdir\nx", "stacked",
        "top", "copy", "remounted", "merged", "lower", "upper", "work", "ext4", "squash",
        "fuse",
    )
    kernel.mount("tmpfs", plain, "tmpfs", 0)
    kernel.mount("tmpfs", flagged, "tmpfs",
                 MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_NOATIME | MS_NODIRATIME | MS_NOSYMFOLLOW
                 | MS_SYNCHRONOUS | MS_DIRSYNC | MS_LAZYTIME,
                 "size=3m,nr_inodes=1k,mode=1777,uid=1,gid=2")
    kernel.mount("none", strict, "tmpfs", MS_STRICTATIME | MS_RDONLY, "size=5%")
    kernel.mount(weird_source, weird, None, MS_BIND)
    kernel.mount("tmpfs", stacked, "tmpfs", 0, "size=1m")
    kernel.mount("tmpfs", stacked, "tmpfs", 0, "size=2m")
    kernel.mount("tmpfs", rbind_top, "tmpfs", 0, "mode=0755")
    Path(rbind_top, "sub").mkdir()
    kernel.mount("tmpfs", f"{rbind_top}/sub", "tmpfs", 0)
    kernel.mount(rbind_top, rbind_copy, None, MS_BIND | MS_REC)
    kernel.mount(f"{rbind_top}/sub", remounted, None, MS_BIND)
    kernel.mount(None, remounted, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NODEV)
    kernel.mount(None, rbind_top, None, MS_REMOUNT | MS_NOATIME, "size=4m")
    kernel.mount("overlay", overlay_dir, "overlay", 0,
                 f"lowerdir={lower},upperdir={upper},workdir={work}")
    kernel.mount(images["ext4"], ext4_dir, "ext4", MS_RDONLY)
    kernel.mount(images["squashfs"], squash_dir, "squashfs", 0)
    kernel.mount(images["squashfs"], fuse_dir, "fuse.squashfuse", MS_NOSUID)
    lines = [
        line for line in kernel.read_mountinfo().splitlines()
        if line.split(" ")[4] == scratch or line.split(" ")[4].startswith(f"{scratch}/")
    ]
    kernel.unmount(fuse_dir)  # the FUSE daemon ends with its mount
    return lines


def normalize(lines: list[str]) -> list[str]:
    """Rename mount ids, anonymous minors and loop numbers in order of appearance."""
    ids: dict[str, str] = {}
    anon: dict[str, str] = {}
    loops: dict[str, str] = {}
    out = []
    for line in lines:
        fields = line.split(" ")
        mount_id, parent_id, device = fields[0], fields[1], fields[2]
        ids.setdefault(mount_id, f"M{len(ids) + 1}")
        fields[0] = ids[mount_id]
        fields[1] = ids.get(parent_id, "BASE")
        major, minor = device.split(":")
        if major == "0":
            fields[2] = "0:" + anon.setdefault(minor, f"A{len(anon) + 1}")
        elif major == "7":
            fields[2] = "7:" + loops.setdefault(minor, f"L{len(loops) + 1}")
        source = fields[-2]
        if source.startswith("/dev/loop"):
            number = source.removeprefix("/dev/loop")
            fields[-2] = "/dev/loop" + loops.setdefault(number, f"L{len(loops) + 1}")
        out.append(" ".join(fields))
    return out


@requires_tool("mkfs.ext4")
@requires_tool("mksquashfs")
@requires_tool("squashfuse")
@requires_fs("overlay")
@requires_fs("squashfs")
@requires_fs("fuse")
def test_fake_mountinfo_matches_the_kernel_line_for_line(tmp_path: Path) -> None:
    fake_base, real_base = (tmp_path / "fake").resolve(), (tmp_path / "real").resolve()
    texts = []
    for base in (fake_base, real_base):
        base.mkdir()
        images = {"ext4": mkfs_image(base, "ext4"), "squashfs": mkfs_image(base, "squashfs")}
        texts.append((base, images))
    (fake_dir, fake_images), (real_dir, real_images) = texts
    fake_lines = scenario(FakeKernel(), fake_dir, fake_images)
    real_lines = run_in_private_namespace(scenario, LinuxKernel(), real_dir, real_images)
    assert len(real_lines) == 16  # scratch, then one per mount; the rbind copied two
    expected = [line.replace(str(real_dir), "BASEDIR") for line in normalize(real_lines)]
    got = [line.replace(str(fake_dir), "BASEDIR") for line in normalize(fake_lines)]
    assert got == expected
