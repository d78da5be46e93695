"""Fuzzing of what an unauthenticated peer controls besides the HTTP head (which
tests/server/test_http.py fuzzes): the Authorization header, WQL text and CIM-XML
bodies. The property is the same everywhere: the input is read, or refused with
the error of its kind; nothing else escapes (the first build answered 500 with a
traceback for raw UTF-8 in Authorization and "internal error" for a long number).
"""

from __future__ import annotations

import base64

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pywbem import CIMError

from lmi_mount.cim import wql
from lmi_mount.server import auth, cimxml
from tests.server.test_cimxml import imethod, request

# The suite runs at least 10,000 fuzz cases of what a peer sends: 2 x 2,500 here,
# 2,000 CIM-XML bodies, 4,000 request heads in test_http.py (11,000 in all);
# benchmarks/fuzz_server.py runs as many as it is given time for.
CASES = settings(max_examples=2_500, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _mutations(real: bytes, pieces: list[bytes]) -> st.SearchStrategy[bytes]:
    """``real`` with up to 6 cuts, insertions of ``pieces`` or random bytes, repeats."""
    @st.composite
    def mutated(draw: st.DrawFn) -> bytes:
        data = bytearray(real)
        for _ in range(draw(st.integers(0, 6))):
            at = draw(st.integers(0, len(data)))
            kind = draw(st.integers(0, 3))
            if kind == 0:
                del data[at:at + draw(st.integers(1, 12))]
            elif kind == 1:
                data[at:at] = draw(st.sampled_from(pieces))
            elif kind == 2:
                data[at:at] = draw(st.binary(min_size=1, max_size=6))
            else:
                data[at:at] = data[at:at + draw(st.integers(1, 20))] * draw(st.integers(2, 20))
        return bytes(data)
    return mutated()


AUTH_PIECES = [b"Basic ", b"basic", b"=", b"==", b":", b"\xc3\xa9", b"\xb2", b"\x00", b" ", b"\t",
               base64.b64encode(b"sandbox:pw"), base64.b64encode(b"\xff\xfe:x"), b"Bearer "]


@CASES
@given(_mutations(b"Basic " + base64.b64encode(b"sandbox:secret"), AUTH_PIECES))
def test_any_authorization_is_read_or_refused(raw: bytes) -> None:
    header = raw.decode("latin-1")  # how the HTTP layer hands header values over
    try:
        user, _password = auth.parse_basic(header)
    except auth.AuthError as exc:
        assert str(exc)
    else:
        assert user


QUERY = (b"SELECT MountPointPath, ReferenceCount FROM LMI_MountedFileSystem WHERE "
         b"(MountPointPath LIKE '/srv/%' OR FileSystemType = \"tmpfs\") AND "
         b"ReferenceCount >= 0x1 AND NOT Holders IS NULL")
WQL_PIECES = [b"(", b")", b"'", b'"', b"9" * 5000, b"1e999", b"-", b"0x", b"NOT ", b" AND ",
              b" OR ", b"LIKE", b"%", b"_", b"\\", b"ISA", b"*", b",", b"=", b"<>", b"\x00",
              b"\xc3\xa9", b"TRUE", b"NULL"]


@CASES
@given(_mutations(QUERY, WQL_PIECES))
def test_any_wql_is_read_or_an_invalid_query(raw: bytes) -> None:
    try:
        query = wql.parse(raw.decode("utf-8", "replace"))
    except CIMError as exc:
        assert exc.status_code_name == "CIM_ERR_INVALID_QUERY"
    else:
        assert query.classname


BODY = request(imethod(
    "EnumerateInstances", '<IPARAMVALUE NAME="ClassName"><CLASSNAME NAME="LMI_MountedFileSystem"/>'
    '</IPARAMVALUE><IPARAMVALUE NAME="PropertyList"><VALUE.ARRAY><VALUE>MountPointPath</VALUE>'
    "</VALUE.ARRAY></IPARAMVALUE>"))
XML_PIECES = [b"<", b">", b"/>", b"</VALUE>", b"<VALUE>", b"&amp;", b"&#0;", b"&#x110000;",
              b"<!DOCTYPE x [<!ENTITY a 'b'>]>", b"]]>", b"<![CDATA[", b"\x00", b"\xff",
              b'"', b"=", b"NAME", b"<IPARAMVALUE NAME=\"X\"/>"]


@settings(max_examples=2_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mutations(BODY, XML_PIECES))
def test_any_cimxml_body_is_read_or_refused(raw: bytes) -> None:
    try:
        call = cimxml.parse_request(raw)
    except (cimxml.RequestError, CIMError) as exc:
        assert str(exc)
    else:
        assert isinstance(call, (cimxml.IntrinsicCall, cimxml.ExtrinsicCall))


METHOD_BODY = request(
    '<METHODCALL NAME="DeleteMount"><LOCALINSTANCEPATH><LOCALNAMESPACEPATH>'
    '<NAMESPACE NAME="root"/><NAMESPACE NAME="cimv2"/></LOCALNAMESPACEPATH>'
    '<INSTANCENAME CLASSNAME="LMI_MountConfigurationService"><KEYBINDING NAME="Name">'
    "<KEYVALUE>svc</KEYVALUE></KEYBINDING></INSTANCENAME></LOCALINSTANCEPATH>"
    '<PARAMVALUE NAME="Mode" PARAMTYPE="uint16"><VALUE>32769</VALUE></PARAMVALUE>'
    '<PARAMVALUE NAME="Mount"><VALUE.REFERENCE><INSTANCENAME CLASSNAME="LMI_MountedFileSystem">'
    '<KEYBINDING NAME="MountPointPath"><KEYVALUE>/mnt/a</KEYVALUE></KEYBINDING>'
    '<KEYBINDING NAME="Ref"><VALUE.REFERENCE><INSTANCENAME CLASSNAME="X"><KEYBINDING NAME="K">'
    "<KEYVALUE>v</KEYVALUE></KEYBINDING></INSTANCENAME></VALUE.REFERENCE></KEYBINDING>"
    "</INSTANCENAME></VALUE.REFERENCE></PARAMVALUE>"
    '<PARAMVALUE NAME="Names"><VALUE.ARRAY><VALUE>a</VALUE><VALUE>b</VALUE></VALUE.ARRAY>'
    "</PARAMVALUE></METHODCALL>")
METHOD_PIECES = [b"<", b">", b"/>", b"<VALUE>x</VALUE>", b'EmbeddedObject="instance"',
                 b"<INSTANCE CLASSNAME=\"C\"/>", b"&amp;", b"\x00", b'"', b"NAME",
                 b'<PARAMVALUE NAME="X"/>', b"<VALUE.REFARRAY>", b"</VALUE.REFARRAY>"]


def _outcome(parse: object, raw: bytes) -> tuple[str, object]:
    try:
        return "call", parse(raw)  # type: ignore[operator]
    except (cimxml.RequestError, CIMError) as exc:
        return type(exc).__name__, str(exc)


@settings(max_examples=1_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mutations(METHOD_BODY, METHOD_PIECES))
def test_a_method_call_kept_parsed_reads_as_a_fresh_parse(raw: bytes) -> None:
    # Method calls are kept parsed by their caller and body (KeptCalls): each
    # parse of a body, the one before changed as a consumer may change it,
    # reads as a fresh parse of it (repr: names' case and values' CIM types
    # too, which pywbem's == ignores), or fails alike.
    kept = cimxml.KeptCalls(lambda call: True)
    fresh = _outcome(cimxml.parse_request, raw)
    for _ in range(3):
        kind, parsed = _outcome(lambda data: kept.parse(data, "admin"), raw)
        call, keep = parsed if kind == "call" else (parsed, None)  # type: ignore[misc]
        assert (kind, repr(call)) == (fresh[0], repr(fresh[1]))
        if keep is not None:
            keep()
        if isinstance(call, cimxml.ExtrinsicCall):
            call.target.namespace = "elsewhere"
            for param in call.params:
                if isinstance(param.value, list):
                    param.value.append("changed")
                elif hasattr(param.value, "keybindings"):
                    param.value.keybindings["Changed"] = "yes"
