"""The server in front of the real broker and engine, on the fake kernel: OpenLMI's client
flow over HTTP with pywbem, the authenticated user as the default holder, readers kept to
reading, an lmishell-style WQL query, and wbemcli's untyped CreateMount/DeleteMount."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pywbem import CIM_ERR_INVALID_PARAMETER, CIMError, Uint16

from lmi_mount.cim.broker import Broker
from lmi_mount.engine import MountManager
from lmi_mount.linux.fake import FakeKernel
from lmi_mount.mounts.mountinfo import MountTable, parse_mountinfo
from lmi_mount.server.app import CimServer
from lmi_mount.server.config import ServerConfig
from tests.server.conftest import ADMIN, LIMITS, NS, READER, SERVICE, Running
from tests.support.skips import has_tool, requires_tool


@pytest.fixture(scope="module")
def live(tls_files: tuple[Path, Path],
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Running, FakeKernel, Path]]:
    root = tmp_path_factory.mktemp("broker")
    (root / "fstab").write_text("# scratch fstab\n")
    (root / "boot_id").write_text("boot-1\n")
    state = Path(tempfile.mkdtemp(prefix="lmi-server-state-", dir="/dev/shm"))
    kernel = FakeKernel()
    engine = MountManager(kernel, fstab_path=root / "fstab", state_dir=state,
                          boot_id_path=root / "boot_id", after_fstab_edit=lambda: None,
                          processes=kernel.processes).start()
    broker = Broker(engine, host="host.example")
    server = CimServer(ServerConfig(
        listen=("127.0.0.1",), http_port=0, https_port=None, hostname="host.example",
        plain_http="loopback", http=LIMITS,
        users=((ADMIN[0], "admin", ADMIN[1]), (READER[0], "reader", READER[1]))), broker)
    server.start()
    try:
        port = server.addresses[0][1]
        yield Running(server, broker, {}, port, 0, tls_files[0]), kernel, root
    finally:
        server.shutdown()
        broker.close()
        engine.close()
        shutil.rmtree(state, ignore_errors=True)


def mounted_at(kernel: FakeKernel, target: str) -> int:
    return len(MountTable(parse_mountinfo(kernel.read_mountinfo())).mounts_at(target))


def service(conn: Any) -> Any:
    (path,) = conn.EnumerateInstanceNames(SERVICE)
    return path


def test_openlmi_client_flow_over_http(live: tuple[Running, FakeKernel, Path]) -> None:
    running, kernel, root = live
    conn = running.connect()
    (capabilities,) = conn.EnumerateInstanceNames("LMI_MountedFileSystemCapabilities")
    rv, out = conn.InvokeMethod("CreateSetting", capabilities)
    assert rv == 0
    goal = conn.GetInstance(out["MountSetting"])
    goal["AllowExecution"] = False
    conn.ModifyInstance(goal)
    target = str(root / "flow")
    Path(target).mkdir()
    rv, out = conn.InvokeMethod("CreateMount", service(conn), Mode=Uint16(32768),
                                MountPoint=target, FileSystemSpec="tmpfs",
                                FileSystemType="tmpfs", Goal=goal.path)
    assert rv == 0 and mounted_at(kernel, target) == 1
    mount = conn.GetInstance(out["Mount"])
    # Without a Holder parameter, the authenticated user holds the mount.
    assert list(mount["Holders"]) == [ADMIN[0]] and mount["ReferenceCount"] == 1
    (setting,) = conn.Associators(mount.path, ResultClass="LMI_MountedFileSystemSetting")
    assert setting["AllowExecution"] is False
    rows = conn.ExecQuery("WQL", f'select * from LMI_MountedFileSystem where MountPointPath = '
                          f'"{target}"')
    assert [r["MountPointPath"] for r in rows] == [target]
    result = conn.OpenEnumerateInstances("LMI_MountedFileSystem", MaxObjectCount=1)
    seen = len(result.instances)
    while not result.eos:
        result = conn.PullInstancesWithPath(result.context, 1)
        seen += len(result.instances)
    assert seen == len(conn.EnumerateInstanceNames("LMI_MountedFileSystem"))

    with pytest.raises(CIMError) as caught:
        running.connect(READER).InvokeMethod("DeleteMount", service(conn),
                                             Mode=Uint16(32769), Mount=mount.path)
    assert caught.value.status_code_name == "CIM_ERR_ACCESS_DENIED"
    assert mounted_at(kernel, target) == 1

    rv, _ = conn.InvokeMethod("DeleteMount", service(conn), Mode=Uint16(32769),
                              Mount=mount.path)
    assert rv == 0 and mounted_at(kernel, target) == 0
    conn.DeleteInstance(goal.path)


def test_class_operations_leave_the_model_alone(live: tuple[Running, FakeKernel, Path]) -> None:
    running, _, _ = live
    model = running.broker.model
    before = model.get_class("LMI_MountedFileSystem").tocimxmlstr()
    running.connect().GetClass("LMI_MountedFileSystem", IncludeQualifiers=False,
                               LocalOnly=False)
    assert model.get_class("LMI_MountedFileSystem").tocimxmlstr() == before


@requires_tool("wbemcli")
def test_wbemcli_create_and_delete_mount(live: tuple[Running, FakeKernel, Path]) -> None:
    running, kernel, root = live
    source, target = root / "source", root / "target"
    source.mkdir()
    target.mkdir()
    path = service(running.connect())
    keys = ",".join(f'{k}="{v}"' for k, v in path.keybindings.items())
    url = (f"http://{ADMIN[0]}:{ADMIN[1]}@127.0.0.1:{running.http_port}/root/cimv2:"
           f"{SERVICE}.{keys}")
    tool = has_tool("wbemcli")
    assert tool is not None

    def wbemcli(*args: str) -> str:
        done = subprocess.run([tool, *args], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        return done.stdout

    created = wbemcli("cm", url, f"CreateMount.MountPoint={target},FileSystemSpec={source},"
                      "Mode=32768,Holder=wbemcli")
    assert "CreateMount: 0" in created and mounted_at(kernel, str(target)) == 1
    mount = (f'{NS}:LMI_MountedFileSystem.FileSystemSpec="{source}",'
             f'MountPointPath="{target}"')
    assert f'MountPointPath="{target}"' in created
    deleted = wbemcli("cm", url, f"DeleteMount.Mount={mount},Mode=32769,Holder=wbemcli")
    assert "DeleteMount: 0" in deleted and mounted_at(kernel, str(target)) == 0


@pytest.mark.parametrize(("params", "named"), [
    ([("Mode", Uint16(32768)), ("Error", "x")], "'Error'"),  # an OUT-only embedded instance
    ([("Mode", Uint16(32768)), ("mode", Uint16(32768))], "'mode'"),  # twice, in two cases
])
def test_a_bad_method_parameter_is_an_invalid_parameter_naming_it(
        live: tuple[Running, FakeKernel, Path], params: list[tuple[str, Any]],
        named: str) -> None:
    """The first build answered FAILED "internal error: RequestError" to an output
    embedded instance sent as input, and HTTP 400 to a parameter given twice
    (DSP0200 has CIM_ERR_INVALID_PARAMETER for both)."""
    running, _, root = live
    conn = running.connect()
    with pytest.raises(CIMError) as raised:
        conn.InvokeMethod("CreateMount", service(conn), [
            *params, ("MountPoint", str(root / "nowhere")), ("FileSystemSpec", "tmpfs"),
            ("FileSystemType", "tmpfs")])
    assert raised.value.status_code == CIM_ERR_INVALID_PARAMETER
    assert named in raised.value.status_description
