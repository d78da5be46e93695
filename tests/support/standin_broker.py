"""A stand-in for the broker: instances held in memory, served with the broker's interface.

Owns: ``StandInBroker``, an in-memory implementation of the broker interface
(/work/notes/broker.md, ``lmi_mount.cim.broker.Broker``) for front-end tests
and benchmarks: the real compiled model, instances added by the test, DSP0200
PropertyList / DeepInheritance / IncludeQualifiers / IncludeClassOrigin applied
to every instance it returns, associations resolved from the reference
properties of association instances, writes for the classes a test declares
writable, extrinsic methods answered by handlers a test registers, and a
record of every call (name, namespace, keyword arguments). Every object it
returns is fresh: a front end may keep or change it.

Must not know: mounts, the engine, the projection, pywbem_mock. It is not the
broker: it decides nothing about the model's semantics.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from pywbem import (
    CIM_ERR_ACCESS_DENIED,
    CIM_ERR_ALREADY_EXISTS,
    CIM_ERR_INVALID_CLASS,
    CIM_ERR_INVALID_NAMESPACE,
    CIM_ERR_INVALID_PARAMETER,
    CIM_ERR_METHOD_NOT_FOUND,
    CIM_ERR_NOT_FOUND,
    CIM_ERR_NOT_SUPPORTED,
    CIMClass,
    CIMClassName,
    CIMError,
    CIMInstance,
    CIMInstanceName,
    CIMQualifierDeclaration,
)
from pywbem._nocasedict import NocaseDict

from lmi_mount.cim.model import Model
from lmi_mount.cim.names import NAMESPACE


@dataclass(frozen=True)
class StandInCaller:
    """The stand-in's caller: the fields of the broker's ``Caller``."""

    user: str | None = None
    may_write: bool = True


#: A method handler: (broker, target, IN parameters, caller) -> (return value, OUT parameters).
MethodHandler = Callable[
    ["StandInBroker", "CIMInstanceName | CIMClassName", Mapping[str, Any], Any],
    tuple[Any, dict[str, Any]],
]


@dataclass
class _Namespace:
    classes: dict[str, CIMClass]  # lower-case name -> resolved class
    instances: dict[CIMInstanceName, CIMInstance] = field(default_factory=dict)


class StandInBroker:
    """In-memory instances of the model's classes behind the broker's interface.

    ``namespaces`` maps each namespace to the names of the classes it serves
    (with their superclasses); by default the model's namespace serves every
    class of the model. ``delay`` seconds are slept inside each call, outside
    the broker's own lock, so that a test can see whether a front end lets two
    calls in at once: ``max_concurrent`` is the most calls ever inside at the
    same time.
    """

    def __init__(
        self,
        model: Model,
        namespaces: Mapping[str, Iterable[str]] | None = None,
        *,
        writable: Iterable[str] = (),
        delay: float = 0.0,
    ) -> None:
        self.model = model
        self._namespaces: dict[str, _Namespace] = {}
        every_class = [c.classname for c in model.classes]
        for namespace, classnames in (namespaces or {NAMESPACE: every_class}).items():
            self._namespaces[namespace.strip("/").lower()] = _Namespace(
                {c.classname.lower(): c for c in self._closure(classnames)}
            )
        self._namespace_names = [ns.strip("/") for ns in (namespaces or {NAMESPACE: ()})]
        self._writable = {name.lower() for name in writable}
        self.methods: dict[tuple[str, str], MethodHandler] = {}
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        self.delay = delay
        self.max_concurrent = 0
        self._inside = 0
        self._inside_lock = threading.Lock()
        self._lock = threading.RLock()

    # -- set-up by the test -------------------------------------------------

    def add(self, instance: CIMInstance, namespace: str = NAMESPACE) -> CIMInstanceName:
        """Store ``instance`` (the broker owns it now) with a path made from its keys."""
        ns = self._namespace(namespace)
        cls = self._class(ns, namespace, instance.classname)
        stored = instance
        stored.path = CIMInstanceName(
            cls.classname,
            keybindings={
                name: instance[name] for name, prop in cls.properties.items() if _is_key(prop)
            },
            namespace=namespace,
        )
        with self._lock:
            if stored.path in ns.instances:
                raise CIMError(CIM_ERR_ALREADY_EXISTS, f"instance {stored.path} exists")
            ns.instances[stored.path] = stored
        return stored.path.copy()

    def remove(self, path: CIMInstanceName, namespace: str = NAMESPACE) -> None:
        with self._lock:
            del self._namespace(namespace).instances[self._key(path, namespace)]

    def count(self, namespace: str = NAMESPACE) -> int:
        with self._lock:
            return len(self._namespace(namespace).instances)

    # -- the broker interface -----------------------------------------------

    def namespaces(self) -> list[str]:
        return list(self._namespace_names)

    def enumerate_classes(
        self,
        namespace: str,
        classname: str | None = None,
        *,
        deep_inheritance: bool = False,
        local_only: bool = True,
        include_qualifiers: bool = True,
        include_class_origin: bool = False,
    ) -> list[CIMClass]:
        with self._call("enumerate_classes", namespace, classname=classname):
            ns = self._namespace(namespace)
            if local_only or not include_qualifiers or not include_class_origin:
                raise CIMError(
                    CIM_ERR_NOT_SUPPORTED,
                    "the stand-in serves whole classes only (LocalOnly=False, "
                    "IncludeQualifiers=True, IncludeClassOrigin=True)",
                )
            if classname is not None or not deep_inheritance:
                raise CIMError(CIM_ERR_NOT_SUPPORTED, "the stand-in enumerates all classes only")
            return [cls.copy() for cls in ns.classes.values()]

    def enumerate_qualifiers(self, namespace: str) -> list[CIMQualifierDeclaration]:
        with self._call("enumerate_qualifiers", namespace):
            self._namespace(namespace)
            return [q.copy() for q in self.model.qualifiers]

    def get_instance(
        self,
        namespace: str,
        path: CIMInstanceName,
        *,
        property_list: Iterable[str] | None = None,
        include_qualifiers: bool = False,
        include_class_origin: bool = False,
        local_only: bool = False,
    ) -> CIMInstance:
        with self._call(
            "get_instance",
            namespace,
            path=path,
            property_list=property_list,
            include_qualifiers=include_qualifiers,
            include_class_origin=include_class_origin,
            local_only=local_only,
        ):
            ns = self._namespace(namespace)
            cls = self._class(ns, namespace, path.classname)
            stored = self._stored(ns, namespace, path)
            return _present(stored, cls, property_list, include_qualifiers, include_class_origin)

    def enumerate_instances(
        self,
        namespace: str,
        classname: str,
        *,
        deep_inheritance: bool = True,
        property_list: Iterable[str] | None = None,
        include_qualifiers: bool = False,
        include_class_origin: bool = False,
        local_only: bool = False,
    ) -> Iterator[CIMInstance]:
        with self._call(
            "enumerate_instances",
            namespace,
            classname=classname,
            deep_inheritance=deep_inheritance,
            property_list=property_list,
            include_qualifiers=include_qualifiers,
            include_class_origin=include_class_origin,
            local_only=local_only,
        ):
            ns = self._namespace(namespace)
            requested = self._class(ns, namespace, classname)
            wanted = self._subclasses(ns, classname)
            if not deep_inheritance:
                # DSP0200 EnumerateInstances: DeepInheritance=false returns the
                # properties of the requested class only.
                allowed = {name.lower() for name in requested.properties}
                if property_list is not None:
                    allowed &= {name.lower() for name in property_list}
                property_list = allowed
            result = [
                _present(
                    inst,
                    ns.classes[inst.classname.lower()],
                    property_list,
                    include_qualifiers,
                    include_class_origin,
                )
                for inst in ns.instances.values()
                if inst.classname.lower() in wanted
            ]
        return iter(result)

    def enumerate_instance_names(
        self, namespace: str, classname: str
    ) -> Iterator[CIMInstanceName]:
        with self._call("enumerate_instance_names", namespace, classname=classname):
            ns = self._namespace(namespace)
            self._class(ns, namespace, classname)
            wanted = self._subclasses(ns, classname)
            result = [p.copy() for p in ns.instances if p.classname.lower() in wanted]
        return iter(result)

    def references(
        self,
        namespace: str,
        path: CIMInstanceName,
        *,
        result_class: str | None = None,
        role: str | None = None,
        property_list: Iterable[str] | None = None,
        include_qualifiers: bool = False,
        include_class_origin: bool = False,
    ) -> Iterator[CIMInstance]:
        with self._call(
            "references",
            namespace,
            path=path,
            result_class=result_class,
            role=role,
            property_list=property_list,
            include_qualifiers=include_qualifiers,
            include_class_origin=include_class_origin,
        ):
            ns = self._namespace(namespace)
            result = [
                _present(
                    assoc,
                    ns.classes[assoc.classname.lower()],
                    property_list,
                    include_qualifiers,
                    include_class_origin,
                )
                for assoc, _ in self._links(ns, namespace, path, result_class, role)
            ]
        return iter(result)

    def reference_names(
        self,
        namespace: str,
        path: CIMInstanceName,
        *,
        result_class: str | None = None,
        role: str | None = None,
    ) -> Iterator[CIMInstanceName]:
        with self._call(
            "reference_names", namespace, path=path, result_class=result_class, role=role
        ):
            ns = self._namespace(namespace)
            result = [
                assoc.path.copy()
                for assoc, _ in self._links(ns, namespace, path, result_class, role)
            ]
        return iter(result)

    def associators(
        self,
        namespace: str,
        path: CIMInstanceName,
        *,
        assoc_class: str | None = None,
        result_class: str | None = None,
        role: str | None = None,
        result_role: str | None = None,
        property_list: Iterable[str] | None = None,
        include_qualifiers: bool = False,
        include_class_origin: bool = False,
    ) -> Iterator[CIMInstance]:
        with self._call(
            "associators",
            namespace,
            path=path,
            assoc_class=assoc_class,
            result_class=result_class,
            role=role,
            result_role=result_role,
            property_list=property_list,
            include_qualifiers=include_qualifiers,
            include_class_origin=include_class_origin,
        ):
            ns = self._namespace(namespace)
            result = []
            for far in self._far_ends(
                ns, namespace, path, assoc_class, result_class, role, result_role
            ):
                stored = ns.instances[far]
                cls = ns.classes[stored.classname.lower()]
                result.append(
                    _present(stored, cls, property_list, include_qualifiers, include_class_origin)
                )
        return iter(result)

    def associator_names(
        self,
        namespace: str,
        path: CIMInstanceName,
        *,
        assoc_class: str | None = None,
        result_class: str | None = None,
        role: str | None = None,
        result_role: str | None = None,
    ) -> Iterator[CIMInstanceName]:
        with self._call(
            "associator_names",
            namespace,
            path=path,
            assoc_class=assoc_class,
            result_class=result_class,
            role=role,
            result_role=result_role,
        ):
            ns = self._namespace(namespace)
            result = [
                far.copy()
                for far in self._far_ends(
                    ns, namespace, path, assoc_class, result_class, role, result_role
                )
            ]
        return iter(result)

    def create_instance(
        self, namespace: str, instance: CIMInstance, *, caller: Any
    ) -> CIMInstanceName:
        with self._call("create_instance", namespace, instance=instance, caller=caller):
            self._check_write(namespace, instance.classname, caller)
            return self.add(instance, namespace)

    def modify_instance(
        self,
        namespace: str,
        instance: CIMInstance,
        *,
        property_list: Iterable[str] | None = None,
        caller: Any,
    ) -> None:
        with self._call(
            "modify_instance",
            namespace,
            instance=instance,
            property_list=property_list,
            caller=caller,
        ):
            ns = self._namespace(namespace)
            cls = self._check_write(namespace, instance.path.classname, caller)
            stored = self._stored(ns, namespace, instance.path)
            names = instance.properties if property_list is None else property_list
            for name in names:
                if name not in cls.properties:
                    raise CIMError(
                        CIM_ERR_INVALID_PARAMETER, f"{cls.classname} has no property {name!r}"
                    )
                if _is_key(cls.properties[name]):
                    raise CIMError(CIM_ERR_INVALID_PARAMETER, f"key property {name!r} is fixed")
                stored[name] = instance.get(name)

    def delete_instance(self, namespace: str, path: CIMInstanceName, *, caller: Any) -> None:
        with self._call("delete_instance", namespace, path=path, caller=caller):
            ns = self._namespace(namespace)
            self._check_write(namespace, path.classname, caller)
            del ns.instances[self._stored(ns, namespace, path).path]

    def invoke_method(
        self,
        namespace: str,
        path: CIMInstanceName | CIMClassName,
        method: str,
        params: Mapping[str, Any],
        *,
        caller: Any,
    ) -> tuple[Any, dict[str, Any]]:
        with self._call(
            "invoke_method", namespace, path=path, method=method, params=params, caller=caller
        ):
            ns = self._namespace(namespace)
            cls = self._class(ns, namespace, path.classname)
            if isinstance(path, CIMInstanceName):
                self._stored(ns, namespace, path)
            if method not in cls.methods:
                raise CIMError(
                    CIM_ERR_METHOD_NOT_FOUND, f"{cls.classname} has no method {method!r}"
                )
            if not caller.may_write:
                raise CIMError(CIM_ERR_ACCESS_DENIED, f"{caller.user!r} may not call {method}")
            handler = self.methods.get((cls.classname.lower(), method.lower()))
            if handler is None:
                raise CIMError(
                    CIM_ERR_NOT_SUPPORTED, f"{cls.classname}.{method} has no handler here"
                )
        # The handler runs outside the lock, as a provider would: it may call back.
        return handler(self, path, params, caller)

    # -- helpers ------------------------------------------------------------

    def _call(self, name: str, namespace: str, **kwargs: Any) -> _CallScope:
        return _CallScope(self, name, namespace, kwargs)

    def _closure(self, classnames: Iterable[str]) -> list[CIMClass]:
        """The named classes and all their superclasses, in model (compile) order."""
        wanted: set[str] = set()
        for name in classnames:
            cls: CIMClass | None = self.model.get_class(name)
            while cls is not None and cls.classname.lower() not in wanted:
                wanted.add(cls.classname.lower())
                cls = self.model.get_class(cls.superclass) if cls.superclass else None
        return [c for c in self.model.classes if c.classname.lower() in wanted]

    def _namespace(self, namespace: str) -> _Namespace:
        try:
            return self._namespaces[namespace.strip("/").lower()]
        except KeyError:
            raise CIMError(
                CIM_ERR_INVALID_NAMESPACE, f"namespace {namespace!r} is not served here"
            ) from None

    @staticmethod
    def _class(ns: _Namespace, namespace: str, classname: str) -> CIMClass:
        try:
            return ns.classes[classname.lower()]
        except KeyError:
            raise CIMError(
                CIM_ERR_INVALID_CLASS, f"class {classname!r} is not in namespace {namespace!r}"
            ) from None

    @staticmethod
    def _subclasses(ns: _Namespace, classname: str) -> set[str]:
        wanted = {classname.lower()}
        for cls in ns.classes.values():  # compile order: superclasses first
            if cls.superclass and cls.superclass.lower() in wanted:
                wanted.add(cls.classname.lower())
        return wanted

    @staticmethod
    def _key(path: CIMInstanceName, namespace: str) -> CIMInstanceName:
        key = path.copy()
        key.namespace = namespace
        key.host = None
        return key

    def _stored(self, ns: _Namespace, namespace: str, path: CIMInstanceName) -> CIMInstance:
        self._class(ns, namespace, path.classname)
        try:
            return ns.instances[self._key(path, namespace)]
        except KeyError:
            raise CIMError(CIM_ERR_NOT_FOUND, f"no instance {path}") from None

    def _links(
        self,
        ns: _Namespace,
        namespace: str,
        path: CIMInstanceName,
        assoc_class: str | None,
        role: str | None,
    ) -> Iterator[tuple[CIMInstance, str]]:
        """(association instance, name of its property that refers to ``path``)."""
        self._class(ns, namespace, path.classname)
        target = self._key(path, namespace)
        classes = self._subclasses(ns, assoc_class) if assoc_class else None
        for inst in ns.instances.values():
            cls = ns.classes[inst.classname.lower()]
            if "Association" not in cls.qualifiers:
                continue
            if classes is not None and inst.classname.lower() not in classes:
                continue
            for prop in inst.properties.values():
                if prop.type != "reference" or prop.value is None:
                    continue
                if role is not None and prop.name.lower() != role.lower():
                    continue
                if self._key(prop.value, namespace) == target:
                    yield inst, prop.name

    def _far_ends(
        self,
        ns: _Namespace,
        namespace: str,
        path: CIMInstanceName,
        assoc_class: str | None,
        result_class: str | None,
        role: str | None,
        result_role: str | None,
    ) -> list[CIMInstanceName]:
        results = self._subclasses(ns, result_class) if result_class else None
        found: dict[CIMInstanceName, None] = {}
        for assoc, near in self._links(ns, namespace, path, assoc_class, role):
            for prop in assoc.properties.values():
                if prop.type != "reference" or prop.value is None or prop.name == near:
                    continue
                if result_role is not None and prop.name.lower() != result_role.lower():
                    continue
                far = self._key(prop.value, namespace)
                if results is not None and far.classname.lower() not in results:
                    continue
                if far in ns.instances:
                    found[far] = None
        return list(found)

    def _check_write(self, namespace: str, classname: str, caller: Any) -> CIMClass:
        ns = self._namespace(namespace)
        cls = self._class(ns, namespace, classname)
        if cls.classname.lower() not in self._writable:
            raise CIMError(CIM_ERR_NOT_SUPPORTED, f"instances of {cls.classname} are read-only")
        if not caller.may_write:
            raise CIMError(CIM_ERR_ACCESS_DENIED, f"{caller.user!r} may not write")
        return cls


class _CallScope:
    """One broker call: recorded, counted for ``max_concurrent``, then run under the lock."""

    def __init__(
        self, broker: StandInBroker, name: str, namespace: str, kwargs: dict[str, Any]
    ) -> None:
        self._broker = broker
        self._record = (name, namespace, kwargs)

    def __enter__(self) -> None:
        broker = self._broker
        with broker._inside_lock:
            broker._inside += 1
            broker.max_concurrent = max(broker.max_concurrent, broker._inside)
        if broker.delay:
            time.sleep(broker.delay)
        broker._lock.acquire()
        broker.calls.append(self._record)

    def __exit__(self, *exc_info: object) -> None:
        broker = self._broker
        broker._lock.release()
        with broker._inside_lock:
            broker._inside -= 1


def _is_key(prop: Any) -> bool:
    return bool(prop.qualifiers.get("Key") and prop.qualifiers["Key"].value)


def _present(
    stored: CIMInstance,
    cls: CIMClass,
    property_list: Iterable[str] | None,
    include_qualifiers: bool,
    include_class_origin: bool,
) -> CIMInstance:
    """A fresh copy of ``stored`` as DSP0200 says a server returns it."""
    wanted = None if property_list is None else {name.lower() for name in property_list}
    result = CIMInstance(stored.classname, path=stored.path.copy())
    for name, prop in stored.properties.items():
        if wanted is not None and name.lower() not in wanted:
            continue
        declared = cls.properties[name]
        copy = prop.copy()
        if include_class_origin:
            copy.class_origin = declared.class_origin
        elif copy.class_origin is not None:
            copy.class_origin = None
        if include_qualifiers:
            copy.qualifiers = NocaseDict(declared.qualifiers)
        elif copy.qualifiers:
            copy.qualifiers = NocaseDict()
        result.properties[name] = copy
    return result
