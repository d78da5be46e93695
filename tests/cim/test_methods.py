"""The service through the pywbem API: the OpenLMI client flow, every Mode x method cell
of the draft's table for bind, tmpfs and a loop image, refcounts, jobs, bad input and
transactions — against the fake kernel and the real one in a private namespace."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pywbem import (
    CIM_ERR_INVALID_PARAMETER,
    CIM_ERR_INVALID_QUERY,
    CIM_ERR_METHOD_NOT_AVAILABLE,
    CIM_ERR_NOT_FOUND,
    CIM_ERR_QUERY_LANGUAGE_NOT_SUPPORTED,
    CIMError,
    CIMInstanceName,
    Sint32,
    Uint8,
    Uint16,
    Uint32,
)

from lmi_mount.mounts.flags import (
    MS_BIND,
    MS_MOVE,
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    MS_PRIVATE,
    MS_RDONLY,
    MS_REMOUNT,
)
from tests.cim.conftest import (
    EVERY_KERNEL,
    NS,
    CimWorld,
    call,
    create_tmpfs,
    finished_job,
    service_path,
)

# -- the OpenLMI client flow ---------------------------------------------------------------


def _wait_for_job(conn: Any, rv: int, out: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """Poll a job to its end (lmishell's flow) and return the method's result."""
    if rv != 4096:
        return rv, out
    result = finished_job(conn, out["Job"])["JobOutParameters"]
    values = {p: result[p] for p in result.properties if p != "__ReturnValue"}
    return int(result["__ReturnValue"]), values


@pytest.mark.parametrize(
    "window", [pytest.param(5.0, id="synchronous"), pytest.param(0.0, id="job")]
)
def test_openlmi_client_flow(world: CimWorld, window: float) -> None:
    conn = world.connect(synchronous_seconds=window)
    [capabilities] = conn.EnumerateInstanceNames("LMI_MountedFileSystemCapabilities", namespace=NS)
    rv, out = conn.InvokeMethod("CreateSetting", capabilities)
    assert rv == 0
    goal = conn.GetInstance(out["MountSetting"])
    assert goal["AllowWrite"] is True and goal["AllowExecution"] is True
    goal["AllowExecution"] = False
    goal["OtherOptions"] = ["size=4m"]
    conn.ModifyInstance(goal)

    target = world.dir("mnt")
    rv, out = _wait_for_job(
        conn,
        *create_tmpfs(conn, target, Goal=goal.path),
    )
    assert rv == 0
    mount = conn.GetInstance(out["Mount"])
    # lmishell finds instances by query (its LMI_MountedFileSystem lookups).
    [found] = conn.ExecQuery("WQL", "select * from LMI_MountedFileSystem where "
                             f'MountPointPath = "{target}"', namespace=NS)
    assert found.path.keybindings == mount.path.keybindings
    assert found["ReferenceCount"] == 1
    assert conn.ExecQuery("DMTF:CQL", "SELECT * FROM LMI_MountedFileSystem WHERE "
                          f"MountPointPath = '{target}'", namespace=NS)[0].path == found.path
    liked = conn.ExecQuery("WQL", "SELECT MountPointPath FROM LMI_MountedFileSystem WHERE "
                           f"MountPointPath LIKE '{world.root}/%'", namespace=NS)
    assert [row["MountPointPath"] for row in liked] == [target]
    assert set(liked[0].properties) == {"MountPointPath"}
    assert (mount["FileSystemSpec"], mount["MountPointPath"], mount["FileSystemType"]) == (
        "tmpfs",
        target,
        "tmpfs",
    )
    assert mount["ReferenceCount"] == 1
    [record] = world.mounts_at(target)
    assert "noexec" in record.vfs_options

    [setting] = conn.Associators(mount.path, ResultClass="LMI_MountedFileSystemSetting")
    assert setting["AllowExecution"] is False
    [directory] = conn.Associators(mount.path, AssocClass="LMI_MountPoint")
    assert directory["Name"] == target
    [host] = conn.Associators(mount.path, AssocClass="LMI_HostedMount")
    assert host["Name"] == "host.example"

    rv, _ = conn.InvokeMethod("CreateSetting", capabilities)
    ro_goal = conn.GetInstance(_["MountSetting"])
    ro_goal["AllowWrite"] = False
    conn.ModifyInstance(ro_goal)
    rv, out = _wait_for_job(
        conn, *call(conn, "ModifyMount", Mode=32768, Mount=mount.path, Goal=ro_goal.path)
    )
    assert rv == 0
    [record] = world.mounts_at(target)
    assert "ro" in record.vfs_options

    rv, out = _wait_for_job(conn, *call(conn, "DeleteMount", Mode=32769, Mount=mount.path))
    assert rv == 0
    assert world.mounts_at(target) == []
    with pytest.raises(CIMError) as caught:
        conn.GetInstance(mount.path)
    assert caught.value.status_code == CIM_ERR_NOT_FOUND
    conn.DeleteInstance(goal.path)
    conn.DeleteInstance(ro_goal.path)


# -- every Mode x method cell -----------------------------------------------------------------

# (method, mode) -> (mounted afterwards, fstab line afterwards, line/live read-only afterwards)
# Create starts from nothing; Modify and Delete from a mount with its fstab line (rw),
# Modify asks for read-only.
CELLS = {
    ("CreateMount", 1): (True, True),
    ("CreateMount", 2): (False, True),
    ("CreateMount", 4): (False, False),
    ("CreateMount", 5): (False, False),
    ("CreateMount", 32768): (True, False),
    ("CreateMount", 32769): (False, False),
    ("ModifyMount", 1): ("ro", "ro"),
    ("ModifyMount", 2): ("rw", "ro"),
    ("ModifyMount", 4): ("rw", "rw"),
    ("ModifyMount", 5): ("rw", "rw"),
    ("ModifyMount", 32768): ("ro", "rw"),
    ("ModifyMount", 32769): ("rw", "rw"),
    ("DeleteMount", 1): (True, True),
    ("DeleteMount", 2): (True, True),
    ("DeleteMount", 4): (False, False),
    ("DeleteMount", 5): (True, False),
    ("DeleteMount", 32768): (True, True),
    ("DeleteMount", 32769): (False, True),
}


def _kind_args(world: CimWorld, kind: str) -> dict[str, Any]:
    if kind == "bind":
        return {"FileSystemSpec": world.dir("source")}
    if kind == "tmpfs":
        return {"FileSystemSpec": "tmpfs", "FileSystemType": "tmpfs"}
    return {"FileSystemSpec": world.image(), "FileSystemType": "ext4"}


def _read_only_goal(conn: Any) -> CIMInstanceName:
    [capabilities] = conn.EnumerateInstanceNames("LMI_MountedFileSystemCapabilities", namespace=NS)
    _, out = conn.InvokeMethod("CreateSetting", capabilities)
    goal = conn.GetInstance(out["MountSetting"])
    goal["AllowWrite"] = False
    conn.ModifyInstance(goal)
    return goal.path


@pytest.mark.parametrize("kind", ["bind", "tmpfs", "loop"])
@pytest.mark.parametrize(("method", "mode"), list(CELLS), ids=[f"{m}-{n}" for m, n in CELLS])
def test_mode_cell(world: CimWorld, kind: str, method: str, mode: int) -> None:
    conn = world.connect()
    target = world.dir("mnt")
    args = _kind_args(world, kind)
    expected_live, expected_line = CELLS[(method, mode)]
    if method == "CreateMount":
        rv, _ = call(conn, method, Mode=mode, MountPoint=target, **args)
        assert rv == 0
        assert bool(world.mounts_at(target)) is expected_live
        assert (world.fstab_entry(target) is not None) is expected_line
        return
    rv, out = call(conn, "CreateMount", Mode=1, MountPoint=target, **args)
    assert rv == 0
    before = world.fstab.read_text()
    mount = out["Mount"]
    if method == "ModifyMount":
        rv, _ = call(conn, method, Mode=mode, Mount=mount, Goal=_read_only_goal(conn))
        assert rv == 0
        [record] = world.mounts_at(target)
        assert record.vfs_options[0] == expected_live
        entry = world.fstab_entry(target)
        assert ("ro" in entry.options.split(",")) is (expected_line == "ro")
        if expected_line == "rw":
            assert world.fstab.read_text() == before, "a no-effect cell leaves fstab byte for byte"
        return
    rv, _ = call(conn, method, Mode=mode, Mount=mount)
    assert rv == 0
    assert bool(world.mounts_at(target)) is expected_live
    assert (world.fstab_entry(target) is not None) is expected_line


# -- refcounts through CIM ---------------------------------------------------------------------


def test_two_holders_one_release_keeps_the_mount(world: CimWorld) -> None:
    conn = world.connect()
    target = world.dir("mnt")
    args = {"MountPoint": target, "FileSystemSpec": "tmpfs", "FileSystemType": "tmpfs"}
    _, out = call(conn, "CreateMount", Mode=32768, Holder="alice", **args)
    _, again = call(conn, "CreateMount", Mode=32768, Holder="bob", **args)
    assert again["Mount"] == out["Mount"], "the same mount is shared, not stacked"
    mount = conn.GetInstance(out["Mount"])
    assert mount["ReferenceCount"] == 2 and list(mount["Holders"]) == ["alice", "bob"]
    assert len(world.mounts_at(target)) == 1
    assert call(conn, "DeleteMount", Mode=32769, Mount=out["Mount"], Holder="alice")[0] == 0
    assert len(world.mounts_at(target)) == 1
    assert call(conn, "DeleteMount", Mode=32769, Mount=out["Mount"], Holder="bob")[0] == 0
    assert world.mounts_at(target) == []


def test_hold_timer_keeps_the_mount_after_the_last_release(world: CimWorld) -> None:
    conn = world.connect(hold_seconds=0.3)
    target = world.dir("mnt")
    _, out = create_tmpfs(conn, target, Holder="a")
    call(conn, "DeleteMount", Mode=32769, Mount=out["Mount"], Holder="a")
    assert len(world.mounts_at(target)) == 1, "held for the hold time"
    assert conn.GetInstance(out["Mount"])["ReferenceCount"] == 0
    deadline = time.monotonic() + 10
    while world.mounts_at(target) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert world.mounts_at(target) == [], "the timer unmounted it"


def test_a_second_release_during_the_hold_time_is_no_error(world: CimWorld) -> None:
    # Every holder has gone; asking again (Ansible's next run) changes nothing.
    # The first build answered In Use: "holds no reference (held by nobody)".
    conn = world.connect(hold_seconds=600)
    target = world.dir("mnt")
    _, out = create_tmpfs(conn, target, Holder="a")
    call(conn, "DeleteMount", Mode=32769, Mount=out["Mount"], Holder="a")
    rv, again = call(conn, "DeleteMount", Mode=32769, Mount=out["Mount"], Holder="a")
    assert (rv, list(again["Plan"])) == (0, [])
    assert len(world.mounts_at(target)) == 1, "still waiting for its hold time"
    _, out = create_tmpfs(conn, world.dir("other"), Holder="b")
    rv, _ = call(conn, "DeleteMount", Mode=32769, Mount=out["Mount"], Holder="a", DryRun=True)
    assert rv == 6, "one that others hold is still In Use to a non-holder"


def test_a_named_holder_releases_only_its_reference_never_a_mount_nobody_holds(
    world: CimWorld,
) -> None:
    # Holders a and b; an administrator replaces their tmpfs by a fresh one.
    # a's release then unmounted the administrator's mount (a reviewer).
    conn = world.connect()
    target = world.dir("mnt")
    _, out = create_tmpfs(conn, target, Holder="a")
    create_tmpfs(conn, target, Holder="b")
    (old,) = world.mounts_at(target)
    world.kernel.unmount(target, expect=old.mount_id)
    world.kernel.mount("tmpfs", target, "tmpfs", 0, "size=2m")
    mount = conn.GetInstance(out["Mount"])
    assert (mount["ReferenceCount"], list(mount["Holders"] or [])) == (0, [])
    rv, failed = call(conn, "DeleteMount", Mode=32769, Mount=out["Mount"], Holder="a")
    assert rv == 6 and "'a' holds no reference" in failed["Error"]["Message"]
    assert len(world.mounts_at(target)) == 1, "the administrator's mount stays"
    # Without a Holder, a DeleteMount unmounts a mount nobody holds (the draft's).
    assert call(conn, "DeleteMount", Mode=32769, Mount=out["Mount"])[0] == 0
    assert world.mounts_at(target) == []


@pytest.mark.parametrize("world", EVERY_KERNEL, indirect=True)
def test_a_bind_without_a_goal_keeps_its_origins_restrictions(world: CimWorld) -> None:
    # Goal NULL was read as rw,suid,dev,exec named: the bind of a noexec,nodev
    # tmpfs came out exec and dev, where ``mount --bind`` (no options) keeps
    # the origin's per-mount flags (a review).
    conn = world.connect()
    origin, target = world.dir("origin"), world.dir("mnt")
    world.kernel.mount("tmpfs", origin, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=1m")
    rv, _ = call(conn, "CreateMount", Mode=32768, FileSystemSpec=origin, MountPoint=target)
    assert rv == 0
    [bind] = world.mounts_at(target)
    assert {"nosuid", "nodev", "noexec"} <= set(bind.vfs_options), bind.vfs_options


@pytest.mark.parametrize("world", EVERY_KERNEL, indirect=True)
def test_a_remount_of_a_bind_without_a_goal_keeps_its_origin_s_restrictions(
        world: CimWorld) -> None:
    # The draft's "defaults" of a NULL Goal are, for a bind, its origin's
    # flags (mount --bind): a ModifyMount 32768 without a Goal made the bind
    # of a noexec,nodev tmpfs exec and dev (a review).
    conn = world.connect()
    origin, target = world.dir("origin"), world.dir("mnt")
    world.kernel.mount("tmpfs", origin, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=1m")
    rv, out = call(conn, "CreateMount", Mode=32768, FileSystemSpec=origin, MountPoint=target)
    assert rv == 0
    rv, out = call(conn, "ModifyMount", Mode=32768, Mount=out["Mount"])
    assert rv == 0, out
    [bind] = world.mounts_at(target)
    assert {"nosuid", "nodev", "noexec"} <= set(bind.vfs_options), bind.vfs_options


def test_a_delete_of_a_mount_covered_by_hand_is_in_use_and_takes_nothing(
    world: CimWorld,
) -> None:
    # Mode 1, then a tmpfs mounted over it by hand: DeleteMount Mode 4 took
    # the hand-made mount away, left ours and removed its fstab line, and
    # returned 0 (outside review).
    conn = world.connect()
    target = world.dir("mnt")
    _, out = create_tmpfs(conn, target, mode=1, Holder="carol")
    assert [m.source for m in world.mounts_at(target)] == ["tmpfs"]
    world.kernel.mount("handmade", target, "tmpfs", 0, "size=2m")
    before = world.fstab.read_text()
    for how in ({"Holder": "carol"}, {"Force": True}):
        rv, failed = call(conn, "DeleteMount", Mode=4, Mount=out["Mount"], **how)
        assert rv == 6, failed
        assert "covered by another mount ('handmade'" in failed["Error"]["Message"]
        assert [m.source for m in world.mounts_at(target)] == ["tmpfs", "handmade"]
        assert world.fstab.read_text() == before
    world.kernel.unmount(target)  # the administrator takes his mount away
    assert conn.GetInstance(out["Mount"])["Holders"] == ["carol"], "no reference lost"
    assert call(conn, "DeleteMount", Mode=4, Mount=out["Mount"], Holder="carol")[0] == 0
    assert world.mounts_at(target) == [] and world.fstab_entry(target) is None


@contextlib.contextmanager
def _table_reads(world: CimWorld) -> Iterator[list[int]]:
    """Every read of the whole mount table (``Kernel.read_mountinfo``) meanwhile."""
    reads: list[int] = []
    read_mountinfo = world.kernel.read_mountinfo

    def counted() -> str:
        reads.append(1)
        return str(read_mountinfo())

    world.kernel.read_mountinfo = counted
    try:
        yield reads
    finally:
        world.kernel.read_mountinfo = read_mountinfo


def test_a_held_mount_s_reference_is_checked_without_the_mount_table(world: CimWorld) -> None:
    # DeleteMount and ModifyMount check their Mount reference before the job:
    # that check parsed the whole mount table, 7 ms a call on a host with
    # 2,000 mounts. A mount the service holds is found by its unique id; the
    # release that follows reads what is mounted at its mount point only.
    conn = world.connect()
    target = world.dir("mnt")
    _, out = create_tmpfs(conn, target, Holder="alice")
    with _table_reads(world) as reads:
        # Mode 4 has no effect on ModifyMount: the reference check alone.
        assert call(conn, "ModifyMount", Mode=4, Mount=out["Mount"])[0] == 0
        assert call(conn, "DeleteMount", Mode=32769, Mount=out["Mount"], Holder="alice")[0] == 0
    assert reads == [], "the mount table was read"
    assert world.mounts_at(target) == []
    with pytest.raises(CIMError) as caught:
        call(conn, "DeleteMount", Mode=32769, Mount=out["Mount"], Holder="alice")
    assert caught.value.status_code == CIM_ERR_NOT_FOUND, "released: no longer found"


@pytest.mark.parametrize("world", EVERY_KERNEL, indirect=True)
def test_reference_checks_in_a_row_read_the_mount_table_once_at_most(world: CimWorld) -> None:
    # Without statmount (Linux < 6.8) a held mount is found by its mount id in
    # the table: the engine's, kept while the kernel reports no change, not a
    # read of every mount for each check (27 ms a check at 10,000 mounts).
    conn = world.connect()
    _, out = create_tmpfs(conn, world.dir("mnt"), Holder="alice")
    with _table_reads(world) as reads:
        for _ in range(3):  # Mode 4 has no effect on ModifyMount: the reference check alone
            assert call(conn, "ModifyMount", Mode=4, Mount=out["Mount"])[0] == 0
    assert len(reads) <= 1, reads


@pytest.mark.parametrize("world", EVERY_KERNEL, indirect=True)
def test_a_delete_of_a_held_mount_hidden_from_above_says_so_and_keeps_it(
        world: CimWorld) -> None:
    # A mount made by hand over a directory above a held mount hides it. The
    # reference still names the mount its holders hold: the answer says what
    # hides it (it was NOT_FOUND, "no mount", while the mount was there).
    conn = world.connect()
    parent = world.dir("p")
    target = world.dir("p/mnt")
    _, out = create_tmpfs(conn, target, Holder="alice")
    world.kernel.mount("cover", parent, "tmpfs", 0, "size=1m")
    rv, failed = call(conn, "DeleteMount", Mode=32769, Mount=out["Mount"], Holder="alice")
    assert rv == 6, failed
    assert "is hidden by a mount made over a directory above it" in failed["Error"]["Message"]
    world.kernel.unmount(parent)  # the administrator takes his mount away
    assert [m.source for m in world.mounts_at(target)] == ["tmpfs"]
    assert conn.GetInstance(out["Mount"])["Holders"] == ["alice"], "no reference lost"
    assert call(conn, "DeleteMount", Mode=32769, Mount=out["Mount"], Holder="alice")[0] == 0
    assert world.mounts_at(target) == []


@pytest.mark.parametrize("spelling", [
    "", "relative/mnt", "/a\0b", "{held}/../mnt/.", "{held}/./", "{held}/../mnt"])
def test_a_reference_s_mount_point_is_matched_as_written_not_resolved(
        fake_world: CimWorld, spelling: str) -> None:
    # The holders' record is found by the mount point as the reference spells
    # it (slashes doubled or trailing aside): an empty, relative or NUL path
    # was an internal error, and ".." reached (and unmounted) the mount that
    # GetInstance of the same path does not find.
    conn = fake_world.connect()
    held = fake_world.dir("mnt")
    create_tmpfs(conn, held, Holder="alice")
    target = spelling.format(held=held)
    nowhere = CIMInstanceName(
        "LMI_MountedFileSystem", {"FileSystemSpec": "tmpfs", "MountPointPath": target},
        namespace=NS)
    with pytest.raises(CIMError) as caught:
        call(conn, "DeleteMount", Mode=32769, Mount=nowhere, Holder="alice")
    assert caught.value.status_code == CIM_ERR_NOT_FOUND, caught.value
    with pytest.raises(CIMError) as caught:
        conn.GetInstance(nowhere)
    assert caught.value.status_code == CIM_ERR_NOT_FOUND
    assert [m.source for m in fake_world.mounts_at(held)] == ["tmpfs"]


def test_a_mounts_own_setting_as_the_goal_keeps_its_lines_fstab_words(world: CimWorld) -> None:
    # The setting of a mount that agrees with its line left out the line's
    # fstab-only words (noauto, nofail, x-*, comment=), and the docs' way to
    # keep them, that setting passed back as the Goal, took them out of
    # fstab: the line then mounted at boot, and failed it without nofail.
    conn = world.connect()
    target = world.dir("w1")
    words = ["nofail", "noauto", "x-systemd.automount", "comment=keep"]
    rv, out = call(conn, "CreateMount", Mode=1, FileSystemSpec="tmpfs", FileSystemType="tmpfs",
                   MountPoint=target, Goal=_setting(conn, ",".join(["size=4m", *words])))
    assert rv == 0, out
    setting = _one_setting(conn, out["Mount"])
    assert set(words) <= set(setting["OtherOptions"]), setting["OtherOptions"]
    rv, out = call(conn, "ModifyMount", Mode=2, Mount=out["Mount"], Goal=setting.path)
    assert rv == 0, out
    [line] = [line for line in world.fstab.read_text().splitlines() if target in line]
    assert set(words) <= set(line.split()[3].split(",")), line


def test_a_defaults_line_whose_mount_was_made_read_only_by_hand_drifts(world: CimWorld) -> None:
    # Drift was worked out over the words a line names only: a "defaults" line
    # whose mount was remounted ro,noexec showed none, and its one setting said
    # the next boot would give ro,noexec too (a review).
    conn = world.connect()
    target = world.dir("d1")
    rv, out = call(conn, "CreateMount", Mode=1, FileSystemSpec="tmpfs", FileSystemType="tmpfs",
                   MountPoint=target)
    assert rv == 0 and f"tmpfs {target} tmpfs defaults 0 0" in world.fstab.read_text()
    world.kernel.mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOEXEC)
    mount = conn.GetInstance(out["Mount"])
    assert "drifted" in mount["Caption"], mount["Caption"]
    settings = {(s["IsCurrent"], s["IsNext"]): s for s in conn.References(
        out["Mount"], ResultClass="LMI_MountedFileSystemElementSettingData")}
    current = conn.GetInstance(settings[(1, 2)]["SettingData"])
    following = conn.GetInstance(settings[(2, 1)]["SettingData"])
    assert (current["AllowWrite"], current["AllowExecution"]) == (False, False)
    assert (following["AllowWrite"], following["AllowExecution"]) == (True, True)


@pytest.mark.parametrize("world", [k for k in EVERY_KERNEL if k.id != "fake"],  # private only
                         indirect=True)
def test_a_shared_line_keeps_shared_through_its_setting_and_drifts_when_made_private(
        world: CimWorld) -> None:
    # Propagation was neither in a mount's setting nor drift: passed back as
    # the Goal, the setting rewrote the line without "shared", and a mount
    # made private by hand under a "shared" line showed no drift (a review).
    conn = world.connect()
    target = world.dir("p1")
    rv, out = call(conn, "CreateMount", Mode=1, FileSystemSpec="tmpfs", FileSystemType="tmpfs",
                   MountPoint=target, Goal=_setting(conn, "size=4m,shared"))
    assert rv == 0, out
    setting = _one_setting(conn, out["Mount"])
    assert "shared" in setting["OtherOptions"], setting["OtherOptions"]
    rv, plan = call(conn, "ModifyMount", Mode=2, Mount=out["Mount"], Goal=setting.path)
    assert rv == 0, plan
    [line] = [line for line in world.fstab.read_text().splitlines() if target in line]
    assert "shared" in line.split()[3].split(","), line
    assert "drifted" not in conn.GetInstance(out["Mount"])["Caption"]

    world.kernel.mount(None, target, None, MS_PRIVATE)
    # The kernel signals no change of propagation alone (mountinfo's poll,
    # fanotify's mount events): the next change of the table shows it.
    world.kernel.mount("tmpfs", world.dir("p2"), "tmpfs", 0)
    caption = conn.GetInstance(out["Mount"])["Caption"]
    assert "drifted: propagation: configured shared, live private" in caption, caption


def test_a_mount_point_through_dot_dot_is_refused_not_read_as_text(world: CimWorld) -> None:
    # ".." was taken away as text (normpath): "link/../d5" named s/d5, where
    # the kernel, and mount(8), go through the link first and reach s/mnt/d5.
    # Mode 1 mounted on, and wrote the line of, another directory (a review).
    conn = world.connect()
    base = Path(world.dir("s"))
    for directory in ("mnt/d4", "mnt/d5", "d5"):
        (base / directory).mkdir(parents=True)
    (base / "link4").symlink_to(base / "mnt" / "d4")
    asked = f"{base}/link4/../d5"
    with pytest.raises(CIMError) as caught:
        call(conn, "CreateMount", Mode=1, FileSystemSpec="tmpfs", FileSystemType="tmpfs",
             MountPoint=asked)
    assert caught.value.status_code == CIM_ERR_INVALID_PARAMETER
    assert repr(asked) in caught.value.status_description
    assert world.mounts_at(str(base / "d5")) == world.mounts_at(str(base / "mnt" / "d5")) == []
    assert world.fstab.read_text() == "# scratch fstab\n"


@pytest.mark.parametrize("world", [k for k in EVERY_KERNEL if k.id != "fake"],  # no MS_MOVE
                         indirect=True)
def test_a_held_mount_moved_away_is_not_found_at_its_old_mount_point(world: CimWorld) -> None:
    # The reference names a mount point: a mount moved from it (mount --move)
    # is not there, whatever its holders' record says.
    conn = world.connect()
    old, new = world.dir("old"), world.dir("new")
    _, out = create_tmpfs(conn, old, Holder="alice")
    world.kernel.mount(old, new, None, MS_MOVE)
    with pytest.raises(CIMError) as caught:
        call(conn, "DeleteMount", Mode=32769, Mount=out["Mount"], Holder="alice")
    assert caught.value.status_code == CIM_ERR_NOT_FOUND
    assert [m.source for m in world.mounts_at(new)] == ["tmpfs"], "nothing unmounted"


def test_force_drops_every_holder(world: CimWorld) -> None:
    conn = world.connect(hold_seconds=600)
    target = world.dir("mnt")
    args = {"MountPoint": target, "FileSystemSpec": "tmpfs", "FileSystemType": "tmpfs"}
    _, out = call(conn, "CreateMount", Mode=32768, Holder="a", **args)
    call(conn, "CreateMount", Mode=32768, Holder="b", **args)
    assert call(conn, "DeleteMount", Mode=32769, Mount=out["Mount"], Force=True)[0] == 0
    assert world.mounts_at(target) == []


def test_busy_unmount_returns_in_use_naming_the_process(world: CimWorld) -> None:
    conn = world.connect()
    target = world.dir("mnt")
    _, out = create_tmpfs(conn, target, mode=1, Holder="a")
    before = world.fstab.read_text()
    pid = world.make_busy(target)
    try:
        rv, result = call(conn, "DeleteMount", Mode=4, Mount=out["Mount"], Holder="a")
    finally:
        world.end_busy()
    assert rv == 6
    error = result["Error"]
    assert str(pid) in error["Message"] and "sleep" in error["Message"]
    assert world.fstab.read_text() == before and len(world.mounts_at(target)) == 1
    assert conn.GetInstance(out["Mount"])["ReferenceCount"] == 1, "no reference lost"


def test_restart_reconstructs_holders(world: CimWorld) -> None:
    conn = world.connect()
    target = world.dir("mnt")
    _, out = create_tmpfs(conn, target, Holder="a")
    world.close()
    conn = world.connect()
    mount = conn.GetInstance(out["Mount"])
    assert list(mount["Holders"]) == ["a"]


def test_dry_run_returns_the_plan_and_changes_nothing(world: CimWorld) -> None:
    conn = world.connect()
    target = world.dir("mnt")
    rv, out = create_tmpfs(conn, target, mode=1, DryRun=True)
    assert rv == 0
    assert out["Plan"][0].startswith("mount tmpfs tmpfs on")
    assert world.mounts_at(target) == [] and world.fstab_entry(target) is None



def test_a_call_returns_the_steps_it_took(world: CimWorld) -> None:
    # The MOF's Plan: the steps of the call, with DryRun or without. The first
    # build returned them only for a dry run, so a client could not show what
    # a real call did (Ansible's diff mode reads the fstab step).
    conn = world.connect()
    target = world.dir("mnt")
    _, planned = create_tmpfs(conn, target, mode=1, DryRun=True)
    rv, done = create_tmpfs(conn, target, mode=1)
    assert rv == 0 and list(done["Plan"]) == list(planned["Plan"])
    assert list(done["Plan"])[-1] == f"fstab: add line 'tmpfs {target} tmpfs defaults 0 0'"


def _one_setting(conn: Any, mount: CIMInstanceName) -> Any:
    """The one setting a mount whose live options agree with its line has."""
    [setting] = conn.Associators(mount, AssocClass="LMI_MountedFileSystemElementSettingData")
    return setting


def _setting(conn: Any, options: str | None = None) -> CIMInstanceName:
    [capabilities] = conn.EnumerateInstanceNames("LMI_MountedFileSystemCapabilities", namespace=NS)
    params = {} if options is None else {"Options": options}
    rv, out = conn.InvokeMethod("CreateSetting", capabilities, **params)
    assert rv == 0
    return out["MountSetting"]


@pytest.mark.parametrize("option", [
    "offset=16777216", "sizelimit=1048576", "encryption=aes",
    "verity.roothash=00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"])
def test_a_mount_of_an_image_part_or_under_verity_is_refused_not_made_whole(
        world: CimWorld, option: str) -> None:
    # offset= and sizelimit= were taken for fstab-only words: the image was
    # attached whole and the file system at offset 0 mounted, another one
    # than mount(8) mounts; verity.* mounted the image unverified (a review).
    conn = world.connect()
    image = Path(world.dir("images")) / "disk.img"
    image.write_bytes(b"\0" * 4096)
    target = world.dir("mnt")
    before = world.kernel.read_mountinfo() if world.kernel else None
    with pytest.raises(CIMError) as caught:
        call(conn, "CreateMount", Mode=1, FileSystemSpec=str(image), MountPoint=target,
             FileSystemType="ext4", Goal=_setting(conn, f"loop,{option}"))
    assert caught.value.status_code == CIM_ERR_INVALID_PARAMETER
    assert f"option {option!r}" in caught.value.status_description
    assert world.mounts_at(target) == [] and world.fstab.read_text() == "# scratch fstab\n"
    assert before is None or world.kernel.read_mountinfo() == before
    # The line alone is mount(8)'s to run at boot: Mode 2 writes it.
    rv, _ = call(conn, "CreateMount", Mode=2, FileSystemSpec=str(image), MountPoint=target,
                 FileSystemType="ext4", Goal=_setting(conn, f"loop,{option}"))
    assert rv == 0 and option in world.fstab.read_text()


def test_a_remount_that_would_ask_for_an_image_part_is_refused(world: CimWorld) -> None:
    # ModifyMount did not reach the check CreateMount makes: Mode 1 wrote
    # loop,offset= on the line of a mount of the whole image, which then
    # showed no drift (a review).
    conn = world.connect()
    target = world.dir("mnt")
    _, out = create_tmpfs(conn, target, mode=1)
    before = world.fstab.read_text()
    for mode in (1, 32768):
        with pytest.raises(CIMError) as caught:
            call(conn, "ModifyMount", Mode=mode, Mount=out["Mount"],
                 Goal=_setting(conn, "size=1m,offset=1048576"))
        assert caught.value.status_code == CIM_ERR_INVALID_PARAMETER
        assert "option 'offset=1048576'" in caught.value.status_description
    assert world.fstab.read_text() == before


def test_create_setting_takes_options_as_mount_8_spells_them(fake_world: CimWorld) -> None:
    conn = fake_world.connect()
    goal = conn.GetInstance(_setting(conn, "size=16m,noexec,ro"))
    assert (goal["AllowExecution"], goal["AllowWrite"]) == (False, False)
    # What the words do not name stays NULL: the file system's default applies.
    assert goal["AllowSUID"] is None and goal["SynchronousIO"] is None
    assert list(goal["OtherOptions"]) == ["size=16m"]
    defaults = conn.GetInstance(_setting(conn))
    assert defaults["AllowSUID"] is True and defaults["SynchronousIO"] is False


@pytest.mark.parametrize("access, relative, full", [
    (False, None, True), (None, False, None), (True, False, False), (False, True, None),
    (True, True, True),
])
def test_a_goal_whose_atime_properties_name_no_one_mode_is_refused(
    fake_world: CimWorld, access: bool | None, relative: bool | None, full: bool | None
) -> None:
    # The kernel has one atime mode: noatime, relatime or strictatime. Mode 2
    # wrote these goals as "noatime,strictatime", "defaults" (the request
    # dropped) and the like, and said done; Mode 1 mounted and failed after.
    conn = fake_world.connect()
    goal = conn.GetInstance(_setting(conn, "size=1m"))  # no atime property set
    for name, value in (("UpdateAccessTimes", access), ("UpdateRelativeAccessTimes", relative),
                        ("UpdateFullAccessTimes", full)):
        if value is not None:
            goal[name] = value
    conn.ModifyInstance(goal)
    fstab = fake_world.fstab.read_bytes()
    for mode in (1, 2, 32768):
        with pytest.raises(CIMError) as raised:
            create_tmpfs(conn, fake_world.dir("mnt"), mode=mode, Goal=goal.path)
        error = raised.value
        assert error.status_code == CIM_ERR_INVALID_PARAMETER and "atime mode" in str(error)
        assert "UpdateRelativeAccessTimes" in str(error) or "UpdateAccessTimes" in str(error)
    assert fake_world.fstab.read_bytes() == fstab
    assert fake_world.mounts_at(fake_world.dir("mnt")) == []


@pytest.mark.parametrize(("params", "named"), [
    pytest.param({"Options": "ro,si ze=1m"}, "si ze=1m", id="whitespace"),
    pytest.param({"Options": ""}, "Options ''", id="empty"),
    pytest.param({"Options": Uint16(7)}, "7", id="not-a-string"),
    pytest.param({"Flavour": "x"}, "Flavour", id="unknown-parameter"),
])
def test_create_setting_refuses_bad_options_naming_them(
    fake_world: CimWorld, params: dict[str, Any], named: str
) -> None:
    conn = fake_world.connect()
    [capabilities] = conn.EnumerateInstanceNames("LMI_MountedFileSystemCapabilities", namespace=NS)
    with pytest.raises(CIMError) as refused:
        conn.InvokeMethod("CreateSetting", capabilities, **params)
    assert refused.value.status_code == CIM_ERR_INVALID_PARAMETER
    assert named in refused.value.status_description


def test_a_remount_to_the_options_in_effect_changes_nothing(world: CimWorld) -> None:
    # A client that states the options it wants on every run (Ansible) must see
    # nothing done the second time: no remount, no holder record rewritten.
    conn = world.connect()
    target = world.dir("mnt")
    _, out = create_tmpfs(conn, target, mode=1, Goal=_setting(conn, "size=4m,noexec"))
    [before] = world.mounts_at(target)
    same = _setting(conn, "rw,suid,dev,exec,async,size=4m,noexec")  # the same, spelled out
    rv, again = call(conn, "ModifyMount", Mode=1, Mount=out["Mount"], Goal=same)
    assert (rv, list(again["Plan"])) == (0, [])
    assert world.mounts_at(target) == [before]
    rv, changed = call(conn, "ModifyMount", Mode=32768, Mount=out["Mount"],
                       Goal=_setting(conn, "rw,suid,dev,exec,async,size=4m"))
    [remount, *_] = changed["Plan"]
    assert rv == 0 and remount.startswith(f"remount {target}")
    [after] = world.mounts_at(target)
    assert "noexec" not in after.vfs_options and after.mount_id == before.mount_id


def test_a_job_that_changed_nothing_can_be_read(fake_world: CimWorld) -> None:
    # Its Plan is an empty array, whose type only the method's declaration gives:
    # the first build failed every read of such a job (and of every job) with
    # "Cannot determine CIM data type from empty array".
    conn = fake_world.connect(synchronous_seconds=0)
    target = fake_world.dir("mnt")
    rv, out = create_tmpfs(conn, target, Goal=_setting(conn, "noexec"))
    mount = finished_job(conn, out["Job"])["JobOutParameters"]["Mount"]
    rv, out = call(conn, "ModifyMount", Mode=32768, Mount=mount,
                   Goal=_setting(conn, "noexec"))
    assert rv == 4096
    result = finished_job(conn, out["Job"])["JobOutParameters"]
    assert result["__ReturnValue"] == 0 and list(result["Plan"]) == []
    assert len(conn.EnumerateInstances("LMI_MountJob", namespace=NS)) == 2


def test_a_remount_to_user_applies_what_user_implies(world: CimWorld) -> None:
    # mount(8) reads "user" as nosuid,nodev,noexec; the first build kept the
    # live flags and, seeing the drift, remounted again on every call.
    conn = world.connect()
    target = world.dir("mnt")
    _, out = create_tmpfs(conn, target)
    rv, _ = call(conn, "ModifyMount", Mode=32768, Mount=out["Mount"],
                 Goal=_setting(conn, "ro,user"))
    [live] = world.mounts_at(target)
    assert {"ro", "nosuid", "nodev", "noexec"} <= set(live.vfs_options)
    rv, again = call(conn, "ModifyMount", Mode=32768, Mount=out["Mount"],
                     Goal=_setting(conn, "ro,user"))
    assert (rv, list(again["Plan"])) == (0, [])


def test_modify_mount_takes_force(fake_world: CimWorld) -> None:
    system = fake_world.dir("sys")
    conn = fake_world.connect(protected=(system,))
    fake_world.kernel.mount("tmpfs", system, "tmpfs", 0)
    [mount] = [p for p in conn.EnumerateInstanceNames("LMI_MountedFileSystem", namespace=NS)
               if p["MountPointPath"] == system]
    rv, out = call(conn, "ModifyMount", Mode=32768, Mount=mount, Goal=_setting(conn, "ro"),
                   Force=True)
    [remount, *_] = out["Plan"]
    assert rv == 0 and remount.startswith(f"remount {system}")


# -- bad input ---------------------------------------------------------------------------------

BAD = [
    pytest.param({"Mode": 3}, "Mode 3", id="unsupported-mode"),
    pytest.param({"Mode": 777}, "Mode 777", id="unknown-mode"),
    pytest.param({"Mode": 1, "MountPoint": None}, "MountPoint", id="missing-mount-point"),
    pytest.param({"Mode": 1, "MountPoint": "relative/dir"}, "relative/dir", id="relative-path"),
    pytest.param(
        {"Mode": 1, "MountPoint": "/nonexistent/lmi/dir"},
        "/nonexistent/lmi/dir",
        id="missing-path",
    ),
    # The message names the setting's property, not the Python field (allow_write).
    pytest.param({"Mode": 32768, "OtherOptions": ["ro"]},
                 "option 'ro' is the AllowWrite setting: set AllowWrite=False",
                 id="option-conflict"),
    pytest.param(
        {
            "Mode": 32768,
            "Goal": CIMInstanceName(
                "LMI_MountedFileSystemSetting",
                {"InstanceID": "LMI:LMI_MountedFileSystemSetting:goal:x"},
                namespace=NS,
            ),
        },
        "goal:x",
        id="goal-that-does-not-exist",
    ),
    pytest.param(
        {
            "Mode": 32768,
            "Goal": CIMInstanceName("LMI_MountJob", {"InstanceID": "x"}, namespace=NS),
        },
        "LMI_MountJob",
        id="wrong-class",
    ),
]


@pytest.mark.parametrize(("params", "named"), BAD)
def test_bad_create_is_a_cim_error_naming_the_value(
    world: CimWorld, params: dict[str, Any], named: str
) -> None:
    conn = world.connect()
    args = {"MountPoint": world.dir("mnt"), "FileSystemSpec": "tmpfs", "FileSystemType": "tmpfs"}
    args.update(params)
    if "OtherOptions" in args:
        [capabilities] = conn.EnumerateInstanceNames(
            "LMI_MountedFileSystemCapabilities", namespace=NS
        )
        _, out = conn.InvokeMethod("CreateSetting", capabilities)
        goal = conn.GetInstance(out["MountSetting"])
        goal["OtherOptions"] = args.pop("OtherOptions")
        with pytest.raises(CIMError) as caught:
            conn.ModifyInstance(goal)
    else:
        mountinfo = world.kernel.read_mountinfo() if world.kernel else None
        with pytest.raises(CIMError) as caught:
            call(conn, "CreateMount", **{k: v for k, v in args.items() if v is not None})
        assert mountinfo is None or world.kernel.read_mountinfo() == mountinfo
    assert caught.value.status_code in (CIM_ERR_INVALID_PARAMETER, CIM_ERR_NOT_FOUND)
    assert named.lower() in caught.value.status_description.lower()
    assert world.fstab.read_text() == "# scratch fstab\n"


@pytest.mark.parametrize(("language", "query", "status", "message"), [
    pytest.param("SQL", "SELECT * FROM LMI_MountedFileSystem",
                 CIM_ERR_QUERY_LANGUAGE_NOT_SUPPORTED, "'SQL' is not supported", id="language"),
    pytest.param("WQL", "SELECT * FROM LMI_Nothing", CIM_ERR_INVALID_QUERY,
                 "'LMI_Nothing' does not exist", id="class"),
    pytest.param("WQL", "SELECT * FROM LMI_MountedFileSystem WHERE Nope = 1",
                 CIM_ERR_INVALID_QUERY, "has no property 'Nope'", id="property"),
])
def test_a_bad_query_on_the_mock_is_the_server_s_error(
        fake_world: CimWorld, language: str, query: str, status: int, message: str) -> None:
    with pytest.raises(CIMError) as caught:
        fake_world.connect().ExecQuery(language, query, namespace=NS)
    assert caught.value.status_code == status and message in caught.value.status_description


def test_reference_to_nothing_is_not_found(world: CimWorld) -> None:
    conn = world.connect()
    nowhere = CIMInstanceName(
        "LMI_MountedFileSystem",
        {"FileSystemSpec": "tmpfs", "MountPointPath": "/no/such/mount"},
        namespace=NS,
    )
    with pytest.raises(CIMError) as caught:
        call(conn, "DeleteMount", Mode=32769, Mount=nowhere)
    assert caught.value.status_code == CIM_ERR_NOT_FOUND
    assert "/no/such/mount" in caught.value.status_description
    with pytest.raises(CIMError) as caught:
        conn.GetInstance(nowhere)
    assert caught.value.status_code == CIM_ERR_NOT_FOUND


def test_a_path_of_a_class_without_keys_says_so(fake_world: CimWorld) -> None:
    # A review: "CIM_ManagedElement is named by " ended the message, naming nothing.
    conn = fake_world.connect()
    for classname in ("CIM_ManagedElement", "CIM_LogicalElement"):
        with pytest.raises(CIMError) as raised:
            conn.GetInstance(CIMInstanceName(classname, {"Name": "x"}, namespace=NS))
        assert raised.value.status_code == CIM_ERR_INVALID_PARAMETER
        assert raised.value.status_description.endswith(
            f"{classname} has no keys: an instance is named by the keys of its own class")


@pytest.mark.parametrize(("method", "mode"), [
    ("CreateMount", 4), ("CreateMount", 5), ("CreateMount", 32769),
    ("ModifyMount", 4), ("DeleteMount", 1), ("DeleteMount", 32768)])
def test_a_mode_with_no_effect_says_so(fake_world: CimWorld, method: str, mode: int,
                                       caplog: pytest.LogCaptureFixture) -> None:
    # The draft's table answers 0 for these cells; the Plan (with DryRun or not)
    # and the log tell the caller that nothing was done (the first build said nothing).
    conn = fake_world.connect()
    target = fake_world.dir("mnt")
    rv, out = call(conn, "CreateMount", Mode=32768, MountPoint=target,
                   FileSystemSpec="tmpfs", FileSystemType="tmpfs")
    args: dict[str, Any] = ({"MountPoint": target, "FileSystemSpec": "tmpfs",
                             "FileSystemType": "tmpfs"} if method == "CreateMount"
                            else {"Mount": out["Mount"]})
    before = (fake_world.kernel.read_mountinfo(), fake_world.fstab.read_text())
    with caplog.at_level(logging.INFO, logger="lmi_mount.cim.providers.service"):
        rv, out = call(conn, method, Mode=mode, DryRun=True, **args)
        assert (rv, list(out["Plan"])) == (0, [f"Mode {mode} has no effect on {method}"])
        rv, out = call(conn, method, Mode=mode, **args)
        assert (rv, list(out["Plan"])) == (0, [f"Mode {mode} has no effect on {method}"])
    assert f"Mode {mode} has no effect on {method}: nothing done" in caplog.text
    assert (fake_world.kernel.read_mountinfo(), fake_world.fstab.read_text()) == before


def test_a_reference_with_a_trailing_slash_names_the_same_mount(world: CimWorld) -> None:
    conn = world.connect()
    target = world.dir("mnt")
    rv, out = call(conn, "CreateMount", Mode=32768, MountPoint=target + "/",
                   FileSystemSpec="tmpfs", FileSystemType="tmpfs", Holder="alice")
    assert rv == 0 and out["Mount"]["MountPointPath"] == target
    slashed = CIMInstanceName("LMI_MountedFileSystem",
                              {"FileSystemSpec": "tmpfs", "MountPointPath": target + "//"},
                              namespace=NS)
    assert conn.GetInstance(slashed)["MountPointPath"] == target
    rv, _ = call(conn, "DeleteMount", Mode=32769, Mount=slashed, Holder="alice")
    assert rv == 0 and world.mounts_at(target) == []


# -- transactions ------------------------------------------------------------------------------


def test_mode_1_whose_fstab_write_fails_leaves_no_mount(world: CimWorld) -> None:
    conn = world.connect(fstab_path=world.root / "no-such-dir" / "fstab")
    target = world.dir("mnt")
    rv, out = create_tmpfs(conn, target, mode=1)
    assert rv == 4 and "fstab" in out["Error"]["Message"]
    assert world.mounts_at(target) == []


def test_mode_1_whose_mount_fails_leaves_no_fstab_line(world: CimWorld) -> None:
    conn = world.connect()
    target = world.dir("mnt")
    with pytest.raises(CIMError) as caught:
        call(
            conn,
            "CreateMount",
            Mode=1,
            MountPoint=target,
            FileSystemSpec="tmpfs",
            FileSystemType="no-such-type",
        )
    assert "no-such-type" in caught.value.status_description
    assert world.fstab.read_text() == "# scratch fstab\n"


def test_a_failed_call_leaves_a_line_in_the_log(fake_world: CimWorld,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    # The first build kept a failure in the job alone; an administrator
    # reading the log saw nothing.
    conn = fake_world.connect()
    target = fake_world.dir("mnt")
    _, out = create_tmpfs(conn, target, Holder="a")
    fake_world.make_busy(target)
    try:
        with caplog.at_level("WARNING", logger="lmi_mount.cim.jobs"):
            rv, _ = call(conn, "DeleteMount", Mode=32769, Mount=out["Mount"], Holder="a")
    finally:
        fake_world.end_busy()
    assert rv == 6
    assert any("DeleteMount" in r.message and "ended with 6" in r.message and "sleep" in r.message
               for r in caplog.records), [r.message for r in caplog.records]


def test_options_the_kernel_does_not_show_are_taken_as_asked_on_our_mount(
        world: CimWorld) -> None:
    # tmpfs shows no huge= and changes no mode= on a remount: the first build
    # refused the second identical ModifyMount ("mode= when it is mounted
    # only") and refused a second holder asking for the very same options.
    conn = world.connect()
    target = world.dir("mnt")
    asked = "mode=1777,huge=never,size=1m"
    _, out = create_tmpfs(conn, target, Goal=_setting(conn, asked), Holder="a")
    rv, again = call(conn, "ModifyMount", Mode=32768, Mount=out["Mount"],
                     Goal=_setting(conn, asked))
    assert (rv, list(again["Plan"])) == (0, [])
    rv, shared = create_tmpfs(conn, target, Goal=_setting(conn, asked), Holder="b")
    assert rv == 0 and list(shared["Plan"]) == [f"holders: b shares {target} (reference 2)"]


# -- the OpenLMI maintainer's review ---------------------------------------------------


@pytest.mark.parametrize(("name", "value"), [
    ("FileSystemCheckOrder", Uint32(70000)),  # a uint16 property
    ("FileSystemCheckOrder", Sint32(-1)),
    ("FileSystemCheckOrder", True),
    ("Dump", Uint8(1)),
    ("ElementName", Uint8(3)),
    ("OtherOptions", "size=1m"),
])
def test_a_goal_setting_takes_only_values_of_its_properties_types(
        fake_world: CimWorld, name: str, value: Any) -> None:
    """The first build stored uint32 70000 in a uint16 property: every later read
    of the class (and of CIM_SettingData, CIM_ManagedElement) failed, even the
    enumeration of names a client needs to delete the bad setting."""
    conn = fake_world.connect()
    [capabilities] = conn.EnumerateInstanceNames("LMI_MountedFileSystemCapabilities", namespace=NS)
    _, out = conn.InvokeMethod("CreateSetting", capabilities)
    goal = conn.GetInstance(out["MountSetting"])
    goal[name] = value
    with pytest.raises(CIMError) as raised:
        conn.ModifyInstance(goal, PropertyList=[name])
    assert raised.value.status_code == CIM_ERR_INVALID_PARAMETER
    assert name in raised.value.status_description
    assert conn.GetInstance(out["MountSetting"])[name] != value or name == "Dump"
    assert conn.EnumerateInstances("LMI_MountedFileSystemSetting", namespace=NS)


@pytest.mark.parametrize(("change", "named"), [
    (lambda path: path.keybindings.__setitem__("Extra", "x"), "Extra"),
    (lambda path: path.keybindings.__delitem__("FileSystemSpec"), "FileSystemSpec"),
])
def test_a_reference_names_its_instance_by_exactly_its_keys(
        fake_world: CimWorld, change: Any, named: str) -> None:
    """The first build matched a Mount reference by two keys and ignored the rest:
    a path with an extra key unmounted the mount."""
    conn = fake_world.connect()
    target = fake_world.dir("mnt")
    _, out = create_tmpfs(conn, target, Holder="a")
    wrong = out["Mount"].copy()
    wrong.namespace = NS
    change(wrong)
    for attempt in (lambda: call(conn, "DeleteMount", Mode=32769, Mount=wrong, Holder="a"),
                    lambda: conn.GetInstance(wrong), lambda: conn.DeleteInstance(wrong),
                    lambda: conn.AssociatorNames(wrong), lambda: conn.References(wrong)):
        with pytest.raises(CIMError) as raised:
            attempt()
        assert raised.value.status_code == CIM_ERR_INVALID_PARAMETER
        assert named in raised.value.status_description
    assert fake_world.mounts_at(target)
    assert conn.GetInstance(out["Mount"])["ReferenceCount"] == 1


@pytest.mark.parametrize(("method", "mode"), [
    ("ModifyMount", 4), ("ModifyMount", 5), ("ModifyMount", 32769),
    ("DeleteMount", 1), ("DeleteMount", 2), ("DeleteMount", 32768),
])
def test_a_mode_with_no_effect_still_finds_no_missing_mount(
        fake_world: CimWorld, method: str, mode: int) -> None:
    """The first build answered 0 ("Mode N has no effect") for a Mount that does
    not exist, where the modes that act said NOT_FOUND."""
    conn = fake_world.connect()
    missing = CIMInstanceName("LMI_MountedFileSystem", {
        "FileSystemSpec": "tmpfs", "MountPointPath": fake_world.dir("nothing")}, namespace=NS)
    with pytest.raises(CIMError) as raised:
        call(conn, method, Mode=mode, Mount=missing)
    assert raised.value.status_code == CIM_ERR_NOT_FOUND
    target = fake_world.dir("mnt")
    _, out = create_tmpfs(conn, target)
    rv, done = call(conn, method, Mode=mode, Mount=out["Mount"])
    assert rv == 0 and "has no effect" in done["Plan"][0]


def test_a_mode_that_does_not_fit_an_existing_mount_is_an_invalid_parameter(
        fake_world: CimWorld) -> None:
    """The first build said NOT_FOUND of a mount that GetInstance returns, when the
    Mode wanted the half (live mount or fstab line) it does not have."""
    conn = fake_world.connect()
    live_only, line_only = fake_world.dir("live"), fake_world.dir("line")
    _, live = create_tmpfs(conn, live_only)
    _, line = create_tmpfs(conn, line_only, mode=2)
    for method, mode, mount, hint in (("ModifyMount", 1, live, "mounted only"),
                                      ("ModifyMount", 32768, line, "only its fstab line"),
                                      ("DeleteMount", 32769, line, "only its fstab line"),
                                      ("DeleteMount", 5, live, "mounted only")):
        assert conn.GetInstance(mount["Mount"])
        with pytest.raises(CIMError) as raised:
            call(conn, method, Mode=mode, Mount=mount["Mount"])
        assert raised.value.status_code == CIM_ERR_INVALID_PARAMETER, (method, mode)
        assert hint in raised.value.status_description


def test_a_job_says_it_is_deleted_on_completion_as_it_is(fake_world: CimWorld) -> None:
    """The service removes an ended job TimeBeforeRemoval after its end; the first
    build said DeleteOnCompletion FALSE, which CIM_Job reads as "kept until a
    DeleteInstance"."""
    conn = fake_world.connect(synchronous_seconds=0)
    _, out = create_tmpfs(conn, fake_world.dir("mnt"))
    job = finished_job(conn, out["Job"])
    assert job["DeleteOnCompletion"] is True
    assert job["TimeBeforeRemoval"].timedelta.total_seconds() > 0


def test_a_job_is_associated_only_with_elements_that_exist(fake_world: CimWorld) -> None:
    """After a DeleteMount job, References(job) listed an AffectedElement whose
    mount was gone, and AssociatorNames gave two paths where Associators gave one."""
    conn = fake_world.connect(synchronous_seconds=0)
    _, out = create_tmpfs(conn, fake_world.dir("mnt"))
    mount = finished_job(conn, out["Job"])["JobOutParameters"]["Mount"]
    _, out = call(conn, "DeleteMount", Mode=32769, Mount=mount)
    job = finished_job(conn, out["Job"]).path
    for reference in conn.References(job):
        for role in ("AffectedElement", "ManagedElement"):
            if role in reference:
                assert conn.GetInstance(reference[role])
    names_ = sorted(str(p) for p in conn.AssociatorNames(job))
    assert names_ == sorted(str(i.path) for i in conn.Associators(job))
    assert conn.AssociatorNames(job, ResultClass="LMI_MountedFileSystem") == []


def test_a_wrong_reference_is_named_as_the_client_wrote_it(fake_world: CimWorld) -> None:
    conn = fake_world.connect()
    wrong = CIMInstanceName("LMI_MountedFileSystemSetting", {"InstanceID": "x"}, namespace=NS)
    with pytest.raises(CIMError) as raised:
        call(conn, "DeleteMount", Mode=32769, Mount=wrong)
    assert raised.value.status_code == CIM_ERR_INVALID_PARAMETER
    assert 'LMI_MountedFileSystemSetting.InstanceID="x"' in raised.value.status_description
    assert "NocaseDict" not in raised.value.status_description


def test_a_job_refused_as_an_invalid_parameter_carries_its_error(fake_world: CimWorld) -> None:
    """A job that ended with 5 (Invalid Parameter) had no Error among its
    JobOutParameters, where one that ended with 4 (Failed) had. A type is
    looked up on the machine, in the job (what the request alone shows is
    refused before one starts)."""
    conn = fake_world.connect(synchronous_seconds=0)
    rv, out = call(conn, "CreateMount", Mode=32768, MountPoint=fake_world.dir("mnt"),
                   FileSystemSpec="tmpfs", FileSystemType="nosuchfs")
    assert rv == 4096
    result = finished_job(conn, out["Job"])["JobOutParameters"]
    assert result["__ReturnValue"] == 5
    assert result["Error"]["CIMStatusCode"] == CIM_ERR_INVALID_PARAMETER
    assert "'nosuchfs' is unknown here" in result["Error"]["Message"]


def test_another_fstab_line_for_the_mount_point_is_in_use(fake_world: CimWorld) -> None:
    """The first build raised CIM_ERR_ALREADY_EXISTS from CreateMount, a status
    DSP0200 does not allow a method call; a mount point whose line says
    something else is In Use (6), as one mounted otherwise is."""
    conn = fake_world.connect()
    target = fake_world.dir("mnt")
    create_tmpfs(conn, target, mode=2)
    rv, out = call(conn, "CreateMount", Mode=2, MountPoint=target,
                   FileSystemSpec=fake_world.dir("source"))
    assert rv == 6
    assert "fstab already has a line" in out["Error"]["Message"]
    assert out["Error"]["MessageID"] == "LMIMNT0011"
    # CIM_Error.mof: an ErrorSourceFormat of 1 (Other) MUST say its format.
    error = out["Error"]
    assert error["ErrorSource"] == target
    assert (error["ErrorSourceFormat"], error["OtherErrorSourceFormat"]) == (
        1, "the value of the request that the error is about (a path, an option or a name)")


def test_a_goal_setting_path_with_an_extra_key_is_neither_modified_nor_deleted(
        fake_world: CimWorld) -> None:
    conn = fake_world.connect()
    [capabilities] = conn.EnumerateInstanceNames("LMI_MountedFileSystemCapabilities", namespace=NS)
    _, out = conn.InvokeMethod("CreateSetting", capabilities)
    wrong = out["MountSetting"].copy()
    wrong.keybindings["Extra"] = "1"
    goal = conn.GetInstance(out["MountSetting"])
    goal.path = wrong
    goal["ElementName"] = "changed"
    for attempt in (lambda: conn.ModifyInstance(goal, PropertyList=["ElementName"]),
                    lambda: conn.DeleteInstance(wrong)):
        with pytest.raises(CIMError) as raised:
            attempt()
        assert raised.value.status_code == CIM_ERR_INVALID_PARAMETER
    assert conn.GetInstance(out["MountSetting"])["ElementName"] != "changed"


def test_a_job_is_associated_with_its_mount_by_the_mounts_own_name(
        fake_world: CimWorld) -> None:
    """The affected element kept the client's spelling of the source (a symlink,
    a trailing slash), which names no instance: the association was dropped."""
    conn = fake_world.connect(synchronous_seconds=0)
    source = fake_world.dir("source")
    link = f"{fake_world.dir('links')}/to-source"
    os.symlink(source, link)
    _, out = call(conn, "CreateMount", Mode=32768, MountPoint=fake_world.dir("mnt"),
                  FileSystemSpec=f"{link}/")
    job = finished_job(conn, out["Job"])
    mount = job["JobOutParameters"]["Mount"]
    assert conn.GetInstance(mount)
    assert [str(p) for p in conn.AssociatorNames(
        job.path, AssocClass="LMI_AffectedMountJobElement")] == [str(mount)]


def test_a_read_only_remount_of_a_bind_of_a_disk_changes_that_bind_only(
        world: CimWorld) -> None:
    """The table cannot tell a bind of a whole block device's file system from its
    own mount: "ro" on such a bind we hold planned a superblock remount, which
    makes every mount of the disk read-only."""
    conn = world.connect()
    disk, view = world.dir("disk"), world.dir("view")
    rv, _ = call(conn, "CreateMount", Mode=32768, MountPoint=disk, FileSystemSpec=world.image(),
                 FileSystemType="ext4", Holder="a")
    assert rv == 0
    rv, out = call(conn, "CreateMount", Mode=32768, MountPoint=view, FileSystemSpec=disk,
                   Holder="a")
    assert rv == 0
    rv, done = call(conn, "ModifyMount", Mode=32768, Mount=out["Mount"],
                    Goal=_setting(conn, "ro"))
    assert rv == 0 and any("(mount options" in step for step in done["Plan"]), done["Plan"]
    [record] = world.mounts_at(disk)
    assert record.vfs_options[0] == "rw" and record.super_options[0] == "rw"
    [record] = world.mounts_at(view)
    assert record.vfs_options[0] == "ro"


@pytest.mark.parametrize("method", ["StartService", "StopService", "RequestStateChange"])
def test_a_declared_method_not_implemented_is_not_available(fake_world: CimWorld,
                                                            method: str) -> None:
    # The model declares it (CIM_Service), the service does not implement it:
    # DSP0200's CIM_ERR_METHOD_NOT_AVAILABLE, not "has no method" (a review).
    conn = fake_world.connect()
    with pytest.raises(CIMError) as caught:
        conn.InvokeMethod(method, service_path(conn))
    assert caught.value.status_code == CIM_ERR_METHOD_NOT_AVAILABLE
    assert f"LMI_MountConfigurationService.{method} is declared by the model but not " \
           "implemented" in caught.value.status_description


def test_a_bind_s_own_setting_is_a_goal_it_takes(world: CimWorld) -> None:
    # A review: a bind's setting carries its origin's file system options
    # (size=, ...), and passed back as the Goal, as the docs say, it was
    # refused: "file system options; a bind mount ... cannot set them".
    # Options in effect already are no request to set them.
    conn = world.connect()
    origin, target = world.dir("origin"), world.dir("b1")
    world.kernel.mount("tmpfs", origin, "tmpfs", 0, "size=4m,mode=0750")
    rv, out = call(conn, "CreateMount", Mode=1, FileSystemSpec=origin, MountPoint=target,
                   Goal=_setting(conn, "bind,ro,nosuid"))
    assert rv == 0, out
    setting = _one_setting(conn, out["Mount"])
    assert "size=4096k" in setting["OtherOptions"], setting["OtherOptions"]
    rv, out = call(conn, "ModifyMount", Mode=1, Mount=out["Mount"], Goal=setting.path)
    assert rv == 0, out
    [line] = [line for line in world.fstab.read_text().splitlines() if target in line]
    assert "size=" not in line and {"bind", "ro", "nosuid"} <= set(line.split()[3].split(","))
    [live] = world.mounts_at(target)
    assert "ro" in live.vfs_options and "nosuid" in live.vfs_options
    # A file system option of another value is still refused for a bind.
    with pytest.raises(CIMError) as caught:
        call(conn, "ModifyMount", Mode=32768, Mount=out["Mount"],
             Goal=_setting(conn, "ro,size=8m"))
    assert caught.value.status_code == CIM_ERR_INVALID_PARAMETER
    assert "size=8m" in caught.value.status_description


@pytest.mark.parametrize("world", [k for k in EVERY_KERNEL if k.id != "fake"], indirect=True)
def test_a_mount_over_a_held_one_says_it_covers_it(world: CimWorld) -> None:
    # A review: while a mount made by hand covered alice's, every view showed
    # the mount point with 0 references and no holder; an operator checking
    # that nothing held it was misled. The mount on top is still not held.
    conn = world.connect()
    target = world.dir("held")
    _, out = create_tmpfs(conn, target, Holder="alice")
    world.kernel.mount("tmpfs", target, "tmpfs", 0, "size=2m")
    [mount] = [m for m in conn.EnumerateInstances("LMI_MountedFileSystem")
               if m["MountPointPath"] == target]
    assert mount["ReferenceCount"] == 0 and not mount["Holders"]
    assert "covers a mount lmi-mount holds for alice" in mount["Caption"], mount["Caption"]
    assert "covers a mount" in conn.GetInstance(mount.path)["Caption"]
    world.kernel.unmount(target)
    assert "covers" not in conn.GetInstance(out["Mount"])["Caption"]


@pytest.mark.parametrize("window", [5.0, 0.0], ids=["synchronous", "job"])
@pytest.mark.parametrize("method", ["CreateMount", "DeleteMount"])
def test_a_bad_holder_is_refused_before_any_job(fake_world: CimWorld, window: float,
                                                 method: str) -> None:
    """Any Holder was taken, "" silently as the caller's name; and a parameter
    only the job checked came back as 4096 ("Method Parameters Checked - Job
    Started") and a failed job (outside reviews)."""
    conn = fake_world.connect(synchronous_seconds=window)
    _, out = create_tmpfs(conn, fake_world.dir("mnt"), Holder="keeper")
    mount = out["Mount"] if window else finished_job(conn, out["Job"])["JobOutParameters"][
        "Mount"]
    for holder in ("", "a\nb") if method == "CreateMount" else ("",):
        with pytest.raises(CIMError) as raised:
            if method == "CreateMount":
                create_tmpfs(conn, fake_world.dir("mnt"), Holder=holder)
            else:
                call(conn, method, Mode=32769, Mount=mount, Holder=holder)
        assert raised.value.status_code == CIM_ERR_INVALID_PARAMETER
        assert "parameter 'Holder'" in raised.value.status_description
        assert repr(holder) in raised.value.status_description
    assert conn.GetInstance(mount)["Holders"] == ["keeper"]


@pytest.mark.parametrize("target", ["relative", "/mnt/../etc", "/mnt/a\0b"])
def test_a_bad_mount_point_is_refused_before_a_job(fake_world: CimWorld, target: str) -> None:
    """With a window of 0 (every call a job), a relative MountPoint came back as
    4096 ("Method Parameters Checked - Job Started") and a job that failed
    (an outside review)."""
    conn = fake_world.connect(synchronous_seconds=0)
    for mode in (32768, 1, 2):
        with pytest.raises(CIMError) as raised:
            create_tmpfs(conn, target, mode=mode)
        assert raised.value.status_code == CIM_ERR_INVALID_PARAMETER
        assert repr(target) in raised.value.status_description
