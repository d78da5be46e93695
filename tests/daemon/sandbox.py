"""A real ``lmi-mountd --sandbox`` process for the daemon tests, and the clients' environment.

Owns: starting the daemon on free 127.0.0.1 ports (asked of the kernel, then
passed with ``--http-port``/``--https-port``), knowing that it is ready from
its sd_notify(3) ``READY=1`` on a notification socket of our own (as systemd
would), stopping it with SIGTERM, and reading what it wrote and what it has
mounted (its private namespace's ``/proc/PID/mountinfo``). Must not know:
what the tests ask of it.

The daemon enters a private mount namespace itself, so the test process
needs none: whatever it mounts dies with it.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

PASSWORD = "pw"
USER = "sandbox"
NAMESPACE = "root/cimv2"
START_TIMEOUT = 20.0


def lmi_mountd() -> list[str]:
    """The daemon's command: the installed console script, else this interpreter on the module."""
    script = shutil.which("lmi-mountd")
    if script is not None:
        return [script]
    return [sys.executable, "-c", "import sys; from lmi_mount.cli import mountd_main; "
            "sys.exit(mountd_main())"]


def client_env() -> dict[str, str]:
    """The environment for client tools: requests prefers REQUESTS_CA_BUNDLE (and
    CURL_CA_BUNDLE) over pywbemcli's --ca-certs, so they must not be set."""
    return {k: v for k, v in os.environ.items()
            if k not in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "NOTIFY_SOCKET",
                         "JOURNAL_STREAM")}


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports the kernel hands out on 127.0.0.1 right now."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclass
class Daemon:
    """A running ``lmi-mountd --sandbox ROOT``."""

    root: Path
    process: subprocess.Popen[bytes]
    http_port: int
    https_port: int
    log: Path
    notify: socket.socket
    notifications: list[str] = field(default_factory=list)

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def https_url(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    @property
    def cafile(self) -> Path:
        """The sandbox's self-signed certificate: the CA to trust for HTTPS."""
        return self.root / "tls" / "server.pem"

    @property
    def fstab(self) -> Path:
        return self.root / "fstab"

    def output(self) -> str:
        """What the daemon wrote to stdout and stderr so far."""
        return self.log.read_text(encoding="utf-8", errors="replace")

    def mountinfo(self) -> str:
        """The mount table of the daemon's private namespace."""
        return Path(f"/proc/{self.process.pid}/mountinfo").read_text(encoding="utf-8")

    def receive(self, wanted: str, timeout: float) -> bool:
        """Wait for the notification ``wanted`` (e.g. ``READY=1``); False if the daemon
        exits or the time runs out first."""
        deadline = time.monotonic() + timeout
        while wanted not in self.notifications:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            ready, _, _ = select.select([self.notify], [], [], min(remaining, 0.1))
            if ready:
                self.notifications.extend(self.notify.recv(4096).decode().split("\n"))
            elif self.process.poll() is not None:
                return wanted in self.notifications
        return True

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, then the exit status (TimeoutExpired if it does not exit in time)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        """End the daemon whatever its state (for clean-up after a failed test)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.notify.close()


def start(root: Path, *extra: str, env: Mapping[str, str] | None = None,
          password: str = PASSWORD, log_dir: Path | None = None, attempts: int = 3) -> Daemon:
    """Start ``lmi-mountd --sandbox root`` and wait for its READY=1.

    Its output goes to a file in ``log_dir`` (default: beside ``root``).

    A port taken between asking the kernel for it and the daemon's bind makes
    the daemon exit 1 ("cannot serve"); that is retried on other ports.
    """
    root.mkdir(parents=True, exist_ok=True)
    for attempt in range(attempts):
        http_port, https_port = free_ports(2)
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        # An abstract address (sd_notify(3): a leading "@"), private to this run.
        address = f"\0lmi-mountd-test-{os.getpid()}-{time.monotonic_ns()}"
        notify.bind(address)
        log = (log_dir or root.parent) / f"{root.name}-lmi-mountd-{attempt}.log"
        command: Sequence[str] = [
            *lmi_mountd(), "--sandbox", str(root), "--sandbox-password", password,
            "--http-port", str(http_port), "--https-port", str(https_port), *extra,
        ]
        with open(log, "wb") as output:
            process = subprocess.Popen(
                command, stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**client_env(), **(env or {}), "NOTIFY_SOCKET": "@" + address[1:]},
            )
        daemon = Daemon(root, process, http_port, https_port, log, notify)
        if daemon.receive("READY=1", START_TIMEOUT):
            return daemon
        status = process.poll()
        daemon.kill()
        if status == 1 and "cannot serve" in daemon.output() and attempt + 1 < attempts:
            continue
        raise RuntimeError(f"lmi-mountd did not get ready (exit status {status}):\n"
                           f"{daemon.output()}")
    raise AssertionError("unreachable")


@contextlib.contextmanager
def running(root: Path, *extra: str, env: Mapping[str, str] | None = None,
            password: str = PASSWORD, log_dir: Path | None = None) -> Iterator[Daemon]:
    """``start`` as a context: the daemon is killed on the way out if still running."""
    daemon = start(root, *extra, env=env, password=password, log_dir=log_dir)
    try:
        yield daemon
    finally:
        daemon.kill()
