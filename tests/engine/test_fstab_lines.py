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
import threading
import time

import pytest

from lmi_mount.linux import files
from lmi_mount.mounts.errors import AlreadyExists, InvalidRequest, OperationFailed
from lmi_mount.mounts.fstab import FstabDocument
from lmi_mount.mounts.options import MountOptions, parse_options
from lmi_mount.mounts.plan import MountSpec
from tests.engine.conftest import World
from tests.support.libmount import parse_fstab, requires_libmount
from tests.support.skips import requires_tool

_library_present = not requires_libmount.args[0]


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



# -- the second outside review -------------------------------------------------------


def test_a_line_with_text_after_passno_is_a_template_and_keeps_its_comment(world: World) -> None:
    target = world.dir("a")
    world.fstab.write_text(f"UUID=1 {target} ext4 defaults 0 2 # data disk\n")
    with world.manager() as engine:
        engine.create(MountSpec("tmpfs", world.dir("b"), "tmpfs"), current=False, persist=True)
        engine.modify(target, parse_options("ro"), current=False, persist=True)
    assert world.fstab.read_text().splitlines() == [
        f"UUID=1 {target} ext4 ro 0 2 # data disk", f"tmpfs {world.root}/b tmpfs defaults 0 0"]


def test_a_line_libmount_reads_never_breaks_status(world: World) -> None:
    target = world.dir("odd")
    with world.manager() as engine:
        engine.acquire(MountSpec("tmpfs", target, "tmpfs", parse_options("size=1m")), "a")
        world.fstab.write_text(f"tmpfs {target} tmpfs size=1m,noatime,,ro=1, 0 0\n")
        [status] = [s for s in engine.status() if s.target == target]
        assert status.fstab is not None and [str(d) for d in status.drift]
        engine.release(target, "a")


def test_the_service_never_overwrites_a_line_changed_since_it_planned(world: World) -> None:
    target = world.dir("a")
    world.fstab.write_text(f"/dev/sdz1 {target} ext4 defaults 0 2\n")
    admin_line = f"/dev/sdz1 {target} ext4 defaults,nofail 0 2\n"
    with world.manager() as engine, files.exclusive(world.fstab) as fstab:
        _, version = fstab.read()
        failures: list[Exception] = []

        def modify() -> None:
            try:
                engine.modify(target, parse_options("noatime"), current=False, persist=True)
            except OperationFailed as exc:
                failures.append(exc)

        writer = threading.Thread(target=modify)
        writer.start()
        time.sleep(0.3)  # it has planned and waits for the lock
        fstab.replace(admin_line, version)
    writer.join(timeout=30)
    assert world.fstab.read_text() == admin_line
    [failure] = failures
    assert "changed since this request read it" in str(failure)


def test_fstab_only_requests_find_a_line_by_a_symlinked_mount_point(world: World) -> None:
    real = world.dir("real")
    link = world.root / "link"
    link.symlink_to(real)
    with world.manager() as engine:
        engine.create(MountSpec("tmpfs", str(link), "tmpfs"), current=False, persist=True)
        engine.modify(str(link), parse_options("ro"), current=False, persist=True)
        engine.delete(str(link), current=False, persist=True)
    assert only_line_count(world) == 0


def test_deleting_the_line_of_a_mount_point_removes_every_line_of_it(world: World) -> None:
    target = world.dir("data")
    world.fstab.write_text(f"# keep\nUUID=a {target} ext4 defaults 0 2\n"
                           f"/dev/sdz1 {target} ext4 defaults 0 2\n")
    with world.manager() as engine:
        engine.delete(target, current=False, persist=True)
    assert world.fstab.read_text() == "# keep\n"


@pytest.mark.parametrize(("target", "fstype", "message"), [
    pytest.param("/srv/l", "ext4,bogus2", "'bogus2' is unknown", id="type-list"),
    pytest.param("/srv/" + "b" * 300, "tmpfs", "longer than NAME_MAX", id="long-name"),
])
def test_more_lines_that_cannot_mount_at_boot_are_refused(world: World, target: str,
                                                         fstype: str, message: str) -> None:
    with world.manager() as engine, pytest.raises(InvalidRequest, match=message):
        engine.create(MountSpec("/dev/sdz1", target, fstype), current=False, persist=True)


# -- systemd reads the lines too -------------------------------------------------------

GENERATOR = "/lib/systemd/system-generators/systemd-fstab-generator"


def systemd_units(world: World) -> dict[str, tuple[str, str]]:
    """Where= -> (What=, Options=) of the mount units systemd-fstab-generator makes."""
    out = world.root / "generated"
    out.mkdir(exist_ok=True)
    subprocess.run([GENERATOR, str(out), str(out), str(out)], check=True,
                   env={**os.environ, "SYSTEMD_FSTAB": str(world.fstab),
                        "SYSTEMD_LOG_LEVEL": "err"}, capture_output=True)
    units = {}
    for unit in out.glob("*.mount"):
        fields = dict(line.split("=", 1) for line in unit.read_bytes().decode(
            "utf-8", "surrogateescape").splitlines() if "=" in line and not line.startswith("#"))
        units[fields["Where"]] = (fields["What"], fields.get("Options", ""))
    return units


@pytest.mark.skipif(not os.access(GENERATOR, os.X_OK),
                    reason="systemd-fstab-generator (package systemd) is not installed")
@pytest.mark.parametrize(("source", "name", "fstype"), [
    pytest.param("UUID=0a1b2c3d-0000-4000-8000-00000000beef", "data", "ext4", id="uuid"),
    pytest.param("//nas/share", "nas", "cifs", id="cifs"),
    pytest.param("/srv/with space", "with space\tand tab", "ext4", id="blanks"),
    pytest.param("/srv/back\\slash", "caf\u00e9#1", "ext4", id="backslash-utf8-hash"),
    pytest.param("/srv/raw", "\udcff-latin1", "ext4", id="non-utf8"),
])
def test_systemd_reads_the_lines_as_asked(world: World, source: str, name: str,
                                          fstype: str) -> None:
    target = str(world.root / "mnt" / name)
    goal = parse_options("noatime,nofail")
    with world.manager() as engine:
        engine.create(MountSpec(source, target, fstype, goal), current=False, persist=True)
    what, options = systemd_units(world)[target]
    tag, _, value = source.partition("=")
    # systemd names a tag by its udev link: the same device.
    assert what == (f"/dev/disk/by-{tag.lower()}/{value}" if tag == "UUID" else source)
    assert "noatime" in options.split(",")
    if _library_present:
        [entry] = parse_fstab(world.fstab.read_bytes()).entries
        assert (entry.source, entry.target) == (os.fsencode(source), os.fsencode(target))


@pytest.mark.parametrize(("source", "target", "message"), [
    pytest.param("tmpfs", "/srv/a\x01b", "control character", id="control-in-mount-point"),
    pytest.param("tmpfs", "/srv/a\rb", "control character", id="cr-in-mount-point"),
    pytest.param("#tmpfs", "/srv/x", "begins with '#'", id="hash-spec"),
])
def test_fields_systemd_would_not_read_back_are_refused(world: World, source: str,
                                                        target: str, message: str) -> None:
    with world.manager() as engine, pytest.raises(InvalidRequest, match=message):
        engine.create(MountSpec(source, target, "tmpfs"), current=False, persist=True)
    assert only_line_count(world) == 0


def test_a_mount_point_ending_in_a_blank_is_refused(world: World) -> None:
    # systemd strips it from the unit and refuses the unit: it never mounts at boot.
    with world.manager() as engine, pytest.raises(InvalidRequest, match="ends in a blank"):
        engine.create(MountSpec("tmpfs", "/srv/trail ", "tmpfs"), current=False, persist=True)
