"""The command-line clients our users have: pywbemcli (pywbemtools) and sblim wbemcli, run as
subprocesses against the running server.

pywbemcli starts slowly (about half a second of imports), so its commands
run concurrently.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence

from tests.server.conftest import ADMIN, MOUNT_POINTS, Running
from tests.support.skips import has_tool, requires_tool

MOUNT = 'LMI_MountedFileSystem.FileSystemSpec="/dev/vda0",MountPointPath="/mnt/data"'
SERVICE_KEYS = ('CreationClassName="LMI_MountConfigurationService",'
                'Name="LMI_MountConfigurationService",'
                'SystemCreationClassName="LMI_ComputerSystem",SystemName="host.example"')


def client_env() -> dict[str, str]:
    # requests prefers REQUESTS_CA_BUNDLE over pywbemcli's --ca-certs.
    return {k: v for k, v in os.environ.items()
            if k not in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")}


@requires_tool("pywbemcli")
def test_pywbemcli(running: Running) -> None:
    pywbemcli = has_tool("pywbemcli")
    assert pywbemcli is not None
    base = [pywbemcli, "-s", running.http_url, "-u", ADMIN[0], "-p", ADMIN[1]]
    secure = [pywbemcli, "-s", running.https_url, "-u", ADMIN[0], "-p", ADMIN[1],
              "--ca-certs", str(running.cafile)]
    commands: dict[str, Sequence[str]] = {
        "classes": [*base, "class", "enumerate", "--di", "--no"],
        "instances": [*base, "instance", "enumerate", "LMI_MountedFileSystem", "--no"],
        "get": [*base, "instance", "get", MOUNT],
        "create": [*base, "class", "invokemethod", "LMI_MountConfigurationService",
                   "CreateMount", "-p", "MountPoint=/mnt/cli", "-p", "Mode=1"],
        "delete": [*base, "class", "invokemethod", "LMI_MountConfigurationService",
                   "DeleteMount", "-p", f"Mount={MOUNT}"],
        "brand": [*base, "server", "brand"],
        "namespaces": [*base, "namespace", "list"],
        "brand over https": [*secure, "server", "brand"],
    }
    before = len(running.broker.calls)
    started = {
        name: subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=client_env())
        for name, argv in commands.items()
    }
    out = {}
    for name, process in started.items():
        stdout, stderr = process.communicate(timeout=60)
        assert process.returncode == 0, f"{name}: {stderr}"
        out[name] = stdout
    assert "LMI_MountedFileSystem" in out["classes"].split()
    assert out["instances"].count("LMI_MountedFileSystem.") == len(MOUNT_POINTS)
    assert 'MountPointPath = "/mnt/data";' in out["get"]
    assert "ReturnValue=0" in out["create"]
    assert 'Plan="mount /mnt/cli for admin"' in out["create"]
    assert "ReturnValue=0" in out["delete"]
    assert out["brand"].strip() == "lmi-mount" == out["brand over https"].strip()
    assert out["namespaces"].split()[-2:] == ["root/cimv2", "root/interop"]
    # The commands ran concurrently: find the DeleteMount call among the others.
    (delete,) = [kw for name, _, kw in running.broker.calls[before:]
                 if name == "invoke_method" and kw["method"] == "DeleteMount"]
    assert delete["params"]["Mount"]["MountPointPath"] == "/mnt/data"


def wbemcli(*args: str) -> str:
    tool = has_tool("wbemcli")
    assert tool is not None
    done = subprocess.run([tool, *args], capture_output=True, text=True, timeout=30,
                          env=client_env())
    assert done.returncode == 0, f"wbemcli {' '.join(args)}: {done.stderr}"
    return done.stdout


@requires_tool("wbemcli")
def test_wbemcli(running: Running) -> None:
    url = f"http://{ADMIN[0]}:{ADMIN[1]}@127.0.0.1:{running.http_port}/root/cimv2"
    mount = f"{url}:{MOUNT}"
    classes = wbemcli("ecn", url).split()
    assert f"127.0.0.1:{running.http_port}/root/cimv2:CIM_ManagedElement" in classes
    assert "MountPointPath=" in wbemcli("gc", f"{url}:LMI_MountedFileSystem")
    # The settings class has an EmbeddedObject array (CIM_SettingData.ComponentSetting).
    assert "AllowWrite=" in wbemcli("gc", f"{url}:LMI_MountedFileSystemSetting")
    listed = wbemcli("ei", "-nl", f"{url}:LMI_MountedFileSystem")
    assert '-MountPointPath="/mnt/with space & <angle> "quote""' in listed
    assert "-MountPointPath=\"/mnt/ünïcödé\ttab\"" in listed
    assert wbemcli("ein", f"{url}:LMI_MountedFileSystem").count("LMI_MountedFileSystem.") == 3
    assert '-MountPointPath="/mnt/data"' in wbemcli("gi", "-nl", mount)
    assert wbemcli("gp", mount, "Holders").strip() == "root"
    associated = wbemcli("ain", "-ac", "LMI_MountedFileSystemElementSettingData", mount)
    assert 'LMI_MountedFileSystemSetting.InstanceID="LMI:LMI_MountedFileSystemSetting:' \
           '/mnt/data"' in associated
    assert "-AllowWrite=TRUE" in wbemcli("ai", "-nl", mount)
    assert "LMI_MountedFileSystemElementSettingData." in wbemcli("rin", mount)
    assert "-IsCurrent=1" in wbemcli("ri", "-nl", mount)
    service = f"{url}:LMI_MountConfigurationService.{SERVICE_KEYS}"
    created = wbemcli("cm", service, "CreateMount.MountPoint=/mnt/wbemcli,Mode=32768")
    assert "CreateMount: 0" in created and "Plan (string): mount /mnt/wbemcli for admin" in created
    call = running.broker.last_call("invoke_method")
    assert call["params"]["Mode"] == 32768 and type(call["params"]["Mode"]).__name__ == "Uint16"
    deleted = wbemcli("cm", service, f"DeleteMount.Mount={MOUNT}")
    assert "DeleteMount: 0" in deleted
    assert running.broker.last_call("invoke_method")["params"]["Mount"]["MountPointPath"] == (
        "/mnt/data")
    setting = f'{url}:LMI_MountedFileSystemSetting.InstanceID="LMI:LMI_MountedFileSystemSetting:' \
              '/mnt/data"'
    wbemcli("sp", setting, "AllowWrite=false")
    assert wbemcli("gp", setting, "AllowWrite").strip() == "FALSE"


@requires_tool("wbemcli")
def test_wbemcli_over_https_and_its_errors(running: Running) -> None:
    tool = has_tool("wbemcli")
    assert tool is not None
    url = f"https://{ADMIN[0]}:{ADMIN[1]}@127.0.0.1:{running.https_port}/root/cimv2"
    assert "CIM_ManagedElement" in wbemcli("ecn", "-cacert", str(running.cafile), url)
    denied = subprocess.run(
        [tool, "cm", f"http://reader:reader-secret@127.0.0.1:{running.http_port}/root/cimv2:"
         f"LMI_MountConfigurationService.{SERVICE_KEYS}", "CreateMount.MountPoint=/x"],
        capture_output=True, text=True, timeout=30)
    assert denied.returncode != 0 and "CIM_ERR_ACCESS_DENIED" in denied.stderr
    wrong = subprocess.run([tool, "ecn", f"http://admin:nope@127.0.0.1:{running.http_port}/"
                            "root/cimv2"], capture_output=True, text=True, timeout=30)
    assert wrong.returncode != 0 and "Invalid username/password" in wrong.stderr


_GET_SETTING_CLASS = (
    b'<?xml version="1.0" encoding="utf-8" ?><CIM CIMVERSION="2.0" DTDVERSION="2.0">'
    b'<MESSAGE ID="4711" PROTOCOLVERSION="1.0"><SIMPLEREQ><IMETHODCALL NAME="GetClass">'
    b'<LOCALNAMESPACEPATH><NAMESPACE NAME="root"/><NAMESPACE NAME="cimv2"/>'
    b'</LOCALNAMESPACEPATH><IPARAMVALUE NAME="ClassName">'
    b'<CLASSNAME NAME="LMI_MountedFileSystemSetting"/></IPARAMVALUE>'
    b'<IPARAMVALUE NAME="LocalOnly"><VALUE>FALSE</VALUE></IPARAMVALUE></IMETHODCALL>'
    b'</SIMPLEREQ></MESSAGE></CIM>')


def _post(running: Running, method: str, body: bytes, **extra: str
          ) -> tuple[int, dict[str, str], bytes]:
    """POST a CIM-XML request by http.client, which sends no User-Agent."""
    import base64
    import http.client
    auth = base64.b64encode(f"{ADMIN[0]}:{ADMIN[1]}".encode()).decode()
    conn = http.client.HTTPConnection("127.0.0.1", running.http_port, timeout=30)
    try:
        conn.request("POST", "/cimom", body, {
            "Content-Type": 'application/xml; charset="utf-8"', "Authorization": f"Basic {auth}",
            "CIMProtocolVersion": "1.0", "CIMOperation": "MethodCall",
            "CIMMethod": method, "CIMObject": "root%2Fcimv2", **extra})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def test_embedded_objects_are_marked_for_every_client_but_sblim_s(running: Running) -> None:
    # A review: a client without a User-Agent (http.client, an agent) got
    # the EmbeddedObject attributes stripped, as only sblim wbemcli needs.
    # sblim-sfcc is told by the request head it sends (captured from wbemcli).
    sfcc = {"Connection": "Keep-Alive, TE"}
    for extra, marked in (({}, True), ({"User-Agent": "console/1"}, True), (sfcc, False)):
        _, _, body = _post(running, "GetClass", _GET_SETTING_CLASS, **extra)
        assert b'NAME="ComponentSetting"' in body
        assert (b'EmbeddedObject="object"' in body) is marked, extra


def test_a_key_value_of_another_type_is_a_cim_error_not_http_400(running: Running) -> None:
    # A review: pywbem raised HTTPError, not the CIMError clients handle.
    status, headers, body = _post(running, "GetInstance", _GET_SETTING_CLASS.replace(
        b'<IPARAMVALUE NAME="ClassName"><CLASSNAME NAME="LMI_MountedFileSystemSetting"/>'
        b'</IPARAMVALUE><IPARAMVALUE NAME="LocalOnly"><VALUE>FALSE</VALUE></IPARAMVALUE>',
        b'<IPARAMVALUE NAME="InstanceName"><INSTANCENAME CLASSNAME="LMI_MountJob">'
        b'<KEYBINDING NAME="InstanceID"><KEYVALUE VALUETYPE="numeric">abc</KEYVALUE>'
        b'</KEYBINDING></INSTANCENAME></IPARAMVALUE>').replace(b"GetClass", b"GetInstance"))
    assert status == 200 and "CIMError" not in headers, (status, headers)
    assert b'<ERROR CODE="4"' in body and b"abc" in body
