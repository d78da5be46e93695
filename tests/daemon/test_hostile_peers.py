"""Hostile peers against a real lmi-mountd: slow connections and password guessing.

The first build let 260 connections that sent a byte a second keep a real client at
503 for 76 of 80 tries, and let ~50 wrong passwords a second reach the password hash.
The goals: with 500 slow connections open from one address, a real client's requests
succeed at least 99 % of the time; under 32 guessing connections at most 10 wrong
passwords a second reach the hash while a right login from another address still gets
in. The figures are printed (``pytest -s``); the rates are asserted (they are counts,
not clocks).
"""

from __future__ import annotations

import contextlib
import socket
import statistics
import threading
import time
from pathlib import Path

import pytest
from pywbem import WBEMConnection

from tests.daemon import sandbox
from tests.daemon.sandbox import NAMESPACE, PASSWORD, USER
from tests.server.rawhttp import basic, cim_request, read_response
from tests.support.skips import requires_root

SLOW_CONNECTIONS = 500
SLOW_SECONDS = 5.0  # several rounds of the slow peers' bytes
GUESSERS = 32
GUESSING_SECONDS = 5.0
SERVICE = "LMI_MountConfigurationService"
ENUMERATE = (
    b'<?xml version="1.0" encoding="utf-8" ?><CIM CIMVERSION="2.0" DTDVERSION="2.0">'
    b'<MESSAGE ID="1" PROTOCOLVERSION="1.0"><SIMPLEREQ>'
    b'<IMETHODCALL NAME="EnumerateInstanceNames"><LOCALNAMESPACEPATH>'
    b'<NAMESPACE NAME="root"/><NAMESPACE NAME="cimv2"/></LOCALNAMESPACEPATH>'
    b'<IPARAMVALUE NAME="ClassName"><CLASSNAME NAME="LMI_MountConfigurationService"/>'
    b"</IPARAMVALUE></IMETHODCALL></SIMPLEREQ></MESSAGE></CIM>")

pytestmark = [pytest.mark.root, requires_root]


class SlowPeers(threading.Thread):
    """``count`` connections that each send one byte a second and never finish a
    request head; one the server closes is opened again at once."""

    def __init__(self, port: int, count: int) -> None:
        super().__init__(name="slow-peers", daemon=True)
        self.port, self.count = port, count
        self.stop = threading.Event()
        self.opened = 0
        self.ready = threading.Event()

    def _open(self) -> socket.socket | None:
        with contextlib.suppress(OSError):
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=1)
            sock.setblocking(False)
            self.opened += 1
            return sock
        return None

    def run(self) -> None:
        sockets = [self._open() for _ in range(self.count)]
        self.ready.set()
        while not self.stop.wait(1.0):
            for index, sock in enumerate(sockets):
                try:
                    if sock is None:
                        raise OSError
                    sock.send(b"P")
                except OSError:
                    if sock is not None:
                        sock.close()
                    sockets[index] = self._open()
        for sock in sockets:
            if sock is not None:
                sock.close()


def test_500_slow_connections_keep_no_real_client_out(tmp_path: Path) -> None:
    with sandbox.running(tmp_path / "sandbox") as daemon:
        peers = SlowPeers(daemon.http_port, SLOW_CONNECTIONS)
        peers.start()
        assert peers.ready.wait(60)
        succeeded, latencies, failures = 0, [], []
        started = time.monotonic()
        try:
            while time.monotonic() - started < SLOW_SECONDS:
                # A new connection each time, as a console polling many hosts makes.
                begun = time.perf_counter()
                conn = WBEMConnection(daemon.http_url, (USER, PASSWORD),
                                      default_namespace=NAMESPACE, timeout=10)
                try:
                    assert len(conn.EnumerateInstanceNames(SERVICE)) == 1
                    succeeded += 1
                    latencies.append((time.perf_counter() - begun) * 1000)
                except Exception as exc:  # counted: the goal is a rate
                    failures.append(repr(exc)[:200])
                finally:
                    conn.close()
        finally:
            peers.stop.set()
            peers.join(30)
        requests = succeeded + len(failures)
        print(f"\n{SLOW_CONNECTIONS} slow connections for {SLOW_SECONDS:.0f} s ({peers.opened} "
              f"opened in all: the server closes the oldest that never sent a whole head): "
              f"{succeeded}/{requests} requests on new connections succeeded "
              f"({succeeded / requests:.1%}), median {statistics.median(latencies):.1f} ms, "
              f"slowest {max(latencies):.1f} ms")
        assert peers.opened > SLOW_CONNECTIONS, "no slow connection was ever closed"
        assert succeeded >= 0.99 * requests, failures[:5]
        assert daemon.stop(timeout=30) == 0


def test_32_guessing_connections_reach_the_hash_a_few_times_a_second(
        tmp_path: Path) -> None:
    with sandbox.running(tmp_path / "sandbox") as daemon:
        stop = threading.Event()
        sent = [0] * GUESSERS
        wrong = cim_request(ENUMERATE, method="EnumerateInstanceNames",
                            auth=basic(USER, "not-the-password"))

        def guess(number: int) -> None:
            while not stop.is_set():
                with contextlib.suppress(OSError, ConnectionError), socket.create_connection(
                        ("127.0.0.1", daemon.http_port), timeout=10) as sock:
                    stream = sock.makefile("rb")
                    while not stop.is_set():
                        sock.sendall(wrong)
                        assert read_response(stream).status == 401
                        sent[number] += 1

        right = cim_request(ENUMERATE, method="EnumerateInstanceNames",
                            auth=basic(USER, PASSWORD))
        right_ms: list[float] = []
        guessers = [threading.Thread(target=guess, args=(n,), daemon=True)
                    for n in range(GUESSERS)]
        hashed_before = daemon.output().count("wrong password for")
        started = time.monotonic()
        for guesser in guessers:
            guesser.start()
        try:
            while time.monotonic() - started < GUESSING_SECONDS:
                time.sleep(0.5)
                # The administrator, from another address of this host.
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                    sock.settimeout(10)
                    sock.bind(("127.0.0.2", 0))
                    begun = time.perf_counter()
                    sock.connect(("127.0.0.1", daemon.http_port))
                    sock.sendall(right)
                    response = read_response(sock.makefile("rb"))
                    right_ms.append((time.perf_counter() - begun) * 1000)
                    assert response.status == 200, response
        finally:
            stop.set()
            for guesser in guessers:
                guesser.join(30)
        elapsed = time.monotonic() - started
        hashed = daemon.output().count("wrong password for") - hashed_before
        print(f"\n{GUESSERS} guessing connections for {elapsed:.1f} s: {sum(sent)} wrong "
              f"passwords sent ({sum(sent) / elapsed:.0f}/s), {hashed} reached the hash "
              f"({hashed / elapsed:.1f}/s); right logins from another address: median "
              f"{statistics.median(right_ms):.1f} ms, slowest {max(right_ms):.1f} ms")
        assert sum(sent) > hashed * 10, "the guessers hardly ran: nothing was measured"
        assert hashed / elapsed <= 10
        assert daemon.stop(timeout=30) == 0
