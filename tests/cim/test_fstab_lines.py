"""fstab lines through CIM: what a WBEM client asks for is what the line says.

The cases of the issue "fstab lines that mean what the administrator meant",
each through the pywbem mock front end, judged by the file's bytes: Mode 2
with a tag of no present disk, a CIFS share, ``user,noauto`` with exec, an
unknown type; lines libmount reads that the first build did not see (text
after passno, three fields); duplicate mount points; fstab problems on the
service instance.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from pywbem import CIM_ERR_INVALID_PARAMETER, CIMError, Uint16

from lmi_mount.mounts.flags import MS_BIND
from tests.cim.conftest import NS, CimWorld, call, service_path


def lines(world: CimWorld) -> list[str]:
    return [line for line in world.fstab.read_text().splitlines() if not line.startswith("#")]


def goal(conn: Any, **values: Any) -> Any:
    [capabilities] = conn.EnumerateInstanceNames("LMI_MountedFileSystemCapabilities",
                                                 namespace=NS)
    _, out = conn.InvokeMethod("CreateSetting", capabilities)
    setting = conn.GetInstance(out["MountSetting"])
    for name, value in values.items():
        setting[name] = value
    conn.ModifyInstance(setting)
    return setting.path


def test_mode_2_writes_a_tag_of_no_present_disk_as_given(fake_world: CimWorld) -> None:
    conn = fake_world.connect()
    target = str(fake_world.root / "later")
    rv, out = call(conn, "CreateMount", Mode=2, MountPoint=target, FileSystemType="ext4",
                   FileSystemSpec="UUID=0a1b2c3d-0000-4000-8000-00000000beef")
    assert rv == 0
    assert lines(fake_world) == [
        f"UUID=0a1b2c3d-0000-4000-8000-00000000beef {target} ext4 defaults 0 0"]
    mount = conn.GetInstance(out["Mount"])
    assert mount["FileSystemSpec"] == "UUID=0a1b2c3d-0000-4000-8000-00000000beef"


def test_mode_2_writes_a_cifs_share_and_plans_the_missing_helper(
        fake_world: CimWorld) -> None:
    conn = fake_world.connect()
    target = str(fake_world.root / "nas")
    rv, out = call(conn, "CreateMount", Mode=2, MountPoint=target, FileSystemType="cifs",
                   FileSystemSpec="//nas/share", DryRun=True)
    assert rv == 0 and any("cifs-utils" in step for step in out["Plan"]), out["Plan"]
    rv, _ = call(conn, "CreateMount", Mode=2, MountPoint=target, FileSystemType="cifs",
                 FileSystemSpec="//nas/share")
    assert rv == 0
    assert lines(fake_world) == [f"//nas/share {target} cifs defaults 0 0"]


def test_user_noauto_with_exec_stays_executable(fake_world: CimWorld) -> None:
    conn = fake_world.connect()
    target = fake_world.dir("usb")
    rv, _ = call(conn, "CreateMount", Mode=2, MountPoint=target, FileSystemType="ext4",
                 FileSystemSpec="/dev/sdz1",
                 Goal=goal(conn, AllowExecution=True, OtherOptions=["user", "noauto"]))
    assert rv == 0
    assert lines(fake_world) == [f"/dev/sdz1 {target} ext4 user,noauto,suid,dev,exec 0 0"]


def test_an_unknown_type_is_an_invalid_parameter_naming_it(fake_world: CimWorld) -> None:
    conn = fake_world.connect()
    with pytest.raises(CIMError) as refused:
        call(conn, "CreateMount", Mode=2, MountPoint=fake_world.dir("x"), FileSystemSpec="tmpfs",
             FileSystemType="nosuchfs")
    assert refused.value.status_code == CIM_ERR_INVALID_PARAMETER
    assert "'nosuchfs' is unknown here" in refused.value.status_description
    assert lines(fake_world) == []


@pytest.mark.parametrize("line", [
    pytest.param("/dev/sdz2 {target} ext4 defaults 0 0 # data disk", id="text-after-passno"),
    pytest.param("/dev/sdz2 {target} ext4", id="three-fields"),
])
def test_lines_libmount_reads_are_instances(fake_world: CimWorld, line: str) -> None:
    target = fake_world.dir("data")
    fake_world.fstab.write_text(line.format(target=target) + "\n")
    conn = fake_world.connect()
    names = [path for path in conn.EnumerateInstanceNames("LMI_MountedFileSystem", namespace=NS)
             if path["MountPointPath"] == target]
    assert [path["FileSystemSpec"] for path in names] == ["/dev/sdz2"]
    rv, _ = call(conn, "CreateMount", Mode=2, MountPoint=target, FileSystemType="ext4",
                 FileSystemSpec="/dev/sdz2")
    assert rv == 0, "the same line again is a successful no-op"
    assert len(lines(fake_world)) == 1
    rv, _ = call(conn, "DeleteMount", Mode=4, Mount=names[0])
    assert rv == 0 and lines(fake_world) == []


def test_duplicate_mount_points_use_the_first_line_and_are_reported(
        fake_world: CimWorld) -> None:
    target = fake_world.dir("dup")
    fake_world.fstab.write_text(
        f"/dev/sdz3 {target} ext4 ro 0 0\nbroken-line\n/dev/sdz4 {target} xfs rw 0 0\n"
        f"/dev/sdz3 {target} ext4 noatime 0 0\n")
    conn = fake_world.connect()
    [mount] = [p for p in conn.EnumerateInstanceNames("LMI_MountedFileSystem", namespace=NS)
               if p["MountPointPath"] == target]
    assert mount["FileSystemSpec"] == "/dev/sdz3"
    [setting] = conn.Associators(mount, ResultClass="LMI_MountedFileSystemSetting")
    assert setting["AllowWrite"] is False, "the first line's options"
    service = conn.GetInstance(service_path(conn))
    assert list(service["OperationalStatus"]) == [3]
    [description] = service["StatusDescriptions"]
    assert "fstab line 2:" in description and "fstab line 3: mount point" in description
    rv, _ = call(conn, "DeleteMount", Mode=4, Mount=mount)
    assert rv == 0
    # Every line of the named spec goes (one left would be mounted at boot);
    # the other spec's is another mount (mount -a stacks them): it stays, and
    # is the mount point's instance now.
    assert lines(fake_world) == ["broken-line", f"/dev/sdz4 {target} xfs rw 0 0"]
    [mount] = [p for p in conn.EnumerateInstanceNames("LMI_MountedFileSystem", namespace=NS)
               if p["MountPointPath"] == target]
    assert mount["FileSystemSpec"] == "/dev/sdz4"
    rv, _ = call(conn, "DeleteMount", Mode=4, Mount=mount)
    assert rv == 0 and lines(fake_world) == ["broken-line"]


def test_a_system_mount_is_refused_without_force_through_cim(fake_world: CimWorld) -> None:
    system = fake_world.dir("sys")
    target = fake_world.dir("sys/shm")
    conn = fake_world.connect(protected=(system,))
    fake_world.kernel.mount("tmpfs", target, "tmpfs", 0)
    [mount] = [p for p in conn.EnumerateInstanceNames("LMI_MountedFileSystem", namespace=NS)
               if p["MountPointPath"] == target]
    # A remount that changes something (one that changes nothing has no step to refuse).
    [capabilities] = conn.EnumerateInstanceNames("LMI_MountedFileSystemCapabilities",
                                                 namespace=NS)
    _, out = conn.InvokeMethod("CreateSetting", capabilities, Options="ro")
    read_only = {"Mode": 32768, "Goal": out["MountSetting"]}
    for method, params in (("ModifyMount", read_only), ("DeleteMount", {"Mode": 32769})):
        with pytest.raises(CIMError) as refused:
            call(conn, method, Mount=mount, **params)
        assert refused.value.status_code == CIM_ERR_INVALID_PARAMETER
        assert "unless Force is true" in refused.value.status_description
    rv, _ = call(conn, "DeleteMount", Mode=32769, Mount=mount, Force=True)
    assert rv == 0 and fake_world.mounts_at(target) == []


@pytest.mark.parametrize(("numbers", "written"), [
    ("2 3", "2 3"), ("1 70000", "1 70000"),
    ("0 -1", "0 0"),  # no line may be written with a negative pass number
    ("-1 -1", "1 0"),  # nor freq: Dump (True) says 1 (was an internal error)
])
def test_a_line_given_its_own_setting_as_the_goal_is_left_as_it_is(
        fake_world: CimWorld, numbers: str, written: str) -> None:
    # Dump is a boolean and FileSystemCheckOrder a uint16: a line's own setting
    # as the Goal of Mode 2 rewrote freq 2 as 1, and a pass number the
    # property cannot hold (NULL) as 0 (a review).
    conn = fake_world.connect()
    target = str(fake_world.root / "g1")
    line = f"tmpfs {target} tmpfs size=1m {numbers}"
    fake_world.fstab.write_text(f"# scratch fstab\n{line}\n")
    [mount] = [p for p in conn.EnumerateInstanceNames("LMI_MountedFileSystem", namespace=NS)
               if p["MountPointPath"] == target]
    [setting] = conn.AssociatorNames(mount, AssocClass="LMI_MountedFileSystemElementSettingData")
    rv, out = call(conn, "ModifyMount", Mode=2, Mount=mount, Goal=setting)
    assert rv == 0, out
    assert lines(fake_world) == [line.replace(numbers, written)]


@pytest.mark.parametrize(("values", "numbers"), [
    ({}, "1 2"),  # the Goal says nothing of them: the line's own stay
    ({"FileSystemCheckOrder": Uint16(0)}, "1 0"),
    ({"Dump": False, "FileSystemCheckOrder": Uint16(3)}, "0 3"),
])
def test_a_goal_from_create_setting_keeps_the_line_s_numbers_it_does_not_set(
        fake_world: CimWorld, values: dict[str, Any], numbers: str) -> None:
    # OpenLMI's flow (CreateSetting, set the options, ModifyMount) changing
    # only the options turned off the line's fsck at boot: a new goal's pass
    # number was 0, not "not set" (the util-linux review's left-alone item).
    conn = fake_world.connect()
    target = str(fake_world.root / "g2")
    fake_world.fstab.write_text(f"# scratch fstab\ntmpfs {target} tmpfs size=1m 1 2\n")
    [mount] = [p for p in conn.EnumerateInstanceNames("LMI_MountedFileSystem", namespace=NS)
               if p["MountPointPath"] == target]
    [capabilities] = conn.EnumerateInstanceNames("LMI_MountedFileSystemCapabilities",
                                                 namespace=NS)
    _, out = conn.InvokeMethod("CreateSetting", capabilities, Options="size=2m")
    setting = conn.GetInstance(out["MountSetting"])
    assert setting["Dump"] is None and setting["FileSystemCheckOrder"] is None
    if values:
        for name, value in values.items():
            setting[name] = value
        conn.ModifyInstance(setting)
    rv, out = call(conn, "ModifyMount", Mode=2, Mount=mount, Goal=setting.path)
    assert rv == 0, out
    assert lines(fake_world) == [f"tmpfs {target} tmpfs size=2m {numbers}"]


def test_a_modify_without_a_goal_keeps_the_line_s_numbers(fake_world: CimWorld) -> None:
    # A NULL Goal asks for the default options; it says nothing of the line's
    # freq and pass number, which it set to 0 (the review of the goal's fix).
    conn = fake_world.connect()
    target = str(fake_world.root / "g4")
    fake_world.fstab.write_text(f"# scratch fstab\ntmpfs {target} tmpfs size=1m,noexec 1 2\n")
    [mount] = [p for p in conn.EnumerateInstanceNames("LMI_MountedFileSystem", namespace=NS)
               if p["MountPointPath"] == target]
    rv, out = call(conn, "ModifyMount", Mode=2, Mount=mount)
    assert rv == 0, out
    [line] = lines(fake_world)
    assert line.startswith(f"tmpfs {target} tmpfs ") and line.endswith(" 1 2"), line
    assert "noexec" not in line


def test_a_goal_from_create_setting_gives_a_new_line_zeros(fake_world: CimWorld) -> None:
    conn = fake_world.connect()
    target = str(fake_world.root / "g3")
    [capabilities] = conn.EnumerateInstanceNames("LMI_MountedFileSystemCapabilities",
                                                 namespace=NS)
    _, out = conn.InvokeMethod("CreateSetting", capabilities, Options="size=2m")
    rv, out = call(conn, "CreateMount", Mode=2, MountPoint=target, FileSystemSpec="tmpfs",
                   FileSystemType="tmpfs", Goal=out["MountSetting"])
    assert rv == 0, out
    assert lines(fake_world) == [f"tmpfs {target} tmpfs size=2m 0 0"]


def test_a_line_is_not_added_after_one_libmount_would_then_lose(fake_world: CimWorld) -> None:
    # libmount reads an unended last line up to a NUL in it; the newline a
    # new line brings made it a parse error, and its entry vanished unsaid.
    conn = fake_world.connect()
    text = f"# scratch fstab\ntmpfs {fake_world.root / 'x2'} tmpfs size=1m\0 stale junk"
    fake_world.fstab.write_text(text)
    with pytest.raises(CIMError) as refused:
        call(conn, "CreateMount", Mode=2, MountPoint=str(fake_world.root / "x3"),
             FileSystemSpec="tmpfs", FileSystemType="tmpfs")
    assert "holds a NUL byte and ends without a newline" in refused.value.status_description
    assert fake_world.fstab.read_text() == text


@pytest.mark.parametrize("kind", ["directory", "fifo"])
def test_an_fstab_that_is_no_file_degrades_the_service_and_reads_go_on(
        world: CimWorld, kind: str) -> None:
    # libmount reads a directory of *.fstab files; lmi-mount reads one file. An
    # fstab that was none made every enumeration an internal error (a review).
    conn = world.connect()
    target = world.dir("live")
    rv, _ = call(conn, "CreateMount", Mode=32768, MountPoint=target, FileSystemSpec="tmpfs",
                 FileSystemType="tmpfs")
    assert rv == 0
    world.fstab.unlink()
    if kind == "directory":
        world.fstab.mkdir()
    else:
        os.mkfifo(world.fstab)
    mounts = conn.EnumerateInstanceNames("LMI_MountedFileSystem", namespace=NS)
    assert target in [path["MountPointPath"] for path in mounts]
    service = conn.GetInstance(service_path(conn))
    assert list(service["OperationalStatus"]) == [3]
    assert f"fstab: cannot read '{world.fstab}'" in service["StatusDescriptions"][0]
    rv, out = call(conn, "CreateMount", Mode=2, MountPoint=world.dir("later"),
                   FileSystemSpec="tmpfs", FileSystemType="tmpfs")
    assert rv == 4
    assert f"cannot read '{world.fstab}'" in out["Error"]["Message"]


@pytest.mark.parametrize("case", ["other-bind-source", "tmpfs-on-a-bind-line", "other-tmpfs"])
def test_another_mount_on_a_line_s_mount_point_is_no_mount_of_that_line(
        world: CimWorld, case: str) -> None:
    # A line and a live mount were paired by mount point alone: another
    # source (or type) mounted there was reported as the line's mount,
    # "mounted, in fstab", with no drift and no alert (a review).
    conn = world.connect()
    data, data2, target = world.dir("data"), world.dir("data2"), world.dir("mnt")
    if case == "other-tmpfs":
        line, configured = f"conflict {target} tmpfs size=1m 0 0", "conflict"
        world.fstab.write_text(f"# scratch fstab\n{line}\n")
        world.kernel.mount("lossB", target, "tmpfs", 0, "size=1m")
        live = "lossB"
    else:
        line, configured = f"{data} {target} none bind 0 0", data
        world.fstab.write_text(f"# scratch fstab\n{line}\n")
        if case == "other-bind-source":
            world.kernel.mount(data2, target, None, MS_BIND)
            live = data2
        else:
            world.kernel.mount("imposter", target, "tmpfs", 0, "size=1m")
            live = "imposter"
    [mount] = [p for p in conn.EnumerateInstanceNames("LMI_MountedFileSystem", namespace=NS)
               if p["MountPointPath"] == target]
    caption = conn.GetInstance(mount)["Caption"]
    assert f"drifted: source: configured {configured}, live {live}" in caption, caption


def test_the_line_s_own_mount_is_no_drift(world: CimWorld) -> None:
    conn = world.connect()
    data, target = world.dir("data"), world.dir("mnt")
    world.fstab.write_text(f"# scratch fstab\n{data} {target} none bind 0 0\n"
                           f"named {world.dir('t')} tmpfs size=1m 0 0\n")
    world.kernel.mount(data, target, None, MS_BIND)
    world.kernel.mount("named", world.dir("t"), "tmpfs", 0, "size=1m")
    for path in conn.EnumerateInstanceNames("LMI_MountedFileSystem", namespace=NS):
        assert "drifted" not in conn.GetInstance(path)["Caption"], path


def _line_through_a_symlink(world: CimWorld) -> tuple[str, Path]:
    """A directory, a symlink to it, and fstab's one line, for the link."""
    real = world.dir("mnt/d4")
    link = world.root / "link4"
    link.symlink_to(real)
    world.fstab.write_text(f"# scratch fstab\ntmpfs {link} tmpfs size=1m 0 0\n")
    return real, link


def test_a_line_for_a_directory_another_line_names_by_another_spelling_is_refused(
        world: CimWorld) -> None:
    # Lines were compared as text: a line for mnt/d4 was added beside one for a
    # symlink to it, and mount -a stacked two mounts there at boot (findmnt
    # --verify: "target specified more than once"; a review).
    conn = world.connect()
    real, link = _line_through_a_symlink(world)
    text = world.fstab.read_text()
    rv, out = call(conn, "CreateMount", Mode=2, MountPoint=real, FileSystemSpec="tmpfs",
                   FileSystemType="tmpfs")
    assert rv != 0, (out, world.fstab.read_text())
    assert f"line 2 names {str(link)!r}, the same directory" in out["Error"]["Message"]
    assert world.fstab.read_text() == text


@pytest.mark.parametrize("method", ["DeleteMount", "ModifyMount"])
def test_a_line_written_through_a_symlink_is_found_by_its_own_reference(
        world: CimWorld, method: str) -> None:
    # The service lists the line by its mount point as written; a request that
    # touches fstab alone resolved the reference's path first, and so answered
    # NOT_FOUND for an instance it had just listed (a review).
    conn = world.connect()
    _, link = _line_through_a_symlink(world)
    [mount] = [p for p in conn.EnumerateInstanceNames("LMI_MountedFileSystem", namespace=NS)
               if p["MountPointPath"] == str(link)]
    params: dict[str, Any] = {"Mode": 5 if method == "DeleteMount" else 2, "Mount": mount}
    if method == "ModifyMount":
        params["Goal"] = goal(conn, OtherOptions=["size=2m"])
    rv, out = call(conn, method, **params)
    assert rv == 0, out
    left = [line for line in lines(world) if "size=" in line]
    if method == "DeleteMount":
        assert left == []
    else:  # the line as written, with the Goal (CreateSetting's defaults and size=2m)
        [line] = left
        assert line.startswith(f"tmpfs {link} tmpfs size=2m,"), line
