"""``lmi-mountd``: the CIM-XML service on the mount engine.

Owns: the daemon's life: the command line, the ``[engine]`` and ``[cim]``
sections of its INI file (the server's own sections are read by
``server.config``), the ``--sandbox`` set-up (a private mount namespace, a
scratch fstab and state, a self-signed certificate and a one-time password),
logging to the journal or stderr, systemd readiness, and a graceful stop on
SIGTERM or SIGINT: the listeners close, running requests and jobs finish,
then the engine closes its journal.

Must not know: mount logic, CIM semantics, the wire format.
"""

from __future__ import annotations

import argparse
import configparser
import contextlib
import dataclasses
import gc
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from lmi_mount import __version__, sandbox
from lmi_mount.cim.broker import Broker
from lmi_mount.cim.jobs import DEFAULT_JOB_THREADS
from lmi_mount.engine import DEFAULT_PROTECTED, MountManager
from lmi_mount.linux import files
from lmi_mount.linux.kernel import LinuxKernel, mounted_elsewhere
from lmi_mount.linux.namespace import enter_private_mount_namespace
from lmi_mount.mounts.errors import MountError
from lmi_mount.mounts.escaping import escape_controls
from lmi_mount.mounts.holders import holder_problem
from lmi_mount.mounts.mountinfo import parse_mountinfo
from lmi_mount.server.app import CimServer, server_credentials
from lmi_mount.server.config import ConfigError, ServerConfig, from_ini, read_section
from lmi_mount.server.subscriptions import FILE_NAME as SUBSCRIPTIONS_FILE
from lmi_mount.text import decimal

log = logging.getLogger("lmi_mount.daemon")

DEFAULT_CONFIG = Path("/etc/lmi-mount/lmi-mountd.conf")
#: ``--sandbox`` without a directory: a new one (mkdtemp, mode 0700) is made.
#: A NUL can come in no argument, so no directory given is taken for it.
NEW_SANDBOX = Path("\0new")
SANDBOX_USER = "sandbox"
# Directories a newcomer can mount on and from in the sandbox.
SANDBOX_DIRECTORIES = ("data", "mnt/a", "mnt/b", "mnt/c")


@dataclass(frozen=True)
class EngineSettings:
    """``[engine]``: what the mount engine works on."""

    fstab: Path = Path("/etc/fstab")
    #: In /run: the journal must outlive a restart of the service, not a reboot.
    state_dir: Path = Path("/run/lmi-mount")
    hold_seconds: float = 0.0
    #: Earlier versions of fstab kept beside it (linux.files.backups_of).
    fstab_backups: int = 3
    #: System mount points (with everything below) not unmounted or remounted
    #: without Force unless lmi-mount made the mount.
    protected: tuple[str, ...] = DEFAULT_PROTECTED


@dataclass(frozen=True)
class CimSettings:
    """``[cim]``: how the model answers."""

    synchronous_seconds: float = 5.0
    #: Method calls that may run at once (calls on different mount points run
    #: side by side; a slow mount helper holds one thread while it runs).
    job_threads: int = DEFAULT_JOB_THREADS
    time_before_removal: float = 60.0
    max_goal_settings: int = 1000
    #: Holder of calls that name none and come without an authenticated user.
    default_holder: str = "cim"

    def __post_init__(self) -> None:
        problem = holder_problem(self.default_holder)
        if problem is not None:
            raise ValueError(f"default_holder {self.default_holder!r}: {problem}")


@dataclass(frozen=True)
class Settings:
    server: ServerConfig
    engine: EngineSettings
    cim: CimSettings
    sandbox: Path | None = None
    sandbox_password: str | None = None


def parser() -> argparse.ArgumentParser:
    cli = argparse.ArgumentParser(
        prog="lmi-mountd",
        description="CIM-XML server (DSP0200) for the OpenLMI Mounting Model: Linux mounts and "
        "/etc/fstab managed by pywbem, pywbemcli, sblim wbemcli and other WBEM clients.",
    )
    cli.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    cli.add_argument("--config", type=Path, metavar="FILE",
                     help=f"INI configuration (default {DEFAULT_CONFIG} when it exists)")
    cli.add_argument("--sandbox", type=Path, nargs="?", const=NEW_SANDBOX, metavar="DIR",
                     help="run in a private mount namespace with fstab, state, TLS files and "
                     "playground directories under DIR (default: a new private directory, "
                     "printed at start); nothing reaches the host's mounts or /etc/fstab")
    cli.add_argument("--sandbox-password", metavar="PASSWORD",
                     help=f"password of the sandbox's user {SANDBOX_USER!r} (default: a random "
                     "one, printed at start)")
    cli.add_argument("--listen", action="append", metavar="ADDRESS",
                     help="address to listen on (repeatable; default from the configuration)")
    cli.add_argument("--http-port", type=int, metavar="PORT", help="plain HTTP port (0: none)")
    cli.add_argument("--https-port", type=int, metavar="PORT", help="HTTPS port (0: none)")
    cli.add_argument("--log-level", default="INFO",
                     choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    return cli


def settings(args: argparse.Namespace) -> Settings:
    """The settings of this run, from the configuration file and the command line."""
    overrides: dict[str, Any] = {}
    if args.listen:
        overrides["listen"] = tuple(args.listen)
    for name in ("http_port", "https_port"):
        value = getattr(args, name)
        if value is not None:
            overrides[name] = value or None
    ini = configparser.ConfigParser(interpolation=None)
    default = DEFAULT_CONFIG if DEFAULT_CONFIG.exists() and not args.sandbox else None
    path = args.config or default
    if path is not None:
        try:
            files.check_trusted(path, "configuration")
        except files.UntrustedFile as exc:
            raise ConfigError(str(exc)) from None
        try:
            with open(path, encoding="utf-8") as stream:
                ini.read_file(stream, str(path))
        except (OSError, configparser.Error) as exc:
            raise ConfigError(f"cannot read {path}: {exc}") from None
    engine = read_section(ini, "engine", EngineSettings, str(path))
    cim = read_section(ini, "cim", CimSettings, str(path))
    if cim.job_threads < 1:
        raise ConfigError(f"{path}: [cim] job_threads must be at least 1, not {cim.job_threads}")
    if args.sandbox is None:
        if path is None:
            raise ConfigError(f"no configuration: pass --config FILE, create {DEFAULT_CONFIG}, "
                              "or try --sandbox")
        return Settings(from_ini(ini, str(path), **overrides), engine, cim)
    root = _sandbox_root(args.sandbox)
    password = args.sandbox_password or secrets.token_urlsafe(12)
    certfile, keyfile = _self_signed(root / "tls")
    # The sandbox listens on loopback alone, under its own name and TLS files,
    # and its user is an admin; the rest of the configuration applies as it
    # would on the host (a users file or PAM beside that user: a reader can
    # be tried), and is checked as strictly.
    sandbox_server: dict[str, Any] = {
        "listen": ("127.0.0.1",),
        "hostname": "sandbox.localdomain",
        "users": ((SANDBOX_USER, "admin", password),),
        "certfile": certfile,
        "keyfile": keyfile,
    }
    if not ini.has_option("auth", "plain_http"):
        sandbox_server["plain_http"] = "loopback"
    if not ini.has_option("server", "https_port"):
        sandbox_server["https_port"] = 5989 if certfile else None
    sandbox_server.update(overrides)
    engine = dataclasses.replace(engine, fstab=sandbox.fstab_of(root),
                                 state_dir=sandbox.state_dir_of(root))
    return Settings(from_ini(ini, str(path), **sandbox_server), engine, cim, root, password)


def _sandbox_root(asked: Path) -> Path:
    """The sandbox directory: a new private one for ``NEW_SANDBOX``; else ``asked``,
    made (0700) if missing, and refused unless root's alone and no symlink (its
    key, fstab and journal are trusted; nothing in it is resolved through links)."""
    if asked == NEW_SANDBOX:
        base = "/run" if os.access("/run", os.W_OK) else None
        return Path(tempfile.mkdtemp(prefix="lmi-mount-sandbox-", dir=base))
    root = asked.absolute()
    with contextlib.suppress(FileExistsError):
        root.mkdir(mode=0o700, parents=True)
    try:
        files.check_trusted(root, "sandbox directory")
    except files.UntrustedFile as exc:
        raise ConfigError(str(exc)) from None
    return root


def _self_signed(directory: Path) -> tuple[Path | None, Path | None]:
    """A self-signed certificate for the sandbox (openssl(1)); none without openssl."""
    cert, key = directory / "server.pem", directory / "server.key"
    if cert.exists() and key.exists():
        return cert, key
    openssl = shutil.which("openssl")
    if openssl is None:
        return None, None
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "30",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True,
    )
    return cert, key


def _prepare_sandbox(root: Path) -> None:
    for name in SANDBOX_DIRECTORIES:
        (root / name).mkdir(parents=True, exist_ok=True)
    fstab = sandbox.fstab_of(root)
    if not fstab.exists():
        fstab.write_text("# lmi-mountd sandbox: a scratch fstab, not the system's\n")


def _configure_logging(level: str) -> None:
    # Under systemd, stderr goes to the journal (JOURNAL_STREAM is set): no
    # timestamps of our own, and sd-daemon(3) priority prefixes per line.
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(_JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(_LineFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])


class _LineFormatter(logging.Formatter):
    """One line per message: control characters octal-escaped, as mountinfo
    writes them. Messages carry what clients and the host name (a key value,
    a mount point, a user name); a newline in one must not forge a log line
    (or a journal entry of its own priority). Tracebacks keep their lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape_controls(record.message)
        return super().formatMessage(record)


class _JournalFormatter(_LineFormatter):
    """Each line with the record's sd-daemon(3) priority: journald files every
    line of its stream as an entry of its own, and a traceback's lines (an
    exception's message may hold what a client sent) must not set theirs."""

    _PRIORITY: Final = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
                 logging.CRITICAL: 2}

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{self._PRIORITY.get(record.levelno, 6)}>"
        return "\n".join(prefix + line for line in super().format(record).split("\n"))


def _notify(state: str) -> None:
    """sd_notify(3) for Type=notify units; nothing outside systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(address)
        sock.sendall(state.encode())


#: The cyclic garbage collector's thresholds in the service. CPython's default
#: (700, 10, 10) runs a collection every 700 allocations of containers, and the
#: objects of a model of thousands of mounts are looked at again and again: on
#: a host with 2,000 mounts the indications' latency was p50 61 ms and p99
#: 240 ms with the default, 39 ms and 65 ms with these (benchmarks/
#: indications.py --mounts 2000); with 20 mounts it makes no difference.
GC_THRESHOLDS: Final = (20_000, 20, 20)


def tune_gc() -> None:
    """Collect less often (GC_THRESHOLDS): the service keeps many long-lived
    objects and makes few cycles (its requests' objects go by reference count)."""
    gc.set_threshold(*GC_THRESHOLDS)


def main(argv: Sequence[str] | None = None, *, stop: threading.Event | None = None) -> int:
    args = parser().parse_args(argv)
    _configure_logging(args.log_level)
    if args.sandbox is not None:
        if os.geteuid() != 0:
            print("lmi-mountd: --sandbox needs root (a private mount namespace); "
                  "try: sudo lmi-mountd --sandbox", file=sys.stderr)
            return 2
        # unshare(2) moves only the calling thread: enter before any thread starts.
        enter_private_mount_namespace()
    # The namespace is a copy of the host's: every file system in it now is the
    # host's too, and its options (its superblock's) must not change from here.
    host_file_systems = _file_systems_now() if args.sandbox is not None else frozenset()
    try:
        run = settings(args)
    except ConfigError as exc:
        print(f"lmi-mountd: {exc}", file=sys.stderr)
        return 2
    if run.sandbox is not None:
        _prepare_sandbox(run.sandbox)
    try:
        credentials = server_credentials(run.server)
    except ConfigError as exc:
        print(f"lmi-mountd: {exc}", file=sys.stderr)
        return 2
    stop = stop or threading.Event()
    for number in (signal.SIGTERM, signal.SIGINT):
        if threading.current_thread() is threading.main_thread():
            signal.signal(number, lambda *_: stop.set())

    # The journal names holders: root only (the unit's RuntimeDirectoryMode agrees).
    # A full state file system is the journal's to report (it starts read-only).
    with contextlib.suppress(OSError):
        run.engine.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if run.engine.state_dir.exists():  # a full file system: the journal says so
        try:
            files.check_trusted(run.engine.state_dir, "state directory", secret=True)
        except files.UntrustedFile as exc:
            print(f"lmi-mountd: cannot start: {exc}", file=sys.stderr)
            return 1
    try:
        engine = _start_engine(run, host_file_systems)
    except MountError as exc:
        # A second daemon on the state directory, an unreadable journal: one line.
        print(f"lmi-mountd: cannot start: {exc}", file=sys.stderr)
        return 1
    broker = Broker(engine, host=run.server.hostname,
                    synchronous_seconds=run.cim.synchronous_seconds,
                    job_threads=run.cim.job_threads,
                    # Half the HTTP workers at most wait for a method's result;
                    # the others stay free for reads (see JobManager).
                    max_waiting=max(1, run.server.http.threads // 2),
                    time_before_removal=run.cim.time_before_removal,
                    max_goal_settings=run.cim.max_goal_settings,
                    default_holder=run.cim.default_holder)
    try:
        server = CimServer(run.server, broker, credentials=credentials,
                           subscriptions_file=run.engine.state_dir / SUBSCRIPTIONS_FILE)
        server.start()
    except (OSError, ConfigError) as exc:
        print(f"lmi-mountd: cannot serve: {exc}", file=sys.stderr)
        broker.close()
        engine.close()
        return 1
    tune_gc()
    pid_file = _write_pid_file(run.sandbox) if run.sandbox is not None else None
    try:
        _announce(run, server)
        _notify("READY=1")
        if engine.read_only_reason is not None:
            log.warning("serving reads only: %s", engine.read_only_reason)
            _notify(f"STATUS=read-only: {engine.read_only_reason}")
        failure = _supervise(server, engine, stop)
        _notify("STOPPING=1")
        if failure is not None:
            log.error("%s: lmi-mountd exits so that it is restarted", failure)
        else:
            log.info("stopping: closing the listeners, letting requests and jobs finish")
    finally:
        server.shutdown()
        broker.close()  # waits for running jobs: their mounts and journal records complete
        engine.close()
        if pid_file is not None:
            with contextlib.suppress(OSError):
                pid_file.unlink()
    return 0 if failure is None else 1


def _write_pid_file(root: Path) -> Path | None:
    """``root/lmi-mountd.pid``, written whole (a new file renamed into place); None,
    logged, if it cannot be (the service runs on, ``lmi-mount --sandbox`` will not
    find it). Only the daemon that holds the sandbox's state lock gets here."""
    path = root / sandbox.PID_FILE
    try:
        files.write_new(path, f"{os.getpid()}\n".encode())
    except OSError as exc:
        log.warning("cannot write %s (lmi-mount --sandbox will not find this daemon): %s",
                    path, exc)
        return None
    return path


#: How often the supervisor looks at the threads without a systemd watchdog.
SUPERVISE_SECONDS = 5.0


def _supervise(server: CimServer, engine: MountManager, stop: threading.Event) -> str | None:
    """Wait for ``stop`` while watching the I/O loop and the hold timer; returns
    what died, or None on a requested stop.

    Under systemd's watchdog (``WatchdogSec=``, which sets WATCHDOG_USEC),
    WATCHDOG=1 is sent at half the interval, and only while the I/O loop
    goes round: a loop that is stuck, not only dead, gets the daemon killed
    and restarted.
    """
    watchdog = os.environ.get("WATCHDOG_USEC", "")
    usec = decimal(watchdog) if os.environ.get("WATCHDOG_PID", str(os.getpid())) == str(
        os.getpid()) else None
    interval = min(SUPERVISE_SECONDS, usec / 2e6) if usec else SUPERVISE_SECONDS
    while not stop.wait(interval):
        stopped = server.alive(within=max(2 * interval, 3.0))
        if stopped is not None:
            return stopped
        if not engine.timers_alive:
            return "the hold timer thread stopped"
        if usec:
            _notify("WATCHDOG=1")
    return None


def _start_engine(run: Settings,
                  shared_file_systems: frozenset[tuple[int, int]] = frozenset()) -> MountManager:
    """The engine of ``run``, started (journal opened and holders reconstructed)."""
    return MountManager(LinuxKernel(), fstab_path=run.engine.fstab,
                        state_dir=run.engine.state_dir,
                        hold_seconds=run.engine.hold_seconds,
                        fstab_backups=run.engine.fstab_backups,
                        protected=run.engine.protected,
                        shared_file_systems=shared_file_systems,
                        # A sandbox shares the host's devices: asked at each remount.
                        elsewhere=mounted_elsewhere if run.sandbox is not None else None,
                        ).start()


def _file_systems_now() -> frozenset[tuple[int, int]]:
    """The file systems (major, minor) mounted in this mount namespace now."""
    return frozenset((record.major, record.minor)
                     for record in parse_mountinfo(LinuxKernel().read_mountinfo()))


def _announce(run: Settings, server: CimServer) -> None:
    urls = [f"{'https' if tls else 'http'}://{host}:{port}"
            for host, port, tls in server.addresses]
    log.info("lmi-mountd %s serving %s", __version__, ", ".join(urls))
    if run.sandbox is not None:
        print(
            f"lmi-mountd sandbox in {run.sandbox} (private mount namespace, fstab "
            f"{run.engine.fstab})\n"
            f"  listening on {', '.join(urls)}\n"
            f"  user {SANDBOX_USER!r}, password {run.sandbox_password!r}\n"
            f"  try: pywbemcli -s {urls[0]} -u {SANDBOX_USER} -p {run.sandbox_password} "
            "class invokemethod LMI_MountConfigurationService CreateMount -p Mode=32768 "
            f"-p MountPoint={run.sandbox}/mnt/a -p FileSystemSpec=tmpfs -p FileSystemType=tmpfs",
            file=sys.stderr, flush=True,
        )
