"""A listener's reply read the strict way against h11, the judge: same bytes, same answer."""

from __future__ import annotations

from typing import Any

import h11
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from lmi_mount.server import export_http
from lmi_mount.server.export_http import (
    Reply,
    ReplyReader,
    ReplyTooLong,
    check_request_target,
    request_head,
)

TARGET, AUTHORITY = "/cimlistener/lmi", "127.0.0.1:5990"
MAX_BODY = 4096

# What pywbem's WBEMListener sends (http.server, HTTP/1.0).
PYWBEM_REPLY = (b"HTTP/1.0 200 OK\r\nServer: BaseHTTP/0.6 Python/3.11.7\r\n"
                b"Date: Fri, 04 Dec 2026 03:11:15 GMT\r\nContent-Type: text/xml\r\n"
                b"Content-Length: 5\r\nCIMExport: MethodResponse\r\n\r\n<CIM>")


def _outcome_of_reader(chunks: list[bytes]) -> tuple[Any, ...]:
    """What the reader makes of ``chunks`` (then, with ``b""``, the end of the
    connection); ("waits",) if it needs more and the connection stays open."""
    reader = ReplyReader(TARGET, AUTHORITY, max_body=MAX_BODY)
    try:
        for chunk in chunks:
            reply = reader.feed(chunk)
            if reply is not None:
                event("read the strict way" if reader._h11 is None else "read by h11")
                return ("reply", reply.status, reply.body, reply.keep_alive)
    except (h11.ProtocolError, ReplyTooLong):
        # Either way no HTTP the service reads: the exporter's DeliveryError.
        return ("refused",)
    return ("waits",)


def _outcome_of_h11(chunks: list[bytes]) -> tuple[Any, ...]:
    """h11 alone, fed the same receives, stopping at the end of the first reply
    (``_outcome_of_reader``)."""
    http = h11.Connection(h11.CLIENT)
    http.send(h11.Request(method="POST", target=TARGET,
                          headers=[("Host", AUTHORITY), ("Content-Length", "0")]))
    http.send(h11.EndOfMessage())
    status, body = 0, b""
    try:
        for chunk in chunks:
            http.receive_data(chunk)
            while (event := http.next_event()) is not h11.NEED_DATA:
                if isinstance(event, h11.Response):
                    status = event.status_code
                elif isinstance(event, h11.Data):
                    body += event.data
                    if len(body) > MAX_BODY:
                        return ("refused",)
                elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                    # h11's own word: both done, nothing more read, not closed.
                    keep = (http.our_state is h11.DONE and http.their_state is h11.DONE
                            and http.trailing_data == (b"", False))
                    return ("reply", status, body, keep)
    except h11.ProtocolError:
        return ("refused",)
    return ("waits",)


_LINE_ENDS = st.sampled_from([b"\r\n"] * 20 + [b"\n", b"\r", b"\r\n ", b"\n\r"])
# Mostly what listeners write, sometimes any bytes.
_WRITTEN = st.sampled_from([b"OK", b"", b" ", b"Not Found", b"\xe9t\xe9", b"a\tb", b"a  b",
                           b"text/xml; charset=utf-8", b"a\x00b", b"x\x7f"])
_TEXT = st.one_of(_WRITTEN, _WRITTEN, _WRITTEN, st.binary(max_size=12))


@st.composite
def _replies(draw: st.DrawFn) -> list[bytes]:
    """A reply as listeners send it, or nearly, cut into the receives that bring it."""
    body = draw(st.binary(max_size=64))
    version = draw(st.sampled_from([b"HTTP/1.1"] * 20 + [b"HTTP/1.0"] * 10 + [
        b"HTTP/2.0", b"HTTP/1.2", b"http/1.1", b"HTTP/1.1 ", b"HTTP/11"]))
    status = draw(st.sampled_from([b"200"] * 30 + [b"204", b"304", b"100", b"101", b"400",
                                                    b"500", b"99", b"2000", b"2x0"]))
    reason = draw(st.none() | _TEXT)
    line_end = draw(_LINE_ENDS)
    lines = [version + b" " + status + (b"" if reason is None else b" " + reason)]
    framing = draw(st.sampled_from(["length"] * 6 + ["chunked", "none", "both", "twice"]))
    lengths = {"length": [str(len(body)).encode()], "both": [str(len(body)).encode()],
               "twice": [str(len(body)).encode(), draw(st.sampled_from(
                   [str(len(body)).encode(), b"0", b"7"]))]}.get(framing, [])
    lengths = [draw(st.sampled_from([value] * 30 + [
        b"+" + value, b" " + value + b" ", value + b", " + value, b"0x1", b"\xd9\xa5",
        b"9" * 30, b"-1", str(int(value) + 3).encode(), b"0" * 20 + value,
        b"0" * (19 - len(value)) + value])) for value in lengths]
    headers = [(b"Content-Length", value) for value in lengths]
    if framing in ("chunked", "both"):
        headers.append((b"Transfer-Encoding", draw(st.sampled_from(
            [b"chunked", b"Chunked", b"gzip, chunked", b"identity"]))))
        size = draw(st.integers(0, len(body)))
        body = b"".join(b"%x\r\n%b\r\n" % (len(part), part) for part in (
            body[:size], body[size:]) if part) + b"0\r\n\r\n"
    headers += draw(st.lists(st.tuples(
        st.sampled_from([b"Connection", b"connection", b"CIMExport", b"Content-Type",
                         b"Server", b"X-A", b"Keep-Alive"] * 3 + [b"Bad Name", b"", b"K\xe9y"]),
        st.sampled_from([b"close", b"keep-alive", b"Keep-Alive, close", b"upgrade,CLOSE",
                         b" close ", b"MethodResponse", b"text/xml"]) | _TEXT), max_size=4))
    draw(st.randoms()).shuffle(headers)
    separator = draw(st.sampled_from([b": "] * 20 + [b":", b" : ", b":\t", b": \r\n "]))
    lines += [name + separator + value for name, value in headers]
    data = line_end.join(lines) + line_end + line_end + body
    data += draw(st.sampled_from([b""] * 12 + [b"HTTP/1.1 200 OK\r\n", b"\r\n", b"x"]))
    if draw(st.integers(0, 3)) == 0:  # one byte changed, added or taken away anywhere
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.sampled_from([b"", b"\r", b"\n", b" ", b"\x00", b":",
                                                 b"0"])) + data[at + draw(st.integers(0, 1)):]
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=4)))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


@given(_replies())
@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example([PYWBEM_REPLY])
@example([b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcHTTP/1.1 200 OK\r\n"])
@example([b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n", b"x" * 5000])
@example([b"\r\n"])  # no status line: refused at once, not at the deadline (a review)
@example([b"\x00garbage"])
@example([b"HTTP/1.1 200 OK\r\nContent-Length: 0000000000000000000005\r\n\r\nhello"])
def test_the_strict_reader_answers_as_h11_does(chunks: list[bytes]) -> None:
    # Before the listener closes (a reader that waits where h11 refuses waits
    # for the deadline), and after.
    assert _outcome_of_reader(chunks) == _outcome_of_h11(chunks)
    assert _outcome_of_reader([*chunks, b""]) == _outcome_of_h11([*chunks, b""])


@pytest.mark.parametrize("reply", [
    PYWBEM_REPLY,
    b"HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\nContent-Length: 5\r\n\r\n<CIM>",
    b"HTTP/1.1 200 OK\r\nconnection: Keep-Alive\r\ncontent-length:5\r\n\r\n<CIM>",
    b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 5\r\n\r\nerror",
], ids=["pywbem", "pegasus-like", "lower-case", "error"])
def test_the_form_listeners_send_is_read_without_h11(reply: bytes) -> None:
    # The point of the strict reader: without it every reply costs h11's state
    # machine. Cut anywhere, the same.
    for cut in range(len(reply)):
        reader = ReplyReader(TARGET, AUTHORITY, max_body=MAX_BODY)
        got = reader.feed(reply[:cut]) if cut else None
        got = got or reader.feed(reply[cut:])
        assert got is not None and reader._h11 is None
        assert _outcome_of_h11([reply]) == ("reply", got.status, got.body, got.keep_alive)


def test_a_head_that_trickles_in_is_searched_once() -> None:
    # Each receive searched the whole buffer again: a 16 KiB head sent a byte
    # at a time cost 16 K searches of up to 16 KiB (a review).
    reader = ReplyReader(TARGET, AUTHORITY, max_body=MAX_BODY)
    searched = []
    head = b"HTTP/1.1 200 OK\r\n" + b"X-Pad: " + b"p" * 16000 + b"\r\nContent-Length: 2\r\n\r\n"
    original = export_http._HEAD_END

    class Counting:
        def search(self, buffer: bytearray, start: int, end: int) -> Any:
            searched.append(min(end, len(buffer)) - start)
            return original.search(buffer, start, end)

    export_http._HEAD_END = Counting()  # type: ignore[assignment]
    try:
        for byte in range(len(head)):
            assert reader.feed(head[byte:byte + 1]) is None
        assert reader.feed(b"ok") == Reply(200, b"ok", True)
    finally:
        export_http._HEAD_END = original
    assert sum(searched) < 4 * len(head)


def test_a_declared_length_over_the_limit_is_refused_before_the_body_comes() -> None:
    # A listener that announces 10 GB would otherwise be read until the deadline.
    reader = ReplyReader(TARGET, AUTHORITY, max_body=MAX_BODY)
    with pytest.raises(ReplyTooLong, match="over 4096 bytes"):
        reader.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10000000000\r\n\r\n")


@pytest.mark.parametrize(("target", "authority"), [
    ("/a b", AUTHORITY), ("/a\r\nX-Forged: 1", AUTHORITY), ("/\xe9", AUTHORITY),
    ("/", "host\r\nX-Forged: 1"),
])
def test_a_request_line_is_made_only_of_what_h11_accepts(target: str, authority: str) -> None:
    with pytest.raises(h11.LocalProtocolError):
        check_request_target(target, authority)


def test_the_request_head_is_one_h11_reads_as_sent() -> None:
    server = h11.Connection(h11.SERVER)
    server.receive_data(request_head(TARGET, AUTHORITY, 3) + b"abc")
    request = server.next_event()
    assert isinstance(request, h11.Request)
    assert (request.method, request.target) == (b"POST", TARGET.encode())
    assert dict(request.headers) == {
        b"host": AUTHORITY.encode(), b"content-type": b'application/xml; charset="utf-8"',
        b"content-length": b"3", b"cimexport": b"MethodRequest",
        b"cimexportmethod": b"ExportIndication"}
    assert server.next_event() == h11.Data(data=b"abc")
