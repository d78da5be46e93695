"""HTTP/1.1 framing of export requests to listeners: the client side of delivery.

Owns: the head of an export request, and reading a listener's reply out of
the bytes its connection gives, without I/O (``ReplyReader``).

A listener's reply is read in one of two ways. The form that listeners send
(a status line starting ``HTTP/1.``, header fields, a body of one
``Content-Length`` of at most 20 digits; pywbem's ``WBEMListener``,
OpenPegasus and sfcb send it) is taken by a strict parser here; anything
else or anything it does not take whole (a chunked body, a 1xx, a body to
the connection's end, 204/304, folded or bare-LF lines, another HTTP
version, a head over 16 KiB, a reply that does not start like a status
line, an end of connection) goes, with every byte read so far, to h11, the
parser the server uses for requests. The strict parser only takes what h11
would read the same way: the test suite feeds the same receives to both and
requires the same answer (a reply, a refusal, or waiting for more), before
and after the end of the connection.

Why not h11 for all of it: its state machine cost a delivery thread about
0.38 ms per indication, two thirds of one delivery; without it the service
delivers over twice the indications per second for its CPU
(``docs/architecture.rst``, "Delivery on the common form").

Must not know: CIM-XML, sockets, deadlines.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

import h11

from lmi_mount.text import decimal

#: Where h11 ends a head (it takes a bare LF as a line end; the strict parser
#: does not, and leaves such a head to h11).
_HEAD_END: Final = re.compile(rb"\n\r?\n")
#: h11's own limit for a head (``max_incomplete_event_size``).
MAX_HEAD_BYTES: Final = 16 * 1024
#: RFC 9112 4 and 5, without obs-fold, bare LF or control characters; the
#: reason phrase may be left out, as h11 allows.
_FIELD_VALUE: Final = rb"(?:[\x21-\x7e\x80-\xff]+(?:[ \t]+[\x21-\x7e\x80-\xff]+)*)?"
_SIMPLE_HEAD: Final = re.compile(
    rb"HTTP/1\.([01]) ([0-9]{3})(?: [\t \x21-\x7e\x80-\xff]*)?\r\n"
    rb"(?:[-!#$%&'*+.^_`|~0-9A-Za-z]+:[ \t]*" + _FIELD_VALUE + rb"[ \t]*\r\n)*"
    rb"\r\n")
#: The header fields that frame the body or end the connection; the strict
#: parser reads these only.
_FRAMING: Final = re.compile(
    rb"\r\n(content-length|transfer-encoding|connection):[ \t]*(" + _FIELD_VALUE + rb")",
    re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Reply:
    """A listener's whole reply to one request."""

    status: int
    body: bytes
    #: Whether the connection may carry the next request (HTTP/1.1 without
    #: ``Connection: close``, and nothing sent after the reply).
    keep_alive: bool


class ReplyTooLong(Exception):
    """The reply's body is over the limit the reader was given."""


class ReplyReader:
    """Reads one reply to one request (a POST to ``target`` on ``authority``).

    ``feed(data)`` with what each receive gave, ``b""`` at the end of the
    connection; it returns the Reply once it is whole, else None. h11's
    errors (``h11.ProtocolError``) and ``ReplyTooLong`` mean the reply is no
    HTTP the service can read.
    """

    __slots__ = ("_authority", "_body", "_buffer", "_h11", "_head", "_max_body", "_searched",
                 "_status", "_target")

    def __init__(self, target: str, authority: str, *, max_body: int) -> None:
        self._target = target
        self._authority = authority
        self._max_body = max_body
        #: What came so far (a bytearray: a reply that trickles in costs no copies).
        self._buffer = bytearray()
        self._head: _SimpleHead | None = None
        #: How much of the buffer holds no end of the head (searched already).
        self._searched = 0
        self._h11: h11.Connection | None = None
        self._status = 0
        self._body = bytearray()

    @property
    def started(self) -> bool:
        """Whether any of the reply has come."""
        return bool(self._buffer) or self._status != 0 or self._h11 is not None

    def feed(self, data: bytes) -> Reply | None:
        if self._h11 is None:
            if data:
                self._buffer += data
                if self._head is None:
                    head = _simple_head(self._buffer, self._searched)
                    if head is True:
                        self._searched = len(self._buffer)
                        return None
                    if head is not False:
                        if head.length > self._max_body:
                            raise ReplyTooLong(f"the listener's reply is over {self._max_body} "
                                               "bytes")
                        self._head = head
                if self._head is not None:
                    return self._simple_reply(self._head)
            # Not the simple form, or the end of the connection: h11's, from
            # the first byte (``data`` is in the buffer already).
            self._h11 = _primed(self._target, self._authority)
            came, self._buffer = bytes(self._buffer), bytearray()
            reply = self._h11_feed(came) if came else None
            if data or reply is not None:
                return reply
        return self._h11_feed(data)

    def _simple_reply(self, head: _SimpleHead) -> Reply | None:
        size = head.end + head.length
        if len(self._buffer) < size:
            return None
        # A listener says nothing unasked: bytes after the reply leave no
        # next request on this connection.
        return Reply(head.status, bytes(self._buffer[head.end:size]),
                     head.keep_alive and len(self._buffer) == size)

    def _h11_feed(self, data: bytes) -> Reply | None:
        http = self._h11
        assert http is not None
        http.receive_data(data)
        while True:
            event = http.next_event()
            if event is h11.NEED_DATA:
                return None
            if isinstance(event, h11.Response):
                self._status = event.status_code
            elif isinstance(event, h11.Data):
                self._body += event.data
                if len(self._body) > self._max_body:
                    raise ReplyTooLong(f"the listener's reply is over {self._max_body} bytes")
            elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                # A body to the end of the connection ends with it (h11 still
                # says DONE for an HTTP/1.1 one).
                keep = (http.our_state is h11.DONE and http.their_state is h11.DONE
                        and not http.trailing_data[0] and not http.trailing_data[1])
                return Reply(self._status, bytes(self._body), keep)
            # InformationalResponse (1xx): the reply follows.


def _primed(target: str, authority: str) -> h11.Connection:
    """An h11 client connection that has sent a POST (the request's body is no
    matter to how its reply is framed)."""
    http = h11.Connection(h11.CLIENT)
    http.send(h11.Request(method="POST", target=target,
                          headers=[("Host", authority), ("Content-Length", "0")]))
    http.send(h11.EndOfMessage())
    return http


@dataclass(frozen=True, slots=True)
class _SimpleHead:
    """A reply's head in the simple form."""

    status: int
    #: Where the body starts, and how long it is.
    end: int
    length: int
    keep_alive: bool


#: How every head in the simple form starts.
_HTTP: Final = b"HTTP/1."
#: The most digits of a Content-Length h11 reads (``CONTENT_LENGTH_MAX_DIGITS``).
_MAX_LENGTH_DIGITS: Final = 20


def _simple_head(buffer: bytearray, searched: int) -> _SimpleHead | bool:
    """The head at the start of ``buffer`` if it is in the simple form, True if
    it may still be (more bytes needed), False if it is not (h11's). No end of
    the head is in the first ``searched`` bytes."""
    if not buffer.startswith(_HTTP[:len(buffer)]):
        # No status line: h11 refuses what it can at once (a blank line, a
        # control character), not at the deadline.
        return False
    end = _HEAD_END.search(buffer, max(0, searched - 2), MAX_HEAD_BYTES + 2)
    if end is None:
        return len(buffer) <= MAX_HEAD_BYTES
    head_end = end.end()
    head = _SIMPLE_HEAD.fullmatch(buffer, 0, head_end)
    if head is None:
        return False
    status = int(head[2])
    if status < 200 or status in (204, 304):
        return False  # no body whatever the headers say, or a reply still to come
    length: int | None = None
    keep_alive = head[1] == b"1"
    for field in _FRAMING.finditer(buffer, head.end(1), head_end):
        name = field[1].lower()
        if name == b"content-length":
            value = (decimal(field[2].decode("ascii", "replace"))
                     if len(field[2]) <= _MAX_LENGTH_DIGITS else None)
            if length is not None or value is None:
                return False  # repeated, no number or too long: h11 judges
            length = value
        elif name == b"transfer-encoding":
            return False
        elif any(token.strip().lower() == b"close" for token in field[2].split(b",")):
            keep_alive = False
    if length is None:
        return False  # a body to the end of the connection
    return _SimpleHead(status, head_end, length, keep_alive)


def request_head(target: str, authority: str, length: int) -> bytes:
    """The head of an export request (DSP0200 7.3: CIMExport, CIMExportMethod)
    with a body of ``length`` bytes. ``check_request_target`` first."""
    return (f"POST {target} HTTP/1.1\r\nHost: {authority}\r\n"
            f'Content-Type: application/xml; charset="utf-8"\r\nContent-Length: {length}\r\n'
            "CIMExport: MethodRequest\r\nCIMExportMethod: ExportIndication\r\n\r\n"
            ).encode("ascii")


def check_request_target(target: str, authority: str) -> None:
    """h11's judgement of a request line and Host field made of a listener's URL
    (``h11.LocalProtocolError`` for a space, a control character, non-ASCII)."""
    if not (target.isascii() and authority.isascii()):
        raise h11.LocalProtocolError(f"{target!r} on {authority!r}: not ASCII")
    h11.Request(method="POST", target=target, headers=[("Host", authority)])
