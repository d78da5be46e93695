"""Indication delivery (DSP1054): from a change of the model to each subscribed listener.

Owns: the watcher that re-reads the model when the mount table (the
mountinfo poll), the fstab file (inotify) or a method call (a poke) says
something may have changed, and turns the difference into indications
(``cim.events``); job indications; which destinations each indication goes
to (the subscriptions' filters, evaluated by ``cim.wql``); and the delivery
itself: per destination one ordered, bounded queue and one thread that
sends CIM-XML ExportIndication requests (DSP0200 export messages) over HTTP
or HTTPS, with ``SequenceContext``/``SequenceNumber``, retries, and a count
of what was lost.

A slow or dead listener holds only its own thread and queue: publishing
never waits for a network, and a full queue drops its oldest indication
(logged, counted, and announced to the listener by an alert before the next
one it gets).

Must not know: what the model means (``cim.events`` does), subscriptions'
storage (``subscriptions``), the HTTP server.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import select
import socket
import ssl
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import h11
from lxml import etree
from pywbem import (
    CIM_ERR_INVALID_CLASS,
    CIM_ERR_INVALID_PARAMETER,
    CIM_ERR_INVALID_QUERY,
    CIMError,
    CIMInstance,
    CIMProperty,
)

from lmi_mount.cim import events, wql
from lmi_mount.cim.events import IndicationFactory, ModelRead
from lmi_mount.cim.jobs import Job
from lmi_mount.cim.projection import GoalSetting
from lmi_mount.linux import watch
from lmi_mount.mounts.escaping import escape_controls
from lmi_mount.server import cimxml, export_http
from lmi_mount.server.config import IndicationSettings
from lmi_mount.server.subscriptions import Route, SubscriptionStore, routes_for

log = logging.getLogger(__name__)

#: The watcher re-reads the model at least this often, whatever it was told.
RESYNC_SECONDS: Final = 5.0
#: Changes that come together are read together: a mount and its fstab line.
SETTLE_SECONDS: Final = 0.002
#: The longest a read waits for the service's running requests to end.
QUIET_SECONDS: Final = 1.0
#: The longest the service's stop waits for its delivery threads, all together.
CLOSE_SECONDS: Final = 5.0


class DeliveryError(Exception):
    """One send that did not reach the listener or was refused by it."""


_PARSER: Final = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)


#: The most of a listener's reply that is read; a longer one ends the connection.
MAX_REPLY_BYTES: Final = 1 << 20


class Exporter:
    """Sends export requests to one listener URL over one kept-alive connection.

    The framing is ``export_http``'s (its replies read the strict way, or by
    h11); the socket I/O is ours, so that one send has one deadline,
    ``timeout`` seconds in all: a listener that trickles its reply a byte a
    second cannot hold the thread longer. ``abort()`` (from another thread:
    the destination stops) ends the send in progress at once, and every later
    one.
    """

    def __init__(self, url: str, *, timeout: float, ssl_context: ssl.SSLContext) -> None:
        parts = urlsplit(url)
        self._secure = parts.scheme.lower() == "https"
        self._host = parts.hostname or ""
        self._port = parts.port or (443 if self._secure else 80)
        # RFC 9112 3.2: an IPv6 address in brackets, as in the URL.
        self._authority = (f"[{self._host}]" if ":" in self._host else self._host) + \
            f":{self._port}"
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        #: Why no request line can be made of the URL (each send fails with it).
        self._unusable: str | None = None
        try:
            export_http.check_request_target(self._path, self._authority)
        except h11.LocalProtocolError as exc:
            self._unusable = f"the URL gives no HTTP request: {_shown(str(exc))}"
        self._timeout = timeout
        self._ssl = ssl_context
        self._sock: socket.socket | None = None
        #: The socket being connected or handshaken, for ``abort()``.
        self._connecting: socket.socket | None = None
        self._lock = threading.Lock()
        self._aborted = threading.Event()

    def send(self, body: bytes) -> None:
        """Deliver one export request (``cimxml.export_indication_request``)."""
        deadline = time.monotonic() + self._timeout
        try:
            self._exchange(body, deadline)
        except _StaleConnection:
            # A kept-alive connection the listener closed while it was idle, as
            # the request went: it goes again at once on a new one, which cannot
            # be stale. The same bytes (MESSAGE ID, SequenceNumber): a listener
            # that had read it after all and closed unanswered can tell the
            # copy (DSP1054).
            self._exchange(body, deadline)

    def _exchange(self, body: bytes, deadline: float) -> None:
        """One request and its answer. ``_StaleConnection`` only where the
        connection was a kept-alive one and nothing was answered."""
        if self._aborted.is_set():
            raise DeliveryError(_ABORTED)
        if self._unusable is not None:
            raise DeliveryError(self._unusable)
        sent = reused = False
        try:
            sock, reused = self._connection(deadline)
            self._write(sock, export_http.request_head(self._path, self._authority, len(body))
                        + body, deadline)
            sent = True  # from here on the listener may have handled it
            reply = self._response(sock, deadline)
        except (_StaleConnection, BrokenPipeError, ConnectionResetError) as exc:
            self.close()
            if self._aborted.is_set():  # what abort()'s shutdown looks like
                raise DeliveryError(_ABORTED) from None
            if isinstance(exc, _StaleConnection) or not sent:  # nothing answered
                if reused:
                    raise _StaleConnection() from None
                raise DeliveryError("the listener closed the connection unanswered") from None
            raise DeliveryError(f"{type(exc).__name__}: {_shown(str(exc))}") from None
        except (OSError, h11.ProtocolError, export_http.ReplyTooLong, DeliveryError) as exc:
            self.close()
            if self._aborted.is_set():
                raise DeliveryError(_ABORTED) from None
            raise DeliveryError(exc if isinstance(exc, DeliveryError)
                                else f"{type(exc).__name__}: {_shown(str(exc))}") from None
        if not reply.keep_alive:
            self.close()
        if reply.status != 200:
            raise DeliveryError(f"HTTP {reply.status}")
        try:
            root = etree.fromstring(reply.body, _PARSER)
        except etree.XMLSyntaxError as exc:
            raise DeliveryError(f"the listener's reply is no XML: {exc}") from None
        # DSP0201: CIM/MESSAGE/SIMPLEEXPRSP/EXPMETHODRESPONSE, with an ERROR
        # when the listener refused; any other 200 (a web server's page) is no
        # listener's answer.
        response = root.find("./MESSAGE/SIMPLEEXPRSP/EXPMETHODRESPONSE")
        if root.tag != "CIM" or response is None:
            raise DeliveryError(f"the listener's reply is no CIM-XML export response "
                                f"(<{_shown(str(root.tag))}>)")
        error = response.find("ERROR")
        if error is not None:
            raise DeliveryError(f"the listener refused it: {_shown(error.get('CODE') or '')} "
                                f"{_shown(error.get('DESCRIPTION') or '')}".rstrip())

    def _connection(self, deadline: float) -> tuple[socket.socket, bool]:
        """The kept-alive connection, or a new one; and whether it was kept."""
        with self._lock:
            sock = self._sock
        if sock is not None:
            if not _readable(sock):
                return sock, True
            # Between two requests a kept-alive connection has nothing to say:
            # the listener closed it (EOF) or broke it. A new one is opened
            # before the request goes, not after it was lost on this one.
            self.close()
        try:
            sock = self._connect(deadline)
        except BaseException:
            with self._lock:
                self._connecting = None
            raise
        try:
            if self._secure:
                # wrap_socket takes the descriptor over: the TLS socket is the
                # one abort() shuts down during the handshake.
                sock = self._ssl.wrap_socket(sock, server_hostname=self._host,
                                             do_handshake_on_connect=False)
                self._hold(sock)
                sock.settimeout(_remaining(deadline))
                sock.do_handshake()
            self._hold(sock, kept=True)
        except BaseException:
            with self._lock:
                self._connecting = None
            sock.close()
            raise
        return sock, False

    def _hold(self, sock: socket.socket, *, kept: bool = False) -> None:
        """Make ``sock`` the socket ``abort()`` shuts down: the one being connected,
        or with ``kept`` the connection requests go on. Under the lock abort()
        takes after it sets its flag, so that either abort() sees the socket or
        this sees the flag (DeliveryError: the caller closes the socket)."""
        with self._lock:
            if self._aborted.is_set():
                raise DeliveryError(_ABORTED)
            if kept:
                self._sock, self._connecting = sock, None
            else:
                self._connecting = sock

    def _connect(self, deadline: float) -> socket.socket:
        """A TCP connection to the listener: its addresses in turn, each given an
        equal share of what is left of the send's one deadline
        (``socket.create_connection`` gives each the whole timeout, a first
        address that drops connections would leave the next none). The socket
        is ``abort()``'s to shut down from its creation on."""
        addresses = socket.getaddrinfo(self._host, self._port, type=socket.SOCK_STREAM)
        failure: OSError | None = None
        for number, (family, kind, protocol, _, address) in enumerate(addresses):
            sock = socket.socket(family, kind, protocol)
            try:
                self._hold(sock)
                sock.settimeout(_remaining(deadline) / (len(addresses) - number))
                sock.connect(address)
                return sock
            except OSError as exc:
                sock.close()
                failure = exc
            except BaseException:
                sock.close()
                raise
        raise failure or OSError(f"{self._host!r} has no address")

    @staticmethod
    def _write(sock: socket.socket, data: bytes, deadline: float) -> None:
        view = memoryview(data)
        while view:
            sock.settimeout(_remaining(deadline))
            sent = sock.send(view)
            view = view[sent:]

    def _response(self, sock: socket.socket, deadline: float) -> export_http.Reply:
        reader = export_http.ReplyReader(self._path, self._authority, max_body=MAX_REPLY_BYTES)
        while True:
            sock.settimeout(_remaining(deadline))
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                if reader.started:
                    raise
                # The request reached a socket the listener had closed: the
                # kernel's reset says so.
                raise _StaleConnection() from None
            if not data and not reader.started:
                raise _StaleConnection()  # closed before a word of answer
            reply = reader.feed(data)
            if reply is not None:
                return reply

    def abort(self) -> None:
        """End the send in progress (from another thread), its socket shut down,
        and refuse every later one."""
        self._aborted.set()
        with self._lock:
            socks = [s for s in (self._sock, self._connecting) if s is not None]
        for sock in socks:
            with contextlib.suppress(OSError):
                # The TCP connection's, under TLS too: SSLSocket.shutdown would
                # drop the TLS state another thread is using.
                socket.socket.shutdown(sock, socket.SHUT_RDWR)

    def close(self) -> None:
        with self._lock:
            sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()


_ABORTED: Final = "aborted: the destination is stopping"


class _StaleConnection(Exception):
    """The listener closed the connection before it answered anything."""


def _readable(sock: socket.socket) -> bool:
    """Whether ``sock`` has something to read (or an end) right now."""
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return True
    try:
        ready, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(ready)


#: The most of a listener's own text (an ERROR's) that goes into a message.
_SHOWN_CHARACTERS: Final = 200


def _shown(text: str) -> str:
    """A listener's text as a log line may carry it: control characters
    escaped (no forged lines), and cut to ``_SHOWN_CHARACTERS``."""
    shown = escape_controls(text[:_SHOWN_CHARACTERS])
    return shown + "..." if len(text) > _SHOWN_CHARACTERS else shown


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise DeliveryError("no answer within the delivery timeout")
    return left


#: Properties each destination sets itself on what it delivers (DSP1054).
_PER_DESTINATION: Final = frozenset(("indicationfiltername", "sequencecontext",
                                     "sequencenumber"))


class Outgoing:
    """One indication on its way to every destination whose subscription selects
    it: the instance is shared, not copied, and encoded once for them all (the
    destinations add what differs: ``_PER_DESTINATION``)."""

    __slots__ = ("_lock", "_text", "indication")

    def __init__(self, indication: CIMInstance) -> None:
        self.indication = indication
        self._text: str | None = None
        self._lock = threading.Lock()

    def text(self) -> str:
        """The INSTANCE text; EncodeError if CIM-XML cannot carry it. Encoded once:
        where it is published (``_encoded``, before any destination has it), or
        by the one destination of a loss alert; callers that ask at once wait
        for the one encoding rather than each make their own."""
        text = self._text
        if text is None:
            with self._lock:
                if self._text is None:
                    indication = self.indication
                    if any(name.lower() in _PER_DESTINATION for name in indication.properties):
                        indication = indication.copy()
                        for name in [n for n in indication.properties
                                     if n.lower() in _PER_DESTINATION]:
                            del indication.properties[name]
                    self._text = cimxml.instance_xml(indication)
                text = self._text
        return text


#: Filter names whose PROPERTY a destination keeps encoded (a listener has a
#: few subscriptions; past this many the cache starts over).
_FILTER_NAMES_KEPT: Final = 64


class Destination:
    """One listener's queue, in order, and the thread that empties it."""

    def __init__(self, name: str, url: str, settings: IndicationSettings,
                 loss_alert: Callable[[int, str, str], CIMInstance],
                 ssl_context: ssl.SSLContext) -> None:
        self.name = name
        self.url = url
        self._shown = escape_controls(url)  # for the log
        self._settings = settings
        self._loss_alert = loss_alert
        self._exporter = Exporter(url, timeout=settings.timeout, ssl_context=ssl_context)
        # DSP1054: the context names this stream of numbers; a new one (restart,
        # a destination made again) tells the listener the numbers start over.
        self.context = f"{name}:{uuid.uuid4()}"
        self._numbers = itertools.count(0)
        # What this destination adds to each indication, encoded once (the
        # number for each send): DSP1054's properties.
        self._context_xml = cimxml.property_xml(
            CIMProperty("SequenceContext", self.context, type="string"))
        self._number_xml = cimxml.integer_property_xml("SequenceNumber", "sint64")
        self._filter_xml: dict[str, str] = {}
        self._messages = itertools.count(1)
        #: (indication, the name of the filter that selected it)
        self._queue: deque[tuple[Outgoing, str]] = deque()
        #: Lost and not yet announced, by the name of the filter that selected
        #: them, in the order of their first loss: each subscription is told of
        #: the hole in its own stream.
        self._lost_unannounced: dict[str, int] = {}
        #: Indications to this destination lost so far (logged, and announced),
        #: and loss alerts that were not delivered (logged; their count goes on).
        self.lost = 0
        self._cond = threading.Condition()
        self._closed = False
        #: Ends when its queue is empty (a graceful stop: ``drain``).
        self._draining = False
        #: Why it was stopped, and whether a send was cut off by it.
        self._stopped_because = ""
        self._cut = False
        self._thread = threading.Thread(target=self._run, name=f"lmi-mountd-indications-{name}",
                                        daemon=True)
        self._thread.start()

    def put(self, indication: Outgoing, filter_name: str) -> None:
        with self._cond:
            if self._closed:
                return
            self._queue.append((indication, filter_name))
            if len(self._queue) > self._settings.max_queue:
                _, dropped_for = self._queue.popleft()
                self._lost(dropped_for, "its queue is full")
            self._cond.notify()

    def _lost(self, filter_name: str, why: str) -> None:
        """One indication selected by ``filter_name`` is lost. Under ``_cond``."""
        self.lost += 1
        self._lost_unannounced[filter_name] = self._lost_unannounced.get(filter_name, 0) + 1
        log.warning("indication to %s (%s) of filter %r lost: %s (%d indications and alerts "
                    "lost so far)", self.name, self._shown, filter_name, why, self.lost)

    @property
    def waiting(self) -> int:
        with self._cond:
            return len(self._queue)

    def alive(self) -> bool:
        return self._thread.is_alive() or self._closed

    def running(self) -> bool:
        return self._thread.is_alive()

    def drain(self) -> None:
        """Deliver what is queued, then end (a graceful stop: ``join`` waits for
        it, ``stop`` cuts it off). Does not wait."""
        with self._cond:
            self._draining = True
            self._cond.notify_all()

    def stop(self, because: str = "its subscription went") -> None:
        """Stop at once, without waiting: a send in progress is cut off. Called
        under the subscriptions' lock, so it must not wait for the network.
        ``because`` says, in the log, why what is queued was not delivered."""
        with self._cond:
            if not self._closed:
                self._stopped_because = because
            self._closed = True
            self._cond.notify_all()
        self._exporter.abort()

    def join(self, deadline: float) -> None:
        """Wait for the thread until ``deadline`` (monotonic), then let go; once it
        was stopped and has ended, log what it could not deliver."""
        self._thread.join(max(0.0, deadline - time.monotonic()))
        if not self._closed or self._thread.is_alive():
            return
        self._exporter.close()
        with self._cond:
            undelivered, self._cut = len(self._queue) + self._cut, False
            self._queue.clear()
        if undelivered:
            log.warning("%d queued indications to %s (%s) were not delivered: %s",
                        undelivered, self.name, self._shown, self._stopped_because)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    if self._lost_unannounced:
                        # A loss alert that failed is tried again after the
                        # interval, with nothing to send after it (or at once
                        # when the stop drains the queue).
                        if not self._draining and not self._cond.wait_for(
                                lambda: self._queue or self._closed or self._draining,
                                self._settings.retry_interval):
                            break
                        if self._queue or self._closed:
                            continue
                        break
                    if self._draining:
                        return
                    self._cond.wait()
                if self._closed:
                    return
                item = self._queue.popleft() if self._queue else None
            draining = self._draining
            self._announce_losses()
            if item is None:
                if draining:
                    return  # said once more on the way out
                continue
            indication, filter_name = item
            try:
                failure = self._deliver(indication, filter_name)
                if failure is not None:
                    with self._cond:
                        if self._closed:
                            self._cut = True  # reported with the queue (join)
                        else:
                            self._lost(filter_name, failure[0])
                else:
                    # An alert that failed before this one got through goes now,
                    # not with a later change (which may never come).
                    self._announce_losses()
            except Exception:
                # A defect in one indication costs that one, not the stream.
                log.exception("indication to %s dropped", self.name)
                with self._cond:
                    self._lost(filter_name, "it could not be sent (see above)")

    def _announce_losses(self) -> None:
        with self._cond:
            unannounced, self._lost_unannounced = self._lost_unannounced, {}
        for lost_for, lost in unannounced.items():
            self._announce(lost_for, lost)

    def _announce(self, filter_name: str, lost: int) -> None:
        """Tell the listener, in the stream of ``filter_name``, that ``lost`` of its
        indications were lost; if that fails, with its next one instead."""
        try:
            # Tried once: a listener that fails it would fail the retries too,
            # and the indication after it gets them all (its own retries).
            failure = self._deliver(Outgoing(self._loss_alert(lost, self.url, filter_name)),
                                    filter_name, retries=0)
        except Exception:
            # A defect in one alert costs that announcement (the losses were
            # logged), not the indication that follows nor other filters' alerts.
            log.exception("the loss alert to %s of filter %r could not be made", self.name,
                          filter_name)
            return
        if failure is not None:
            reason, numbered = failure
            with self._cond:
                if self._closed:
                    return  # stopped meanwhile: no loss, as for an indication
                # The alert is counted and logged, but it was none of the filter's own.
                self.lost += 1
                log.warning("the loss alert to %s (%s) of filter %r was not delivered: %s "
                            "(%d indications and alerts lost so far)", self.name, self._shown,
                            filter_name, reason, self.lost)
                # Sent and unanswered, it took a number: the gap the listener
                # sees counts it, and so does the next alert.
                self._lost_unannounced[filter_name] = (
                    self._lost_unannounced.get(filter_name, 0) + lost + numbered)

    def _deliver(self, indication: Outgoing, filter_name: str,
                 retries: int | None = None) -> tuple[str, bool] | None:
        """Send with ``retries`` retries (the destination's by default); None once
        delivered, else why not (the service may be stopping) and whether it
        took a SequenceNumber (sent, never answered) or not (never sent)."""
        if retries is None:
            retries = self._settings.retry_attempts
        try:
            text = indication.text()
        except cimxml.EncodeError as exc:
            # What CIM-XML cannot carry (a control character in a mount point's
            # name) is dropped before it takes a number: the numbers the listener
            # sees have no gap, and the loss alert that follows says one is lost.
            return f"CIM-XML cannot carry it: {exc}", False
        filter_xml = self._filter_xml.get(filter_name)
        if filter_xml is None:
            if len(self._filter_xml) >= _FILTER_NAMES_KEPT:
                self._filter_xml.clear()
            filter_xml = self._filter_xml[filter_name] = cimxml.property_xml(
                CIMProperty("IndicationFilterName", filter_name, type="string"))
        extra = [self._context_xml, self._number_xml(next(self._numbers)), filter_xml]
        failure = f"not delivered after {retries} retries", True
        for attempt in range(retries + 1):
            try:
                self._exporter.send(cimxml.export_indication_request(
                    str(next(self._messages)), text, extra))
            except DeliveryError as exc:
                log.log(logging.WARNING if attempt == 0 and not self._closed else logging.DEBUG,
                        "cannot deliver to %s (%s), attempt %d of %d: %s", self.name, self._shown,
                        attempt + 1, retries + 1, exc)
                with self._cond:
                    if self._closed or (attempt < retries
                                        and self._cond.wait_for(
                                            lambda: self._closed,
                                            self._settings.retry_interval)):
                        return failure
                continue
            return None
        return failure


def _encoded(indication: CIMInstance) -> Outgoing | None:
    """``indication`` on its way, encoded once for all its destinations, here
    rather than by the first of them; None if CIM-XML cannot carry it (a
    control character in a mount point's name): left out and logged, as
    enumerations leave the instance out, so no listener is told of a loss no
    client reading the model could see."""
    outgoing = Outgoing(indication)
    try:
        outgoing.text()
    except cimxml.EncodeError as exc:
        log.warning("an indication is left out: %s", exc)
        return None
    return outgoing


class IndicationService:
    """Watches the model, matches subscriptions, and delivers (one per server)."""

    def __init__(
        self,
        store: SubscriptionStore,
        factory: IndicationFactory,
        *,
        read_model: Callable[[], ModelRead],
        wait_quiet: Callable[[float], bool] = lambda timeout: True,
        is_subclass: Callable[[str, str], bool],
        namespace: str,
        fstab_path: Path,
        settings: IndicationSettings | None = None,
        time_before_removal: float = 60.0,
        mountinfo: str = "/proc/self/mountinfo",
    ) -> None:
        self.settings = settings or IndicationSettings()
        self._factory = factory
        self._read_model = read_model
        self._wait_quiet = wait_quiet
        self._is_subclass = is_subclass
        self._namespace = namespace
        self._fstab_path = fstab_path
        self._time_before_removal = time_before_removal
        self._mountinfo = mountinfo
        self._ssl = self.settings.ssl_context()
        self._lock = threading.Lock()
        self._destinations: dict[Any, Destination] = {}
        #: Destinations stopped but perhaps still ending a send (joined at close).
        self._stopping: list[Destination] = []
        #: The last instance of each running published job (its PreviousInstance).
        self._jobs: dict[int, CIMInstance] = {}
        #: The model when the first subscription came (see _routes_changed).
        self._baseline: ModelRead | None = None
        self._routes: tuple[Route, ...] = ()
        self.store = store
        self._poke = watch.Poke()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        store.on_change = self._routes_changed
        self._routes_changed(store.routes)

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> None:
        sources: list[watch.Source] = [watch.MountinfoPoll(self._mountinfo), self._poke]
        try:
            sources.append(watch.FileChanges(self._fstab_path))
        except OSError as exc:
            log.warning("fstab edits by hand are seen every %g s only: %s", RESYNC_SECONDS, exc)
        with self._lock:
            initial, self._baseline = self._baseline, None
        self._watcher = threading.Thread(target=self._watch, args=(sources, initial),
                                         name="lmi-mountd-watcher", daemon=True)
        self._watcher.start()

    def alive(self) -> bool:
        watcher = self._watcher
        with self._lock:
            destinations = list(self._destinations.values())
        return (watcher is None or watcher.is_alive()) and all(d.alive() for d in destinations)

    def close(self, timeout: float = CLOSE_SECONDS) -> None:
        """Stop the watcher, let every destination deliver what it has queued, all
        together, ``timeout`` seconds at most (a hung listener costs no more),
        then cut off what is left: each destination logs how many it could not
        deliver (a listener sees the next start's new SequenceContext)."""
        self._stop.set()
        self._poke.poke()
        with self._lock:
            draining = list(self._destinations.values())
            stopping = [*draining, *self._stopping]
            self._destinations, self._stopping = {}, []
        for destination in draining:
            destination.drain()
        deadline = time.monotonic() + timeout
        if self._watcher is not None:
            self._watcher.join(max(0.0, deadline - time.monotonic()))
        for destination in draining:
            destination.join(deadline)
        for destination in stopping:
            destination.stop("lmi-mountd stopped")
        # The cut sends end at once (abort); a moment for their threads to say so.
        cut = time.monotonic() + 1.0
        for destination in stopping:
            destination.join(max(deadline, cut))
        if self._watcher is None:
            self._poke.close()
        elif self._watcher.is_alive():
            # Its descriptors are its own to close (in _watch): closed under a
            # watcher still polling them, their numbers could be another file's.
            log.warning("the indication watcher did not stop within %g s", timeout)

    def poke(self) -> None:
        """Something may have changed that the kernel and fstab do not show (holders).
        Nobody subscribes: nothing to tell, and the watcher is not woken."""
        if self._routes:
            self._poke.poke()

    # -- routes ---------------------------------------------------------------

    def _routes_changed(self, routes: tuple[Route, ...]) -> None:
        """New routes (called under the subscriptions' lock: nothing here waits for
        the network). The first subscriber's baseline is read here, before its
        CreateInstance returns: whatever it changes next is reported."""
        wanted = {r.destination_id: r.destination for r in routes}
        baseline = None
        first = bool(routes) and not self._routes
        if first:
            try:
                baseline = self._read_model()
            except events.FstabUnreadable as exc:
                log.warning("a first subscriber's baseline waits for fstab: %s", exc)
            except Exception:
                # The store keeps the subscription whatever happens here: it
                # must get its routes, and the watcher's first read is its
                # baseline instead (a change made meanwhile is not reported).
                log.exception("cannot read the model for a first subscriber's baseline")
        with self._lock:
            if baseline is not None:
                self._baseline = baseline
            self._routes = routes
            gone = [key for key, d in self._destinations.items()
                    if key not in wanted or str(wanted[key]["Destination"]) != d.url]
            for key in gone:
                destination = self._destinations.pop(key)
                destination.stop()
                self._stopping.append(destination)
            self._stopping = [d for d in self._stopping if d.running()]
            for key, instance in wanted.items():
                if key not in self._destinations:
                    self._destinations[key] = Destination(
                        escape_controls(str(instance["Name"])), str(instance["Destination"]),
                        self.settings, self._factory.loss_alert, self._ssl)
        if first:
            self._poke.poke()  # the watcher, idle while nobody subscribed, watches again

    def destination(self, name: str) -> Destination | None:
        """The destination named ``name`` (the first, if names repeat)."""
        with self._lock:
            return next((d for d in self._destinations.values() if d.name == name), None)

    # -- publishing -----------------------------------------------------------

    def publish(self, indications: Iterable[CIMInstance], namespace: str | None = None) -> None:
        """Queue each indication once for every subscription whose filter selects it,
        carrying that filter's name (DSP1054: each subscription delivers)."""
        with self._lock:
            routes, destinations = self._routes, dict(self._destinations)
        for indication in indications:
            # One encoding for every filter that selects the same properties
            # (DSP1054: a filter's select list names the properties it gets).
            outgoings: dict[tuple[str, ...] | None, Outgoing | None] = {}
            for route in routes_for(routes, indication, namespace or self._namespace,
                                    self._is_subclass):
                selects = route.query.properties
                if selects not in outgoings:
                    outgoings[selects] = _encoded(route.query.project(indication))
                outgoing = outgoings[selects]
                destination = destinations.get(route.destination_id)
                if outgoing is not None and destination is not None:
                    destination.put(outgoing, str(route.filter["Name"]))

    def job_changed(self, job: Job, previous_state: int) -> None:
        """A published job changed state: CIM_InstModification of its LMI_MountJob,
        with the instance it was before (kept from the last change). Nothing is
        projected while nobody subscribes."""
        if not self._routes:
            return
        now = self._factory.job_instance(job, self._time_before_removal)
        with self._lock:
            before = self._jobs.pop(job.number, None)
            if not job.done:
                self._jobs[job.number] = now
        if before is None:
            # Not seen before (it changed state before it was handed out): the job
            # as it was in that state, before any result.
            before = self._factory.job_instance(
                replace(job, state=previous_state, finished=None, ended_at=None,
                        return_value=None, out_parameters={}, error=None, cim_error=None),
                self._time_before_removal)
        self.publish([self._factory.modification(now, before)])
        if job.done:
            self.poke()  # its holders changed after the method returned

    def goal_changed(self, before: GoalSetting | None, after: GoalSetting | None) -> None:
        """A goal setting (CreateSetting's) was made, changed or deleted: its
        CIM_InstCreation, CIM_InstModification or CIM_InstDeletion. Told as it
        happens, by the call that does it: goals are no part of the engine's
        state the watcher reads. Nothing is projected while nobody subscribes."""
        if not self._routes:
            return
        project = self._factory.goal_setting
        if before is None and after is not None:
            found = self._factory.creation(project(after))
        elif after is None and before is not None:
            found = self._factory.deletion(project(before))
        elif before is not None and after is not None:
            now, previous = project(after), project(before)
            if now == previous:
                return
            found = self._factory.modification(now, previous)
        else:
            return
        self.publish([found])

    def _watch(self, sources: list[watch.Source], previous: ModelRead | None) -> None:
        woken = unreadable = False
        try:
            while not self._stop.is_set():
                if not self._routes:
                    # Nobody listens: no reads, and no wake-ups for changes nobody
                    # is told of (the mountinfo poll reports what it missed once,
                    # when it is asked again). A first subscription or the stop
                    # pokes; a subscriber's baseline is read when it subscribes.
                    previous = None
                    watch.wait([self._poke], None)
                    # That one read of the eventfd took the pokes of the calls
                    # that came with the subscription too: read at once.
                    woken = True
                    continue
                if (woken or watch.wait(sources, RESYNC_SECONDS)) and not self._stop.is_set():
                    woken = False
                    # A mount and its fstab line change within moments: read them
                    # once, when the request that changes them is done (its
                    # holders too), so that no half-done request is reported.
                    time.sleep(SETTLE_SECONDS)
                    self._wait_quiet(QUIET_SECONDS)
                    watch.wait(sources, 0)
                if self._stop.is_set():
                    return
                if not self._routes:
                    continue  # the last subscription went while the watcher waited
                with self._lock:
                    baseline, self._baseline = self._baseline, None
                if baseline is not None:
                    # A first subscriber's model: whatever came before is not its
                    # news, even if the watcher still holds an older read (the
                    # last subscription went while it waited for the kernel).
                    previous = baseline
                try:
                    current = self._read_model()
                except events.FstabUnreadable as exc:
                    # Nothing is told until it can be read again: then the
                    # changes since the last good read are.
                    if not unreadable:
                        log.warning("indications wait for fstab: %s", exc)
                    unreadable = True
                    continue
                except Exception:
                    log.exception("cannot read the model for indications; trying again")
                    self._stop.wait(1.0)
                    continue
                unreadable = False
                if previous is not None:
                    found = list(events.changes(previous, current, self._factory))
                    if found:
                        log.debug("indications: %s", "; ".join(events.sources(found)))
                        self.publish(found)
                previous = current
        finally:
            for source in sources:
                source.close()

    # -- for the interop namespace -------------------------------------------

    def service_values(self) -> dict[str, Any]:
        return {
            "FilterCreationEnabled": True,
            "DeliveryRetryAttempts": self.settings.retry_attempts,
            # Whole seconds in the class; a fraction is a second more, not 0.
            "DeliveryRetryInterval": math.ceil(self.settings.retry_interval),
        }


def indication_service(broker: Any, settings: IndicationSettings, *,
                       get_interop_class: Callable[[str], Any],
                       interop_namespace: str,
                       subscriptions_file: Path | None,
                       system_name: str = "") -> IndicationService:
    """The indication service of ``broker`` (``cim.broker.Broker``), with its
    subscriptions kept in ``subscriptions_file`` (None: in memory)."""
    model = broker.model

    def known(classname: str) -> Any:
        try:
            return model.get_class(classname)
        except KeyError:
            return None

    def check_query(language: str, text: str) -> wql.Query:
        query = wql.parse(text, wql.check_language(language))
        cls = known(query.classname)
        if cls is None:
            raise CIMError(CIM_ERR_INVALID_QUERY, f"filter query {text!r}: class "
                           f"{query.classname!r} does not exist")
        for classname in query.isa_classes():
            if known(classname) is None:
                raise CIMError(CIM_ERR_INVALID_QUERY, f"filter query {text!r}: ISA names "
                               f"{classname!r}, which does not exist (it would match nothing)")
        if not broker.is_subclass(cls.classname, "CIM_Indication"):
            raise CIMError(CIM_ERR_INVALID_PARAMETER,
                           f"filter query {text!r}: {query.classname} is no indication class "
                           "(CIM_InstCreation, CIM_InstModification, CIM_InstDeletion, "
                           "CIM_AlertIndication or CIM_Indication)")
        query.check(cls, model.get_class)
        return query

    def interop_class(classname: str) -> Any:
        cls = get_interop_class(classname)
        if cls is None:
            raise CIMError(CIM_ERR_INVALID_CLASS, f"class {classname!r} does not exist")
        return cls

    store = SubscriptionStore(subscriptions_file, interop_class, namespace=interop_namespace,
                              check_query=check_query, source_namespaces=(broker.namespace,),
                              system_name=system_name)
    context = broker.context
    service = IndicationService(
        store, IndicationFactory(model, context.projector),
        read_model=events.ModelReader(context).read,
        wait_quiet=context.engine.wait_quiet,
        is_subclass=broker.is_subclass, namespace=broker.namespace,
        fstab_path=context.engine.fstab_path, settings=settings,
        time_before_removal=context.jobs.time_before_removal)
    context.jobs.listeners.append(service.job_changed)
    context.goal_listeners.append(service.goal_changed)
    return service
