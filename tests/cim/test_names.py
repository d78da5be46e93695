"""Names clients use come back and resolve: loop devices, non-UTF-8 paths, NUL bytes.

From an outside review through the CIM layer: a Mode 1 CreateMount from
``/dev/loopN`` returned a reference that GetInstance and DeleteMount answered
NOT_FOUND; one mount with a non-UTF-8 path made whole enumerations fail; a
NUL in FileSystemSpec reached the engine as an internal error with no
CIM_Error, or was written into fstab.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from pywbem import CIM_ERR_INVALID_PARAMETER, CIMError

from tests.cim.conftest import NS, CimWorld, call
from tests.contract.helpers import loop_device, mkfs_image
from tests.support.skips import requires_fs, requires_root, requires_tool


@pytest.mark.parametrize("mode", [1, 32768])
@pytest.mark.parametrize("name_by", ["returned", "device", "backing file"])
@pytest.mark.root
@requires_root
@pytest.mark.private_namespace
@pytest.mark.kernel
@requires_fs("ext4")
@requires_tool("mkfs.ext4")
@requires_tool("losetup")
def test_a_loop_device_mount_resolves_by_either_name(
    tmp_path: Path, mode: int, name_by: str
) -> None:
    world = CimWorld("real", tmp_path)
    image = mkfs_image(tmp_path, "ext4")
    with loop_device(image) as device:
        conn = world.connect()
        target = world.dir("mnt")
        rv, out = call(conn, "CreateMount", Mode=mode, MountPoint=target,
                       FileSystemSpec=device, FileSystemType="ext4")
        assert rv == 0, out
        reference = out["Mount"]
        assert conn.GetInstance(reference)["MountPointPath"] == target
        named = reference.copy()
        if name_by != "returned":
            named["FileSystemSpec"] = device if name_by == "device" else image
        assert conn.GetInstance(named)["MountPointPath"] == target
        delete_mode = 4 if mode == 1 else 32769
        rv, out = call(conn, "DeleteMount", Mode=delete_mode, Mount=named)
        assert rv == 0, out
        assert world.mounts_at(target) == []
        world.close()


@pytest.mark.root
@requires_root
@pytest.mark.private_namespace
@pytest.mark.parametrize("cls", ["LMI_MountedFileSystem", "LMI_MountedFileSystemSetting",
                                 "LMI_MountedFileSystemElementSettingData"])
def test_a_non_utf8_mount_point_does_not_break_enumerations(tmp_path: Path, cls: str) -> None:
    world = CimWorld("real", tmp_path)
    odd = bytes(tmp_path) + b"/n\xffu"
    Path(odd.decode("utf-8", "surrogateescape")).mkdir()
    subprocess.run([b"mount", b"-t", b"tmpfs", b"odd", odd], check=True)
    conn = world.connect()
    instances = conn.EnumerateInstances(cls, namespace=NS)
    assert instances
    if cls == "LMI_MountedFileSystemSetting":
        ids = [i["InstanceID"] for i in instances]
        assert any("n%FFu" in i for i in ids), ids
    world.close()


@pytest.mark.parametrize("params", [
    pytest.param({"FileSystemSpec": "tm\0pfs", "FileSystemType": "tmpfs"}, id="nul-in-spec"),
    pytest.param({"FileSystemSpec": "tmpfs", "FileSystemType": "tmp\0fs"}, id="nul-in-type"),
])
@pytest.mark.parametrize("mode", [1, 2, 32768])
def test_a_nul_is_an_invalid_parameter_in_every_mode(
    world: CimWorld, params: dict[str, str], mode: int
) -> None:
    conn = world.connect()
    before = world.fstab.read_text()
    with pytest.raises(CIMError) as raised:
        call(conn, "CreateMount", Mode=mode, MountPoint=world.dir("mnt"), **params)
    assert raised.value.status_code == CIM_ERR_INVALID_PARAMETER
    assert "NUL" in raised.value.status_description
    assert world.fstab.read_text() == before
