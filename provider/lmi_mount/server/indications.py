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
import http.client
import itertools
import logging
import ssl
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from lxml import etree
from pywbem import (
    CIM_ERR_INVALID_CLASS,
    CIM_ERR_INVALID_PARAMETER,
    CIMError,
    CIMInstance,
    Sint64,
)

from lmi_mount.cim import events, wql
from lmi_mount.cim.events import IndicationFactory, ModelRead
from lmi_mount.cim.jobs import Job
from lmi_mount.linux import watch
from lmi_mount.server import cimxml
from lmi_mount.server.config import IndicationSettings
from lmi_mount.server.subscriptions import Route, SubscriptionStore, routes_for

log = logging.getLogger(__name__)

#: The watcher re-reads the model at least this often, whatever it was told.
RESYNC_SECONDS: Final = 5.0
#: Changes that come together are read together: a mount and its fstab line.
SETTLE_SECONDS: Final = 0.002
#: The longest a read waits for the service's running requests to end.
QUIET_SECONDS: Final = 1.0


class DeliveryError(Exception):
    """One send that did not reach the listener or was refused by it."""


_PARSER: Final = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)


class Exporter:
    """Sends export requests to one listener URL over one kept-alive connection."""

    def __init__(self, url: str, *, timeout: float, ssl_context: ssl.SSLContext) -> None:
        parts = urlsplit(url)
        self._secure = parts.scheme.lower() == "https"
        self._host = parts.hostname or ""
        self._port = parts.port or (443 if self._secure else 80)
        self._path = parts.path or "/"
        self._timeout = timeout
        self._ssl = ssl_context
        self._conn: http.client.HTTPConnection | None = None

    def send(self, indication: CIMInstance, message_id: str) -> None:
        body = cimxml.export_indication_request(message_id, indication)
        if self._conn is None:
            self._conn = (http.client.HTTPSConnection(self._host, self._port,
                                                      timeout=self._timeout, context=self._ssl)
                          if self._secure else
                          http.client.HTTPConnection(self._host, self._port,
                                                     timeout=self._timeout))
        try:
            self._conn.request("POST", self._path, body, {
                "Content-Type": 'application/xml; charset="utf-8"',
                "CIMExport": "MethodRequest",
                "CIMExportMethod": "ExportIndication",
            })
            response = self._conn.getresponse()
            reply = response.read(1 << 20)
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise DeliveryError(f"{type(exc).__name__}: {exc}") from None
        if response.status != 200:
            self.close()
            raise DeliveryError(f"HTTP {response.status} {response.reason}")
        try:
            root = etree.fromstring(reply, _PARSER)
        except etree.XMLSyntaxError as exc:
            raise DeliveryError(f"the listener's reply is no XML: {exc}") from None
        error = root.find(".//ERROR")
        if error is not None:
            raise DeliveryError(f"the listener refused it: {error.get('CODE')} "
                                f"{error.get('DESCRIPTION') or ''}".rstrip())

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(OSError):
                self._conn.close()
            self._conn = None


@dataclass
class DestinationStats:
    delivered: int = 0
    lost: int = 0
    failures: int = 0


class Destination:
    """One listener's queue, in order, and the thread that empties it."""

    def __init__(self, name: str, url: str, settings: IndicationSettings,
                 loss_alert: Callable[[int, str], CIMInstance],
                 ssl_context: ssl.SSLContext) -> None:
        self.name = name
        self.url = url
        self._settings = settings
        self._loss_alert = loss_alert
        self._exporter = Exporter(url, timeout=settings.timeout, ssl_context=ssl_context)
        # DSP1054: the context names this stream of numbers; a new one (restart,
        # a destination made again) tells the listener the numbers start over.
        self.context = f"{name}:{uuid.uuid4()}"
        self._numbers = itertools.count(0)
        self._messages = itertools.count(1)
        self._queue: deque[CIMInstance] = deque()
        self._lost_unannounced = 0
        self.stats = DestinationStats()
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"lmi-mountd-indications-{name}",
                                        daemon=True)
        self._thread.start()

    def put(self, indication: CIMInstance) -> None:
        with self._cond:
            if self._closed:
                return
            self._queue.append(indication)
            if len(self._queue) > self._settings.max_queue:
                self._queue.popleft()
                self._lost(1, "its queue is full")
            self._cond.notify()

    def _lost(self, count: int, why: str) -> None:
        """Under ``_cond``."""
        self.stats.lost += count
        self._lost_unannounced += count
        log.warning("indication to %s (%s) lost: %s (%d lost so far)", self.name, self.url,
                    why, self.stats.lost)

    @property
    def waiting(self) -> int:
        with self._cond:
            return len(self._queue)

    def alive(self) -> bool:
        return self._thread.is_alive() or self._closed

    def close(self, timeout: float = 2.0) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)
        self._exporter.close()

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._queue and not self._closed:
                        self._cond.wait()
                    if self._closed:
                        return
                    lost, self._lost_unannounced = self._lost_unannounced, 0
                    indication = self._queue.popleft()
                if lost and not self._deliver(self._loss_alert(lost, self.url)):
                    with self._cond:
                        self._lost_unannounced += lost  # said with the next one instead
                if not self._deliver(indication):
                    with self._cond:
                        self._lost(1, f"not delivered after {self._settings.retry_attempts} "
                                      "retries")
        except Exception:
            log.exception("the delivery thread of %s stopped", self.name)
            raise

    def _deliver(self, indication: CIMInstance) -> bool:
        """Send with retries; False when every attempt failed (or the service stops)."""
        indication = indication.copy()
        indication["SequenceContext"] = self.context
        indication["SequenceNumber"] = Sint64(next(self._numbers))
        for attempt in range(self._settings.retry_attempts + 1):
            try:
                self._exporter.send(indication, str(next(self._messages)))
            except DeliveryError as exc:
                self.stats.failures += 1
                log.log(logging.WARNING if attempt == 0 else logging.DEBUG,
                        "cannot deliver to %s (%s), attempt %d of %d: %s", self.name, self.url,
                        attempt + 1, self._settings.retry_attempts + 1, exc)
                with self._cond:
                    if self._closed or (attempt < self._settings.retry_attempts
                                        and self._cond.wait_for(
                                            lambda: self._closed,
                                            self._settings.retry_interval)):
                        return False
                continue
            self.stats.delivered += 1
            return True
        return False


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
        self._store = store
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
        self._destinations: dict[str, Destination] = {}
        self._routes: tuple[Route, ...] = ()
        self.store = store
        self._poke = watch.Poke()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        #: Indications published, for the logs and the tests.
        self.published = 0
        store.on_change = self._routes_changed
        self._routes_changed(store.routes)

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> None:
        sources: list[watch.Source] = [watch.MountinfoPoll(self._mountinfo), self._poke]
        try:
            sources.append(watch.FileChanges(self._fstab_path))
        except OSError as exc:
            log.warning("fstab edits by hand are seen every %g s only: %s", RESYNC_SECONDS, exc)
        initial = self._read_model()
        self._watcher = threading.Thread(target=self._watch, args=(sources, initial),
                                         name="lmi-mountd-watcher", daemon=True)
        self._watcher.start()

    def alive(self) -> bool:
        watcher = self._watcher
        return (watcher is None or watcher.is_alive()) and all(
            d.alive() for d in list(self._destinations.values()))

    def close(self) -> None:
        self._stop.set()
        self._poke.poke()
        if self._watcher is not None:
            self._watcher.join(5.0)
        with self._lock:
            destinations, self._destinations = list(self._destinations.values()), {}
        for destination in destinations:
            destination.close()
        self._poke.close()

    def poke(self) -> None:
        """Something may have changed that the kernel and fstab do not show (holders)."""
        self._poke.poke()

    # -- routes ---------------------------------------------------------------

    def _routes_changed(self, routes: tuple[Route, ...]) -> None:
        wanted = {str(r.destination["Name"]): r.destination for r in routes}
        with self._lock:
            self._routes = routes
            gone = [d for name, d in self._destinations.items()
                    if name not in wanted or wanted[name]["Destination"] != d.url]
            for destination in gone:
                del self._destinations[destination.name]
            for name, instance in wanted.items():
                if name not in self._destinations:
                    self._destinations[name] = Destination(
                        name, str(instance["Destination"]), self.settings,
                        self._loss_alert, self._ssl)
        for destination in gone:
            destination.close()

    def _loss_alert(self, lost: int, url: str) -> CIMInstance:
        return self._factory.loss_alert(lost, url)

    def destination(self, name: str) -> Destination | None:
        with self._lock:
            return self._destinations.get(name)

    # -- publishing -----------------------------------------------------------

    def publish(self, indications: Iterable[CIMInstance], namespace: str | None = None) -> None:
        """Queue each indication for every destination whose filter selects it, once."""
        with self._lock:
            routes, destinations = self._routes, dict(self._destinations)
        for indication in indications:
            self.published += 1
            sent: set[str] = set()
            for route in routes_for(routes, indication, namespace or self._namespace,
                                    self._is_subclass):
                name = str(route.destination["Name"])
                destination = destinations.get(name)
                if destination is None or name in sent:
                    continue
                sent.add(name)
                copy = indication.copy()
                copy["IndicationFilterName"] = route.filter["Name"]
                destination.put(copy)

    def job_changed(self, job: Job, previous_state: int) -> None:
        """A published job changed state: CIM_InstModification of its LMI_MountJob."""
        self.publish([self._factory.job_modification(job, previous_state,
                                                     self._time_before_removal)])

    def _watch(self, sources: list[watch.Source], previous: ModelRead) -> None:
        try:
            while not self._stop.is_set():
                if watch.wait(sources, RESYNC_SECONDS) and not self._stop.is_set():
                    # A mount and its fstab line change within moments: read them
                    # once, when the request that changes them is done (its
                    # holders too), so that no half-done request is reported.
                    time.sleep(SETTLE_SECONDS)
                    self._wait_quiet(QUIET_SECONDS)
                    watch.wait(sources, 0)
                if self._stop.is_set():
                    return
                try:
                    current = self._read_model()
                except Exception:
                    log.exception("cannot read the model for indications; trying again")
                    self._stop.wait(1.0)
                    continue
                found = list(events.changes(previous, current, self._factory))
                previous = current
                if found:
                    log.debug("indications: %s", "; ".join(events.sources(found)))
                    self.publish(found)
        finally:
            for source in sources:
                if source is not self._poke:
                    source.close()

    # -- for the interop namespace -------------------------------------------

    def service_values(self) -> dict[str, Any]:
        return {
            "FilterCreationEnabled": True,
            "DeliveryRetryAttempts": self.settings.retry_attempts,
            "DeliveryRetryInterval": int(self.settings.retry_interval),
        }


def indication_service(broker: Any, settings: IndicationSettings, *,
                       get_interop_class: Callable[[str], Any],
                       interop_namespace: str,
                       subscriptions_file: Path | None) -> IndicationService:
    """The indication service of ``broker`` (``cim.broker.Broker``), with its
    subscriptions kept in ``subscriptions_file`` (None: in memory)."""
    model = broker.model

    def check_query(language: str, text: str) -> wql.Query:
        query = wql.parse(text, wql.check_language(language))
        cls = model.get_class(query.classname)
        if cls is None or not broker.is_subclass(cls.classname, "CIM_Indication"):
            raise CIMError(CIM_ERR_INVALID_PARAMETER,
                           f"filter query {text!r}: {query.classname} is no indication class "
                           "(CIM_InstCreation, CIM_InstModification, CIM_InstDeletion, "
                           "CIM_AlertIndication or CIM_Indication)")
        query.check(cls)
        return query

    def interop_class(classname: str) -> Any:
        cls = get_interop_class(classname)
        if cls is None:
            raise CIMError(CIM_ERR_INVALID_CLASS, f"class {classname!r} does not exist")
        return cls

    store = SubscriptionStore(subscriptions_file, interop_class, namespace=interop_namespace,
                              check_query=check_query, source_namespaces=(broker.namespace,))
    context = broker.context
    service = IndicationService(
        store, IndicationFactory(model, context.projector),
        read_model=events.ModelReader(context).read,
        wait_quiet=context.engine.wait_quiet,
        is_subclass=broker.is_subclass, namespace=broker.namespace,
        fstab_path=context.engine.fstab_path, settings=settings,
        time_before_removal=context.jobs.time_before_removal)
    context.jobs.listeners.append(service.job_changed)
    return service
