"""The fstab lines the engine writes: as the client spelled them, meaning what it asked.

Each case failed with the first build: stable names were replaced by kernel
names, right lines were refused, wrong lines were accepted, and a line that
already said the same thing was "AlreadyExists". The judges are the file's
bytes and, for every line accepted, findmnt(8) --verify (util-linux's own
reading of a line; only errors that the absent disk or mount point of the
request explains are allowed) and libmount's parser.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from lmi_mount.mounts.errors import AlreadyExists, InvalidRequest
from lmi_mount.mounts.fstab import FstabDocument
from lmi_mount.mounts.options import MountOptions, parse_options
from lmi_mount.mounts.plan import MountSpec
from tests.engine.conftest import World
from tests.support.libmount import parse_fstab, requires_libmount
from tests.support.skips import requires_tool


def only_line(world: World) -> str:
    lines = [line for line in world.fstab.read_text().splitlines() if not line.startswith("#")]
    assert len(lines) == 1, lines
    return lines[0]


def verify(world: World) -> list[str]:
    """findmnt --verify's errors for the scratch fstab, apart from "unreachable"."""
    result = subprocess.run(["findmnt", "--verify", "--verbose", "--tab-file", str(world.fstab)],
                            capture_output=True, text=True, check=False)
    assert "0 parse errors" in result.stderr, result.stderr  # the summary goes there
    return [line.strip() for line in result.stdout.splitlines()
            if line.strip().startswith("[E]") and "unreachable" not in line]


@pytest.mark.parametrize(("source", "fstype"), [
    pytest.param("UUID=0a1b2c3d-0000-4000-8000-00000000beef", "ext4", id="uuid-of-no-disk"),
    pytest.param("LABEL=backup", "ext4", id="label"),
    pytest.param("PARTUUID=00000000-01", "btrfs", id="partuuid"),
    pytest.param("/dev/disk/by-id/ata-ANY_DISK-part1", "ext4", id="by-id-path"),
    pytest.param("//nas/share", "cifs", id="cifs-share"),
    pytest.param("server:/export/home", "nfs", id="nfs"),
    pytest.param("user@host:/srv", "fuse.sshfs", id="sshfs"),
    pytest.param("hostshare", "9p", id="9p-tag"),
])
@requires_tool("findmnt")
def test_fstab_only_lines_keep_the_source_as_spelled(world: World, source: str,
                                                     fstype: str) -> None:
    target = str(world.root / "not-yet" / "mnt")  # systemd makes it at boot
    with world.manager() as engine:
        outcome = engine.create(MountSpec(source, target, fstype), current=False, persist=True)
    assert only_line(world).split()[:2] == [source, target]
    assert verify(world) == []
    if fstype in ("cifs", "nfs", "fuse.sshfs", "9p"):
        assert any("warning" in note for note in outcome.plan.describe())


@pytest.mark.parametrize(("fstype", "message"), [
    pytest.param("nosuchfs", "file system type 'nosuchfs' is unknown here", id="unknown"),
    pytest.param("ext 4", "file system type 'ext 4' is unknown here", id="space-in-type"),
])
def test_a_type_nothing_here_knows_is_refused_naming_it(world: World, fstype: str,
                                                       message: str) -> None:
    with world.manager() as engine, pytest.raises(InvalidRequest, match=message) as refused:
        engine.create(MountSpec("tmpfs", world.dir("x"), fstype), current=False, persist=True)
    assert refused.value.value == fstype
    assert only_line_count(world) == 0


def only_line_count(world: World) -> int:
    return len(FstabDocument.parse(world.fstab.read_text()).entries())


@pytest.mark.parametrize(("source", "target", "message"), [
    pytest.param("-V", "/srv/x", "spec '-V' begins with '-'", id="dash-spec"),
    pytest.param("tmpfs", "/" + "d" * 4100, "longer than PATH_MAX", id="huge-mount-point"),
])
def test_fields_mount8_would_misread_are_refused(world: World, source: str, target: str,
                                                 message: str) -> None:
    with world.manager() as engine, pytest.raises(InvalidRequest, match=message):
        engine.create(MountSpec(source, target, "tmpfs"), current=False, persist=True)
    assert only_line_count(world) == 0


@requires_libmount
def test_control_characters_are_escaped_so_libmount_reads_them_back(world: World) -> None:
    target = str(world.root / "a\x01b\rc")
    with world.manager() as engine:
        engine.create(MountSpec("tmpfs", target, "tmpfs"), current=False, persist=True)
    table = parse_fstab(world.fstab.read_bytes())
    assert [entry.target for entry in table.entries] == [os.fsencode(target)]


def test_the_options_written_mean_what_was_asked(world: World) -> None:
    goal = MountOptions.from_fields(allow_write=True, allow_suid=True, interpret_devices=True,
                                    allow_execution=True, synchronous_io=False,
                                    other_options=["user", "noauto"])
    with world.manager() as engine:
        engine.create(MountSpec("/dev/sdz9", world.dir("u"), "ext4", goal), current=False,
                      persist=True)
    assert only_line(world).split()[3] == "user,noauto,suid,dev,exec"


def test_a_line_that_means_the_request_is_a_successful_no_op(world: World) -> None:
    target = world.dir("n")
    world.fstab.write_text(f"# mine\nserver:/x {target} nfs rw,sync,hard  0 0 # kept\n")
    before = world.fstab.read_bytes()
    with world.manager() as engine:
        outcome = engine.create(MountSpec("server:/x", target, "nfs", parse_options("sync,hard")),
                                current=False, persist=True)
        assert not outcome.plan.steps
        with pytest.raises(AlreadyExists, match="options 'rw,sync,hard'"):
            engine.create(MountSpec("server:/x", target, "nfs", parse_options("async,hard")),
                          current=False, persist=True)
    assert world.fstab.read_bytes() == before


def test_mode_1_and_mode_2_write_the_same_mount_point_for_a_symlink(world: World) -> None:
    real = world.dir("real")
    link = world.root / "link"
    link.symlink_to(real)
    source = world.dir("src")
    source_link = world.root / "src-link"
    source_link.symlink_to(source)
    with world.manager() as engine:
        engine.create(MountSpec(str(source_link), str(link), None), current=False, persist=True)
        mode2 = only_line(world)
        engine.delete(real, current=False, persist=True)
        engine.create(MountSpec(str(source_link), str(link), None), current=True, persist=True,
                      holder="a")
        mode1 = only_line(world)
        # The kernel mounted the real directory; the line names the link as given.
        assert world.mounts_at(real)
        engine.delete(real, current=True, persist=True, holder="a")
    assert mode1 == mode2 == f"{source_link} {real} none bind 0 0"


def test_modify_keeps_the_administrators_words(world: World) -> None:
    target = world.dir("m")
    world.fstab.write_text(f"/dev/sdz1\t{target}\text4\tdefaults,noatime,nofail\t0\t2\n")
    with world.manager() as engine:
        engine.modify(target, parse_options("ro,noatime,nofail"), current=False, persist=True)
    assert world.fstab.read_text() == f"/dev/sdz1\t{target}\text4\tro,noatime,nofail\t0\t2\n"

