"""Hostile and broken requests against the whole server: each gets a clean error within its
limit, and the server answers the next request; a fuzz of request bodies never gets
anything but a well-formed HTTP response."""

from __future__ import annotations

import re
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree
from pywbem import AuthError, CIMError, HTTPError, WBEMConnection

from lmi_mount.cim.model import Model
from tests.server.conftest import ADMIN, LIMITS, READER, Running, start_server
from tests.server.rawhttp import RawResponse, basic, cim_request, read_response
from tests.server.test_cimxml import BILLION_LAUGHS, EXTERNAL_ENTITY, imethod, request

AUTH = basic(*ADMIN)
GET_CLASS = request(imethod(
    "GetClass", '<IPARAMVALUE NAME="ClassName"><CLASSNAME NAME="LMI_MountedFileSystem"/>'
    "</IPARAMVALUE>"))


def send(running: Running, data: bytes) -> RawResponse:
    with running.socket() as sock:
        sock.sendall(data)
        return read_response(sock.makefile("rb"))


def cim_error(response: RawResponse) -> tuple[str, str] | None:
    """(CODE, DESCRIPTION) of the ERROR in a 200 response, or None."""
    root = etree.fromstring(response.body)
    error = root.find(".//ERROR")
    return None if error is None else (error.get("CODE"), error.get("DESCRIPTION"))


@pytest.fixture(autouse=True)
def answers_afterwards(running: Running) -> Iterator[None]:
    """After every test here, the server still answers a valid request."""
    yield
    response = send(running, cim_request(GET_CLASS, auth=AUTH))
    assert response.status == 200 and cim_error(response) is None


def test_no_credentials_is_401_with_a_basic_challenge(running: Running) -> None:
    response = send(running, cim_request(GET_CLASS))
    assert response.status == 401
    assert response.header("www-authenticate") == 'Basic realm="lmi-mountd", charset="UTF-8"'
    with pytest.raises(AuthError):
        running.connect(None).EnumerateClassNames()


@pytest.mark.parametrize("auth", [basic("admin", "wrong"), basic("nobody", "x"), "Basic %%%"])
def test_wrong_credentials_are_401(running: Running, auth: str) -> None:
    assert send(running, cim_request(GET_CLASS, auth=auth)).status == 401


def test_a_login_that_needs_a_hash_gives_up_its_turn(
        model: Model, tls_files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    # scrypt releases the GIL: a guesser's hash must not hold the honest
    # requests behind it for the HTTP layer's 25 ms; a cached login keeps its turn.
    import lmi_mount.server.app as app_module

    given_up: list[str] = []
    monkeypatch.setattr(app_module, "give_up_turn", lambda: given_up.append("given up"))
    server, _, _ = start_server(model, tls_files)  # its own login cache and throttle
    http_port = next(port for _, port, tls in server.addresses if not tls)
    own = Running(server, None, {}, http_port, 0, tls_files[0])
    try:
        assert send(own, cim_request(GET_CLASS, auth=basic("admin", "not this"))).status == 401
        assert given_up == ["given up"]
        assert send(own, cim_request(GET_CLASS, auth=AUTH)).status == 200
        assert given_up == ["given up"] * 2  # verified once
        assert send(own, cim_request(GET_CLASS, auth=AUTH)).status == 200
        assert given_up == ["given up"] * 2, "a cached login gave up its turn"
    finally:
        server.shutdown()


def test_reader_calling_a_method_is_denied(running: Running) -> None:
    with pytest.raises(CIMError) as caught:
        running.connect(READER).InvokeMethod("CreateMount", running.paths["service"],
                                             MountPoint="/mnt/x")
    assert caught.value.status_code_name == "CIM_ERR_ACCESS_DENIED"


@pytest.mark.parametrize(("body", "status", "cim_error_header", "message"), [
    pytest.param(BILLION_LAUGHS, 400, "request-not-well-formed", b"amplification",
                 id="billion-laughs"),
    pytest.param(EXTERNAL_ENTITY, 400, "request-not-valid", b"DOCTYPE", id="external-entity"),
    pytest.param(b"<!DOCTYPE CIM>" + GET_CLASS.split(b"\n", 1)[1], 400, "request-not-valid",
                 b"DOCTYPE", id="doctype"),
    pytest.param(GET_CLASS[:-30], 400, "request-not-well-formed", b"", id="truncated"),
    pytest.param(b"<CIM>" * 200 + b"</CIM>" * 200, 400, "request-not-valid", b"deeper",
                 id="deep-nesting"),
    pytest.param(b"\xff\xfe<\x00C\x00", 400, "request-not-well-formed", b"", id="garbage"),
    pytest.param(GET_CLASS.replace(b"SIMPLEREQ", b"MULTIREQ"), 501,
                 "multiple-requests-unsupported", b"", id="multireq"),
])
def test_hostile_bodies(running: Running, body: bytes, status: int, cim_error_header: str,
                        message: bytes) -> None:
    started = time.monotonic()
    response = send(running, cim_request(body, auth=AUTH))
    assert time.monotonic() - started < 2  # billion laughs used to take minutes (pywbem SAX)
    assert response.status == status
    assert response.header("cimerror") == cim_error_header
    assert message in response.body


def test_100_mb_body_is_refused_before_it_is_read(running: Running) -> None:
    with running.socket() as sock:
        sock.sendall(cim_request(b"", auth=AUTH,
                                 extra={"Content-Length": str(100 * 1024 * 1024)}))
        response = read_response(sock.makefile("rb"))
    assert response.status == 413 and b"exceeds the limit" in response.body


def test_slowloris_is_cut_off(running: Running) -> None:
    data = cim_request(GET_CLASS, auth=AUTH)
    with running.socket() as sock:
        started = time.monotonic()
        for i in range(0, len(data), 20):  # 20 bytes every 0.25 s: never done in time
            sock.sendall(data[i:i + 20])
            answered, _, _ = select.select([sock], [], [], 0.25)
            if answered or time.monotonic() - started > 3 * LIMITS.request_timeout:
                break
        response = read_response(sock.makefile("rb"))
    assert response.status == 408
    assert time.monotonic() - started < 3 * LIMITS.request_timeout


@pytest.mark.parametrize(("omit", "extra", "status", "header", "message"), [
    pytest.param(("CIMOperation",), {}, 400, "unsupported-operation",
                 b"CIMOperation header is missing", id="no-cimoperation"),
    pytest.param((), {"CIMOperation": "MethodResponse"}, 400, "unsupported-operation",
                 b"is not MethodCall", id="wrong-cimoperation"),
    pytest.param(("Content-Type",), {}, 415, None, b"not nothing", id="no-content-type"),
    pytest.param((), {"Content-Type": "text/plain"}, 415, None, b"not text/plain",
                 id="wrong-content-type"),
    pytest.param((), {"Content-Type": "application/xml; charset=latin-1"}, 415, None,
                 b"charset=utf-8", id="wrong-charset"),
    pytest.param(("CIMMethod",), {}, 400, "header-mismatch", b"CIMMethod header is missing",
                 id="no-cimmethod"),
    pytest.param((), {"CIMMethod": "GetInstance"}, 400, "header-mismatch",
                 b"does not match the request's 'GetClass'", id="wrong-cimmethod"),
    pytest.param((), {"CIMObject": "root/other"}, 400, "header-mismatch",
                 b"does not match the namespace", id="wrong-cimobject"),
    pytest.param((), {"CIMMethod": "Get%FFClass"}, 400, "header-mismatch",
                 b"not percent-encoded UTF-8", id="bad-percent-encoding"),
    pytest.param((), {"CIMBatch": "CIMBatch"}, 501, "multiple-requests-unsupported", b"",
                 id="batch"),
    pytest.param((), {"CIMProtocolVersion": "2.0"}, 501, "unsupported-protocol-version",
                 b"", id="protocol-version"),
])
def test_bad_cim_headers(running: Running, omit: tuple[str, ...], extra: dict[str, str],
                         status: int, header: str | None, message: bytes) -> None:
    response = send(running, cim_request(GET_CLASS, auth=AUTH, omit=omit, extra=extra))
    assert response.status == status
    assert response.header("cimerror") == header
    assert message in response.body


def test_percent_encoded_headers_are_decoded(running: Running) -> None:
    response = send(running, cim_request(GET_CLASS, auth=AUTH, extra={
        "CIMMethod": "%47etClass", "CIMObject": "root%2Fcimv2"}))
    assert response.status == 200 and cim_error(response) is None


@pytest.mark.parametrize(("method", "status"), [("GET", 405), ("PUT", 405), ("M-POST", 501)])
def test_other_http_methods(running: Running, method: str, status: int) -> None:
    data = cim_request(GET_CLASS, auth=AUTH).replace(b"POST", method.encode(), 1)
    response = send(running, data)
    assert response.status == status
    if status == 405:
        assert response.header("allow") == "POST"


@pytest.mark.parametrize(("body", "code", "message"), [
    pytest.param(request(imethod("EnumerateInstances")), "4", "ClassName is required",
                 id="missing-class-name"),
    pytest.param(request(imethod("GetInstance")), "4", "InstanceName is required",
                 id="missing-instance-name"),
    pytest.param(request(imethod("GetClass", '<IPARAMVALUE NAME="ClassName"><CLASSNAME NAME=""/>'
                                 "</IPARAMVALUE>")), "4", "must be a class name",
                 id="empty-class-name"),
    pytest.param(request(imethod("GetClass", '<IPARAMVALUE NAME="ClassName"><CLASSNAME '
                                 'NAME="X"/></IPARAMVALUE><IPARAMVALUE NAME="Bogus"/>')), "4",
                 "no parameter 'Bogus'", id="unknown-parameter"),
    pytest.param(request(imethod("GetClass", '<IPARAMVALUE NAME="ClassName"><CLASSNAME '
                                 'NAME="X"/></IPARAMVALUE><IPARAMVALUE NAME="LocalOnly">'
                                 "<VALUE>maybe</VALUE></IPARAMVALUE>")), "4",
                 "not a boolean", id="bad-boolean"),
    pytest.param(request(imethod("Frobnicate")), "7", "unknown operation 'Frobnicate'",
                 id="unknown-operation"),
])
def test_bad_operations_are_cim_errors(running: Running, body: bytes, code: str,
                                       message: str) -> None:
    method = re.search(rb'IMETHODCALL NAME="([A-Za-z]+)"', body)
    assert method is not None
    response = send(running, cim_request(body, auth=AUTH, method=method.group(1).decode()))
    assert response.status == 200
    error = cim_error(response)
    assert error is not None and error[0] == code and message in error[1]


def test_wrong_namespace(running: Running) -> None:
    body = GET_CLASS.replace(b'<NAMESPACE NAME="cimv2"/>', b'<NAMESPACE NAME="nowhere"/>')
    response = send(running, cim_request(body, auth=AUTH, namespace="root/nowhere"))
    error = cim_error(response)
    assert error is not None and error[0] == "3"  # CIM_ERR_INVALID_NAMESPACE


def test_plain_http_is_refused_unless_allowed(model: Model,
                                              tls_files: tuple[Path, Path]) -> None:
    server, _broker, _paths = start_server(model, tls_files, plain_http="refuse")
    try:
        ports = {tls: port for _, port, tls in server.addresses}
        with socket.create_connection(("127.0.0.1", ports[False]), timeout=5) as sock:
            sock.sendall(cim_request(GET_CLASS, auth=AUTH))
            response = read_response(sock.makefile("rb"))
        assert response.status == 403 and b"use HTTPS" in response.body
        url = f"https://127.0.0.1:{ports[True]}"
        conn = WBEMConnection(url, ADMIN, default_namespace="root/cimv2",
                              ca_certs=str(tls_files[0]))
        conn.session.trust_env = False
        assert conn.GetClass("LMI_MountedFileSystem").classname == "LMI_MountedFileSystem"
        plain = WBEMConnection(f"http://127.0.0.1:{ports[False]}", ADMIN)
        with pytest.raises(HTTPError) as caught:
            plain.EnumerateClassNames(namespace="root/cimv2")
        assert caught.value.status == 403
    finally:
        server.shutdown()


# -- fuzz -------------------------------------------------------------------------------------

ELEMENTS = ["CIM", "MESSAGE", "SIMPLEREQ", "IMETHODCALL", "METHODCALL", "LOCALNAMESPACEPATH",
            "NAMESPACE", "IPARAMVALUE", "PARAMVALUE", "VALUE", "VALUE.ARRAY", "VALUE.REFERENCE",
            "INSTANCENAME", "KEYBINDING", "KEYVALUE", "CLASSNAME", "INSTANCE", "PROPERTY",
            "LOCALINSTANCEPATH", "VALUE.NAMEDINSTANCE", "QUALIFIER", "PROPERTY.ARRAY"]
ATTRIBUTES = ["NAME", "CLASSNAME", "TYPE", "PARAMTYPE", "VALUETYPE", "CIMVERSION",
              "DTDVERSION", "ID", "PROTOCOLVERSION", "EmbeddedObject"]
VALUES = st.sampled_from(["2.0", "1.0", "root", "cimv2", "GetClass", "EnumerateInstances",
                          "CreateMount", "LMI_MountedFileSystem", "string", "uint16",
                          "boolean", "numeric", "instance", "TRUE", "1", "", "&amp;"])


def _element(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    def build(tag: str, attrs: dict[str, str], kids: list[str], text: str) -> str:
        attributes = "".join(f' {k}="{v}"' for k, v in attrs.items())
        return f"<{tag}{attributes}>{text}{''.join(kids)}</{tag}>"

    return st.builds(build, st.sampled_from(ELEMENTS),
                     st.dictionaries(st.sampled_from(ATTRIBUTES), VALUES, max_size=3),
                     st.lists(children, max_size=3), st.sampled_from(["", "x", "7", "TRUE"]))


CIM_TREES = st.recursive(st.just(""), _element, max_leaves=12)


def mutate(data: bytes, cuts: list[tuple[int, int, bytes]]) -> bytes:
    for position, length, insert in cuts:
        position %= max(len(data), 1)
        data = data[:position] + insert + data[position + length:]
    return data


def check_answer(response: RawResponse) -> None:
    assert response.status in (200, 400, 415, 501), response.status
    if response.status == 200:
        root = etree.fromstring(response.body)
        assert root.tag == "CIM" and root.find(".//SIMPLERSP") is not None
    else:
        assert response.header("cimerror") or response.status == 415


@pytest.fixture(scope="module")
def fuzz_socket(running: Running) -> Iterator[list[socket.socket]]:
    """One keep-alive connection for the fuzz examples (replaced when the server closes it)."""
    holder = [running.socket()]
    yield holder
    holder[0].close()


def fuzz_send(running: Running, holder: list[socket.socket], body: bytes,
              method: str) -> RawResponse:
    data = cim_request(body, auth=AUTH, method=method)
    for attempt in range(2):
        try:
            holder[0].sendall(data)
            return read_response(holder[0].makefile("rb"))
        except (ConnectionError, OSError):
            if attempt:
                raise
            holder[0].close()
            holder[0] = running.socket()
    raise AssertionError("unreachable")


@given(cuts=st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 8),
                               st.sampled_from([b"", b"<", b">", b"&", b'"', b"/", b"\x00",
                                                b"<VALUE>", b"</IPARAMVALUE>", b"&lol;",
                                                b"\xc3", b"NAME="])),
                     min_size=1, max_size=4))
@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_fuzz_mutated_requests(running: Running, fuzz_socket: list[socket.socket],
                               cuts: list[tuple[int, int, bytes]]) -> None:
    body = mutate(GET_CLASS, cuts)
    check_answer(fuzz_send(running, fuzz_socket, body, "GetClass"))


@given(tree=CIM_TREES)
@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_fuzz_cim_shaped_trees(running: Running, fuzz_socket: list[socket.socket],
                               tree: str) -> None:
    body = request(tree)
    check_answer(fuzz_send(running, fuzz_socket, body, "GetClass"))


def test_an_error_quoting_a_request_stays_small(running: Running) -> None:
    # 10,000 unknown parameters were echoed back in an 89 KB message.
    bogus = "".join(f'<IPARAMVALUE NAME="Bogus{n:05d}"/>' for n in range(10_000))
    body = request(imethod("GetClass", '<IPARAMVALUE NAME="ClassName"><CLASSNAME NAME="X"/>'
                           "</IPARAMVALUE>" + bogus))
    response = send(running, cim_request(body, auth=AUTH, method="GetClass"))
    error = cim_error(response)
    assert error is not None and error[0] == "4"
    assert "'Bogus00000'" in error[1] and "and 9995 more" in error[1]
    assert len(response.body) < 2_000
