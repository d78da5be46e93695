"""Indication subscriptions in ``root/interop`` (DSP1054): filters, destinations, subscriptions.

Owns: the CIM_IndicationFilter, CIM_ListenerDestinationCIMXML and
CIM_IndicationSubscription instances clients create (pywbem's
``WBEMSubscriptionManager`` among them): their checks (a filter's query
parses and names an indication class; a destination is an http or https
URL; a subscription names a filter and a destination that exist), their
limits, and their persistence in the state directory, so that they survive
a restart, except destinations with PersistenceType 3 (Transient) and the
subscriptions that use them. And which destinations an indication goes to.

Must not know: HTTP, delivery, mounts. The interop broker calls it; the
indication service asks it where an indication goes.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from pywbem import (
    CIM_ERR_ALREADY_EXISTS,
    CIM_ERR_FAILED,
    CIM_ERR_INVALID_PARAMETER,
    CIM_ERR_NOT_FOUND,
    CIM_ERR_NOT_SUPPORTED,
    CIMClass,
    CIMError,
    CIMInstance,
    CIMInstanceName,
    Uint16,
    cimvalue,
)

from lmi_mount.cim import wql
from lmi_mount.cim.events import instance_key
from lmi_mount.linux import files
from lmi_mount.mounts.escaping import escape_controls

log = logging.getLogger(__name__)

FILTER: Final = "CIM_IndicationFilter"
DESTINATION: Final = "CIM_ListenerDestinationCIMXML"
SUBSCRIPTION: Final = "CIM_IndicationSubscription"
CLASSES: Final = (FILTER, DESTINATION, SUBSCRIPTION)
#: Where they are kept, in the state directory.
FILE_NAME: Final = "subscriptions.json"
#: Of each kind, at most this many (each destination has a queue and a thread).
MAX_EACH: Final = 256

# ValueMaps: PersistenceType 2 Permanent, 3 Transient; Protocol 2 CIM-XML;
# SubscriptionState 2 Enabled, 4 Disabled.
PERMANENT: Final = 2
TRANSIENT: Final = 3
CIM_XML: Final = 2
ENABLED: Final = 2
DISABLED: Final = 4

#: The longest string property (a Query has its own limit, ``wql``) and the most
#: elements of an array property: every instance is kept in memory and in the
#: state file, rewritten whole on each change.
MAX_STRING: Final = 1024
MAX_ELEMENTS: Final = 16
# A DNS name's label (RFC 1123, and "_", which real names hold).
_LABEL: Final = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")


@dataclass(frozen=True)
class Route:
    """Where one subscription sends what its filter selects."""

    filter: CIMInstance
    query: wql.Query
    source_namespaces: tuple[str, ...]
    destination: CIMInstance
    #: ``destination_key(destination)``, computed once: publishing looks the
    #: destination up for every indication.
    destination_id: Any = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "destination_id", destination_key(self.destination))


class SubscriptionStore:
    """The subscriptions of one service, kept in ``path`` (None: in memory only)."""

    def __init__(
        self,
        path: Path | None,
        get_class: Callable[[str], CIMClass],
        *,
        namespace: str,
        check_query: Callable[[str, str], wql.Query],
        source_namespaces: Sequence[str],
        system_name: str = "",
        max_each: int = MAX_EACH,
    ) -> None:
        self._path = path
        self._system_name = system_name
        self._get_class = get_class
        self._namespace = namespace
        self._check_query = check_query
        self._source_namespaces = tuple(source_namespaces)
        self._max_each = max_each
        self._lock = threading.Lock()
        self._instances: dict[str, dict[Any, CIMInstance]] = {c.lower(): {} for c in CLASSES}
        self._routes: tuple[Route, ...] = ()
        #: Called with the new routes after every change (the indication service).
        self.on_change: Callable[[tuple[Route, ...]], None] | None = None
        if path is not None and os.path.lexists(path):
            try:
                files.check_trusted(path, "subscriptions file", secret=True)
            except files.UntrustedFile as exc:
                # Neither read nor overwritten: subscriptions live in memory only.
                log.error("%s; subscriptions are not kept across restarts", exc)
                self._path = None
        if self._path is not None:
            self._load(self._path)

    # -- reading --------------------------------------------------------------

    def handles(self, classname: str) -> bool:
        return classname.lower() in self._instances

    def instances(self, classname: str) -> list[CIMInstance]:
        with self._lock:
            return [i.copy() for i in self._instances[classname.lower()].values()]

    def get(self, path: CIMInstanceName) -> CIMInstance | None:
        with self._lock:
            found = self._instances[path.classname.lower()].get(instance_key(path))
            return found.copy() if found is not None else None

    @property
    def max_each(self) -> int:
        return self._max_each

    @property
    def routes(self) -> tuple[Route, ...]:
        return self._routes

    # -- writing --------------------------------------------------------------

    def create(self, instance: CIMInstance) -> CIMInstanceName:
        classname = instance.classname.lower()
        checked = self._checker(classname)(self._typed(instance))
        assert checked.path is not None
        with self._lock:
            kind = self._instances[classname]
            key = instance_key(checked.path)
            if key in kind:
                raise CIMError(CIM_ERR_ALREADY_EXISTS, f"{checked.path} exists already")
            if len(kind) >= self._max_each:
                raise CIMError(CIM_ERR_FAILED, f"{self._max_each} {checked.classname} "
                               "instances exist already (the limit): delete unused ones")
            if classname == SUBSCRIPTION.lower():
                for role in ("Filter", "Handler"):
                    ref = checked[role]
                    if instance_key(ref) not in self._instances[ref.classname.lower()]:
                        raise CIMError(CIM_ERR_NOT_FOUND, f"{role} {ref} does not exist")
            kind[key] = checked
            self._changed()
        log.info("created %s", escape_controls(str(checked.path)))
        return checked.path.copy()

    def modify(self, instance: CIMInstance, property_list: Sequence[str] | None) -> None:
        """ModifyInstance of a subscription: its SubscriptionState only (2 Enabled,
        4 Disabled), as consoles enable and disable what they subscribed."""
        path = instance.path
        if path is None or path.classname.lower() != SUBSCRIPTION.lower():
            raise CIMError(CIM_ERR_NOT_SUPPORTED, "only a subscription's SubscriptionState "
                           "can be modified; delete and create the others")
        wanted = [p.lower() for p in property_list] if property_list is not None else None
        given = {name.lower(): prop.value for name, prop in instance.properties.items()
                 if wanted is None or name.lower() in wanted}
        with self._lock:
            current = self._instances[SUBSCRIPTION.lower()].get(instance_key(path))
            if current is None:
                raise CIMError(CIM_ERR_NOT_FOUND, f"no instance {path}")
            for name, value in given.items():
                if name == "subscriptionstate":
                    if value != current["SubscriptionState"]:  # a kept one may hold another
                        _check_state(value)
                elif current.get(name) != value:
                    raise CIMError(CIM_ERR_NOT_SUPPORTED, f"{name!r} of a subscription cannot "
                                   "be modified; only SubscriptionState")
            if "subscriptionstate" in given:
                current["SubscriptionState"] = Uint16(given["subscriptionstate"])
                self._changed()
        log.info("%s: SubscriptionState %s", escape_controls(str(path)),
                 given.get("subscriptionstate"))

    def delete(self, path: CIMInstanceName) -> None:
        with self._lock:
            kind = self._instances[path.classname.lower()]
            key = instance_key(path)
            if key not in kind:
                raise CIMError(CIM_ERR_NOT_FOUND, f"no instance {path}")
            if path.classname.lower() != SUBSCRIPTION.lower():
                users = [s.path for s in self._instances[SUBSCRIPTION.lower()].values()
                         if key in (instance_key(s["Filter"]), instance_key(s["Handler"]))]
                if users:
                    raise CIMError(CIM_ERR_FAILED, f"{path} is used by {users[0]}: delete "
                                   "the subscription first")
            del kind[key]
            self._changed()
        log.info("deleted %s", escape_controls(str(path)))

    def _changed(self, *, save: bool = True) -> None:
        """Under ``_lock``: new routes, and the permanent instances to disk."""
        filters = self._instances[FILTER.lower()]
        destinations = self._instances[DESTINATION.lower()]
        # A filter's query was parsed when it was made: parsed again on every
        # change, 256 large ones took seconds under the lock.
        parsed = {id(route.filter): route.query for route in self._routes}
        routes = []
        for subscription in self._instances[SUBSCRIPTION.lower()].values():
            if subscription["SubscriptionState"] not in (None, ENABLED):
                continue
            found = filters.get(instance_key(subscription["Filter"]))
            destination = destinations.get(instance_key(subscription["Handler"]))
            if found is None or destination is None:
                continue
            namespaces = tuple(found["SourceNamespaces"] or ()) or (
                (found["SourceNamespace"],) if found["SourceNamespace"] else
                self._source_namespaces[:1])
            query = parsed.get(id(found))
            if query is None:
                query = parsed[id(found)] = self._check_query(found["QueryLanguage"],
                                                              found["Query"])
            routes.append(Route(found, query, tuple(n.strip("/").lower() for n in namespaces),
                                destination))
        self._routes = tuple(routes)
        if self._path is not None and save:
            self._save(self._path)
        if self.on_change is not None:
            self.on_change(self._routes)

    # -- checks ---------------------------------------------------------------

    def _typed(self, instance: CIMInstance) -> CIMInstance:
        """``instance`` as an instance of its class here (see ``_typed_values``),
        its path's keys taken where its properties do not say."""
        given = [(name, prop.value) for name, prop in instance.properties.items()]
        if instance.path is not None:
            given += [(name, value) for name, value in instance.path.keybindings.items()
                      if name not in instance.properties]
        return self._typed_values(instance.classname, given)

    def _typed_values(self, classname: str, given: Iterable[tuple[str, Any]], *,
                      new: bool = True) -> CIMInstance:
        """An instance of ``classname`` here: unknown properties refused, values of
        the declared types (JSON's numbers included), and of the sizes a ``new``
        one may have (one kept before the limits came is not lost at a restart)."""
        cls = self._get_class(classname)
        values: dict[str, Any] = {}
        for name, value in given:
            declared = cls.properties.get(name)
            if declared is None:
                raise CIMError(CIM_ERR_INVALID_PARAMETER,
                               f"{cls.classname} has no property {name!r}")
            try:
                values[declared.name] = (value if declared.type == "reference"
                                         else cimvalue(value, declared.type))
            except (TypeError, ValueError) as exc:
                raise CIMError(CIM_ERR_INVALID_PARAMETER,
                               f"{cls.classname}.{declared.name}: {exc}") from None
            if new:
                _check_size(declared.name, values[declared.name])
        return CIMInstance.from_class(cls, namespace=self._namespace, property_values=values,
                                      include_missing_properties=True, include_path=False)

    def _named(self, instance: CIMInstance) -> CIMInstance:
        """Keys a client leaves out get this service's values (DSP1054 lets it)."""
        instance["CreationClassName"] = instance["CreationClassName"] or instance.classname
        instance["SystemCreationClassName"] = (instance["SystemCreationClassName"]
                                               or "CIM_ComputerSystem")
        if not instance["Name"]:
            raise CIMError(CIM_ERR_INVALID_PARAMETER, f"a {instance.classname} needs a Name")
        instance["SystemName"] = instance["SystemName"] or self._system_name
        if not instance["SystemName"]:
            raise CIMError(CIM_ERR_INVALID_PARAMETER, f"a {instance.classname} needs a SystemName")
        cls = self._get_class(instance.classname)
        return CIMInstance.from_class(cls, namespace=self._namespace,
                                      property_values=dict(instance.items()),
                                      include_missing_properties=True, include_path=True)

    def _checker(self, classname: str) -> Callable[..., CIMInstance]:
        checkers = {FILTER.lower(): self._filter, DESTINATION.lower(): self._destination,
                    SUBSCRIPTION.lower(): self._subscription}
        return checkers[classname.lower()]

    def _filter(self, typed: CIMInstance, *, new: bool = True) -> CIMInstance:
        typed = self._named(typed)
        if not typed["Query"]:
            raise CIMError(CIM_ERR_INVALID_PARAMETER, "an indication filter needs a Query")
        typed["QueryLanguage"] = wql.check_language(typed["QueryLanguage"] or wql.LANGUAGE)
        self._check_query(typed["QueryLanguage"], typed["Query"])
        namespaces = list(typed["SourceNamespaces"] or ())
        if typed["SourceNamespace"]:
            namespaces.append(typed["SourceNamespace"])
        for namespace in namespaces:
            if namespace.strip("/").lower() not in self._source_namespaces:
                raise CIMError(CIM_ERR_INVALID_PARAMETER,
                               f"source namespace {namespace!r} is not served here "
                               f"(served: {', '.join(self._source_namespaces)})")
        return typed

    def _destination(self, typed: CIMInstance, *, new: bool = True) -> CIMInstance:
        """A destination's checks; a kept one (not ``new``) may have a PersistenceType
        outside the ValueMap, taken before it was refused: it stays permanent."""
        typed = self._named(typed)
        url = typed["Destination"]
        if not url:
            raise CIMError(CIM_ERR_INVALID_PARAMETER, "a listener destination needs a "
                           "Destination URL")
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise CIMError(CIM_ERR_INVALID_PARAMETER,
                           f"Destination {url!r} is no URL: {exc}") from None
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            raise CIMError(CIM_ERR_INVALID_PARAMETER, f"Destination {url!r} must be an http "
                           "or https URL with a host (http://listener.example:5990)")
        if parts.username is not None or parts.password is not None:
            # They would not be sent, and readers would see them.
            raise CIMError(CIM_ERR_INVALID_PARAMETER, "a Destination URL must not hold "
                           "credentials: the listener is not logged in to")
        # What no request can carry would fail every send, later and unseen.
        if not url.isascii() or any(c <= " " or c == "\x7f" for c in url):
            raise CIMError(CIM_ERR_INVALID_PARAMETER,
                           f"Destination {url!r} holds white space or control characters, or "
                           "is not ASCII: percent-encode its path, give its host in ASCII")
        if port == 0:
            raise CIMError(CIM_ERR_INVALID_PARAMETER,
                           f"Destination {url!r} names port 0: give the listener's port")
        if not _is_host(parts.hostname):
            raise CIMError(CIM_ERR_INVALID_PARAMETER,
                           f"Destination {url!r}: host {parts.hostname!r} is no host name "
                           "or IP address")
        if typed["PersistenceType"] is None:
            typed["PersistenceType"] = Uint16(PERMANENT)
        elif new and typed["PersistenceType"] not in (PERMANENT, TRANSIENT):
            raise CIMError(CIM_ERR_INVALID_PARAMETER, "PersistenceType must be 2 (Permanent) "
                           f"or 3 (Transient), not {typed['PersistenceType']}")
        if typed["Protocol"] is None:
            typed["Protocol"] = Uint16(CIM_XML)
        elif typed["Protocol"] != CIM_XML:
            raise CIMError(CIM_ERR_INVALID_PARAMETER,
                           f"Protocol {typed['Protocol']} is not supported (2: CIM-XML)")
        return typed

    def _subscription(self, typed: CIMInstance, *, new: bool = True) -> CIMInstance:
        for role, classname in (("Filter", FILTER), ("Handler", DESTINATION)):
            ref = typed[role]
            if not isinstance(ref, CIMInstanceName):
                raise CIMError(CIM_ERR_INVALID_PARAMETER, f"a subscription needs {role}")
            if ref.classname.lower() != classname.lower():
                raise CIMError(CIM_ERR_INVALID_PARAMETER,
                               f"{role} must name a {classname}, not {ref.classname}")
            ref = ref.copy()
            ref.namespace, ref.host = self._namespace, None
            typed[role] = ref
        if typed["SubscriptionState"] is None:
            typed["SubscriptionState"] = Uint16(ENABLED)
        if new:  # a kept one in another state, taken before, sends nothing (as before)
            _check_state(typed["SubscriptionState"])
            if typed["SubscriptionDuration"] is not None:
                # Indications after it MUST NOT be sent (CIM schema); a lease is
                # not kept here, and DSP1054 lets a service refuse it.
                raise CIMError(CIM_ERR_NOT_SUPPORTED,
                               f"SubscriptionDuration {typed['SubscriptionDuration']} is not "
                               "supported: a subscription lasts until it is deleted (give none)")
        typed.path = CIMInstanceName(SUBSCRIPTION, {"Filter": typed["Filter"],
                                                    "Handler": typed["Handler"]},
                                     namespace=self._namespace)
        return typed

    # -- persistence ----------------------------------------------------------

    def _permanent(self) -> Iterator[CIMInstance]:
        transient = {key for key, d in self._instances[DESTINATION.lower()].items()
                     if d["PersistenceType"] == TRANSIENT}
        for classname in CLASSES:
            for key, instance in self._instances[classname.lower()].items():
                if key in transient or (classname == SUBSCRIPTION
                                        and instance_key(instance["Handler"]) in transient):
                    continue
                yield instance

    def _save(self, path: Path) -> None:
        records = [{"class": i.classname,
                    "properties": {name: _jsonable(value) for name, value in i.items()
                                   if value is not None}}
                   for i in self._permanent()]
        text = json.dumps(records, indent=1, sort_keys=True) + "\n"
        try:
            _, version = files.read_versioned(path)
            files.replace_atomically(path, text, version, new_file_mode=0o600)
        except files.FileError as exc:
            # The subscription works now; only a restart would lose it.
            log.error("cannot keep the subscriptions in %s (a restart loses changes): %s",
                      path, exc)

    def _load(self, path: Path) -> None:
        """The kept subscriptions; a record that cannot be used is skipped (logged),
        and the file as it was is kept aside before it is ever rewritten."""
        try:
            text, _ = files.read_versioned(path)
        except files.FileError as exc:
            log.error("cannot read the subscriptions in %s: %s", path, exc)
            self._path = None  # not overwritten: what it holds may be wanted
            return
        if not text.strip():
            return
        try:
            records = json.loads(text)
            if not isinstance(records, list):
                raise ValueError("not a list of records")
        except ValueError as exc:
            self._keep_aside(path, f"it is not JSON: {exc}")
            return
        rejected = 0
        for number, record in enumerate(records, 1):
            try:
                instance = self._typed_values(record["class"], [
                    (name, _from_json(value)) for name, value in record["properties"].items()],
                    new=False)
                checked = self._checker(instance.classname)(instance, new=False)
            except (ValueError, KeyError, TypeError, AttributeError, CIMError) as exc:
                rejected += 1
                log.error("%s: record %d cannot be used, skipped: %s", path, number,
                          escape_controls(str(exc)))
                continue
            assert checked.path is not None
            self._instances[checked.classname.lower()][instance_key(checked.path)] = checked
        subscriptions = self._instances[SUBSCRIPTION.lower()]
        for key, subscription in list(subscriptions.items()):
            missing = [role for role in ("Filter", "Handler")
                       if instance_key(subscription[role]) not in
                       self._instances[subscription[role].classname.lower()]]
            if missing:
                rejected += 1
                del subscriptions[key]
                log.error("%s: the subscription of %s names no %s that could be used, "
                          "skipped", path, escape_controls(str(subscription["Handler"])),
                          " nor ".join(missing).lower())
        if rejected:
            self._keep_aside(path, f"{rejected} of its records cannot be used")
        with self._lock:
            self._changed(save=False)

    @staticmethod
    def _keep_aside(path: Path, why: str) -> None:
        aside = path.with_name(f"{path.name}.rejected-{int(time.time())}")
        try:
            shutil.copy2(path, aside, follow_symlinks=False)
        except OSError as exc:
            log.error("%s: %s, and it cannot be kept aside: %s", path, why, exc)
            return
        log.error("%s: %s; the file as it was is kept as %s", path, why, aside)


def _check_state(value: Any) -> None:
    if value not in (ENABLED, DISABLED):
        shown = int(value) if isinstance(value, int) else repr(value)
        raise CIMError(CIM_ERR_INVALID_PARAMETER, "SubscriptionState must be 2 (Enabled) "
                       f"or 4 (Disabled), not {shown}")


def _check_size(name: str, value: Any) -> None:
    """Refuse a string longer than MAX_STRING (a Query aside) or an array of more
    than MAX_ELEMENTS elements."""
    if isinstance(value, list):
        if len(value) > MAX_ELEMENTS:
            raise CIMError(CIM_ERR_INVALID_PARAMETER, f"{name} has {len(value)} elements; "
                           f"at most {MAX_ELEMENTS}")
        for element in value:
            _check_size(name, element)
    elif isinstance(value, str) and name != "Query" and len(value) > MAX_STRING:
        raise CIMError(CIM_ERR_INVALID_PARAMETER, f"{name} is {len(value)} characters long; "
                       f"at most {MAX_STRING}")


def _is_host(host: str) -> bool:
    """Whether ``host`` (urlsplit's hostname) is an IP address or a DNS name."""
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(host)
        return True
    labels = host.removesuffix(".").split(".")
    return len(host) <= 253 and all(_LABEL.fullmatch(label) for label in labels)


def _jsonable(value: Any) -> Any:
    if isinstance(value, CIMInstanceName):
        return {"classname": value.classname,
                "keys": {k: _jsonable(v) for k, v in value.keybindings.items()}}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, (bool, int, float, str)):
        return value
    return str(value)  # datetimes


def _from_json(value: Any) -> Any:
    if isinstance(value, dict):
        return CIMInstanceName(value["classname"], {k: _from_json(v)
                                                    for k, v in value["keys"].items()})
    return value


def routes_for(routes: Sequence[Route], indication: CIMInstance, namespace: str,
               is_subclass: Callable[[str, str], bool]) -> Iterator[Route]:
    """The routes whose filter selects ``indication`` of ``namespace``."""
    namespace = namespace.strip("/").lower()
    for route in routes:
        if namespace not in route.source_namespaces:
            continue
        if not is_subclass(indication.classname, route.query.classname):
            continue
        if route.query.matches(indication, is_subclass):
            yield route


def destination_key(destination: CIMInstance) -> Any:
    """A destination's identity: its class and keys (names may repeat across systems)."""
    assert destination.path is not None
    return instance_key(destination.path)
