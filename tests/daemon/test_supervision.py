"""The daemon's supervisor: a dead or stuck I/O loop or hold timer ends the daemon with
status 1 (systemd restarts it), and the watchdog is fed only while the loop turns.

The first build's I/O loop could die while the process stayed up, so systemd
never restarted it and every client was refused from then on.
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from typing import Any

import pytest

from lmi_mount import daemon
from lmi_mount.server.app import CimServer


class _Http:
    def __init__(self, alive: bool) -> None:
        self.is_alive = alive

    def alive(self, within: float) -> bool:
        return self.is_alive


class _Indications:
    def __init__(self, alive: bool) -> None:
        self.is_alive = alive

    def alive(self) -> bool:
        return self.is_alive


class _Jobs:
    def __init__(self, alive: bool) -> None:
        self.alive = alive


class _Server:
    """CimServer's threads, with its own judgement of them (``CimServer.alive``)."""

    alive = CimServer.alive

    def __init__(self, alive: bool = True, indications: bool = True, windows: bool = True
                 ) -> None:
        self.http = _Http(alive)
        self.indications = _Indications(indications)
        self.jobs = _Jobs(windows)


class _Engine:
    def __init__(self, timers: bool = True) -> None:
        self.timers_alive = timers


@pytest.fixture
def fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(daemon, "SUPERVISE_SECONDS", 0.01)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)


def test_a_dead_io_loop_ends_the_daemon(fast: None) -> None:
    failure = daemon._supervise(_Server(alive=False), _Engine(), threading.Event())  # type: ignore[arg-type]
    assert failure == "the HTTP I/O loop stopped"


def test_a_dead_indication_thread_ends_the_daemon(fast: None) -> None:
    failure = daemon._supervise(_Server(indications=False), _Engine(),  # type: ignore[arg-type]
                                threading.Event())
    assert failure == "an indication thread stopped"


def test_a_dead_windows_thread_ends_the_daemon(fast: None) -> None:
    # Without it no call that outlasts its window is answered with its job.
    failure = daemon._supervise(_Server(windows=False), _Engine(),  # type: ignore[arg-type]
                                threading.Event())
    assert failure == "the thread that ends method calls' synchronous windows stopped"


def test_a_dead_hold_timer_ends_the_daemon(fast: None) -> None:
    failure = daemon._supervise(_Server(), _Engine(timers=False), threading.Event())  # type: ignore[arg-type]
    assert failure == "the hold timer thread stopped"


def test_a_requested_stop_is_no_failure(fast: None) -> None:
    stop = threading.Event()
    stop.set()
    assert daemon._supervise(_Server(), _Engine(), stop) is None  # type: ignore[arg-type]


def test_the_watchdog_is_fed_only_while_the_loop_turns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    address = str(tmp_path / "notify")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(address)
    listener.settimeout(2)
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    monkeypatch.setenv("WATCHDOG_USEC", "40000")  # 40 ms: fed every 20 ms
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    server: Any = _Server()
    stop = threading.Event()
    result: list[str | None] = []
    thread = threading.Thread(target=lambda: result.append(
        daemon._supervise(server, _Engine(), stop)))  # type: ignore[arg-type]
    thread.start()
    try:
        assert listener.recv(64) == b"WATCHDOG=1"
        server.http.is_alive = False  # the loop stands still from now on
        thread.join(timeout=5)
        assert result == ["the HTTP I/O loop stopped"]
        listener.settimeout(0.1)
        fed = []
        try:
            while True:
                fed.append(listener.recv(64))
        except TimeoutError:
            pass
        assert len(fed) <= 2, "no more food once the loop stopped"
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()
