"""HTTP/1.1 for the CIM-XML server: sockets, TLS, request framing, limits, worker threads.

Owns: listening (HTTP and HTTPS), an I/O loop that accepts connections,
completes TLS handshakes and reads every request head and body without
blocking (each head parsed by h11, the body framed here), and a bounded
pool of worker threads that run the application on complete requests and
write the responses (``Content-Length`` when the body is known,
``Transfer-Encoding: chunked`` when it streams). Between requests, the
worker that answered registers a keep-alive connection with the loop's
selector itself (no hand-off to wake the loop for).

The loop's thread serves a request whose turn comes on it itself, at the
end of its turn, without handing it to a worker; a second I/O thread stands
by and takes the loop over if that request runs ``RELIEF_SECONDS`` (it waits
for a mount helper, or for a client to read), and the thread that served it
stands by in turn once it is done, or waits aside until one is needed. The
one that stands by looks every ``RELIEF_SECONDS`` while requests are served
so, and sleeps after a look that found none: only the first request after
such a quiet spell wakes it (see ``HttpServer._serve_here``).

The limits are enforced where the bytes arrive (RFC 9112 framing):

- at most ``max_connections`` open connections: when the table is full, a
  new connection takes the slot of the oldest one that has not completed a
  request head (slow or idle peers cannot starve real clients); when every
  connection has, 503 (or a plain close for TLS);
- ``first_byte_timeout`` from accept (TLS handshake included), and
  ``keepalive_timeout`` between requests, until the first byte of a request;
- ``request_timeout`` from that first byte to the end of the body: a client
  that trickles bytes (slowloris) gets 408 and the connection closes, and no
  worker thread waits for it meanwhile;
- ``max_header_bytes`` and ``max_headers`` (431), ``max_body_bytes`` (413,
  sent before any of the body is read); a chunked request body is refused
  with 411 (CIM clients send Content-Length), another transfer coding is 501;
- ``write_timeout`` for each write of a response;
- at most ``QUEUE_FACTOR`` x ``threads`` requests read and not answered
  yet: the next one gets 503 with ``Retry-After`` at once.

Requests take turns: ``concurrent_requests`` (1) run at a time and the
others wait, in the order they were read, without a thread. Python runs
one thread at a time, and threads that run side by side hand that lock to
each other at every system call: eight requests at once cost about 1.7
times the CPU of the same requests in turn, and fewer were answered per
second. A request that has run ``LONG_REQUEST_SECONDS`` (waiting for a
mount helper's job, for a client to read its response, or a large
enumeration) stops counting and the next one starts: a slow request holds
up those behind it for that long at most, and up to ``threads`` run when
that many are slow.

A request may be answered before its worker is done with it
(``answer_elsewhere``: a method call whose synchronous window ends first is
answered with its job from another thread while its work goes on here).
The connection then carries the client's next request, and the worker no
longer counts as one of ``threads``. Up to ``detached_requests`` requests
hold that right at once, taken when they ask for it, so that it is never
refused later: a request that finds none left is told so at once (and
its application waits for its work elsewhere, as before). Such an answer
is written by one of ``detached_requests`` threads kept for that, so that
the thread that sends it never waits for a client.

Must not know: CIM, XML, authentication. The application is two callables:
``early(head)`` (on the I/O thread, when the head is complete: cheap checks
that can answer before the body is read) and ``handle(request)`` (on a
worker thread).
"""

from __future__ import annotations

import contextlib
import enum
import errno
import functools
import logging
import math
import re
import selectors
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from typing import Final, Protocol

import h11

from lmi_mount.text import decimal

log = logging.getLogger("lmi_mount.server.http")

SERVER_NAME: Final = "lmi-mountd"
_READ_SIZE: Final = 64 * 1024
# A client whose request is refused before its body was read keeps sending
# it for a moment; read and drop that much (for that long) before closing,
# so that the client sees the response instead of a connection reset
# (the "lingering close" of RFC 9112 9.6).
_LINGER_SECONDS: Final = 2.0
_LINGER_BYTES: Final = 8 * 1024 * 1024
# Requests that may wait for a worker, per worker, before the next is
# answered 503 at once: enough for the bursts of parallel clients (a console
# polling many classes at once), not a queue without bound behind slow calls.
QUEUE_FACTOR: Final = 8
# How long a listener rests when the process has no descriptor left to accept
# with (EMFILE and the like).
ACCEPT_PAUSE_SECONDS: Final = 0.5
# The server and the request a worker thread runs (give_up_turn, answer_elsewhere).
_turn = threading.local()
# A request that has run this long no longer counts against
# ``concurrent_requests``: longer than a request that only computes takes
# (a CreateMount takes 2 to 4 ms of CPU), short for one that waits.
LONG_REQUEST_SECONDS: Final = 0.025
# How long the I/O loop's thread may serve a request itself before the thread
# that stands by takes the loop over (see ``HttpServer._serve_here``): the
# longest the loop stands still for one request, as long as a request runs
# before the next one starts.
RELIEF_SECONDS: Final = LONG_REQUEST_SECONDS


@dataclass(frozen=True)
class HttpLimits:
    """Limits of the HTTP layer (the ``[http]`` section of the config)."""

    max_connections: int = 256
    threads: int = 8
    concurrent_requests: int = 1
    max_header_bytes: int = 16 * 1024
    max_headers: int = 64
    max_body_bytes: int = 4 * 1024 * 1024
    first_byte_timeout: float = 5.0
    request_timeout: float = 15.0
    keepalive_timeout: float = 15.0
    write_timeout: float = 30.0
    detached_requests: int = 64

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if value <= 0:
                raise ValueError(f"{name} must be positive, not {value}")


@dataclass(frozen=True)
class Listener:
    """One listening address: plain HTTP when ``tls`` is None."""

    host: str
    port: int
    tls: ssl.SSLContext | None = None


class Headers:
    """Request header fields, by case-insensitive name, in arrival order."""

    def __init__(self, fields: Iterable[tuple[str, str]] = ()) -> None:
        self._fields = list(fields)
        # Indexed once: a request's head is asked a dozen names.
        self._by_name: dict[str, list[str]] = {}
        for name, value in self._fields:
            self._by_name.setdefault(name.lower(), []).append(value)

    def get(self, name: str, default: str | None = None) -> str | None:
        """The value of ``name``; repeated fields are joined with ", " (RFC 9110 5.3)."""
        values = self._by_name.get(name.lower())
        return ", ".join(values) if values else default

    def get_all(self, name: str) -> list[str]:
        return list(self._by_name.get(name.lower(), ()))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._by_name

    def items(self) -> list[tuple[str, str]]:
        return list(self._fields)


@dataclass(frozen=True)
class RequestHead:
    method: str
    target: str
    version: str
    headers: Headers
    peer: tuple[str, int]
    tls: bool


@dataclass(frozen=True)
class Request:
    head: RequestHead
    body: bytes

    @property
    def headers(self) -> Headers:
        return self.head.headers


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes | Iterable[bytes] = b""
    close: bool = False
    #: The trailer fields a streamed body may end with (``BodyAborted``), announced
    #: in a ``Trailer`` field when the response is chunked.
    trailers: tuple[str, ...] = ()


class BodyAborted(Exception):
    """Raised by a streaming body that cannot go on: the response ends with ``trailers``
    in the chunked trailer section and the connection closes (the client sees an
    incomplete body, never a silently shortened one)."""

    def __init__(self, message: str, trailers: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.trailers = list(trailers)


class Application(Protocol):
    def early(self, head: RequestHead) -> Response | None: ...

    def handle(self, request: Request) -> Response: ...


def simple_response(
    status: int, message: str = "", headers: Sequence[tuple[str, str]] = (), *, close: bool = False
) -> Response:
    """A short text/plain response saying ``message``."""
    body = (message + "\n").encode("utf-8") if message else b""
    fields = list(headers)
    if body:
        fields.append(("Content-Type", "text/plain; charset=utf-8"))
    return Response(status, fields, body, close)


class _State(enum.Enum):
    HANDSHAKE = "handshake"
    HEAD = "head"
    BODY = "body"
    BUSY = "busy"
    LINGER = "linger"


class _Handed(enum.Enum):
    """What became of a connection handed back after a response (``_await_next``)."""

    WAITING = "waiting"
    #: Waiting, with a keep-alive deadline before the I/O loop next wakes.
    WAITING_SOONER = "waiting sooner"
    CLOSED = "closed"
    BUFFERED = "buffered"


_WAITING: Final = frozenset((_Handed.WAITING, _Handed.WAITING_SOONER))


class _RequestRefused(Exception):
    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


class _Serving:
    """A request from the time it is read whole until its worker is done with it.

    Answered once: by its worker when the application returns, or before
    that from another thread (``answer_elsewhere``), if it ``may_detach``
    (it holds one of ``detached_requests``); the request is then
    ``detached``: its worker goes on without counting as one of ``threads``,
    and the connection carries the client's next request meanwhile.
    The flags change under the server's ``_conns_lock``."""

    __slots__ = ("answered", "conn", "detached", "may_detach", "request")

    def __init__(self, conn: _Conn, request: Request) -> None:
        self.conn = conn
        self.request = request
        self.answered = False
        self.may_detach = False
        self.detached = False


class _Conn:
    """A client connection and what has been read of its current request."""

    def __init__(self, sock: socket.socket, peer: tuple[str, int], tls: bool, now: float,
                 limits: HttpLimits) -> None:
        self.sock = sock
        self.peer = peer
        self.tls = tls
        self.buffer = bytearray()
        self.state = _State.HANDSHAKE if tls else _State.HEAD
        self.head: RequestHead | None = None
        self.body_length = 0
        self.deadline = now + limits.first_byte_timeout
        self.accepted = now
        #: Request heads completed on this connection: one that has none yet
        #: may give its slot to a newcomer when the table is full.
        self.heads = 0
        self.request_started = False
        self.lingered = 0
        self.want_write = False

    def fileno(self) -> int:
        return self.sock.fileno()


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


class HttpServer:
    """Serves ``app`` on ``listeners`` until ``shutdown``."""

    def __init__(
        self,
        listeners: Sequence[Listener],
        app: Application,
        limits: HttpLimits | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        serve_on_loop: bool = True,
    ) -> None:
        """``serve_on_loop`` False: every request goes to a worker thread, as it
        did before the loop served them itself (tests of the workers' races)."""
        if not listeners:
            raise ValueError("no listener: configure an HTTP or an HTTPS port")
        self.limits = limits or HttpLimits()
        self._app = app
        self._clock = clock
        self._listeners = list(listeners)
        self._sockets: list[tuple[socket.socket, Listener]] = []
        #: Listeners resting after EMFILE: (resume time, socket, listener).
        self._paused: list[tuple[float, socket.socket, Listener]] = []
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._returned: deque[_Conn] = deque()
        self._returned_lock = threading.Lock()
        self._conns: set[_Conn] = set()
        self._conns_lock = threading.Lock()
        # Room for the detached requests' workers besides ``threads``.
        self._pool = ThreadPoolExecutor(self.limits.threads + self.limits.detached_requests,
                                        thread_name_prefix="lmi-mountd")
        # The writers of answers sent from elsewhere: one per right to send one.
        self._answers = ThreadPoolExecutor(self.limits.detached_requests,
                                           thread_name_prefix="lmi-mountd-answer")
        #: Requests read and not answered yet, running or waiting their turn
        #: (the I/O thread counts up, workers count down, under _conns_lock).
        self._in_flight = 0
        #: Requests read whole and waiting for their turn, oldest first; the
        #: running ones that count against ``concurrent_requests``, with when
        #: each started; how many run in all, each on a worker; and how many
        #: of those may be answered before they end, some of them answered
        #: already and running on (detached, not counted in ``_started``)
        #: (under _conns_lock; see ``_turns`` and ``answer_elsewhere``).
        self._waiting: deque[_Serving] = deque()
        self._counted: dict[_Serving, float] = {}
        self._started = 0
        self._may_detach = 0
        self._serve_on_loop = serve_on_loop
        #: A request whose turn came on the loop's thread, kept for it to serve
        #: at the end of its turn (``_serve_here``); the loop's thread only.
        self._here: _Serving | None = None
        #: The threads that run the I/O loop, one at a time (see ``_serve_here``):
        #: the one that runs it now, the one that stands by to take it over,
        #: those kept aside to stand by later (they lost the loop to a request
        #: that went long, and another stood by already), and every one started
        #: (all are joined at shutdown). Under ``_relief``'s lock (``_spare``
        #: wakes those kept aside), as are the four after them.
        self._relief = threading.Condition(threading.Lock())
        self._spare = threading.Condition(self._relief._lock)  # type: ignore[attr-defined]
        self._loop_thread: threading.Thread | None = None
        self._standby: threading.Thread | None = None
        self._spares: list[threading.Thread] = []
        self._io_threads: list[threading.Thread] = []
        #: When the loop's thread began the request it serves now (monotonic;
        #: -inf once that request gave up its turn), None between them and once
        #: another thread took the loop over; how many it began in all; whether
        #: the thread that stands by sleeps until the next one; whether the
        #: loop has ended.
        self._serving_since: float | None = None
        self._served_here = 0
        self._standby_sleeps = False
        self._loop_done = False
        #: Set before the worker pool shuts down (``_submit``).
        self._pool_closed = False
        self._running = threading.Event()
        self._stopped = threading.Event()
        #: When the I/O loop last went round (the clock's time): a supervisor
        #: that sees it stand still knows the loop is stuck (see ``alive``).
        self.last_turn = clock()
        #: When the loop wakes at the latest if nothing happens: a worker that
        #: hands back a connection with an earlier deadline wakes it.
        self._wakes_at = self.last_turn

    # -- life cycle ------------------------------------------------------------------------

    def bind(self) -> None:
        """Open the listening sockets (the ports are known after this)."""
        for listener in self._listeners:
            sock = _listen(listener.host, listener.port)
            sock.setblocking(False)
            self._sockets.append((sock, listener))

    @property
    def addresses(self) -> list[tuple[str, int, bool]]:
        """(host, port, tls) of each listening socket."""
        return [
            (str(sock.getsockname()[0]), int(sock.getsockname()[1]), listener.tls is not None)
            for sock, listener in self._sockets
        ]

    def start(self) -> None:
        """Bind (if not yet) and serve from a background thread."""
        if not self._sockets:
            self.bind()
        for sock, listener in self._sockets:
            self._selector.register(sock, selectors.EVENT_READ, listener)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._running.set()
        with self._relief:
            self._loop_thread = self._io_thread(standby=False)
            self._loop_thread.start()

    def serve_forever(self) -> None:
        if self._loop_thread is None:
            self.start()
        self._stopped.wait()

    def shutdown(self, timeout: float = 30.0) -> None:
        """Stop accepting, end the loop (waited for up to ``timeout``), let running
        requests finish (on workers and I/O threads alike), close everything."""
        if not self._running.is_set():
            return
        self._running.clear()
        self._wake()
        with self._relief:
            self._relief.notify_all()
            ended = self._relief.wait_for(lambda: self._loop_done, timeout)
            threads = [t for t in self._io_threads
                       if t.ident is not None and t is not threading.current_thread()]
        for thread in threads:
            # Once the loop has ended, the threads left finish a request each,
            # waited for as the pool's workers are below.
            thread.join(None if ended else 0.0)
        self._pool_closed = True
        self._pool.shutdown(wait=True, cancel_futures=False)
        self._answers.shutdown(wait=True, cancel_futures=False)
        with self._conns_lock:
            leftover = list(self._conns)
            self._conns.clear()
        for conn in leftover:
            _close_socket(conn.sock)
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()
        self._stopped.set()

    def __enter__(self) -> HttpServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def alive(self, within: float) -> bool:
        """Whether the I/O loop runs and went round within the last ``within`` s
        (it goes round at least once a second)."""
        thread = self._loop_thread
        return (thread is not None and thread.is_alive()
                and self._clock() - self.last_turn <= within)

    @property
    def open_connections(self) -> int:
        with self._conns_lock:
            return len(self._conns)

    # -- I/O thread ----------------------------------------------------------------------------

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    def _io_thread(self, *, standby: bool) -> threading.Thread:
        """A thread to run the loop, or to stand by for it (not started yet:
        the caller sets its role first). Called under ``_relief``."""
        thread = threading.Thread(target=self._run_io, args=(standby,), name="lmi-mountd-io",
                                  daemon=True)
        self._io_threads = [t for t in self._io_threads if t.is_alive()] + [thread]
        return thread

    def _run_io(self, standby: bool) -> None:
        """An I/O thread's life: it runs the loop, or stands by until it takes
        the loop over; a thread whose loop was taken over (while it served a
        request) stands by in turn, or waits aside if another does (``_rejoin``)."""
        while not standby or self._stand_by():
            if not self._loop() or not self._rejoin():
                return
            standby = True

    def _rejoin(self) -> bool:
        """After this thread lost the loop and finished its request: stand by
        (True), at once if no thread does, else once one is needed, kept aside
        meanwhile (at most ``threads`` are: a thread started for every login
        that hands the loop over cost more than the hand-off); False to end."""
        me = threading.current_thread()
        with self._relief:
            if self._standby is None and not self._loop_done:
                self._standby = me
                return True
            if self._loop_done or len(self._spares) >= self.limits.threads:
                return False
            self._spares.append(me)
            while me in self._spares and not self._loop_done:
                self._spare.wait()
            if me in self._spares:
                self._spares.remove(me)
            return self._standby is me

    def _stand_by(self) -> bool:
        """Wait until the loop's thread has served one request for
        ``RELIEF_SECONDS``, then take the loop over (True); False once the loop
        has ended. It looks again every ``RELIEF_SECONDS`` while requests are
        served there, and sleeps until the next one after a quiet look: the
        requests themselves never wake it, unless it sleeps."""
        me = threading.current_thread()
        seen = -1
        with self._relief:
            while True:
                if self._loop_done:
                    if self._standby is me:
                        self._standby = None
                    return False
                since, now = self._serving_since, time.monotonic()
                if since is not None and now - since >= RELIEF_SECONDS:
                    # The request it serves is the old thread's own from now on.
                    self._loop_thread, self._standby = me, None
                    self._serving_since = None
                    break
                if since is not None:
                    timeout: float | None = since + RELIEF_SECONDS - now
                elif self._served_here != seen:
                    timeout = RELIEF_SECONDS
                else:
                    timeout = None
                seen = self._served_here
                self._standby_sleeps = timeout is None
                self._relief.wait(timeout)
                self._standby_sleeps = False
        log.debug("another thread took the I/O loop over: the request on its thread %s",
                  "gave up its turn" if since == -math.inf else f"ran {now - since:.3f} s")
        # Its first turn takes what the other thread handed back meanwhile.
        self._wake()
        return True

    def _on_loop_thread(self) -> bool:
        return threading.current_thread() is self._loop_thread

    def _loop(self) -> bool:
        """The I/O loop, on the thread that owns it: True when another thread
        took it over while this one served a request (``_serve_here``), False
        when it ended (the server stops)."""
        taken_over = False
        try:
            while self._running.is_set():
                self.last_turn = self._clock()
                timeout = self._next_deadline()
                if self._here is not None or self._returned:
                    # A look at the sockets, then that request, or the next one
                    # this thread found in a connection's buffer as it handed
                    # it back (it woke no one for it).
                    timeout = 0.0
                for key, mask in self._selector.select(timeout):
                    if key.fileobj is self._wake_r:
                        with contextlib.suppress(OSError):
                            self._wake_r.recv(4096)
                        self._take_returned()
                    elif isinstance(key.data, Listener):
                        self._accept(key.fileobj, key.data)  # type: ignore[arg-type]
                    else:
                        self._serve_ready(key.data, mask)
                self._take_returned()
                self._start_turns()
                self._expire()
                self._resume_listeners()
                if self._here is not None and not self._serve_here():
                    taken_over = True
                    return True
        except Exception:  # pragma: no cover - a bug here must not pass silently
            log.exception("the I/O loop failed; the server stops")
        finally:
            # Not by a thread that lost the loop (a BaseException out of its
            # request): the loop runs on elsewhere.
            if not taken_over and self._on_loop_thread():
                self._end_loop()
        return False

    def _end_loop(self) -> None:
        # Requests still waiting for their turn are answered before the
        # workers stop (``shutdown`` lets them finish).
        try:
            here, self._here = self._here, None
            if here is not None:
                self._submit(here)
            with self._conns_lock:
                waiting = list(self._waiting)
                self._waiting.clear()
                self._started += len(waiting)
            for serving in waiting:
                self._submit(serving)
            for sock, _ in self._sockets:
                with contextlib.suppress(KeyError, ValueError):
                    self._selector.unregister(sock)
                sock.close()
            with self._conns_lock:
                idle = [c for c in self._conns if c.state is not _State.BUSY]
            for conn in idle:
                self._close(conn)
        finally:
            with self._relief:
                self._loop_done = True
                self._relief.notify_all()
                self._spare.notify_all()

    def _resume_listeners(self) -> None:
        now = self._clock()
        for paused in [p for p in self._paused if p[0] <= now]:
            self._paused.remove(paused)
            self._selector.register(paused[1], selectors.EVENT_READ, paused[2])

    def _next_deadline(self) -> float:
        """How long the loop may sleep; sets ``_wakes_at`` under the lock its scan
        of the connections takes: a worker that hands a connection back after
        the scan compares its deadline with this turn's (``_hand_back``)."""
        now = self._clock()
        with self._conns_lock:
            deadlines = [c.deadline for c in self._conns if c.state is not _State.BUSY]
            if self._waiting and self._counted:
                # When a running request becomes long, the next one starts.
                deadlines.append(min(self._counted.values()) + LONG_REQUEST_SECONDS)
            deadlines += [resume for resume, _, _ in self._paused]
            timeout = max(0.0, min(min(deadlines) - now, 1.0)) if deadlines else 1.0
            self._wakes_at = now + timeout
        return timeout

    def _accept(self, listening: socket.socket, listener: Listener) -> None:
        for _ in range(64):  # a burst of accepts, then serve the others
            try:
                sock, peer = listening.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # The connection stays queued and the listener readable: left
                    # registered, the loop would spin (and log) until a descriptor
                    # is free. It rests a moment instead; open connections go on.
                    log.warning("cannot accept connections for %.1f s: %s",
                                ACCEPT_PAUSE_SECONDS, exc)
                    self._selector.unregister(listening)
                    self._paused.append((self._clock() + ACCEPT_PAUSE_SECONDS, listening,
                                         listener))
                    return
                raise
            sock.setblocking(False)
            with self._conns_lock:
                full = len(self._conns) >= self.limits.max_connections
            if full:
                victim = self._idle_victim()
                if victim is not None:
                    # Slow or idle peers cannot hold the table: the oldest
                    # connection that never completed a request head goes.
                    log.info("connection from %s closed for a new one: no complete request "
                             "head after %.1f s", victim.peer[0], self._clock() - victim.accepted)
                    self._close(victim)
                    full = False
            if full:
                log.warning("connection from %s refused: %d connections are open",
                            peer[0], self.limits.max_connections)
                if listener.tls is None:
                    with contextlib.suppress(OSError):
                        sock.send(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                                  b"Retry-After: 1\r\nConnection: close\r\n\r\n")
                _close_socket(sock)
                continue
            if listener.tls is not None:
                try:
                    sock = listener.tls.wrap_socket(
                        sock, server_side=True, do_handshake_on_connect=False
                    )
                except (ssl.SSLError, OSError) as exc:
                    log.info("TLS setup for %s failed: %s", peer[0], exc)
                    _close_socket(sock)
                    continue
            conn = _Conn(sock, (str(peer[0]), int(peer[1])), listener.tls is not None,
                         self._clock(), self.limits)
            with self._conns_lock:
                self._conns.add(conn)
            self._selector.register(sock, selectors.EVENT_READ, conn)

    def _idle_victim(self) -> _Conn | None:
        """The oldest connection that has not completed a request head, if any."""
        with self._conns_lock:
            idle = [c for c in self._conns if c.heads == 0
                    and c.state in (_State.HANDSHAKE, _State.HEAD)]
        return min(idle, key=lambda c: c.accepted) if idle else None

    def _take_returned(self) -> None:
        """Connections handed back with a pipelined request already read, or
        while the server stops: the I/O thread parses or closes them."""
        while True:
            with self._returned_lock:
                if not self._returned:
                    return
                conn = self._returned.popleft()
            if not self._running.is_set():
                self._close(conn)
                continue
            if self._await_next(conn) in _WAITING and conn.buffer:
                self._confined(conn, functools.partial(self._advance, conn))

    def _await_next(self, conn: _Conn, *, unless_buffered: bool = False) -> _Handed:
        """Set ``conn`` up to wait for its next request and register it with the
        selector (WAITING, or WAITING_SOONER when its deadline comes before the
        loop's next turn: a keep-alive timeout below a second); CLOSED if it was
        closed meanwhile; BUFFERED, nothing done, if ``unless_buffered`` and its
        buffer already holds bytes of that request, which only the I/O thread
        may parse.

        Safe from a worker thread (epoll_ctl is, and the selector's map is a
        dict): the worker that served the last request sets the connection up
        itself rather than waking the I/O thread for it, a hand-off per request
        saved. The state and the deadline change together under ``_conns_lock``,
        so that an expiry pass sees either a busy connection or a fresh
        deadline; and ``_close`` takes the connection out of the table under
        the same lock before it unregisters, so a connection is never
        registered after it was closed.
        """
        with self._conns_lock:
            if conn not in self._conns:
                return _Handed.CLOSED
            if unless_buffered and conn.buffer:
                return _Handed.BUFFERED
            conn.sock.setblocking(False)
            conn.head = None
            conn.request_started = False
            # The clock and the loop's wake are read under the lock, as the
            # loop's scan sets them: a turn between reading the clock and
            # taking the lock, or the I/O thread's new deadline for the next
            # request once registered, made the comparison wake the loop for
            # nothing (a flaky test, twice in CI).
            conn.deadline = self._clock() + self.limits.keepalive_timeout
            sooner = conn.deadline < self._wakes_at
            conn.state = _State.HEAD
            self._selector.register(conn.sock, selectors.EVENT_READ, conn)
        return _Handed.WAITING_SOONER if sooner else _Handed.WAITING

    def _expire(self) -> None:
        now = self._clock()
        with self._conns_lock:
            due = [c for c in self._conns if c.state is not _State.BUSY and c.deadline <= now]
        for conn in due:
            if conn.state is _State.LINGER or not conn.request_started:
                # Idle keep-alive, an unused connection, or a finished linger.
                self._close(conn)
            else:
                log.info("request from %s timed out after %s s", conn.peer[0],
                         self.limits.request_timeout)
                self._refuse(conn, simple_response(
                    408, f"the request was not complete within {self.limits.request_timeout} s",
                    close=True))

    def _serve_ready(self, conn: _Conn, mask: int) -> None:
        self._confined(conn, functools.partial(self._on_ready, conn, mask))

    def _confined(self, conn: _Conn, step: Callable[[], None]) -> None:
        """``step`` (reading or parsing what ``conn`` sent), confined to that
        connection: whatever a peer sent, a failure answers that connection (500)
        and closes it; it never ends the loop that serves everyone else."""
        try:
            step()
        except Exception:
            log.exception("reading a request from %s failed; that connection is closed",
                          conn.peer[0])
            try:
                self._refuse(conn, simple_response(500, "internal server error", close=True))
            except Exception:
                self._close(conn)

    def _on_ready(self, conn: _Conn, mask: int) -> None:
        if conn.state is _State.HANDSHAKE and not self._handshake(conn):
            return
        # A valid request needs at most this much; more waits in the socket.
        ceiling = self.limits.max_header_bytes + self.limits.max_body_bytes
        blocked_on_write = False
        try:
            while len(conn.buffer) <= ceiling:
                try:
                    data = conn.sock.recv(_READ_SIZE)
                except ssl.SSLWantReadError:
                    break
                except ssl.SSLWantWriteError:
                    blocked_on_write = True
                    break
                except (BlockingIOError, InterruptedError):
                    break
                if not data:
                    self._close(conn)
                    return
                if conn.state is _State.LINGER:
                    conn.lingered += len(data)
                    if conn.lingered > _LINGER_BYTES:
                        self._close(conn)
                        return
                    continue
                conn.buffer += data
                pending = conn.tls and conn.sock.pending()  # type: ignore[attr-defined]
                if len(data) < _READ_SIZE and not pending:
                    break
        except (ssl.SSLError, OSError) as exc:
            log.debug("connection from %s failed: %s", conn.peer[0], exc)
            self._close(conn)
            return
        # TLS may need to write (a key update) before it can read on.
        self._want_write(conn, blocked_on_write)
        if conn.state is not _State.LINGER:
            self._advance(conn)

    def _want_write(self, conn: _Conn, wanted: bool) -> None:
        if conn.want_write == wanted:
            return
        conn.want_write = wanted
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if wanted else 0)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.modify(conn.sock, events, conn)

    def _handshake(self, conn: _Conn) -> bool:
        try:
            conn.sock.do_handshake()  # type: ignore[attr-defined]
        except ssl.SSLWantReadError:
            self._want_write(conn, False)
            return False
        except ssl.SSLWantWriteError:
            self._want_write(conn, True)
            return False
        except (ssl.SSLError, OSError) as exc:
            log.info("TLS handshake with %s failed: %s", conn.peer[0], exc)
            self._close(conn)
            return False
        self._want_write(conn, False)
        conn.state = _State.HEAD
        return True

    def _advance(self, conn: _Conn) -> None:
        """Parse what the buffer holds; hand a complete request to a worker."""
        try:
            if conn.state is _State.HEAD:
                if conn.buffer and not conn.request_started:
                    conn.request_started = True
                    conn.deadline = self._clock() + self.limits.request_timeout
                if not self._read_head(conn):
                    return
            if conn.state is _State.BODY and len(conn.buffer) >= conn.body_length:
                assert conn.head is not None
                body = bytes(conn.buffer[: conn.body_length])
                del conn.buffer[: conn.body_length]
                self._dispatch(conn, Request(conn.head, body))
        except _RequestRefused as refused:
            self._refuse(conn, refused.response)
        except ConnectionError as exc:
            log.debug("connection from %s failed: %s", conn.peer[0], exc)
            self._close(conn)

    def _read_head(self, conn: _Conn) -> bool:
        limits = self.limits
        # RFC 9112 2.2: empty lines before the request line are ignored.
        while conn.buffer.startswith(b"\r\n"):
            del conn.buffer[:2]
        end = conn.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(conn.buffer) > limits.max_header_bytes:
                raise _RequestRefused(simple_response(
                    431, f"the request head exceeds {limits.max_header_bytes} bytes", close=True))
            return False
        if end + 4 > limits.max_header_bytes:
            raise _RequestRefused(simple_response(
                431, f"the request head exceeds {limits.max_header_bytes} bytes", close=True))
        raw = bytes(conn.buffer[:end])
        del conn.buffer[: end + 4]
        conn.heads += 1
        head = _parse_head(raw, conn.peer, conn.tls, limits.max_headers)
        conn.head = head
        conn.body_length = self._body_length(head)
        try:
            early = self._app.early(head)
        except Exception:
            log.exception("the application failed on the head of %s %s", head.method, head.target)
            early = simple_response(500, "internal server error", close=True)
        if early is not None:
            # The body was not read: the connection cannot carry another request.
            early.close = early.close or conn.body_length > 0
            raise _RequestRefused(early)
        if conn.body_length and (head.headers.get("Expect") or "").lower() == "100-continue":
            self._send_now(conn, b"HTTP/1.1 100 Continue\r\n\r\n")
        conn.state = _State.BODY
        return True

    def _body_length(self, head: RequestHead) -> int:
        transfer_coding = head.headers.get("Transfer-Encoding")
        if transfer_coding is not None:
            if transfer_coding.strip().lower() == "chunked":
                raise _RequestRefused(simple_response(
                    411, "chunked request bodies are not accepted: send Content-Length",
                    close=True))
            raise _RequestRefused(simple_response(
                501, f"transfer coding {transfer_coding!r} is not supported", close=True))
        values = {v.strip() for v in head.headers.get_all("Content-Length")}
        if not values:
            if head.method in ("POST", "PUT", "M-POST"):
                raise _RequestRefused(simple_response(
                    411, "Content-Length is required", close=True))
            return 0
        length = decimal(next(iter(values))) if len(values) == 1 else None
        if length is None:
            raise _RequestRefused(simple_response(
                400, f"Content-Length {', '.join(sorted(values))[:100]!r} is not one number",
                close=True))
        if length > self.limits.max_body_bytes:
            raise _RequestRefused(simple_response(
                413, f"the body of {length} bytes exceeds the limit of "
                f"{self.limits.max_body_bytes} bytes", close=True))
        return length

    def _send_now(self, conn: _Conn, data: bytes) -> None:
        """A short write from the I/O thread (an interim or error response)."""
        try:
            sent = conn.sock.send(data)
        except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError):
            sent = 0
        except OSError as exc:
            raise ConnectionError(str(exc)) from None
        if sent != len(data):
            raise ConnectionError("the client does not read")

    def _refuse(self, conn: _Conn, response: Response) -> None:
        """Answer on the I/O thread (the response is small) and close, lingering."""
        head = conn.head
        what = f"{head.method} {head.target[:200]}" if head else "a request"
        log.info("%s from %s refused: %d", what, conn.peer[0], response.status)
        assert isinstance(response.body, bytes)
        data = _head_bytes(response.status, response.headers, len(response.body),
                           close=True) + response.body
        try:
            self._send_now(conn, data)
        except ConnectionError:
            self._close(conn)
            return
        self._linger(conn)

    def _linger(self, conn: _Conn) -> None:
        conn.state = _State.LINGER
        conn.buffer.clear()
        conn.deadline = self._clock() + _LINGER_SECONDS
        try:
            if conn.tls:
                # A TLS close_notify would need unwrap() on a blocking socket;
                # the response is complete (Content-Length), so just close.
                self._close(conn)
                return
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close(conn)

    def _dispatch(self, conn: _Conn, request: Request) -> None:
        with self._conns_lock:
            full = self._in_flight >= QUEUE_FACTOR * self.limits.threads
            if not full:
                self._in_flight += 1
        if full:
            # Every worker is busy and as many requests wait: say so at once
            # rather than queue without bound behind slow calls.
            raise _RequestRefused(simple_response(
                503, f"all {self.limits.threads} workers are busy; try again",
                [("Retry-After", "1")], close=True))
        conn.state = _State.BUSY
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(conn.sock)
        with self._conns_lock:
            self._waiting.append(_Serving(conn, request))
        self._start_turns()

    def _start_turns(self) -> None:
        """Start the requests whose turn has come (one came, or a running one
        became long or gave up its turn)."""
        with self._conns_lock:
            due = self._turns(self._clock())
        if (due and self._serve_on_loop and self._here is None
                and self._serving_since is None and self._on_loop_thread()):
            # The loop's thread serves the first itself, at the end of its turn.
            self._here, due = due[0], due[1:]
        for serving in due:
            self._submit(serving)

    def _turns(self, now: float) -> list[_Serving]:
        """Take the waiting requests whose turn has come, oldest first, and count
        them as running; a request that has run ``LONG_REQUEST_SECONDS`` counts
        no longer. Called with ``_conns_lock`` held."""
        for serving, started in list(self._counted.items()):
            if now - started >= LONG_REQUEST_SECONDS:
                del self._counted[serving]
        due = []
        # Started only on a free worker: one queued in the pool would count
        # as running while it waits (and become long, and be overtaken).
        while (self._waiting and len(self._counted) < self.limits.concurrent_requests
               and self._started < self.limits.threads):
            serving = self._waiting.popleft()
            self._counted[serving] = now
            self._started += 1
            due.append(serving)
        return due

    def _give_up(self, serving: _Serving) -> None:
        with self._conns_lock:
            self._counted.pop(serving, None)
        with self._relief:
            if self._serving_since is not None and self._on_loop_thread():
                # Served on the loop's thread, it waits for something other
                # than Python now: the loop goes on elsewhere at once.
                self._serving_since = -math.inf
                self._relief.notify()
        self._start_turns()

    def _submit(self, serving: _Serving) -> None:
        try:
            self._pool.submit(self._work, serving)
        except RuntimeError as exc:
            if not self._pool_closed:
                # The pool queued the request, then could not start a thread
                # for it (TasksMax, RLIMIT_NPROC): a worker takes it when one is
                # free. It was counted done twice, its connection closed under it.
                log.warning("no worker thread could be started (%s): the request waits "
                            "for a worker", exc)
                return
            # The pool is shutting down.
            with self._conns_lock:
                self._conns.discard(serving.conn)
                self._counted.pop(serving, None)
                self._started -= 1
                self._in_flight -= 1
            _close_socket(serving.conn.sock)

    def _close(self, conn: _Conn) -> None:
        # Out of the table first: a worker handing the connection back checks
        # the table under this lock before it registers (``_await_next``).
        with self._conns_lock:
            known = conn in self._conns
            self._conns.discard(conn)
        if known:
            # Only once: the selector looks a closed socket up by walking its
            # map, which workers change meanwhile.
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(conn.sock)
        _close_socket(conn.sock)

    def _hand_back(self, conn: _Conn) -> None:
        """After a response, on the worker: ``conn`` waits for its next request."""
        try:
            handed = (self._await_next(conn, unless_buffered=True) if self._running.is_set()
                      else _Handed.BUFFERED)
            if handed is _Handed.WAITING_SOONER and not self._on_loop_thread():
                # The loop sleeps until later than this connection's keep-alive
                # deadline (a timeout below a second): it must wake for it. (The
                # loop's own thread works its sleep out again when it is done; a
                # thread that takes the loop over wakes it first.)
                self._wake()
            if handed is not _Handed.BUFFERED:
                return
        except (OSError, ValueError) as exc:  # the socket failed meanwhile
            log.debug("connection from %s failed: %s", conn.peer[0], exc)
            self._close(conn)
            return
        # A pipelined request waits in the buffer, or the server stops: the
        # I/O thread's to parse, or to close.
        with self._returned_lock:
            self._returned.append(conn)
        if not self._on_loop_thread():
            self._wake()

    # -- serving requests (the loop's thread, workers) ----------------------------------------

    def _serve_here(self) -> bool:
        """Serve ``_here`` on the loop's thread; whether this thread still runs
        the loop after it.

        A request served here costs no hand-off: a worker would be woken for
        it, and would read the request's bytes into another CPU's cache (see
        "Throughput" in docs/architecture.rst: a tenth of the server's CPU in
        test_concurrency). Should it run longer than ``RELIEF_SECONDS`` (a
        mount helper, a client that does not read) or give up its turn, the
        thread that stands by (``_stand_by``) takes the loop over, and this one
        finishes the request, then stands by in turn or waits aside
        (``_rejoin``)."""
        serving, self._here = self._here, None
        assert serving is not None
        with self._relief:
            if self._standby is None and self._spares:
                self._standby = self._spares.pop()
                self._spare.notify_all()
            elif self._standby is None:
                thread = self._io_thread(standby=True)
                try:
                    thread.start()
                    self._standby = thread
                except RuntimeError as exc:  # TasksMax, RLIMIT_NPROC, memory
                    # Served here all the same, the loop waiting for it: a
                    # worker may not be started either, and the request would
                    # wait in the pool's queue for one.
                    self._io_threads.remove(thread)
                    log.warning("no thread can stand by for the I/O loop (%s): the loop "
                                "waits for the request it serves", exc)
            elif self._standby_sleeps:
                self._relief.notify()
            self._serving_since = time.monotonic()
            self._served_here += 1
        try:
            due = self._serve_counted(serving)
        finally:
            with self._relief:
                still = self._on_loop_thread()
                if still:
                    self._serving_since = None
        if still and due:
            self._here, due = due[0], due[1:]
        for other in due:
            self._submit(other)
        return still

    def _work(self, serving: _Serving) -> None:
        """On a worker: serve ``serving``, then the next whose turn it is, on this
        thread: a thread that goes on costs nothing, waking another costs a
        hand-off."""
        item: _Serving | None = serving
        while item is not None:
            due = self._serve_counted(item)
            # This thread goes on with the oldest; the started count already
            # includes it. Several were due (running ones became long): the
            # others go to other workers.
            item = due[0] if due else None
            for other in due[1:]:
                self._submit(other)

    def _serve_counted(self, serving: _Serving) -> list[_Serving]:
        """Serve ``serving`` and count it done; the requests whose turn came
        meanwhile, for the caller to start."""
        keep_alive = served = False
        _turn.current = (self, serving)
        try:
            keep_alive = self._serve(serving)
            served = True
        except Exception:
            # Not the application's failure (that is a 500), the server's own:
            # on a worker it vanished into the pool's future, and left the
            # connection busy for ever; on the loop's thread it would end the loop.
            log.exception("serving %s %s from %s failed; that connection is closed",
                          serving.request.head.method, serving.request.head.target,
                          serving.conn.peer[0])
        finally:
            _turn.current = None
            with self._conns_lock:
                serving.answered = True  # also if this thread failed: by no one else
                if serving.may_detach:
                    self._may_detach -= 1
                if not serving.detached:
                    self._in_flight -= 1
                    self._started -= 1
                self._counted.pop(serving, None)
                due = self._turns(self._clock())
            # Handed back only now: the next request on this connection has a
            # turn of its own, which the lines above must not take.
            if keep_alive:
                self._hand_back(serving.conn)
            if not served:
                self._close(serving.conn)
        return due

    def _serve(self, serving: _Serving) -> bool:
        """Answer ``serving`` (unless it was answered elsewhere meanwhile); whether
        its connection stays open for the next request (closed if not)."""
        request = serving.request
        started = self._clock()
        try:
            response = self._app.handle(request)
        except Exception:
            log.exception("the application failed on %s %s", request.head.method,
                          request.head.target)
            response = simple_response(500, "internal server error", close=True)
        with self._conns_lock:
            elsewhere, serving.answered = serving.answered, True
        if elsewhere:
            # The connection went on with its next request; this answer says
            # what the one sent already said (a job's 4096) or comes too late.
            _discard(response)
            log.debug("%s %s from %s ended after its answer, in %.3f s", request.head.method,
                      request.head.target, serving.conn.peer[0], self._clock() - started)
            return False
        return self._respond(serving.conn, request, response, started)

    def _may_answer_elsewhere(self, serving: _Serving) -> bool:
        """Take one of ``detached_requests`` for ``serving`` (kept until its worker
        is done); False if none is left."""
        with self._conns_lock:
            if not serving.may_detach:
                if serving.answered or self._may_detach >= self.limits.detached_requests:
                    return False
                serving.may_detach = True
                self._may_detach += 1
            return True

    def _answer_elsewhere(self, serving: _Serving, response: Response) -> bool:
        """``answer_elsewhere``'s function: answer ``serving`` now, its worker going
        on detached; False if its worker answered it already. Does not wait: the
        answer is written on one of ``_answers``."""
        with self._conns_lock:
            if serving.answered:
                return False
            assert serving.may_detach
            serving.answered = serving.detached = True
            # Answered: it no longer counts among the requests in flight (503)
            # nor against ``threads``, so the next one starts on another worker.
            self._in_flight -= 1
            self._started -= 1
            self._counted.pop(serving, None)
            due = self._turns(self._clock())
        for other in due:
            self._submit(other)
        try:
            # That write may wait for a client that does not read (write_timeout).
            self._answers.submit(self._write_elsewhere, serving, response)
        except RuntimeError:  # shutting down: this thread writes it
            self._write_elsewhere(serving, response)
        return True

    def _write_elsewhere(self, serving: _Serving, response: Response) -> None:
        if self._respond(serving.conn, serving.request, response, self._clock()):
            self._hand_back(serving.conn)

    def _respond(self, conn: _Conn, request: Request, response: Response,
                 started: float) -> bool:
        """Write ``response`` to ``request``; whether ``conn`` stays open for the
        next request (closed if not)."""
        keep_alive = _keep_alive(request.head) and not response.close and self._running.is_set()
        try:
            conn.sock.settimeout(self.limits.write_timeout)
            keep_alive = self._write(conn, request.head, response, keep_alive)
        except (OSError, ValueError) as exc:
            log.info("writing the response to %s failed: %s", conn.peer[0], exc)
            keep_alive = False
        except Exception:
            # A streamed body that fails another way (a bug): the client sees
            # the body end early; the connection must not stay busy for ever.
            log.exception("the response to %s %s failed while it was sent",
                          request.head.method, request.head.target)
            keep_alive = False
        finally:
            _discard(response)
        log.debug("%s %s from %s: %d in %.3f s", request.head.method, request.head.target,
                  conn.peer[0], response.status, self._clock() - started)
        if not keep_alive:
            # The socket is not registered with the selector (the I/O thread
            # owns that): forget and close it.
            with self._conns_lock:
                self._conns.discard(conn)
            _close_socket(conn.sock)
        return keep_alive

    def _write(self, conn: _Conn, head: RequestHead, response: Response, keep_alive: bool) -> bool:
        """Write ``response``; return whether the connection may carry another request."""
        sock = conn.sock
        body = response.body
        if head.method == "HEAD":
            body = b""
        old = head.version == "HTTP/1.0"
        if isinstance(body, (bytes, bytearray)):
            sock.sendall(_head_bytes(response.status, response.headers, len(body),
                                     close=not keep_alive, http10=old) + bytes(body))
            return keep_alive
        chunks = iter(body)
        # A body of one chunk goes with Content-Length (simpler for every client).
        try:
            first = next(chunks, b"")
            second = next(chunks, None)
        except BodyAborted as exc:
            log.warning("response to %s failed before it started: %s", conn.peer[0], exc)
            fields = [*response.headers, *exc.trailers]
            sock.sendall(_head_bytes(500, fields, 0, close=True))
            return False
        if second is None:
            sock.sendall(_head_bytes(response.status, response.headers, len(first),
                                     close=not keep_alive, http10=old) + first)
            return keep_alive
        chunked = head.version == "HTTP/1.1"
        fields = list(response.headers)
        if chunked:
            fields.append(("Transfer-Encoding", "chunked"))
            if response.trailers:
                fields.append(("Trailer", ", ".join(response.trailers)))
        else:
            keep_alive = False  # HTTP/1.0: the end of the body is the end of the connection
        sock.sendall(_head_bytes(response.status, fields, None, close=not keep_alive))
        try:
            for chunk in _chain(first, second, chunks):
                if chunk:
                    sock.sendall(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
        except BodyAborted as exc:
            log.warning("response to %s aborted: %s", conn.peer[0], exc)
            if chunked:
                trailer = "".join(f"{name}: {value}\r\n" for name, value in exc.trailers)
                sock.sendall(b"0\r\n" + trailer.encode("latin-1") + b"\r\n")
            return False
        if chunked:
            sock.sendall(b"0\r\n\r\n")
        return keep_alive


def give_up_turn() -> None:
    """Say that the request this thread serves waits from now on for something
    other than Python (a password hash in C, which releases the GIL; a PAM
    conversation): it no longer counts against ``concurrent_requests``, and
    the next request starts at once (on the loop's thread, the loop goes on
    on another at once). Nothing happens outside a request."""
    turn = getattr(_turn, "current", None)
    if turn is not None:
        server, serving = turn
        server._give_up(serving)


def answer_elsewhere() -> Callable[[Response], bool] | None:
    """Inside a request (on a worker or the loop's thread): a function that
    answers that request from any thread while the worker goes on with it (a
    method's work whose synchronous window ends: its job is the answer, and
    the work goes on). The connection then carries the client's next request,
    and the worker no longer counts as one of ``threads``.

    The right is taken now, one of ``detached_requests``, and kept until the
    worker is done: None when none is left (or outside a request), and the
    application must not keep its worker for long. The function does not
    wait (the answer is written on a thread kept for it); it returns False,
    and sends nothing, only if the worker answered already."""
    turn = getattr(_turn, "current", None)
    if turn is None:
        return None
    server, serving = turn
    if not server._may_answer_elsewhere(serving):
        return None
    return functools.partial(server._answer_elsewhere, serving)


def _discard(response: Response) -> None:
    """Release a response's streamed body (a generator's ``finally`` runs)."""
    body = response.body
    if not isinstance(body, (bytes, bytearray)):
        close = getattr(body, "close", None)
        if close is not None:
            close()


def _chain(first: bytes, second: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    yield first
    yield second
    yield from rest


def _parse_head(raw: bytes, peer: tuple[str, int], tls: bool, max_headers: int) -> RequestHead:
    """The request line and header fields (RFC 9112 3 and 5), parsed by h11.

    h11 is the sans-I/O HTTP/1.1 parser under uvicorn and httpcore, fuzzed
    upstream: it checks the grammar (tokens, field syntax, Content-Length and
    Transfer-Encoding values, Host on HTTP/1.1) and unfolds obsolete line
    folding (RFC 9112 5.2 allows it). It sees the head only; this module
    keeps the limits, the framing of the body (Content-Length only), keep-alive
    and pipelining. Leading empty lines are ignored (RFC 9112 2.2).

    A client sends the same few heads again and again, and h11 costs more
    than the rest of reading a request: the parse of a head is kept
    (``_parsed_head``), but never a password. The one Authorization field's
    value is cut out of the head before the parse and checked on its own,
    with a grammar stricter than h11's (``_without_credentials``); a head
    where that cannot be done plainly is parsed whole, and not kept.
    """
    while raw.startswith(b"\r\n"):
        raw = raw[2:]
    if not raw:
        raise _RequestRefused(simple_response(400, "empty request", close=True))
    cut = _without_credentials(raw)
    if cut is None:
        method, target, version, fields = _parse_head_uncached(raw)
    else:
        key, credentials = cut
        method, target, version, fields = _parsed_head(key)
        if credentials is not None:
            fields = tuple((name, credentials) if name.lower() == "authorization" else
                           (name, value) for name, value in fields)
    if len(fields) > max_headers:
        raise _RequestRefused(simple_response(
            431, f"more than {max_headers} header fields", close=True))
    return RequestHead(method, target, version, Headers(fields), peer, tls)


_ParsedHead = tuple[str, str, str, tuple[tuple[str, str], ...]]
_AUTHORIZATION_FIELD: Final = re.compile(rb"\r\nauthorization:", re.IGNORECASE)
# RFC 9110 5.5 field-value: visible characters and obs-text, with spaces and
# tabs inside only. Stricter than h11, which lets control characters through:
# h11 takes every value this matches as it is.
_STRICT_FIELD_VALUE: Final = re.compile(rb"[\x21-\x7e\x80-\xff]+(?:[ \t]+[\x21-\x7e\x80-\xff]+)*")


def _without_credentials(raw: bytes) -> tuple[bytes, str | None] | None:
    """``raw`` with the value of its Authorization field cut out, and that
    value (None if it has no such field); None if the head must be parsed
    whole and not kept: lines that end in a bare LF or fold onto the next,
    more than one Authorization field, or a value outside the strict grammar
    (h11 then decides, as for any head)."""
    if b"\r\n " in raw or b"\r\n\t" in raw or raw.count(b"\n") != raw.count(b"\r\n"):
        return None
    found = _AUTHORIZATION_FIELD.search(raw)
    if found is None:
        return raw, None
    if _AUTHORIZATION_FIELD.search(raw, found.end()) is not None:
        return None
    start = found.end()
    end = raw.find(b"\r\n", start)
    end = len(raw) if end < 0 else end
    value = raw[start:end].strip(b" \t")
    if not _STRICT_FIELD_VALUE.fullmatch(value):
        return None
    return raw[:start] + raw[end:], value.decode("latin-1")


@functools.lru_cache(maxsize=256)
def _parsed_head(raw: bytes) -> _ParsedHead:
    return _parse_head_uncached(raw)


def _parse_head_uncached(raw: bytes) -> _ParsedHead:
    parser = h11.Connection(h11.SERVER)
    parser.receive_data(raw + b"\r\n\r\n")
    try:
        event = parser.next_event()
    except h11.RemoteProtocolError as exc:
        status = exc.error_status_hint if exc.error_status_hint >= 400 else 400
        raise _RequestRefused(simple_response(
            status, f"malformed request: {str(exc)[:200]}", close=True)) from None
    if not isinstance(event, h11.Request):  # pragma: no cover - a complete head is a Request
        raise _RequestRefused(simple_response(400, "malformed request", close=True))
    version = "HTTP/" + event.http_version.decode("ascii", "replace")
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise _RequestRefused(simple_response(
            505, f"{version[:20]} is not supported; use HTTP/1.1", close=True))
    fields = tuple((name.decode("latin-1"), value.decode("latin-1"))
                   for name, value in event.headers.raw_items())
    return event.method.decode("ascii"), event.target.decode("latin-1"), version, fields


def _keep_alive(head: RequestHead) -> bool:
    tokens = {t.strip().lower() for t in (head.headers.get("Connection") or "").split(",")}
    if head.version == "HTTP/1.0":
        return "keep-alive" in tokens
    return "close" not in tokens


@functools.lru_cache(maxsize=2)
def _date(second: int) -> str:
    """The Date header's value (RFC 9110 IMF-fixdate) for a second since the epoch;
    a server answering hundreds of requests a second formats it once."""
    return formatdate(second, usegmt=True)


def _head_bytes(
    status: int, fields: Sequence[tuple[str, str]], length: int | None, *, close: bool,
    http10: bool = False,
) -> bytes:
    lines = [f"HTTP/1.1 {status} {_reason(status)}", f"Date: {_date(int(time.time()))}",
             f"Server: {SERVER_NAME}"]
    lines.extend(f"{name}: {value}" for name, value in fields)
    if length is not None:
        lines.append(f"Content-Length: {length}")
    if close:
        lines.append("Connection: close")
    elif http10:
        # An HTTP/1.0 client keeps the connection only if told so (RFC 9112 9.3).
        lines.append("Connection: keep-alive")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _listen(host: str, port: int) -> socket.socket:
    if host in ("", "*", "::") and socket.has_dualstack_ipv6():
        return socket.create_server(("::", port), family=socket.AF_INET6, dualstack_ipv6=True,
                                    backlog=128)
    if host in ("", "*"):
        host = "0.0.0.0"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=128)


def _close_socket(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.close()


__all__ = [
    "Application",
    "BodyAborted",
    "Headers",
    "HttpLimits",
    "HttpServer",
    "Listener",
    "Request",
    "RequestHead",
    "Response",
    "simple_response",
]
