"""A raw HTTP/1.1 client for the server tests: what a careful attacker or a picky client
sends and sees, byte for byte (http.client hides 100 Continue, trailers and pipelining).

Owns: reading one response (status, header fields, body by Content-Length,
chunks with their trailer, or up to the close) from a socket's file.
Must not know: CIM or the server's internals.
"""

from __future__ import annotations

import base64
import socket
from dataclasses import dataclass, field
from typing import BinaryIO


@dataclass
class RawResponse:
    status: int
    reason: str
    headers: dict[str, str]
    body: bytes
    trailers: dict[str, str] = field(default_factory=dict)
    interim: list[int] = field(default_factory=list)
    complete: bool = True

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


def _fields(stream: BinaryIO) -> dict[str, str]:
    fields: dict[str, str] = {}
    while True:
        line = stream.readline(65536)
        if line in (b"\r\n", b"\n", b""):
            return fields
        name, _, value = line.decode("latin-1").partition(":")
        fields[name.strip().lower()] = value.strip()


def read_response(stream: BinaryIO) -> RawResponse:
    """One response from ``stream`` (a socket's ``makefile("rb")``)."""
    interim = []
    while True:
        line = stream.readline(65536)
        if not line:
            raise ConnectionError("the server closed the connection without a response")
        version, status_text, *reason = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
        assert version.startswith("HTTP/1."), line
        status = int(status_text)
        headers = _fields(stream)
        if 100 <= status < 200:
            interim.append(status)
            continue
        break
    response = RawResponse(status, reason[0] if reason else "", headers, b"", interim=interim)
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = bytearray()
        while True:
            size_line = stream.readline(1024)
            if not size_line:
                response.complete = False
                break
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                response.trailers = _fields(stream)
                break
            body += stream.read(size)
            stream.readline(16)
        response.body = bytes(body)
    elif "content-length" in headers:
        response.body = stream.read(int(headers["content-length"]))
    else:
        response.body = stream.read()
    return response


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def cim_request(body: bytes, *, method: str = "GetClass", namespace: str = "root/cimv2",
                auth: str | None = None, extra: dict[str, str] | None = None,
                omit: tuple[str, ...] = ()) -> bytes:
    """A POST with the CIM-XML headers (``omit`` leaves some out, ``extra`` adds or replaces)."""
    headers = {
        "Host": "127.0.0.1",
        "Content-Type": 'application/xml; charset="utf-8"',
        "Content-Length": str(len(body)),
        "CIMOperation": "MethodCall",
        "CIMMethod": method,
        "CIMObject": namespace,
    }
    if auth is not None:
        headers["Authorization"] = auth
    headers.update(extra or {})
    head = "POST /cimom HTTP/1.1\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in headers.items() if k not in omit) + "\r\n"
    return head.encode("latin-1") + body


def exchange(sock: socket.socket, data: bytes) -> RawResponse:
    sock.sendall(data)
    return read_response(sock.makefile("rb"))
