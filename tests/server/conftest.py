"""Fixtures of the server tests: a running CimServer on 127.0.0.1 (ephemeral HTTP and
HTTPS ports, a self-signed certificate made by the openssl binary) in front of the
stand-in broker, and clients for it.

The timeouts are short so that the slowloris and idle tests take about a second.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pywbem import CIMInstance, CIMInstanceName, Uint16, Uint32, WBEMConnection

from lmi_mount.cim.model import Model, load_model
from lmi_mount.cim.names import NAMESPACE
from lmi_mount.server import cimxml
from lmi_mount.server.app import CimServer
from lmi_mount.server.config import ServerConfig
from lmi_mount.server.http import HttpLimits
from lmi_mount.server.pull import PullLimits
from tests.support.standin_broker import StandInBroker

ADMIN = ("admin", "admin-secret")
READER = ("reader", "reader-secret")
NS = "root/cimv2"
SERVICE = "LMI_MountConfigurationService"
LIMITS = HttpLimits(
    max_connections=64,
    threads=4,
    max_body_bytes=1024 * 1024,
    first_byte_timeout=1.0,
    request_timeout=1.5,
    keepalive_timeout=5.0,
    write_timeout=5.0,
)


@pytest.fixture(scope="session")
def model() -> Model:
    return load_model()


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost, and its key."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl binary is not installed: no certificate for the HTTPS tests")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "server.pem", directory / "server.key"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True,
    )
    return cert, key


# -- test data: a few instances of the Mounting Model -------------------------------------

HOST = "host.example"
SERVICE_KEYS = {
    "SystemCreationClassName": "LMI_ComputerSystem",
    "SystemName": HOST,
    "CreationClassName": "LMI_MountConfigurationService",
    "Name": "LMI_MountConfigurationService",
}
#: Mount points with characters that XML and URIs must carry.
MOUNT_POINTS = ("/mnt/data", "/mnt/with space & <angle> \"quote\"", "/mnt/ünïcödé\ttab")


def mount(model: Model, index: int, target: str, *, holders: Sequence[str] = ("root",)
          ) -> CIMInstance:
    cls = model.get_class("LMI_MountedFileSystem")
    return CIMInstance.from_class(cls, namespace=NAMESPACE, include_path=True,
                                  include_missing_properties=True, property_values={
        "FileSystemSpec": f"/dev/vd{chr(ord('a') + index % 26)}{index}",
        "MountPointPath": target,
        "FileSystemType": "ext4",
        "ReferenceCount": Uint32(len(holders)),
        "Holders": list(holders),
        "ElementName": target,
    })


def setting(model: Model, target: str) -> CIMInstance:
    cls = model.get_class("LMI_MountedFileSystemSetting")
    return CIMInstance.from_class(cls, namespace=NAMESPACE, include_path=True,
                                  include_missing_properties=False, property_values={
        "InstanceID": f"LMI:LMI_MountedFileSystemSetting:{target}",
        "AllowWrite": True,
        "Dump": False,
        "OtherOptions": ["noauto", "x-systemd.device-timeout=5"],
    })


def populate(broker: StandInBroker) -> dict[str, Any]:
    """The standard test data; returns the paths the tests refer to."""
    model = broker.model
    service = broker.add(CIMInstance.from_class(
        model.get_class("LMI_MountConfigurationService"), namespace=NAMESPACE,
        include_path=True, include_missing_properties=False,
        property_values={**SERVICE_KEYS, "ElementName": "mounts", "Started": True}))
    mounts = [broker.add(mount(model, i, target)) for i, target in enumerate(MOUNT_POINTS)]
    settings = [broker.add(setting(model, target)) for target in MOUNT_POINTS[:2]]
    link_cls = model.get_class("LMI_MountedFileSystemElementSettingData")
    for m, s in zip(mounts, settings, strict=False):
        broker.add(CIMInstance.from_class(
            link_cls, namespace=NAMESPACE, include_path=True, include_missing_properties=False,
            property_values={"ManagedElement": m, "SettingData": s, "IsCurrent": Uint16(1)}))
    return {"service": service, "mounts": mounts, "settings": settings}


# -- the server ---------------------------------------------------------------------------

def create_mount(broker: StandInBroker, path: Any, params: Any, caller: Any
                 ) -> tuple[Any, dict[str, Any]]:
    """CreateMount of the stand-in: a new mount path, a plan, and the holder it used."""
    target = params.get("MountPoint")
    mount = CIMInstanceName("LMI_MountedFileSystem", {
        "FileSystemSpec": params.get("FileSystemSpec") or target, "MountPointPath": target,
    }, namespace=NS)
    holder = params.get("Holder") or caller.user
    return Uint32(0), {"Mount": mount, "Plan": [f"mount {target} for {holder}"]}


def delete_mount(broker: StandInBroker, path: Any, params: Any, caller: Any
                 ) -> tuple[Any, dict[str, Any]]:
    return Uint32(0), {}


@dataclass
class Running:
    server: CimServer
    broker: Any  # the stand-in, or the real broker (test_broker.py)
    paths: dict[str, Any]
    http_port: int
    https_port: int
    cafile: Path

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def https_url(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    def connect(self, creds: tuple[str, str] | None = ADMIN, *, tls: bool = False,
                **kwargs: Any) -> WBEMConnection:
        url = self.https_url if tls else self.http_url
        extra = {"ca_certs": str(self.cafile)} if tls else {}
        conn = WBEMConnection(url, creds, default_namespace=NS, timeout=10, **extra, **kwargs)
        # requests lets REQUESTS_CA_BUNDLE override the session's CA file (requests
        # issue 3829): ignore the environment so that ca_certs counts.
        conn.session.trust_env = False
        return conn

    def socket(self, *, timeout: float = 5.0) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.http_port), timeout=timeout)


def start_server(model: Model, tls_files: tuple[Path, Path], **config: Any
                 ) -> tuple[CimServer, StandInBroker, dict[str, Any]]:
    broker = StandInBroker(model, writable=["LMI_MountedFileSystemSetting"])
    paths = populate(broker)
    broker.on_method(SERVICE, "CreateMount", create_mount)
    broker.on_method(SERVICE, "DeleteMount", delete_mount)
    settings: dict[str, Any] = dict(
        listen=("127.0.0.1",), http_port=0, https_port=0, certfile=tls_files[0],
        keyfile=tls_files[1], hostname=HOST, plain_http="loopback", users=(
            (ADMIN[0], "admin", ADMIN[1]), (READER[0], "reader", READER[1])),
        http=LIMITS, enumeration=PullLimits(max_contexts=16, max_contexts_per_user=8,
                                            default_timeout=30, max_timeout=60),
    )
    settings.update(config)
    server = CimServer(ServerConfig(**settings), broker)
    server.start()
    return server, broker, paths


@pytest.fixture(scope="module")
def running(model: Model, tls_files: tuple[Path, Path]) -> Iterator[Running]:
    server, broker, paths = start_server(model, tls_files)
    ports = {tls: port for _, port, tls in server.addresses}
    try:
        yield Running(server, broker, paths, ports[False], ports[True], tls_files[0])
    finally:
        server.shutdown()


#: Every KeptCalls the server tests make (module-scoped servers included).
_KEPT_CALLS: weakref.WeakSet[cimxml.KeptCalls] = weakref.WeakSet()
_made = cimxml.KeptCalls.__init__


def _recorded(self: cimxml.KeptCalls, *args: Any, **kwargs: Any) -> None:
    _made(self, *args, **kwargs)
    _KEPT_CALLS.add(self)


cimxml.KeptCalls.__init__ = _recorded  # type: ignore[method-assign]


@pytest.fixture(autouse=True)
def _kept_calls_unchanged() -> Iterator[None]:
    """After each test, every method call kept parsed still reads as a fresh
    parse of its body (``repr``: pywbem's == ignores names' case and values'
    CIM types): nothing a request did reached one (``cimxml.KeptCalls``)."""
    yield
    for kept in list(_KEPT_CALLS):
        for body, call in kept.items():
            assert repr(call) == repr(cimxml.parse_request(body))
