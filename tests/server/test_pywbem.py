"""pywbem's WBEMConnection against a running server (HTTP and HTTPS) and the stand-in broker:
every operation family, its DSP0200 defaults, its errors, and large streamed results."""

from __future__ import annotations

import base64
import http.client
import logging
from collections.abc import Iterator

import pytest
from pywbem import (
    CIMError,
    CIMInstance,
    CIMInstanceName,
    CIMProperty,
    Error,
    Uint16,
)

from lmi_mount.cim.model import Model
from tests.server.conftest import ADMIN, MOUNT_POINTS, NS, READER, SERVICE, Running
from tests.server.rawhttp import basic, cim_request, exchange
from tests.server.test_cimxml import imethod, request

MOUNTS = "LMI_MountedFileSystem"
SETTINGS = "LMI_MountedFileSystemSetting"
JOBS = "LMI_MountJob"  # generated: many instances, streamed


def code(excinfo: pytest.ExceptionInfo[CIMError]) -> str:
    return str(excinfo.value.status_code_name)


@pytest.fixture(scope="module", autouse=True)
def many_jobs(running: Running) -> int:
    """2000 small LMI_MountJob instances (about 1 MB of CIM-XML), generated afresh for each
    enumeration."""
    count = 2000

    def jobs() -> Iterator[CIMInstance]:
        for n in range(count):
            path = CIMInstanceName(JOBS, {"InstanceID": f"LMI:LMI_MountJob:{n}"}, namespace=NS)
            yield CIMInstance(JOBS, path=path, properties=[
                CIMProperty("InstanceID", f"LMI:LMI_MountJob:{n}"),
                CIMProperty("ElementName", "x" * 400),
                CIMProperty("JobState", Uint16(7)),
            ])

    running.broker.generate(JOBS, jobs)
    return count


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_enumerate_get_and_names(running: Running, tls: bool) -> None:
    conn = running.connect(tls=tls)
    instances = conn.EnumerateInstances(MOUNTS)
    assert sorted(i["MountPointPath"] for i in instances) == sorted(MOUNT_POINTS)
    assert all(i.path.host == "host.example" or i.path.host is None for i in instances)
    names = conn.EnumerateInstanceNames(MOUNTS)
    assert sorted(n["MountPointPath"] for n in names) == sorted(MOUNT_POINTS)
    for path in running.paths["mounts"]:
        got = conn.GetInstance(path, PropertyList=["MountPointPath", "Holders"])
        assert set(got.properties) == {"MountPointPath", "Holders"}
        assert got["MountPointPath"] == path["MountPointPath"]


def test_dsp0200_defaults_reach_the_broker(running: Running) -> None:
    conn = running.connect()
    conn.EnumerateInstances(MOUNTS)
    call = running.broker.last_call("enumerate_instances")
    # DeepInheritance defaults to true; LocalOnly is deprecated and treated as false.
    assert call["deep_inheritance"] is True and call["local_only"] is False
    assert call["property_list"] is None
    conn.EnumerateInstances(MOUNTS, DeepInheritance=False, LocalOnly=True, PropertyList=[])
    call = running.broker.last_call("enumerate_instances")
    assert call["deep_inheritance"] is False and call["local_only"] is False
    assert call["property_list"] == []


def test_deep_inheritance_from_a_dmtf_parent(running: Running) -> None:
    conn = running.connect()
    deep = conn.EnumerateInstances("CIM_Service", PropertyList=["ElementName"])
    assert [i.classname for i in deep] == [SERVICE]
    shallow = conn.EnumerateInstances("CIM_SettingData", DeepInheritance=False)
    assert {i.classname for i in shallow} == {SETTINGS}
    assert "AllowWrite" not in shallow[0].properties  # not a CIM_SettingData property


def test_class_operations(running: Running) -> None:
    conn = running.connect()
    local = conn.GetClass(MOUNTS)  # LocalOnly defaults to true for classes
    full = conn.GetClass(MOUNTS, LocalOnly=False, IncludeQualifiers=False)
    assert "MountPointPath" in local.properties and "InstanceID" not in local.properties
    assert "InstanceID" in full.properties and not full.qualifiers
    assert "Key" in local.properties["MountPointPath"].qualifiers
    names = conn.EnumerateClassNames(DeepInheritance=True)
    assert {MOUNTS, SERVICE, "CIM_ManagedElement"} <= set(names)
    top = conn.EnumerateClassNames()
    assert "CIM_ManagedElement" in top and MOUNTS not in top
    classes = conn.EnumerateClasses(ClassName="CIM_Service", DeepInheritance=True)
    assert SERVICE in [c.classname for c in classes]
    service = conn.GetClass(SERVICE, LocalOnly=False)
    assert "CreateMount" in service.methods
    assert conn.GetQualifier("Key").name == "Key"
    assert "Description" in [q.name for q in conn.EnumerateQualifiers()]


def test_associations(running: Running) -> None:
    conn = running.connect()
    mount = running.paths["mounts"][0]
    (setting,) = conn.Associators(mount, AssocClass="LMI_MountedFileSystemElementSettingData")
    assert setting.classname == SETTINGS and setting.path.namespace == NS
    (name,) = conn.AssociatorNames(mount, ResultClass=SETTINGS, Role="ManagedElement",
                                   ResultRole="SettingData")
    assert name == running.paths["settings"][0].copy() or name["InstanceID"].endswith(
        MOUNT_POINTS[0])
    (link,) = conn.References(mount)
    assert link["IsCurrent"] == 1
    assert link["ManagedElement"]["MountPointPath"] == MOUNT_POINTS[0]
    (link_name,) = conn.ReferenceNames(mount, ResultClass="CIM_ElementSettingData")
    assert link_name.classname == "LMI_MountedFileSystemElementSettingData"
    assert conn.Associators(mount, AssocClass="LMI_HostedMount") == []


def test_pull_operations(running: Running) -> None:
    conn = running.connect()
    first = conn.OpenEnumerateInstances(MOUNTS, MaxObjectCount=1)
    assert len(first.instances) == 1 and not first.eos
    rest = conn.PullInstancesWithPath(first.context, MaxObjectCount=10)
    assert rest.eos and len(rest.instances) == 2
    paths = conn.OpenEnumerateInstancePaths(MOUNTS, MaxObjectCount=5)
    assert paths.eos and len(paths.paths) == 3
    mount = running.paths["mounts"][1]
    assoc = conn.OpenAssociatorInstances(mount, MaxObjectCount=10)
    assert assoc.eos and [i.classname for i in assoc.instances] == [SETTINGS]
    refs = conn.OpenReferenceInstancePaths(mount, MaxObjectCount=0)
    assert not refs.eos and refs.paths == []
    more = conn.PullInstancePaths(refs.context, MaxObjectCount=5)
    assert more.eos and len(more.paths) == 1
    opened = conn.OpenEnumerateInstances(MOUNTS, MaxObjectCount=0)
    conn.CloseEnumeration(opened.context)
    with pytest.raises(CIMError) as caught:
        conn.PullInstancesWithPath(opened.context, MaxObjectCount=1)
    assert code(caught) == "CIM_ERR_INVALID_ENUMERATION_CONTEXT"
    assert len(list(conn.IterEnumerateInstances(MOUNTS, MaxObjectCount=1))) == 3


@pytest.mark.parametrize(("kwargs", "expected"), [
    pytest.param({"ContinueOnError": True}, "CIM_ERR_CONTINUATION_ON_ERROR_NOT_SUPPORTED",
                 id="continue-on-error"),
    pytest.param({"OperationTimeout": 0}, "CIM_ERR_INVALID_OPERATION_TIMEOUT", id="no-timeout"),
    pytest.param({"FilterQueryLanguage": "DMTF:FQL", "FilterQuery": "A = 1"},
                 "CIM_ERR_FILTERED_ENUMERATION_NOT_SUPPORTED", id="filter"),
])
def test_open_options_refused(running: Running, kwargs: dict[str, object],
                              expected: str) -> None:
    with pytest.raises(CIMError) as caught:
        running.connect().OpenEnumerateInstances(MOUNTS, **kwargs)
    assert code(caught) == expected


def test_queries(running: Running) -> None:
    conn = running.connect()
    (row,) = conn.ExecQuery("WQL", f'select * from {MOUNTS} where MountPointPath = '
                            f'"{MOUNT_POINTS[0]}"')
    assert row["MountPointPath"] == MOUNT_POINTS[0] and row.path["MountPointPath"]
    result = conn.OpenQueryInstances("WQL", f"SELECT MountPointPath FROM {MOUNTS} WHERE "
                                     "ReferenceCount >= 1", MaxObjectCount=2,
                                     ReturnQueryResultClass=True)
    assert len(result.instances) == 2 and not result.eos
    assert set(result.query_result_class.properties) == {"MountPointPath"}
    rest = conn.PullInstances(result.context, MaxObjectCount=5)
    assert rest.eos and len(rest.instances) == 1
    assert set(rest.instances[0].properties) == {"MountPointPath"}
    liked = conn.ExecQuery("WQL", f"SELECT * FROM {MOUNTS} WHERE MountPointPath LIKE '/mnt/%'")
    assert sorted(row["MountPointPath"] for row in liked) == sorted(
        p for p in MOUNT_POINTS if p.startswith("/mnt/"))
    (cql,) = conn.ExecQuery("DMTF:CQL", f"SELECT * FROM {MOUNTS} WHERE MountPointPath = "
                            f"'{MOUNT_POINTS[0]}'")
    assert cql.path == row.path


@pytest.mark.parametrize(("language", "query", "expected", "message"), [
    pytest.param("CQL", f"SELECT * FROM {MOUNTS}", "CIM_ERR_QUERY_LANGUAGE_NOT_SUPPORTED",
                 "'CQL' is not supported; use 'WQL' or 'DMTF:CQL'", id="language"),
    pytest.param("DMTF:CQL", f"SELECT * FROM {MOUNTS} WHERE MountPointPath LIKE '/mnt/%'",
                 "CIM_ERR_INVALID_QUERY", "use WQL for LIKE", id="cql-like"),
    pytest.param("WQL", f"SELECT * FROM {MOUNTS} WHERE", "CIM_ERR_INVALID_QUERY",
                 "end of the query", id="syntax"),
    pytest.param("WQL", "SELECT * FROM LMI_Nothing", "CIM_ERR_INVALID_QUERY",
                 "'LMI_Nothing' does not exist", id="class"),
])
def test_query_errors(running: Running, language: str, query: str, expected: str,
                      message: str) -> None:
    with pytest.raises(CIMError) as caught:
        running.connect().ExecQuery(language, query)
    assert code(caught) == expected and message in caught.value.status_description


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_invoke_method_types_parameters_and_names_the_holder(running: Running,
                                                             tls: bool) -> None:
    conn = running.connect(tls=tls)
    service = running.paths["service"]
    rv, out = conn.InvokeMethod("CreateMount", service, MountPoint="/mnt/new", Mode=Uint16(1))
    assert rv == 0
    assert out["Mount"]["MountPointPath"] == "/mnt/new"
    assert out["Plan"] == ["mount /mnt/new for admin"]
    call = running.broker.last_call("invoke_method")
    assert call["caller"].user == "admin" and call["caller"].may_write
    assert isinstance(call["params"]["Mode"], Uint16)
    rv, out = conn.InvokeMethod("DeleteMount", SERVICE, Mount=out["Mount"])
    assert rv == 0 and dict(out) == {}


def test_reader_may_read_but_not_write(running: Running) -> None:
    conn = running.connect(READER)
    assert len(conn.EnumerateInstances(MOUNTS)) == 3
    with pytest.raises(CIMError) as caught:
        conn.InvokeMethod("CreateMount", running.paths["service"], MountPoint="/m")
    assert code(caught) == "CIM_ERR_ACCESS_DENIED"
    with pytest.raises(CIMError) as caught:
        conn.DeleteInstance(running.paths["settings"][1])
    assert code(caught) == "CIM_ERR_ACCESS_DENIED"


def test_instance_writes(running: Running, model: Model) -> None:
    conn = running.connect()
    created = conn.CreateInstance(CIMInstance(SETTINGS, properties=[
        CIMProperty("InstanceID", "LMI:goal:1"), CIMProperty("AllowWrite", False)]))
    assert created["InstanceID"] == "LMI:goal:1"
    modified = conn.GetInstance(created)
    modified["AllowWrite"] = True
    modified["OtherOptions"] = ["size=10m"]
    conn.ModifyInstance(modified, PropertyList=["AllowWrite"])
    again = conn.GetInstance(created)
    assert again["AllowWrite"] is True and again.get("OtherOptions") is None
    conn.DeleteInstance(created)
    with pytest.raises(CIMError) as caught:
        conn.GetInstance(created)
    assert code(caught) == "CIM_ERR_NOT_FOUND"


@pytest.mark.parametrize(("operation", "expected"), [
    pytest.param(lambda c: c.GetInstance(CIMInstanceName(MOUNTS, {
        "FileSystemSpec": "x", "MountPointPath": "/nowhere"})), "CIM_ERR_NOT_FOUND",
        id="no-instance"),
    pytest.param(lambda c: c.EnumerateInstances(MOUNTS, namespace="root/nowhere"),
                 "CIM_ERR_INVALID_NAMESPACE", id="namespace"),
    pytest.param(lambda c: c.EnumerateInstances("LMI_Nothing"), "CIM_ERR_INVALID_CLASS",
                 id="class"),
    pytest.param(lambda c: c.GetQualifier("NoSuchQualifier"), "CIM_ERR_NOT_FOUND",
                 id="qualifier"),
    pytest.param(lambda c: c.DeleteClass(MOUNTS), "CIM_ERR_NOT_SUPPORTED", id="class-write"),
    pytest.param(lambda c: c.InvokeMethod("Explode", SERVICE), "CIM_ERR_METHOD_NOT_FOUND",
                 id="method"),
    pytest.param(lambda c: c.InvokeMethod("CreateMount", SERVICE, Nope="x"),
                 "CIM_ERR_INVALID_PARAMETER", id="parameter"),
    pytest.param(lambda c: c.Associators(MOUNTS), "CIM_ERR_NOT_SUPPORTED",
                 id="class-associators"),
])
def test_errors(running: Running, operation: object, expected: str) -> None:
    with pytest.raises(CIMError) as caught:
        operation(running.connect())  # type: ignore[operator]
    assert code(caught) == expected


def test_a_failed_operation_is_logged_with_its_object_and_error(
        running: Running, caplog: pytest.LogCaptureFixture) -> None:
    # The log named only the namespace ("GetInstance root/cimv2: 6"), where the
    # docs promise the object; the error's description was not there either.
    missing = CIMInstanceName(MOUNTS, {"FileSystemSpec": "x", "MountPointPath": "/no\nwhere"})
    with caplog.at_level(logging.INFO, logger="lmi_mount.server"):
        with pytest.raises(CIMError):
            running.connect().GetInstance(missing)
        with pytest.raises(CIMError):
            running.connect().EnumerateInstances("LMI_Nothing")
    lines = [r.getMessage() for r in caplog.records if r.name == "lmi_mount.server"]
    [get] = [line for line in lines if " GetInstance " in line]
    assert f" GetInstance {NS}:{MOUNTS}." in get and 'MountPointPath="/no\nwhere"' in get
    assert ": 6 (" in get, get
    [enumerate_] = [line for line in lines if " EnumerateInstances " in line]
    assert f" EnumerateInstances {NS}:LMI_Nothing: 5 (" in enumerate_, enumerate_


def test_large_enumeration_streams_and_pages(running: Running, many_jobs: int) -> None:
    conn = running.connect()
    instances = conn.EnumerateInstances(JOBS, PropertyList=["InstanceID", "ElementName"])
    assert len(instances) == many_jobs
    assert instances[-1]["InstanceID"] == f"LMI:LMI_MountJob:{many_jobs - 1}"
    seen = 0
    result = conn.OpenEnumerateInstances(JOBS, MaxObjectCount=1000)
    seen += len(result.instances)
    while not result.eos:
        result = conn.PullInstancesWithPath(result.context, MaxObjectCount=1000)
        seen += len(result.instances)
    assert seen == many_jobs


def test_large_response_is_chunked(running: Running, many_jobs: int) -> None:
    body = request(imethod("EnumerateInstances", '<IPARAMVALUE NAME="ClassName">'
                           f'<CLASSNAME NAME="{JOBS}"/></IPARAMVALUE>'))
    conn = http.client.HTTPConnection("127.0.0.1", running.http_port, timeout=10)
    auth = base64.b64encode(f"{ADMIN[0]}:{ADMIN[1]}".encode()).decode()
    conn.request("POST", "/cimom", body, {
        "Content-Type": 'application/xml; charset="utf-8"', "CIMOperation": "MethodCall",
        "CIMMethod": "EnumerateInstances", "CIMObject": "root/cimv2",
        "Authorization": f"Basic {auth}"})
    response = conn.getresponse()
    data = response.read()
    assert response.status == 200
    assert response.getheader("Transfer-Encoding") == "chunked"
    # The trailers a failure half way would end it with (DSP0200, as SFCB; a review).
    assert response.getheader("Trailer") == "CIMStatusCode, CIMStatusCodeDescription"
    assert response.getheader("CIMOperation") == "MethodResponse"
    assert data.count(b"<VALUE.NAMEDINSTANCE>") == 2000
    conn.close()


def test_failure_half_way_is_never_a_short_result(running: Running) -> None:
    # Past the eagerly encoded prefix, the response is already on its way: the
    # client must see a broken response, not fewer instances.
    running.broker.fail_after(JOBS, 1500, CIMError(1, "the kernel went away"))
    try:
        with pytest.raises(Error):
            running.connect().EnumerateInstances(JOBS)
        # An error within the prefix is still a clean CIM error.
        running.broker.fail_after(JOBS, 3, CIMError(1, "early failure"))
        with pytest.raises(CIMError) as caught:
            running.connect().EnumerateInstances(JOBS)
        assert "early failure" in caught.value.status_description
    finally:
        running.broker._failures.clear()
    assert len(running.connect().EnumerateInstanceNames(MOUNTS)) == 3


def test_enumeration_count_is_null_for_an_open_context(running: Running) -> None:
    opened = running.connect().OpenEnumerateInstances(MOUNTS, MaxObjectCount=0)
    context, _namespace = opened.context
    body = request(imethod("EnumerationCount", '<IPARAMVALUE NAME="EnumerationContext">'
                           f"<VALUE>{context}</VALUE></IPARAMVALUE>"))
    with running.socket() as sock:
        reply = exchange(sock, cim_request(body, method="EnumerationCount", auth=basic(*ADMIN)))
    assert reply.status == 200
    assert b'<IMETHODRESPONSE NAME="EnumerationCount"><IRETURNVALUE></IRETURNVALUE>' in reply.body
    unknown = body.replace(context.encode(), b"made-up")
    with running.socket() as sock:
        reply = exchange(sock, cim_request(unknown, method="EnumerationCount",
                                           auth=basic(*ADMIN)))
    assert b'<ERROR CODE="21"' in reply.body  # CIM_ERR_INVALID_ENUMERATION_CONTEXT
