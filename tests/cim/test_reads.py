"""Reads of the live model through pywbem: DSP0200 options, every class and association,
settings of drifted mounts, goal settings and jobs."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
from pywbem import (
    CIM_ERR_ACCESS_DENIED,
    CIM_ERR_FAILED,
    CIM_ERR_INVALID_CLASS,
    CIM_ERR_INVALID_PARAMETER,
    CIM_ERR_NOT_FOUND,
    CIM_ERR_NOT_SUPPORTED,
    CIMError,
    CIMInstanceName,
    Uint16,
)

from lmi_mount.cim import names
from lmi_mount.cim.broker import Caller
from lmi_mount.mounts.fstab import FstabDocument
from lmi_mount.mounts.options import parse_options, with_defaults
from tests.cim.conftest import NS, CimWorld, call, create_tmpfs, finished_job, service_path
from tests.support.skips import requires_root


def _tmpfs(world: CimWorld, conn: Any, name: str = "mnt", mode: int = 32768) -> Any:
    rv, out = create_tmpfs(conn, world.dir(name), mode=mode)
    if rv == 4096:
        return finished_job(conn, out["Job"])["JobOutParameters"]["Mount"]
    return out["Mount"]


def test_every_lmi_class_enumerates_and_every_instance_gets(fake_world: CimWorld) -> None:
    conn = fake_world.connect(synchronous_seconds=0)
    # Synchronous window 0: the mount runs as a job, so jobs and their
    # associations have instances too.
    mount = _tmpfs(fake_world, conn, mode=1)
    for classname in names.LMI_CLASSES:
        instances = conn.EnumerateInstances(classname, namespace=NS)
        assert instances, f"no instance of {classname}"
        for instance in instances:
            # Free space and job times may move between the two reads: compare
            # the identity and the shape, not every value.
            got = conn.GetInstance(instance.path)
            assert got.path == instance.path and list(got.properties) == list(instance.properties)
    assert conn.GetInstance(mount)["FileSystemType"] == "tmpfs"


def test_deep_inheritance_and_property_list(fake_world: CimWorld) -> None:
    conn = fake_world.connect()
    _tmpfs(fake_world, conn)
    deep = conn.EnumerateInstances("CIM_ManagedElement", namespace=NS)
    classes = {i.classname for i in deep}
    assert {
        names.MOUNTED_FILE_SYSTEM,
        names.MOUNT_CONFIGURATION_SERVICE,
        names.COMPUTER_SYSTEM,
    } <= classes
    shallow = conn.EnumerateInstances("CIM_ManagedElement", namespace=NS, DeepInheritance=False)
    for instance in shallow:
        assert set(instance.properties) <= {
            "InstanceID",
            "Caption",
            "Description",
            "ElementName",
            "Generation",
        }
    mounts = conn.EnumerateInstances(
        names.MOUNTED_FILE_SYSTEM, namespace=NS, PropertyList=["ReferenceCount"]
    )
    assert mounts and all(list(m.properties) == ["ReferenceCount"] for m in mounts)
    assert all(set(m.path.keybindings) == {"FileSystemSpec", "MountPointPath"} for m in mounts)


def test_missing_instances_and_classes(fake_world: CimWorld) -> None:
    conn = fake_world.connect()
    with pytest.raises(CIMError) as caught:
        conn.GetInstance(
            CIMInstanceName(
                names.MOUNTED_FILE_SYSTEM,
                {"FileSystemSpec": "x", "MountPointPath": "/nowhere"},
                namespace=NS,
            )
        )
    assert caught.value.status_code == CIM_ERR_NOT_FOUND
    assert "/nowhere" in caught.value.status_description
    with pytest.raises(CIMError) as caught:
        conn.EnumerateInstances("LMI_NoSuchClass", namespace=NS)
    assert caught.value.status_code == CIM_ERR_INVALID_CLASS


def test_associations_from_every_end(fake_world: CimWorld) -> None:
    conn = fake_world.connect()
    mount = _tmpfs(fake_world, conn)
    [host] = conn.EnumerateInstanceNames(names.COMPUTER_SYSTEM, namespace=NS)
    mounts = conn.AssociatorNames(host, AssocClass=names.HOSTED_MOUNT)
    assert any(
        m.keybindings["MountPointPath"] == mount.keybindings["MountPointPath"] for m in mounts
    )
    [service] = conn.AssociatorNames(host, AssocClass=names.HOSTED_MOUNT_SERVICE)
    [capabilities] = conn.Associators(service, AssocClass=names.MOUNT_ELEMENT_CAPABILITIES)
    assert list(capabilities["SupportedAsynchronousMethods"]) == [0, 1, 2]
    references = conn.References(mount)
    assert {r.classname for r in references} == {
        names.HOSTED_MOUNT,
        names.MOUNTED_FILE_SYSTEM_ELEMENT_SETTING_DATA,
        names.MOUNT_POINT,
        names.ATTACHED_FILE_SYSTEM,
    }
    [file_system] = conn.Associators(mount, AssocClass=names.ATTACHED_FILE_SYSTEM)
    assert file_system["FileSystemType"] == "tmpfs"
    assert file_system["FileSystemSize"] is not None and file_system["AvailableSpace"] is not None
    [back] = conn.AssociatorNames(file_system.path, AssocClass=names.ATTACHED_FILE_SYSTEM)
    assert back.keybindings["MountPointPath"] == mount.keybindings["MountPointPath"]


def test_drift_shows_two_settings(fake_world: CimWorld) -> None:
    target = fake_world.dir("mnt")
    fake_world.fstab.write_text(f"tmpfs {target} tmpfs noexec 0 2\n")
    conn = fake_world.connect()
    rv, out = create_tmpfs(conn, target)
    assert rv == 0
    links = conn.References(
        out["Mount"], ResultClass=names.MOUNTED_FILE_SYSTEM_ELEMENT_SETTING_DATA
    )
    flags = {
        (link["IsCurrent"], link["IsNext"]): conn.GetInstance(link["SettingData"])
        for link in links
    }
    assert set(flags) == {(1, 2), (2, 1)}
    assert flags[(1, 2)]["AllowExecution"] is True, "the live mount is exec"
    assert flags[(2, 1)]["AllowExecution"] is False and flags[(2, 1)]["FileSystemCheckOrder"] == 2
    assert "drifted" in conn.GetInstance(out["Mount"])["Caption"]


def test_a_user_line_s_setting_says_what_mount8_makes_of_it(fake_world: CimWorld) -> None:
    # mount(8) adds nosuid,nodev,noexec for user (exec after it takes noexec
    # back). The setting said suid, dev and exec, and a client that wrote it
    # back as a Goal (ModifyMount Mode 2) made the line suid and dev.
    fake_world.fstab.write_text("/dev/sdz5 /mnt/u xfs user 0 0\n"
                                "/dev/sdz6 /mnt/x xfs user,exec,noauto 0 0\n")
    conn = fake_world.connect()
    settings = {s["ElementName"]: s for s in conn.EnumerateInstances(
        names.MOUNTED_FILE_SYSTEM_SETTING)}
    values = {target: (s["AllowSUID"], s["InterpretDevices"], s["AllowExecution"])
              for target, s in settings.items() if target in ("/mnt/u", "/mnt/x")}
    assert values == {"/mnt/u": (False, False, False), "/mnt/x": (False, False, True)}
    [service] = conn.EnumerateInstanceNames(names.MOUNT_CONFIGURATION_SERVICE)
    mount = next(m.path for m in conn.EnumerateInstances(names.MOUNTED_FILE_SYSTEM)
                 if m["MountPointPath"] == "/mnt/u")
    rv, _ = conn.InvokeMethod("ModifyMount", service, Mode=Uint16(2), Mount=mount,
                              Goal=settings["/mnt/u"].path)
    assert rv == 0
    line = fake_world.fstab.read_text().splitlines()[0]
    assert with_defaults(parse_options(line.split()[3])) == with_defaults(parse_options("user"))


def test_a_pass_number_a_uint16_cannot_hold_is_null_not_a_broken_class(
    fake_world: CimWorld,
) -> None:
    # libmount and findmnt read these lines; one of them made every
    # enumeration of the settings fail with "internal error" (ValueError).
    fake_world.fstab.write_text("tmpfs /mnt/n1 ext4 defaults 0 -1\n"
                                "tmpfs /mnt/n2 ext4 defaults 7 70000\n"
                                "tmpfs /mnt/n3 ext4 defaults 0 65535\n")
    conn = fake_world.connect()
    orders = {s["ElementName"]: s["FileSystemCheckOrder"]
              for s in conn.EnumerateInstances(names.MOUNTED_FILE_SYSTEM_SETTING)}
    assert {k: v for k, v in orders.items() if k.startswith("/mnt/")} == {
        "/mnt/n1": None, "/mnt/n2": None, "/mnt/n3": 65535}
    assert len(conn.EnumerateInstances(names.MOUNTED_FILE_SYSTEM)) == len(orders)


def test_an_option_with_an_escaped_blank_survives_an_edit_of_its_line(
    fake_world: CimWorld,
) -> None:
    # libmount reads \040 in the options field as a blank; the setting said so,
    # but a Goal holding it was refused ("contains whitespace"), so any edit of
    # the line through the service had to drop the option.
    fake_world.fstab.write_text(
        "tmpfs /mnt/req tmpfs x-systemd.requires-mounts-for=/srv/a\\040b,noauto 0 0\n")
    conn = fake_world.connect()
    (setting,) = [s for s in conn.EnumerateInstances(names.MOUNTED_FILE_SYSTEM_SETTING)
                  if s["ElementName"] == "/mnt/req"]
    assert list(setting["OtherOptions"]) == ["x-systemd.requires-mounts-for=/srv/a b", "noauto"]
    [capabilities] = conn.EnumerateInstanceNames(names.MOUNTED_FILE_SYSTEM_CAPABILITIES)
    goal = conn.GetInstance(conn.InvokeMethod("CreateSetting", capabilities)[1]["MountSetting"])
    goal["OtherOptions"] = [*setting["OtherOptions"], "nofail"]
    conn.ModifyInstance(goal)
    [service] = conn.EnumerateInstanceNames(names.MOUNT_CONFIGURATION_SERVICE)
    mount = next(m.path for m in conn.EnumerateInstances(names.MOUNTED_FILE_SYSTEM)
                 if m["MountPointPath"] == "/mnt/req")
    rv, _ = conn.InvokeMethod("ModifyMount", service, Mode=Uint16(2), Mount=mount, Goal=goal.path)
    assert rv == 0
    options = fake_world.fstab.read_text().split()[3]
    assert "x-systemd.requires-mounts-for=/srv/a\\040b" in options.split(",")
    assert parse_options(FstabDocument(fake_world.fstab.read_text()).entries()[0].entry.options
                         ).other_options[:3] == (
        "x-systemd.requires-mounts-for=/srv/a b", "noauto", "nofail")


def test_goal_settings_lifecycle_and_cap(fake_world: CimWorld) -> None:
    conn = fake_world.connect(max_goal_settings=2)
    [capabilities] = conn.EnumerateInstanceNames(names.MOUNTED_FILE_SYSTEM_CAPABILITIES)
    goals = [conn.InvokeMethod("CreateSetting", capabilities)[1]["MountSetting"] for _ in range(2)]
    with pytest.raises(CIMError) as caught:
        conn.InvokeMethod("CreateSetting", capabilities)
    assert caught.value.status_code == CIM_ERR_FAILED and "2 goal settings" in str(caught.value)
    conn.DeleteInstance(goals[0])
    with pytest.raises(CIMError) as caught:
        conn.GetInstance(goals[0])
    assert caught.value.status_code == CIM_ERR_NOT_FOUND
    setting = conn.GetInstance(goals[1])
    setting["InstanceID"] = setting["InstanceID"]
    setting["ChangeableType"] = Uint16(0)
    with pytest.raises(CIMError, match="ChangeableType"):
        conn.ModifyInstance(setting)


def test_mount_settings_change_only_through_modify_mount(fake_world: CimWorld) -> None:
    conn = fake_world.connect()
    mount = _tmpfs(fake_world, conn)
    [setting] = conn.Associators(mount, ResultClass=names.MOUNTED_FILE_SYSTEM_SETTING)
    setting["AllowWrite"] = False
    with pytest.raises(CIMError) as caught:
        conn.ModifyInstance(setting)
    assert caught.value.status_code == CIM_ERR_NOT_SUPPORTED
    assert "ModifyMount" in caught.value.status_description


def test_failed_job_reports_its_error(fake_world: CimWorld) -> None:
    conn = fake_world.connect(synchronous_seconds=0)
    target = fake_world.dir("mnt")
    rv, out = create_tmpfs(conn, target, Holder="a")
    assert rv == 4096
    job_mount = finished_job(conn, out["Job"])["JobOutParameters"]["Mount"]
    fake_world.make_busy(target)
    try:
        rv, out = call(conn, "DeleteMount", Mode=32769, Mount=job_mount, Holder="a", Force=True)
        assert rv == 4096
        job = finished_job(conn, out["Job"])
    finally:
        fake_world.end_busy()
    assert job["JobState"] == 10 and job["OperationalStatus"] == [6, 17]
    assert job["JobOutParameters"]["__ReturnValue"] == 6
    rv, error = conn.InvokeMethod("GetError", out["Job"])
    assert rv == 0 and "4242" in error["Error"]["Message"]
    # A reader may ask why a job failed (a review: GetError changes nothing,
    # and a monitoring console with reader credentials could not), not change it.
    reader = Caller(user="monitor", may_write=False)
    for method in ("GetError", "GetErrors"):
        rv, errors = conn.broker.invoke_method(NS, out["Job"], method, {}, caller=reader)
        assert rv == 0 and "4242" in str(errors), method
    with pytest.raises(CIMError) as denied:
        conn.broker.invoke_method(NS, out["Job"], "RequestStateChange",
                                  {"RequestedState": Uint16(4)}, caller=reader)
    assert denied.value.status_code == CIM_ERR_ACCESS_DENIED
    assert "'monitor' may read but not call RequestStateChange" in str(denied.value)
    [owner] = conn.AssociatorNames(out["Job"], AssocClass=names.OWNING_MOUNT_JOB_ELEMENT)
    assert owner.classname == names.MOUNT_CONFIGURATION_SERVICE
    [affected] = conn.AssociatorNames(out["Job"], AssocClass=names.AFFECTED_MOUNT_JOB_ELEMENT)
    assert affected.keybindings["MountPointPath"] == target
    rv, _ = conn.InvokeMethod("RequestStateChange", out["Job"], RequestedState=Uint16(4))
    assert rv == 4097, "an ended job cannot be terminated"
    conn.DeleteInstance(out["Job"])
    with pytest.raises(CIMError) as caught:
        conn.GetInstance(out["Job"])
    assert caught.value.status_code == CIM_ERR_NOT_FOUND


def test_jobs_are_removed_after_time_before_removal(fake_world: CimWorld) -> None:
    conn = fake_world.connect(synchronous_seconds=0, time_before_removal=0.2)
    _, out = create_tmpfs(conn, fake_world.dir("mnt"))
    deadline = time.monotonic() + 10
    while True:
        try:
            conn.GetInstance(out["Job"])
        except CIMError as exc:
            assert exc.status_code == CIM_ERR_NOT_FOUND
            break
        assert time.monotonic() < deadline, "the ended job was never removed"
        time.sleep(0.05)


def test_get_class_options_never_change_the_model(fake_world: CimWorld) -> None:
    conn = fake_world.connect()
    broker = conn.broker
    bare = broker.get_class(
        NS,
        names.MOUNTED_FILE_SYSTEM,
        local_only=False,
        include_qualifiers=False,
        include_class_origin=False,
    )
    assert not bare.qualifiers and not bare.properties["FileSystemSpec"].qualifiers
    full = broker.get_class(
        NS,
        names.MOUNTED_FILE_SYSTEM,
        local_only=False,
        include_qualifiers=True,
        include_class_origin=True,
    )
    assert full.properties["FileSystemSpec"].qualifiers["Key"].value is True
    assert full.properties["Caption"].class_origin == "CIM_ManagedElement"


@pytest.mark.parametrize("number", ["\u00b2", "\u0663", "1_0", "9" * 5000])
def test_a_job_id_that_is_no_number_is_not_found(fake_world: CimWorld, number: str) -> None:
    # isdigit() took these for numbers and int() then failed: FAILED, not NOT_FOUND.
    conn = fake_world.connect()
    path = CIMInstanceName("LMI_MountJob", {"InstanceID": f"LMI:LMI_MountJob:{number}"},
                           namespace=NS)
    with pytest.raises(CIMError) as caught:
        conn.GetInstance(path)
    assert caught.value.status_code == CIM_ERR_NOT_FOUND


def test_a_reference_where_a_key_holds_a_value_is_not_found(fake_world: CimWorld) -> None:
    # pywbem's path equality raises TypeError for a path against a string: the
    # comparison of paths made that FAILED "internal error", not NOT_FOUND.
    conn = fake_world.connect()
    other = service_path(conn).copy()
    other.keybindings["Name"] = CIMInstanceName("LMI_MountJob", {"InstanceID": "x"})
    with pytest.raises(CIMError) as caught:
        conn.GetInstance(other)
    assert caught.value.status_code == CIM_ERR_NOT_FOUND, caught.value
    with pytest.raises(CIMError) as caught:
        conn.InvokeMethod("CreateMount", other, Mode=Uint16(32768))
    assert caught.value.status_code == CIM_ERR_NOT_FOUND, caught.value


@pytest.mark.root
@pytest.mark.private_namespace
@requires_root
def test_each_file_system_is_its_own_with_its_own_figures(tmp_path: Path) -> None:
    """Every tmpfs was one LMI_LocalFileSystem "tmpfs", with the Root, size and
    ReadOnly of whichever mount came first; a bind's file system was named by
    its directory and read only by the bind's own flag (an outside review).
    A file system is its superblock (device number): each tmpfs its own, a
    bind the one of its origin, ReadOnly the superblock's. The judges are
    statvfs(3) and mountinfo."""
    world = CimWorld("real", tmp_path)
    try:
        conn = world.connect()
        small, big, bound = world.dir("small"), world.dir("big"), world.dir("bound")
        for target, size in ((small, "1m"), (big, "4m")):
            [capabilities] = conn.EnumerateInstanceNames(names.MOUNTED_FILE_SYSTEM_CAPABILITIES,
                                                         namespace=NS)
            _, made = conn.InvokeMethod("CreateSetting", capabilities, Options=f"size={size},ro")
            create_tmpfs(conn, target, Goal=made["MountSetting"])
        rv, _ = call(conn, "CreateMount", Mode=32768, MountPoint=bound,
                       FileSystemSpec=big)  # a bind of the big one: its file system
        assert rv == 0
        systems = {}
        for target in (small, big, bound):
            mount = next(p for p in conn.EnumerateInstanceNames(names.MOUNTED_FILE_SYSTEM,
                                                                 namespace=NS)
                         if p["MountPointPath"] == target)
            [systems[target]] = conn.Associators(mount, AssocClass=names.ATTACHED_FILE_SYSTEM)
        assert systems[small]["Name"] != systems[big]["Name"] == systems[bound]["Name"]
        for target in (small, big):
            figures = os.statvfs(target)
            assert systems[target]["FileSystemSize"] == figures.f_blocks * figures.f_frsize
            assert systems[target]["Root"] == target
            assert systems[target]["ReadOnly"] is True  # the superblock's ro
        names_ = [i["Name"] for i in conn.EnumerateInstances(names.LOCAL_FILE_SYSTEM,
                                                              namespace=NS)]
        assert len(names_) == len(set(names_)), "one instance a file system"
        assert {systems[small]["Name"], systems[big]["Name"]} <= set(names_)
        # The file system of the directories: the one each mount point is on.
        [directory] = [i for i in conn.EnumerateInstances(names.UNIX_DIRECTORY, namespace=NS)
                       if i["Name"] == f"{big}"]
        assert directory["FSName"] not in (systems[big]["Name"], "")
        # A tmpfs has no device to mount again by name: a FileSystem reference
        # to one cannot make a second mount of it.
        with pytest.raises(CIMError) as raised:
            call(conn, "CreateMount", Mode=32768, MountPoint=world.dir("again"),
                 FileSystem=systems[small].path)
        assert raised.value.status_code == CIM_ERR_INVALID_PARAMETER
        assert "no device" in raised.value.status_description
    finally:
        world.close()


@pytest.mark.root
@pytest.mark.private_namespace
@requires_root
def test_a_file_system_s_figures_come_from_a_mount_nothing_covers(tmp_path: Path) -> None:
    """A tmpfs mounted over a file system's only root mount gave that file
    system its own size (statvfs(3) of a covered mount point; a review)."""
    world = CimWorld("real", tmp_path)
    try:
        conn = world.connect()
        base, bound = world.dir("base"), world.dir("bound")
        [capabilities] = conn.EnumerateInstanceNames(names.MOUNTED_FILE_SYSTEM_CAPABILITIES,
                                                     namespace=NS)
        _, made = conn.InvokeMethod("CreateSetting", capabilities, Options="size=4m")
        create_tmpfs(conn, base, Goal=made["MountSetting"])
        os.mkdir(f"{base}/sub")
        rv, _ = call(conn, "CreateMount", Mode=32768, MountPoint=bound,
                     FileSystemSpec=f"{base}/sub")
        assert rv == 0
        four = os.statvfs(bound)
        world.kernel.mount("cover", base, "tmpfs", 0, "size=1m")  # over the root mount
        mount = next(p for p in conn.EnumerateInstanceNames(names.MOUNTED_FILE_SYSTEM,
                                                             namespace=NS)
                     if p["MountPointPath"] == bound)
        [system] = conn.Associators(mount, AssocClass=names.ATTACHED_FILE_SYSTEM)
        assert system["FileSystemSize"] == four.f_blocks * four.f_frsize == 4 << 20
        assert system["Root"] == bound
    finally:
        world.close()
