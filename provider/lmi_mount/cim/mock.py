"""pywbem_mock front end: a ``FakedWBEMConnection`` whose broker namespaces answer live.

Owns: turning a pywbem_mock ``FakedWBEMConnection`` into a front end of the
broker (``lmi_mount.cim.broker``, interface in ``BrokerProtocol`` below): the
model's classes in the mock's class store, every instance read, instance
write and method call in a namespace the broker serves answered by the broker
at call time, one re-entrant lock around each operation, and pywbemcli's
``--mock-server`` cache.

Must not know: mounts, the fstab, the engine, the projection or the
providers. It talks to the broker with pywbem objects through the methods of
``BrokerProtocol`` only, and decides nothing the broker decides: which
instances exist, what they contain, what a write or a method does, and every
error of those (a ``CIMError`` from the broker reaches the client unchanged).

How pywbem_mock 1.9.1 is bent, and why (file:line in pywbem_mock):

* Reads. ``MainProvider`` answers every instance read from the namespace's
  instance store, which has no class filter: EnumerateInstances walks every
  instance of the namespace and deep-copies each twice
  (``_mainprovider.py:1596-1600`` over ``_inmemoryrepository.py:149``, then
  ``_get_instance`` -> ``_baseprovider.py:555`` -> ``_inmemoryrepository.py:101``);
  References and Associators walk every instance of the namespace for each
  call (``_mainprovider.py:1886``). ``LiveMainProvider`` answers GetInstance,
  EnumerateInstances, EnumerateInstanceNames, Associators, AssociatorNames,
  References and ReferenceNames of broker namespaces with one broker call
  each, and hands the broker's fresh objects to the client without copying.
  The Open* operations of ``MainProvider`` call those same seven methods
  (``_mainprovider.py:2881, 2985, 3052, 3119, 3189, 3261``), so pull
  enumeration is live too and keeps the mock's enumeration contexts.
* Writes and methods. ``ProviderDispatcher`` looks for the target in the
  instance store (``_providerdispatcher.py:307, 431, 515``), checks the ``In``
  qualifier of the method instead of the parameter's (``:579``, so an
  OUT-only parameter is accepted as input) and raises TypeError after the
  provider ran when an OUT value is None (``:671``). ``LiveDispatcher`` sends
  CreateInstance, ModifyInstance, DeleteInstance and InvokeMethod of broker
  namespaces straight to the broker, which validates them: it must anyway,
  because the CIM-XML server has no mock in front of it. OUT parameters reach
  the client as the broker returns them, None included. (The other rough
  edge, ``embedded_object`` None on EmbeddedInstance parameters, is fixed in
  the model by ``lmi_mount.cim.model``.)
* The instance store of each broker namespace becomes a ``LiveInstanceStore``
  (``InMemoryRepository`` has no setter: ``_inmemoryrepository.py:268``), so
  whatever else reads the repository (``display_repository``, providers
  registered by a mock script) sees the broker's instances, and a direct
  write into the repository fails loudly instead of adding instances no read
  would ever return.
* Class and qualifier reads stay with the mock, from the model installed in
  its class store (``install_model``: milliseconds, no compile). Class and
  qualifier writes in broker namespaces are NOT_SUPPORTED: the model is fixed.
  EnumerateClasses ignores IncludeClassOrigin in 1.9.1 because of a typo in
  the parameter name (``_wbemconnection_mock.py:1592``); it is fixed here.
* Open* with OperationTimeout above the mock's maximum raises ValueError from
  a broken format string (``_mainprovider.py:2767``), and a FilterQuery is
  validated but never applied (``:2756``, Open* return everything): here the
  first is CIM_ERR_INVALID_OPERATION_TIMEOUT and the second
  CIM_ERR_FILTERED_ENUMERATION_NOT_SUPPORTED (DSP0200 1.4, 5.3.2 pull
  operations). Enumeration contexts of abandoned pulls expire after their
  OperationTimeout (the mock keeps them forever), and a Pull with
  MaxObjectCount 0 returns nothing and keeps the context open (DSP0200; the
  mock returns 100 objects, ``_mainprovider.py:2727``).
* Threads. The mock is not thread safe (its dicts change size under
  concurrent calls), so every operation runs under one re-entrant lock, taken
  around the connection's ``_imethodcall`` and ``_methodcall``. The broker
  keeps its own lock for its own state.

DSP0200 parameters of instance operations are passed to the broker, which
applies them: PropertyList as given, DeepInheritance unspecified means true,
IncludeQualifiers and IncludeClassOrigin unspecified mean false. LocalOnly is
deprecated and DSP0200 lets a server treat it as false consistently; this
front end always does, as pywbem_mock itself does
(``INSTANCE_RETRIEVE_LOCAL_ONLY``, ``_mainprovider.py:82``).
"""

from __future__ import annotations

import inspect
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import MethodType
from typing import Any, Protocol, TypeVar, cast

from pywbem import (
    CIM_ERR_FAILED,
    CIM_ERR_FILTERED_ENUMERATION_NOT_SUPPORTED,
    CIM_ERR_INVALID_CLASS,
    CIM_ERR_INVALID_OPERATION_TIMEOUT,
    CIM_ERR_NOT_FOUND,
    CIM_ERR_NOT_SUPPORTED,
    DEFAULT_TIMEOUT,
    CIMClass,
    CIMClassName,
    CIMError,
    CIMInstance,
    CIMInstanceName,
    CIMQualifierDeclaration,
    NocaseDict,
)
from pywbem_mock import (
    BaseObjectStore,
    FakedWBEMConnection,
    InMemoryRepository,
    MainProvider,
    ProviderDispatcher,
)
from pywbem_mock.config import OPEN_MAX_TIMEOUT

from lmi_mount.cim import wql
from lmi_mount.cim.model import Model, install_model
from lmi_mount.cim.names import NAMESPACE

__all__ = [
    "BrokerProtocol",
    "LiveConnection",
    "LiveInstanceStore",
    "LiveSetupError",
    "connect",
    "mock_connection",
    "refuse_pywbemcli_cache",
    "setup_live",
]


class BrokerProtocol(Protocol):
    """The methods of the broker (``lmi_mount.cim.broker.Broker``) this front end calls.

    Every object a read returns must be fresh (built for this call, shared
    with nobody): the front end hands it to the client, which may change it,
    and sets the host of association results in place. ``caller`` is passed
    through untouched (``Any`` so that the broker may type it as its own
    ``Caller``).
    """

    model: Model

    def namespaces(self) -> list[str]: ...

    def enumerate_classes(
        self,
        namespace: str,
        classname: str | None = None,
        *,
        deep_inheritance: bool = ...,
        local_only: bool = ...,
        include_qualifiers: bool = ...,
        include_class_origin: bool = ...,
    ) -> list[CIMClass]: ...

    def enumerate_qualifiers(self, namespace: str) -> list[CIMQualifierDeclaration]: ...

    def get_instance(
        self,
        namespace: str,
        path: CIMInstanceName,
        *,
        property_list: Sequence[str] | None = ...,
        include_qualifiers: bool = ...,
        include_class_origin: bool = ...,
        local_only: bool = ...,
    ) -> CIMInstance: ...

    def enumerate_instances(
        self,
        namespace: str,
        classname: str,
        *,
        deep_inheritance: bool = ...,
        property_list: Sequence[str] | None = ...,
        include_qualifiers: bool = ...,
        include_class_origin: bool = ...,
        local_only: bool = ...,
    ) -> Iterator[CIMInstance]: ...

    def enumerate_instance_names(
        self, namespace: str, classname: str
    ) -> Iterator[CIMInstanceName]: ...

    def associators(
        self,
        namespace: str,
        path: CIMInstanceName,
        *,
        assoc_class: str | None = ...,
        result_class: str | None = ...,
        role: str | None = ...,
        result_role: str | None = ...,
        property_list: Sequence[str] | None = ...,
        include_qualifiers: bool = ...,
        include_class_origin: bool = ...,
    ) -> Iterator[CIMInstance]: ...

    def associator_names(
        self,
        namespace: str,
        path: CIMInstanceName,
        *,
        assoc_class: str | None = ...,
        result_class: str | None = ...,
        role: str | None = ...,
        result_role: str | None = ...,
    ) -> Iterator[CIMInstanceName]: ...

    def references(
        self,
        namespace: str,
        path: CIMInstanceName,
        *,
        result_class: str | None = ...,
        role: str | None = ...,
        property_list: Sequence[str] | None = ...,
        include_qualifiers: bool = ...,
        include_class_origin: bool = ...,
    ) -> Iterator[CIMInstance]: ...

    def reference_names(
        self,
        namespace: str,
        path: CIMInstanceName,
        *,
        result_class: str | None = ...,
        role: str | None = ...,
    ) -> Iterator[CIMInstanceName]: ...

    def create_instance(
        self, namespace: str, instance: CIMInstance, *, caller: Any
    ) -> CIMInstanceName: ...

    def modify_instance(
        self,
        namespace: str,
        instance: CIMInstance,
        *,
        property_list: Sequence[str] | None = ...,
        caller: Any,
    ) -> None: ...

    def delete_instance(self, namespace: str, path: CIMInstanceName, *, caller: Any) -> None: ...

    def invoke_method(
        self,
        namespace: str,
        path: CIMInstanceName | CIMClassName,
        method: str,
        params: Mapping[str, Any],
        *,
        caller: Any,
    ) -> tuple[Any, Mapping[str, Any]]: ...


class LiveSetupError(Exception):
    """A connection cannot be made live (the message says which namespace or part, and why)."""


# pywbem_mock internals this module relies on (see the module docstring).
_REQUIRED_INTERNALS: tuple[tuple[type, str], ...] = (
    (FakedWBEMConnection, "_mock_imethodcall"),
    (FakedWBEMConnection, "_mock_methodcall"),
    (FakedWBEMConnection, "_make_tuple"),
    (MainProvider, "_open_response"),
    (MainProvider, "_pull_response"),
    (MainProvider, "_validate_open_params"),
    (MainProvider, "_validate_instancename_namespace"),
)


class _Live:
    """What the live connections on one repository share."""

    def __init__(self, broker: BrokerProtocol, caller: Any, namespaces: Iterable[str]) -> None:
        self.broker = broker
        self.caller = caller
        self.namespaces = frozenset(_ns_key(ns) for ns in namespaces)
        self.lock = threading.RLock()
        self.dispatcher: LiveDispatcher
        self.mainprovider: LiveMainProvider

    def serves(self, namespace: str | None) -> bool:
        return namespace is not None and _ns_key(namespace) in self.namespaces


def _ns_key(namespace: str) -> str:
    return namespace.strip("/").lower()


@contextmanager
def _broker_call(operation: str) -> Iterator[None]:
    """Let CIMError through unchanged; any other failure is CIM_ERR_FAILED, as a server says.

    The original exception stays chained (``__cause__``) for debugging.
    """
    try:
        yield
    except CIMError:
        raise
    except Exception as exc:
        raise CIMError(
            CIM_ERR_FAILED, f"{operation} failed in the broker: {type(exc).__name__}: {exc}"
        ) from exc


def _property_list(property_list: str | Iterable[str] | None) -> list[str] | None:
    if property_list is None:
        return None
    if isinstance(property_list, str):
        return [property_list]
    return list(property_list)


_Path = TypeVar("_Path", CIMInstanceName, CIMClassName)


class LiveInstanceStore(BaseObjectStore):  # type: ignore[misc]
    """The instance store of a broker namespace: every access asks the broker.

    Reads go to the broker at call time; ``create``, ``update`` and
    ``delete`` are refused with CIM_ERR_NOT_SUPPORTED: instances of a live
    namespace change through CreateInstance, ModifyInstance, DeleteInstance
    and methods. Pickled (pywbemcli caches the repository), it becomes a
    ``DetachedInstanceStore``.
    """

    def __init__(self, live: _Live, namespace: str, class_store: BaseObjectStore) -> None:
        super().__init__(CIMInstance)
        self._live = live
        self._namespace = namespace
        self._class_store = class_store

    def _roots(self) -> list[str]:
        # Every instance is an instance of a subclass of a root class.
        return [c.classname for c in self._class_store.iter_values(copy=False) if not c.superclass]

    def object_exists(self, name: CIMInstanceName) -> bool:
        try:
            self._live.broker.get_instance(self._namespace, name, property_list=[])
        except CIMError as exc:
            if exc.status_code in (CIM_ERR_NOT_FOUND, CIM_ERR_INVALID_CLASS):
                return False
            raise
        return True

    def get(self, name: CIMInstanceName, copy: bool = True) -> CIMInstance:
        # The broker's instances are fresh: ``copy`` has nothing to protect.
        try:
            return self._live.broker.get_instance(self._namespace, name)
        except CIMError as exc:
            if exc.status_code in (CIM_ERR_NOT_FOUND, CIM_ERR_INVALID_CLASS):
                raise KeyError(f"{name} not in namespace {self._namespace!r}") from exc
            raise

    def create(self, name: CIMInstanceName, cim_object: CIMInstance) -> None:
        self._refuse("create", name)

    def update(self, name: CIMInstanceName, cim_object: CIMInstance) -> None:
        self._refuse("update", name)

    def delete(self, name: CIMInstanceName) -> None:
        self._refuse("delete", name)

    def iter_names(self) -> Iterator[CIMInstanceName]:
        for classname in self._roots():
            yield from self._live.broker.enumerate_instance_names(self._namespace, classname)

    def iter_values(self, copy: bool = True) -> Iterator[CIMInstance]:
        for classname in self._roots():
            yield from self._live.broker.enumerate_instances(self._namespace, classname)

    def len(self) -> int:
        return sum(1 for _ in self.iter_names())

    def _refuse(self, action: str, name: CIMInstanceName) -> None:
        raise CIMError(
            CIM_ERR_NOT_SUPPORTED,
            f"cannot {action} {name} in the mock repository: namespace {self._namespace!r} "
            "is served live by the broker; use CreateInstance, ModifyInstance, "
            "DeleteInstance or a method",
        )

    def __reduce__(self) -> tuple[type, tuple[str]]:
        # pywbemcli pickles the repository of a named connection
        # (pywbemcli/_pywbemcli_operations.py:607); the broker cannot follow.
        return (DetachedInstanceStore, (self._namespace,))


class DetachedInstanceStore(BaseObjectStore):  # type: ignore[misc]
    """What a pickled ``LiveInstanceStore`` becomes: every access fails and says why."""

    def __init__(self, namespace: str) -> None:
        super().__init__(CIMInstance)
        self._namespace = namespace

    def _fail(self, *args: object, **kwargs: object) -> Any:
        raise CIMError(
            CIM_ERR_FAILED,
            f"namespace {self._namespace!r} was served live by the lmi-mount broker, which a "
            "pickled (cached) mock repository cannot hold; a pywbemcli mock script that calls "
            "setup_live() must also call refuse_pywbemcli_cache(globals()) at module level",
        )

    object_exists = get = create = update = delete = iter_names = iter_values = len = _fail


class LiveMainProvider(MainProvider):  # type: ignore[misc]
    """``MainProvider`` whose instance reads in broker namespaces ask the broker."""

    def __init__(
        self,
        host: str,
        disable_pull_operations: bool,
        cimrepository: InMemoryRepository,
        providerdispatcher: ProviderDispatcher,
        live: _Live,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(host, disable_pull_operations, cimrepository, providerdispatcher)
        self._live = live
        self.clock = clock

    @property
    def _broker(self) -> BrokerProtocol:
        return self._live.broker

    # -- instance reads -----------------------------------------------------

    def GetInstance(
        self,
        InstanceName: CIMInstanceName,
        LocalOnly: bool | None = None,
        IncludeQualifiers: bool | None = None,
        IncludeClassOrigin: bool | None = None,
        PropertyList: str | Iterable[str] | None = None,
    ) -> CIMInstance:
        namespace = InstanceName.namespace
        if not self._live.serves(namespace):
            return super().GetInstance(
                InstanceName, LocalOnly, IncludeQualifiers, IncludeClassOrigin, PropertyList
            )
        with _broker_call("GetInstance"):
            return self._broker.get_instance(
                namespace,
                InstanceName,
                property_list=_property_list(PropertyList),
                include_qualifiers=IncludeQualifiers is True,
                include_class_origin=IncludeClassOrigin is True,
                local_only=False,
            )

    def EnumerateInstances(
        self,
        namespace: str,
        ClassName: str,
        LocalOnly: bool | None = None,
        DeepInheritance: bool | None = None,
        IncludeQualifiers: bool | None = None,
        IncludeClassOrigin: bool | None = None,
        PropertyList: str | Iterable[str] | None = None,
    ) -> list[CIMInstance]:
        if not self._live.serves(namespace):
            return cast(
                "list[Any]",
                super().EnumerateInstances(
                    namespace,
                    ClassName,
                    LocalOnly,
                    DeepInheritance,
                    IncludeQualifiers,
                    IncludeClassOrigin,
                    PropertyList,
                ),
            )
        with _broker_call("EnumerateInstances"):
            return list(
                self._broker.enumerate_instances(
                    namespace,
                    ClassName,
                    deep_inheritance=DeepInheritance is not False,
                    property_list=_property_list(PropertyList),
                    include_qualifiers=IncludeQualifiers is True,
                    include_class_origin=IncludeClassOrigin is True,
                    local_only=False,
                )
            )

    def EnumerateInstanceNames(self, namespace: str, ClassName: str) -> list[CIMInstanceName]:
        if not self._live.serves(namespace):
            return cast("list[Any]", super().EnumerateInstanceNames(namespace, ClassName))
        with _broker_call("EnumerateInstanceNames"):
            return list(self._broker.enumerate_instance_names(namespace, ClassName))

    def References(
        self,
        namespace: str,
        ObjectName: CIMInstanceName | str,
        ResultClass: str | None = None,
        Role: str | None = None,
        IncludeQualifiers: bool | None = None,
        IncludeClassOrigin: bool | None = None,
        PropertyList: str | Iterable[str] | None = None,
    ) -> list[Any]:
        if not self._instance_level(namespace, ObjectName):
            return cast(
                "list[Any]",
                super().References(
                    namespace,
                    ObjectName,
                    ResultClass,
                    Role,
                    IncludeQualifiers,
                    IncludeClassOrigin,
                    PropertyList,
                ),
            )
        assert isinstance(ObjectName, CIMInstanceName)
        with _broker_call("References"):
            found = self._broker.references(
                namespace,
                ObjectName,
                result_class=ResultClass,
                role=Role,
                property_list=_property_list(PropertyList),
                include_qualifiers=IncludeQualifiers is True,
                include_class_origin=IncludeClassOrigin is True,
            )
            return [self._on_host(inst) for inst in found]

    def ReferenceNames(
        self,
        namespace: str,
        ObjectName: CIMInstanceName | str,
        ResultClass: str | None = None,
        Role: str | None = None,
    ) -> list[Any]:
        if not self._instance_level(namespace, ObjectName):
            return cast(
                "list[Any]", super().ReferenceNames(namespace, ObjectName, ResultClass, Role)
            )
        assert isinstance(ObjectName, CIMInstanceName)
        with _broker_call("ReferenceNames"):
            found = self._broker.reference_names(
                namespace, ObjectName, result_class=ResultClass, role=Role
            )
            return [self._path_on_host(path) for path in found]

    def Associators(
        self,
        namespace: str,
        ObjectName: CIMInstanceName | str,
        AssocClass: str | None = None,
        ResultClass: str | None = None,
        Role: str | None = None,
        ResultRole: str | None = None,
        IncludeQualifiers: bool | None = None,
        IncludeClassOrigin: bool | None = None,
        PropertyList: str | Iterable[str] | None = None,
    ) -> list[Any]:
        if not self._instance_level(namespace, ObjectName):
            return cast(
                "list[Any]",
                super().Associators(
                    namespace,
                    ObjectName,
                    AssocClass,
                    ResultClass,
                    Role,
                    ResultRole,
                    IncludeQualifiers,
                    IncludeClassOrigin,
                    PropertyList,
                ),
            )
        assert isinstance(ObjectName, CIMInstanceName)
        with _broker_call("Associators"):
            found = self._broker.associators(
                namespace,
                ObjectName,
                assoc_class=AssocClass,
                result_class=ResultClass,
                role=Role,
                result_role=ResultRole,
                property_list=_property_list(PropertyList),
                include_qualifiers=IncludeQualifiers is True,
                include_class_origin=IncludeClassOrigin is True,
            )
            return [self._on_host(inst) for inst in found]

    def AssociatorNames(
        self,
        namespace: str,
        ObjectName: CIMInstanceName | str,
        AssocClass: str | None = None,
        ResultClass: str | None = None,
        Role: str | None = None,
        ResultRole: str | None = None,
    ) -> list[Any]:
        if not self._instance_level(namespace, ObjectName):
            return cast(
                "list[Any]",
                super().AssociatorNames(
                    namespace, ObjectName, AssocClass, ResultClass, Role, ResultRole
                ),
            )
        assert isinstance(ObjectName, CIMInstanceName)
        with _broker_call("AssociatorNames"):
            found = self._broker.associator_names(
                namespace,
                ObjectName,
                assoc_class=AssocClass,
                result_class=ResultClass,
                role=Role,
                result_role=ResultRole,
            )
            return [self._path_on_host(path) for path in found]

    def _instance_level(self, namespace: str, object_name: CIMInstanceName | str) -> bool:
        """True for an instance-level association query in a broker namespace.

        Class-level queries (a class name as ObjectName) are about the schema
        and stay with the mock, which answers them from the model's classes.
        """
        if not self._live.serves(namespace) or not isinstance(object_name, CIMInstanceName):
            return False
        # The path's namespace, if any, must be the request's (pywbem_mock's rule, which
        # also fills it in when it is missing).
        self._validate_instancename_namespace(namespace, object_name)
        return True

    def _on_host(self, instance: CIMInstance) -> CIMInstance:
        self._path_on_host(instance.path)
        return instance

    def _path_on_host(self, path: _Path) -> _Path:
        # Association results carry the server's host, as pywbem_mock gives
        # them for References, ReferenceNames and AssociatorNames (but not
        # Associators) and as a CIM-XML server sends them.
        if path.host is None:
            path.host = self.host
        return path

    # -- class and qualifier writes -----------------------------------------

    def CreateClass(self, namespace: str, NewClass: CIMClass) -> None:
        self._refuse_schema_change("CreateClass", namespace, NewClass.classname)
        super().CreateClass(namespace, NewClass)

    def ModifyClass(self, namespace: str, ModifiedClass: CIMClass) -> None:
        self._refuse_schema_change("ModifyClass", namespace, ModifiedClass.classname)
        super().ModifyClass(namespace, ModifiedClass)

    def DeleteClass(self, namespace: str, ClassName: str) -> None:
        self._refuse_schema_change("DeleteClass", namespace, ClassName)
        super().DeleteClass(namespace, ClassName)

    def SetQualifier(self, namespace: str, QualifierDeclaration: CIMQualifierDeclaration) -> None:
        self._refuse_schema_change("SetQualifier", namespace, QualifierDeclaration.name)
        super().SetQualifier(namespace, QualifierDeclaration)

    def DeleteQualifier(self, namespace: str, QualifierName: str) -> None:
        self._refuse_schema_change("DeleteQualifier", namespace, QualifierName)
        super().DeleteQualifier(namespace, QualifierName)

    def _refuse_schema_change(self, operation: str, namespace: str, name: str) -> None:
        if self._live.serves(namespace):
            raise CIMError(
                CIM_ERR_NOT_SUPPORTED,
                f"{operation} {name!r} in namespace {namespace!r}: the model of a namespace "
                "served by the broker is fixed",
            )

    # -- pull operations ----------------------------------------------------

    @staticmethod
    def _validate_open_params(
        FilterQueryLanguage: str | None, FilterQuery: str | None, OperationTimeout: int | None
    ) -> None:
        # DSP0200 1.4, 5.3.2: a server that does not filter says so; the mock
        # would validate DMTF:FQL and then return everything unfiltered.
        if FilterQueryLanguage is not None or FilterQuery is not None:
            raise CIMError(
                CIM_ERR_FILTERED_ENUMERATION_NOT_SUPPORTED,
                f"this server does not filter enumerations (FilterQueryLanguage="
                f"{FilterQueryLanguage!r}, FilterQuery={FilterQuery!r})",
            )
        if OperationTimeout is not None and not 0 <= OperationTimeout <= OPEN_MAX_TIMEOUT:
            raise CIMError(
                CIM_ERR_INVALID_OPERATION_TIMEOUT,
                f"OperationTimeout {OperationTimeout} is out of range: 0 (never) or 1 to "
                f"{OPEN_MAX_TIMEOUT} seconds",
            )

    def ExecQuery(self, namespace: str, QueryLanguage: str, Query: str) -> list[CIMInstance]:
        """The server's query engine (``cim.wql``) on the broker's instances: the
        OpenLMI client flow finds instances with ExecQuery (pywbem_mock itself
        answers NOT_SUPPORTED, _mainprovider.py)."""
        if not self._live.serves(namespace):
            return cast("list[CIMInstance]", super().ExecQuery(namespace, QueryLanguage, Query))

        def get_class(classname: str) -> CIMClass | None:
            try:
                return cast(CIMClass, self.GetClass(namespace, classname, LocalOnly=False,
                                                    IncludeQualifiers=False,
                                                    IncludeClassOrigin=False))
            except CIMError as error:
                if error.status_code not in (CIM_ERR_NOT_FOUND, CIM_ERR_INVALID_CLASS):
                    raise
                return None

        with _broker_call("ExecQuery"):
            _query, _cls, rows = wql.execute(
                QueryLanguage, Query, get_class=get_class,
                enumerate_instances=lambda classname, properties: self._broker.
                enumerate_instances(namespace, classname, deep_inheritance=True,
                                    property_list=properties))
            return list(rows)

    def OpenQueryInstances(
        self,
        namespace: str,
        FilterQueryLanguage: str,
        FilterQuery: str,
        ReturnQueryResultClass: bool | None = None,
        OperationTimeout: int | None = None,
        ContinueOnError: bool | None = None,
        MaxObjectCount: int | None = None,
    ) -> tuple[list[Any], str, str, CIMClass | None]:
        """ExecQuery's rows through an enumeration context (pywbemcli's ``instance
        query`` opens one by default), with the class of the rows if asked."""
        self._validate_pull_operations_enabled()
        self.validate_namespace(namespace)
        # The query is what is run here, not an enumeration filter to refuse.
        self._validate_open_params(None, None, OperationTimeout)
        rows = self.ExecQuery(namespace, FilterQueryLanguage, FilterQuery)
        result_class = None
        if ReturnQueryResultClass:
            query = wql.parse(FilterQuery, wql.check_language(FilterQueryLanguage))
            result_class = cast(CIMClass, self.GetClass(
                namespace, query.classname, LocalOnly=False, IncludeQualifiers=False,
                IncludeClassOrigin=False,
                PropertyList=list(query.properties) if query.properties is not None else None))
        # DSP0200: the rows of OpenQueryInstances are pulled with PullInstances,
        # as the server does (pywbem_mock's own expects PullInstancesWithPath).
        return cast("tuple[list[Any], str, str, CIMClass | None]", self._openquery_response(
            namespace, rows, "PullInstances", OperationTimeout, MaxObjectCount,
            ContinueOnError, result_class))

    def _open_response(
        self,
        namespace: str,
        objects: list[Any],
        pull_type: str,
        OperationTimeout: int | None,
        MaxObjectCount: int | None,
        ContinueOnError: bool | None,
    ) -> tuple[list[Any], str, str]:
        self._expire_contexts()
        result: tuple[list[Any], str, str] = super()._open_response(
            namespace, objects, pull_type, OperationTimeout, MaxObjectCount, ContinueOnError
        )
        context_id = result[2]
        if context_id:
            self.enumeration_contexts[context_id]["time"] = self.clock()
        return result

    def _pull_response(
        self, req_type: str, EnumerationContext: str, MaxObjectCount: int | None
    ) -> tuple[list[Any], str, str]:
        self._expire_contexts()
        context = self.enumeration_contexts.get(EnumerationContext)
        if context is not None:
            # OperationTimeout counts from the last operation (DSP0200 1.4, 5.3.2).
            context["time"] = self.clock()
            if MaxObjectCount == 0 and context["pull_type"] == req_type:
                # DSP0200: zero objects, the enumeration stays open.
                return [], "FALSE", EnumerationContext
        result: tuple[list[Any], str, str] = super()._pull_response(
            req_type, EnumerationContext, MaxObjectCount
        )
        return result

    def _expire_contexts(self) -> None:
        """Close enumerations idle for longer than their OperationTimeout (0: never)."""
        now = self.clock()
        for context_id, context in list(self.enumeration_contexts.items()):
            timeout = context["interoptimeout"]
            if timeout and now - context["time"] > timeout:
                del self.enumeration_contexts[context_id]

    def CloseEnumeration(self, EnumerationContext: str) -> None:
        self._expire_contexts()
        super().CloseEnumeration(EnumerationContext)


class LiveDispatcher(ProviderDispatcher):  # type: ignore[misc]
    """``ProviderDispatcher`` whose writes and methods in broker namespaces go to the broker."""

    def __init__(
        self, cimrepository: InMemoryRepository, provider_registry: Any, live: _Live
    ) -> None:
        super().__init__(cimrepository, provider_registry)
        self._live = live

    def CreateInstance(self, namespace: str, NewInstance: CIMInstance) -> CIMInstanceName:
        if not self._live.serves(namespace):
            return super().CreateInstance(namespace, NewInstance)
        with _broker_call("CreateInstance"):
            return self._live.broker.create_instance(
                namespace, NewInstance, caller=self._live.caller
            )

    def ModifyInstance(
        self,
        ModifiedInstance: CIMInstance,
        IncludeQualifiers: bool | None = None,
        PropertyList: str | Iterable[str] | None = None,
    ) -> None:
        namespace = ModifiedInstance.path.namespace
        if not self._live.serves(namespace):
            super().ModifyInstance(ModifiedInstance, IncludeQualifiers, PropertyList)
            return
        # IncludeQualifiers is deprecated for ModifyInstance (DSP0200 1.4) and
        # instances of the model carry no qualifiers.
        with _broker_call("ModifyInstance"):
            self._live.broker.modify_instance(
                namespace,
                ModifiedInstance,
                property_list=_property_list(PropertyList),
                caller=self._live.caller,
            )

    def DeleteInstance(self, InstanceName: CIMInstanceName) -> None:
        namespace = InstanceName.namespace
        if not self._live.serves(namespace):
            super().DeleteInstance(InstanceName)
            return
        with _broker_call("DeleteInstance"):
            self._live.broker.delete_instance(namespace, InstanceName, caller=self._live.caller)

    def InvokeMethod(
        self,
        methodname: str,
        localobject: CIMInstanceName | CIMClassName,
        params: NocaseDict,
    ) -> tuple[Any, NocaseDict]:
        namespace = localobject.namespace
        if not self._live.serves(namespace):
            result: tuple[Any, NocaseDict] = super().InvokeMethod(methodname, localobject, params)
            return result
        values = NocaseDict((name, param.value) for name, param in params.items())
        with _broker_call(f"InvokeMethod {methodname}"):
            return_value, out = self._live.broker.invoke_method(
                namespace, localobject, methodname, values, caller=self._live.caller
            )
            # What WBEMConnection.InvokeMethod returns: (return value, NocaseDict of OUT values).
            return return_value, NocaseDict(out)


def _enumerate_classes(conn: FakedWBEMConnection, namespace: str, **params: Any) -> Any:
    """``_imeth_EnumerateClasses`` with IncludeClassOrigin passed on (the mock drops it)."""
    classname = params.get("ClassName")
    if isinstance(classname, CIMClassName):
        classname = classname.classname
    classes = conn._mainprovider.EnumerateClasses(
        params.get("namespace", namespace),
        ClassName=classname,
        DeepInheritance=params.get("DeepInheritance"),
        LocalOnly=params.get("LocalOnly"),
        IncludeQualifiers=params.get("IncludeQualifiers"),
        IncludeClassOrigin=params.get("IncludeClassOrigin"),
    )
    return conn._make_tuple(classes)


_R = TypeVar("_R")


def _exec_query(conn: FakedWBEMConnection, namespace: str, **params: Any) -> Any:
    """ExecQuery's reply as WBEMConnection.ExecQuery reads it: one (element,
    attributes, instance) tuple per row. pywbem_mock's own wraps the whole
    list as one row (_wbemconnection_mock.py, "Issue 2064: ... untested")."""
    instances = conn._mainprovider.ExecQuery(
        namespace=namespace, QueryLanguage=params["QueryLanguage"], Query=params["Query"])
    return [("IRETURNVALUE", {}, [("VALUE.OBJECTWITHPATH", {}, instance)
                                  for instance in instances])]


def _locked(function: Callable[..., _R], lock: threading.RLock) -> Callable[..., _R]:
    def call(*args: Any, **kwargs: Any) -> _R:
        with lock:
            return function(*args, **kwargs)

    call.__name__ = getattr(function, "__name__", "call")
    call.__doc__ = "Under the live connection's lock: " + (function.__doc__ or "").strip()
    return call


def _resolve_caller(caller: object | None) -> object:
    if caller is not None:
        return caller
    # The broker's own default: a local, unauthenticated caller that may write.
    from lmi_mount.cim.broker import Caller

    return Caller()


def _go_live(conn: FakedWBEMConnection, broker: BrokerProtocol, caller: object | None) -> _Live:
    """Put the broker's classes and live stores in ``conn``'s repository, then wire ``conn``."""
    missing = [
        f"{cls.__name__}.{name}" for cls, name in _REQUIRED_INTERNALS if not hasattr(cls, name)
    ]
    if missing:
        raise LiveSetupError(
            f"this pywbem_mock lacks what lmi-mount relies on: {', '.join(missing)}"
        )
    if getattr(conn, "_lmi_live", None) is not None:
        raise LiveSetupError(f"{conn!r} is live already")
    repo = conn.cimrepository
    if not isinstance(repo, InMemoryRepository) or not hasattr(repo, "_repository"):
        raise LiveSetupError(f"the repository of {conn!r} is a {type(repo).__name__}")
    namespaces = [ns.strip("/") for ns in broker.namespaces()]

    # Check everything before changing anything: instances already in the
    # mock's store of a broker namespace would be hidden for good.
    for namespace in namespaces:
        held = repo.get_instance_store(namespace).len() if namespace in repo.namespaces else 0
        if held:
            raise LiveSetupError(
                f"namespace {namespace!r} of the mock repository already holds {held} "
                "instances; the broker serves it"
            )

    live = _Live(broker, _resolve_caller(caller), namespaces)
    for namespace in namespaces:
        if namespace not in repo.namespaces:
            repo.add_namespace(namespace)
        if _ns_key(namespace) == _ns_key(NAMESPACE):
            install_model(conn, namespace, broker.model)
        else:
            # Another namespace of the broker (the interop namespace): its
            # classes as the broker serves them, installed the same way.
            classes = broker.enumerate_classes(
                namespace,
                deep_inheritance=True,
                local_only=False,
                include_qualifiers=True,
                include_class_origin=True,
            )
            served = Model(
                mof_dir=broker.model.mof_dir,
                qualifiers=tuple(broker.enumerate_qualifiers(namespace)),
                classes=tuple(classes),
            )
            install_model(conn, namespace, served)
        # InMemoryRepository keeps a namespace's stores in a private dict
        # (_inmemoryrepository.py:268) and has no setter for them.
        repo._repository[namespace]["instances"] = LiveInstanceStore(
            live, namespace, repo.get_class_store(namespace)
        )
    live.dispatcher = LiveDispatcher(repo, conn._provider_registry, live)
    live.mainprovider = LiveMainProvider(
        conn.host, conn.disable_pull_operations, repo, live.dispatcher, live
    )
    _install(conn, live)
    return live


def _install(conn: FakedWBEMConnection, live: _Live) -> None:
    """Wire ``conn`` to the live providers and the lock (instance attributes, as the mock does).

    FakedWBEMConnection itself routes every operation through the instance
    attributes ``_imethodcall`` and ``_methodcall``
    (``_wbemconnection_mock.py:239-240``) and its providers
    (``:222-230``); replacing them is what makes any FakedWBEMConnection,
    pywbemcli's included, live.
    """
    conn._providerdispatcher = live.dispatcher
    conn._mainprovider = live.mainprovider
    conn._imethodcall = _locked(conn._mock_imethodcall, live.lock)
    conn._methodcall = _locked(conn._mock_methodcall, live.lock)
    conn._imeth_EnumerateClasses = MethodType(_enumerate_classes, conn)
    conn._imeth_ExecQuery = MethodType(_exec_query, conn)
    conn._lmi_live = live


class LiveConnection(FakedWBEMConnection):  # type: ignore[misc]
    """A pywbem_mock connection whose broker namespaces are answered live by ``broker``.

    ``caller`` is the broker's ``Caller`` for every write and method call
    made through this connection (default: the broker's default caller).
    ``owns`` are objects with a ``close()`` (the broker, its engine) that
    ``close()`` closes after the connection, in that order. The other
    parameters are FakedWBEMConnection's. Safe for concurrent use by several
    threads: one operation at a time runs. Not picklable (its instances live
    in the broker).
    """

    def __init__(
        self,
        broker: BrokerProtocol,
        *,
        caller: object | None = None,
        default_namespace: str = NAMESPACE,
        use_pull_operations: bool = False,
        stats_enabled: bool = False,
        timeout: float = DEFAULT_TIMEOUT,
        response_delay: float | None = None,
        disable_pull_operations: bool | None = None,
        url: str | None = None,
        owns: Iterable[Any] = (),
    ) -> None:
        self._owned = list(owns)
        self._closed = False
        super().__init__(
            default_namespace=default_namespace,
            use_pull_operations=use_pull_operations,
            stats_enabled=stats_enabled,
            timeout=timeout,
            response_delay=response_delay,
            disable_pull_operations=disable_pull_operations,
            url=url,
        )
        _go_live(self, broker, caller)

    @property
    def broker(self) -> BrokerProtocol:
        """The broker that answers this connection's broker namespaces."""
        return self._lmi_live.broker  # type: ignore[no-any-return]

    @property
    def lock(self) -> threading.RLock:
        """The lock every operation of this connection (and of its copies) runs under."""
        return self._lmi_live.lock  # type: ignore[no-any-return]

    def copy(self) -> LiveConnection:
        """A connection on the same repository, providers, broker and lock (pywbem_mock's copy)."""
        cpy: LiveConnection = LiveConnection.__new__(LiveConnection)
        FakedWBEMConnection.__init__(
            cpy,
            default_namespace=self.default_namespace,
            use_pull_operations=self.use_pull_operations,
            stats_enabled=self.stats_enabled,
            timeout=self.timeout,
            response_delay=self.response_delay,
            disable_pull_operations=self.disable_pull_operations,
            url=self.url,
        )
        cpy._owned = []  # the original keeps what it owns
        cpy._closed = False
        cpy._cimrepository = self._cimrepository
        cpy._provider_registry = self._provider_registry
        cpy._provider_dependent_registry = self._provider_dependent_registry
        _install(cpy, self._lmi_live)
        return cpy

    def close(self) -> None:
        """Close the connection, then what it owns (once; later calls do nothing)."""
        if self._closed:
            return
        self._closed = True
        try:
            super().close()
        finally:
            with self.lock:  # no operation of a copy is half-way through the broker
                for resource in self._owned:
                    resource.close()

    def __reduce__(self) -> Any:
        raise TypeError(
            "a LiveConnection cannot be pickled: its instances live in the broker at call time"
        )


def connect(
    broker: BrokerProtocol,
    *,
    caller: object | None = None,
    default_namespace: str = NAMESPACE,
    **options: Any,
) -> LiveConnection:
    """A ``LiveConnection`` to ``broker`` (``options``: FakedWBEMConnection's other parameters)."""
    return LiveConnection(broker, caller=caller, default_namespace=default_namespace, **options)


def mock_connection(
    fstab: str | Path,
    state_dir: str | Path,
    *,
    kernel: Any = None,
    caller: object | None = None,
    default_namespace: str = NAMESPACE,
    **config: Any,
) -> LiveConnection:
    """A live connection on a new engine and broker over ``fstab`` and ``state_dir``.

    The one place of this module that knows how the lmi-mount broker is
    built (everything else speaks ``BrokerProtocol``): a ``MountManager`` on
    ``kernel`` (default: the real kernel, ``LinuxKernel()``), started, and a
    ``Broker`` on it. ``config`` holds keyword parameters of
    ``MountManager`` (``hold_seconds``, ``processes``, ``after_fstab_edit``,
    ``boot_id_path``, ...), of ``Broker`` (``synchronous_seconds``,
    ``host``, ...) and of ``LiveConnection`` (``use_pull_operations``, ...);
    an unknown name is a TypeError. ``close()`` on the connection closes the
    broker, then the engine.
    """
    from lmi_mount.cim.broker import Broker
    from lmi_mount.engine import MountManager
    from lmi_mount.linux.kernel import LinuxKernel

    fixed = {"self", "kernel", "engine", "fstab_path", "state_dir", "broker", "owns"}
    engine_names = set(inspect.signature(MountManager).parameters) - fixed
    broker_names = set(inspect.signature(Broker).parameters) - fixed
    connection_names = set(inspect.signature(LiveConnection).parameters) - fixed
    unknown = sorted(set(config) - engine_names - broker_names - connection_names)
    if unknown:
        raise TypeError(f"mock_connection: unknown option(s): {', '.join(unknown)}")

    def pick(wanted: set[str]) -> dict[str, Any]:
        return {name: value for name, value in config.items() if name in wanted}

    engine = MountManager(
        kernel if kernel is not None else LinuxKernel(),
        fstab_path=fstab,
        state_dir=state_dir,
        **pick(engine_names),
    ).start()
    try:
        broker = Broker(engine, **pick(broker_names))
        try:
            return LiveConnection(
                broker,
                caller=caller,
                default_namespace=default_namespace,
                owns=(broker, engine),
                **pick(connection_names),
            )
        except BaseException:
            broker.close()
            raise
    except BaseException:
        engine.close()
        raise


def setup_live(
    conn: FakedWBEMConnection, broker: BrokerProtocol, *, caller: object | None = None
) -> None:
    """Make an existing FakedWBEMConnection live on ``broker``: for pywbemcli's ``setup()``.

    pywbemcli builds its own connection (a FakedWBEMConnection subclass) and
    hands it to the mock script's ``setup(conn, server, verbose)``; this
    wires that very object as ``LiveConnection.__init__`` wires itself. Its
    broker namespaces must not hold instances yet. ``conn.copy()`` (pywbemcli
    interactive mode) shares the live providers, so copies stay live, but a
    copy does not take the lock: use one copy per thread, or a
    ``LiveConnection``. A script that calls this must also call
    ``refuse_pywbemcli_cache(globals())`` at module level.
    """
    _go_live(conn, broker, caller)


_PYWBEMCLI_SCRIPTS = "pywbemtools.pywbemcli.mockscripts."


def refuse_pywbemcli_cache(script_globals: Mapping[str, object]) -> None:
    """Make pywbemcli rebuild a live mock environment instead of loading its cache.

    Call at module level of a ``--mock-server`` script that uses
    ``setup_live``. With a named connection (``-n``), pywbemcli pickles the
    repository after ``setup()`` (pywbemcli/_pywbemcli_operations.py:607)
    and, next time, imports the script without running ``setup()`` and loads
    the pickle (``:637``); a live store pickles to a ``DetachedInstanceStore``
    that fails every read. pywbemcli imports the script for a build with the
    global ``CONN`` set (pywbemcli/mockscripts/__init__.py:114) and for a cache
    load without it; raising in the second case is pywbemcli's "not cacheable"
    signal (``NotCacheable``, mockscripts/__init__.py:164), on which it builds
    the environment again, ``setup()`` included. Imported any other way, the
    script is left alone.
    """
    name = str(script_globals.get("__name__", ""))
    if name.startswith(_PYWBEMCLI_SCRIPTS) and "CONN" not in script_globals:
        raise ImportError(
            f"{name}: a live lmi-mount mock environment is not cacheable; pywbemcli rebuilds it"
        )
