"""A stand-in for the broker: instances held in memory, served with the broker's interface.

Owns: ``StandInBroker``, the one in-memory implementation of the broker
interface (``lmi_mount.cim.broker.Broker``) that the
front-end tests (pywbem_mock: tests/cim, the CIM-XML server: tests/server) and
their benchmarks run against. It holds the real compiled model, per namespace
(a namespace serves the classes it is given and their superclasses), and
serves:

* classes and qualifier declarations, shaped as DSP0200 GetClass /
  EnumerateClasses ask (``lmi_mount.cim.broker.class_view``);
* instances the test adds, and instances a test generates lazily (a fresh
  iterator per enumeration, so 10k of them are never held), with PropertyList,
  DeepInheritance, IncludeQualifiers and IncludeClassOrigin applied to every
  instance it returns; every returned object is fresh, so a front end may keep
  or change it (unless made with ``share=True``: see ``StandInBroker``);
* associations resolved from the reference properties of association
  instances;
* writes to the classes a test declares writable, and extrinsic methods
  answered by handlers a test registers;
* a failure injected after the n-th instance of an enumeration;
* a record of every call (name, namespace, keyword arguments), and how many
  calls were ever inside at once (``delay`` seconds are slept in each call to
  let a test see whether a front end serialises them).

Errors are ``pywbem.CIMError`` with the status the real broker gives, checked
in its order: namespace, the caller's right to write, class, then the rest.

Must not know: mounts, the engine, the projection, pywbem_mock, XML, HTTP. It
is not the broker: it decides nothing about the model's semantics.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

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

from lmi_mount.cim.broker import class_view
from lmi_mount.cim.model import Model
from lmi_mount.cim.names import NAMESPACE
from lmi_mount.cim.paths import same_path


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
#: A generated class: a fresh iterator over its instances on each call.
Source = Callable[[], Iterator[CIMInstance]]

_T = TypeVar("_T")


@dataclass
class _Namespace:
    name: str  # as the test spelled it
    classes: dict[str, CIMClass]  # lower-case name -> resolved class, in compile order
    instances: dict[CIMInstanceName, CIMInstance] = field(default_factory=dict)
    sources: dict[str, Source] = field(default_factory=dict)  # lower-case class name


class StandInBroker:
    """In-memory instances of the model's classes behind the broker's interface.

    ``namespaces`` maps each namespace to the names of the classes it serves
    (with their superclasses); by default the model's namespace serves every
    class of the model. ``instances`` are added to the model's namespace.

    ``share=True`` returns a stored or generated instance itself, not a copy,
    when nothing in it is to be shaped away, as the real broker returns what
    its providers project: a benchmark uses it to keep the stand-in's copying
    out of a front end's figures. Tests leave it off, so that a front end that
    changed what the broker returned could not change the broker's instances.
    """

    def __init__(
        self,
        model: Model,
        *,
        namespaces: Mapping[str, Iterable[str]] | None = None,
        instances: Iterable[CIMInstance] = (),
        writable: Iterable[str] = (),
        delay: float = 0.0,
        share: bool = False,
    ) -> None:
        self.model = model
        self.share = share
        self._namespaces: dict[str, _Namespace] = {}
        every_class = [c.classname for c in model.classes]
        for namespace, classnames in (namespaces or {NAMESPACE: every_class}).items():
            self._namespaces[_ns_key(namespace)] = _Namespace(
                namespace.strip("/"), {c.classname.lower(): c for c in self._closure(classnames)}
            )
        self._writable = {name.lower() for name in writable}
        #: Method handlers by (lower-case class name, lower-case method name).
        self.methods: dict[tuple[str, str], MethodHandler] = {}
        #: Every call: (operation, namespace, keyword arguments as given).
        self.calls: list[tuple[str, str | None, dict[str, Any]]] = []
        # Enumerations of a class (by lower-case name) fail after n instances.
        self._failures: dict[str, tuple[int, CIMError]] = {}
        self.delay = delay
        self.max_concurrent = 0
        self._inside = 0
        self._inside_lock = threading.Lock()
        self._lock = threading.RLock()
        for instance in instances:
            self.add(instance)

    # -- set-up by the test -------------------------------------------------

    def add(self, instance: CIMInstance, namespace: str = NAMESPACE) -> CIMInstanceName:
        """Store ``instance`` (the broker owns it now) with a path made from its keys."""
        ns = self._namespace(namespace)
        with self._lock:
            instance.path = self._path_of(ns, instance)
            if instance.path in ns.instances:
                raise CIMError(CIM_ERR_ALREADY_EXISTS, f"instance {instance.path} exists")
            ns.instances[instance.path] = instance
        return instance.path.copy()

    def remove(self, path: CIMInstanceName, namespace: str = NAMESPACE) -> None:
        ns = self._namespace(namespace)
        with self._lock:
            del ns.instances[self._key(ns, path)]

    def count(self, namespace: str = NAMESPACE) -> int:
        """How many instances were added to ``namespace`` (generated ones not counted)."""
        ns = self._namespace(namespace)
        with self._lock:
            return len(ns.instances)

    def generate(self, classname: str, source: Source, namespace: str = NAMESPACE) -> None:
        """Serve ``classname`` from ``source()`` too: lazily, a fresh iterator per call."""
        ns = self._namespace(namespace)
        self._class(ns, classname)
        with self._lock:
            ns.sources[classname.lower()] = source

    def fail_after(self, classname: str, count: int, error: CIMError) -> None:
        """Enumerating ``classname`` raises ``error`` once ``count`` instances were returned."""
        with self._lock:
            self._failures[classname.lower()] = (count, error)

    def on_method(self, classname: str, method: str, handler: MethodHandler) -> None:
        """Answer ``classname.method`` with ``handler``."""
        self.methods[(classname.lower(), method.lower())] = handler

    def last_call(self, name: str) -> dict[str, Any]:
        """The keyword arguments of the latest call of operation ``name``."""
        with self._lock:
            return next(kwargs for op, _, kwargs in reversed(self.calls) if op == name)

    # -- classes and qualifiers ------------------------------------------------

    def namespaces(self) -> list[str]:
        return [ns.name for ns in self._namespaces.values()]

    def get_class(
        self,
        namespace: str | None,
        classname: str,
        *,
        local_only: bool = True,
        include_qualifiers: bool = True,
        include_class_origin: bool = False,
        property_list: Iterable[str] | None = None,
    ) -> CIMClass:
        with self._call(
            "get_class",
            namespace,
            classname=classname,
            local_only=local_only,
            include_qualifiers=include_qualifiers,
            include_class_origin=include_class_origin,
            property_list=property_list,
        ):
            ns = self._namespace(namespace)
            return class_view(
                self._class(ns, classname),
                local_only=local_only,
                include_qualifiers=include_qualifiers,
                include_class_origin=include_class_origin,
                property_list=None if property_list is None else list(property_list),
            )

    def enumerate_class_names(
        self,
        namespace: str | None,
        classname: str | None = None,
        *,
        deep_inheritance: bool = False,
    ) -> list[str]:
        with self._call(
            "enumerate_class_names",
            namespace,
            classname=classname,
            deep_inheritance=deep_inheritance,
        ):
            ns = self._namespace(namespace)
            return [cls.classname for cls in self._class_tree(ns, classname, deep_inheritance)]

    def enumerate_classes(
        self,
        namespace: str | None,
        classname: str | None = None,
        *,
        deep_inheritance: bool = False,
        local_only: bool = True,
        include_qualifiers: bool = True,
        include_class_origin: bool = False,
    ) -> list[CIMClass]:
        with self._call(
            "enumerate_classes",
            namespace,
            classname=classname,
            deep_inheritance=deep_inheritance,
            local_only=local_only,
            include_qualifiers=include_qualifiers,
            include_class_origin=include_class_origin,
        ):
            ns = self._namespace(namespace)
            return [
                class_view(
                    cls,
                    local_only=local_only,
                    include_qualifiers=include_qualifiers,
                    include_class_origin=include_class_origin,
                    property_list=None,
                )
                for cls in self._class_tree(ns, classname, deep_inheritance)
            ]

    def get_qualifier(self, namespace: str | None, name: str) -> CIMQualifierDeclaration:
        with self._call("get_qualifier", namespace, name=name):
            self._namespace(namespace)
            for qualifier in self.model.qualifiers:
                if qualifier.name.lower() == name.lower():
                    return qualifier.copy()
            raise CIMError(CIM_ERR_NOT_FOUND, f"qualifier {name!r} is not declared")

    def enumerate_qualifiers(self, namespace: str | None) -> list[CIMQualifierDeclaration]:
        with self._call("enumerate_qualifiers", namespace):
            self._namespace(namespace)
            return [q.copy() for q in self.model.qualifiers]

    # -- instance reads ------------------------------------------------------

    def get_instance(
        self,
        namespace: str | None,
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
            ns = self._namespace(namespace, path)
            cls = self._class(ns, path.classname)
            stored = ns.instances.get(self._key(ns, path))
            if stored is None:
                # Generated instances are found the slow way, as a provider would.
                stored = next(
                    (
                        instance
                        for instance in self._generated(ns, self._subclasses(ns, cls.classname))
                        if same_path(instance.path, path)
                    ),
                    None,
                )
            if stored is None:
                raise CIMError(CIM_ERR_NOT_FOUND, f"no instance {path}")
            return self._present(
                stored,
                ns.classes[stored.classname.lower()],
                property_list,
                include_qualifiers,
                include_class_origin,
            )

    def enumerate_instances(
        self,
        namespace: str | None,
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
            requested = self._class(ns, classname)
            shown = property_list
            if not deep_inheritance:
                # DSP0200 EnumerateInstances: DeepInheritance=false returns the
                # properties of the requested class only.
                allowed = {name.lower() for name in requested.properties}
                if shown is not None:
                    allowed &= {name.lower() for name in shown}
                shown = allowed

            def present(instance: CIMInstance) -> CIMInstance:
                return self._present(
                    instance,
                    ns.classes[instance.classname.lower()],
                    shown,
                    include_qualifiers,
                    include_class_origin,
                )

            return self._stream(ns, requested.classname, present)

    def enumerate_instance_names(
        self, namespace: str | None, classname: str
    ) -> Iterator[CIMInstanceName]:
        with self._call("enumerate_instance_names", namespace, classname=classname):
            ns = self._namespace(namespace)
            requested = self._class(ns, classname)
            return self._stream(ns, requested.classname, lambda i: i.path.copy())

    def references(
        self,
        namespace: str | None,
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
            ns = self._namespace(namespace, path)
            result = [
                self._present(
                    assoc,
                    ns.classes[assoc.classname.lower()],
                    property_list,
                    include_qualifiers,
                    include_class_origin,
                )
                for assoc, _ in self._links(ns, path, result_class, role)
            ]
        return iter(result)

    def reference_names(
        self,
        namespace: str | None,
        path: CIMInstanceName,
        *,
        result_class: str | None = None,
        role: str | None = None,
    ) -> Iterator[CIMInstanceName]:
        with self._call(
            "reference_names", namespace, path=path, result_class=result_class, role=role
        ):
            ns = self._namespace(namespace, path)
            result = [assoc.path.copy() for assoc, _ in self._links(ns, path, result_class, role)]
        return iter(result)

    def associators(
        self,
        namespace: str | None,
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
            ns = self._namespace(namespace, path)
            result = []
            for far in self._far_ends(ns, path, assoc_class, result_class, role, result_role):
                stored = ns.instances[far]
                cls = ns.classes[stored.classname.lower()]
                result.append(
                    self._present(
                        stored, cls, property_list, include_qualifiers, include_class_origin
                    )
                )
        return iter(result)

    def associator_names(
        self,
        namespace: str | None,
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
            ns = self._namespace(namespace, path)
            result = [
                far.copy()
                for far in self._far_ends(ns, path, assoc_class, result_class, role, result_role)
            ]
        return iter(result)

    # -- writes and methods --------------------------------------------------

    def create_instance(
        self, namespace: str | None, instance: CIMInstance, *, caller: Any
    ) -> CIMInstanceName:
        with self._call("create_instance", namespace, instance=instance, caller=caller):
            ns = self._namespace(namespace)
            self._check_write(ns, instance.classname, caller, "create instances")
            return self.add(instance, ns.name)

    def modify_instance(
        self,
        namespace: str | None,
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
            if instance.path is None:
                raise CIMError(CIM_ERR_INVALID_PARAMETER, "ModifiedInstance has no path")
            ns = self._namespace(namespace, instance.path)
            cls = self._check_write(ns, instance.path.classname, caller, "modify instances")
            stored = self._stored(ns, instance.path)
            # DSP0200 ModifyInstance: a property in PropertyList but not in the
            # instance is set to NULL; without a PropertyList, the instance's
            # properties are the ones to change.
            names = list(instance.properties if property_list is None else property_list)
            for name in names:
                if name not in cls.properties:
                    raise CIMError(
                        CIM_ERR_INVALID_PARAMETER, f"{cls.classname} has no property {name!r}"
                    )
                if _is_key(cls.properties[name]):
                    raise CIMError(CIM_ERR_INVALID_PARAMETER, f"key property {name!r} is fixed")
            for name in names:
                stored[name] = instance.get(name)

    def delete_instance(
        self, namespace: str | None, path: CIMInstanceName, *, caller: Any
    ) -> None:
        with self._call("delete_instance", namespace, path=path, caller=caller):
            ns = self._namespace(namespace, path)
            self._check_write(ns, path.classname, caller, "delete instances")
            del ns.instances[self._stored(ns, path).path]

    def invoke_method(
        self,
        namespace: str | None,
        path: CIMInstanceName | CIMClassName,
        method: str,
        params: Mapping[str, Any],
        *,
        caller: Any,
    ) -> tuple[Any, dict[str, Any]]:
        # The record keeps a case-insensitive copy, as the interface allows.
        with self._call(
            "invoke_method",
            namespace,
            path=path,
            method=method,
            params=NocaseDict(params),
            caller=caller,
        ):
            ns = self._namespace(namespace, path)
            self._check_caller(caller, f"call {method}")
            cls = self._class(ns, path.classname)
            if method not in cls.methods:
                raise CIMError(
                    CIM_ERR_METHOD_NOT_FOUND, f"{cls.classname} has no method {method!r}"
                )
            if isinstance(path, CIMInstanceName):
                self._stored(ns, path)
            handler = self.methods.get((cls.classname.lower(), method.lower()))
            if handler is None:
                raise CIMError(
                    CIM_ERR_NOT_SUPPORTED, f"{cls.classname}.{method} has no handler here"
                )
        # The handler runs outside the lock, as a provider would: it may call back.
        return handler(self, path, params, caller)

    # -- helpers ------------------------------------------------------------

    def _present(
        self,
        stored: CIMInstance,
        cls: CIMClass,
        property_list: Iterable[str] | None,
        include_qualifiers: bool,
        include_class_origin: bool,
    ) -> CIMInstance:
        if (
            self.share
            and property_list is None
            and not include_qualifiers
            and not include_class_origin
            and not any(p.qualifiers or p.class_origin for p in stored.properties.values())
        ):
            return stored
        return _shaped_copy(stored, cls, property_list, include_qualifiers, include_class_origin)

    def _call(self, operation: str, namespace: str | None, /, **kwargs: Any) -> _CallScope:
        return _CallScope(self, operation, namespace, kwargs)

    def _closure(self, classnames: Iterable[str]) -> list[CIMClass]:
        """The named classes and all their superclasses, in model (compile) order."""
        wanted: set[str] = set()
        for name in classnames:
            cls: CIMClass | None = self.model.get_class(name)
            while cls is not None and cls.classname.lower() not in wanted:
                wanted.add(cls.classname.lower())
                cls = self.model.get_class(cls.superclass) if cls.superclass else None
        return [c for c in self.model.classes if c.classname.lower() in wanted]

    def _namespace(
        self, namespace: str | None, path: CIMInstanceName | CIMClassName | None = None
    ) -> _Namespace:
        # As the real broker: no namespace means the target's, else the model's.
        name = namespace or (path.namespace if path is not None else None) or NAMESPACE
        try:
            return self._namespaces[_ns_key(name)]
        except KeyError:
            raise CIMError(
                CIM_ERR_INVALID_NAMESPACE, f"namespace {name!r} is not served here"
            ) from None

    @staticmethod
    def _class(ns: _Namespace, classname: str) -> CIMClass:
        try:
            return ns.classes[classname.lower()]
        except KeyError:
            raise CIMError(
                CIM_ERR_INVALID_CLASS, f"class {classname!r} is not in namespace {ns.name!r}"
            ) from None

    def _class_tree(
        self, ns: _Namespace, classname: str | None, deep_inheritance: bool
    ) -> list[CIMClass]:
        """DSP0200 EnumerateClass(Names): the subclasses of ``classname`` (all
        of them with DeepInheritance, else the direct ones); without a class,
        every class or the top-level ones."""
        parent = self._class(ns, classname).classname.lower() if classname else None
        if not deep_inheritance:
            return [
                cls
                for cls in ns.classes.values()
                if (cls.superclass.lower() if cls.superclass else None) == parent
            ]
        if parent is None:
            return list(ns.classes.values())
        below = self._subclasses(ns, parent) - {parent}
        return [cls for key, cls in ns.classes.items() if key in below]

    @staticmethod
    def _subclasses(ns: _Namespace, classname: str) -> set[str]:
        """``classname`` and every class inheriting from it, lower-case."""
        wanted = {classname.lower()}
        for cls in ns.classes.values():  # compile order: superclasses first
            if cls.superclass and cls.superclass.lower() in wanted:
                wanted.add(cls.classname.lower())
        return wanted

    @staticmethod
    def _path_of(ns: _Namespace, instance: CIMInstance) -> CIMInstanceName:
        cls = StandInBroker._class(ns, instance.classname)
        return CIMInstanceName(
            cls.classname,
            keybindings={
                name: instance[name] for name, prop in cls.properties.items() if _is_key(prop)
            },
            namespace=ns.name,
        )

    @staticmethod
    def _key(ns: _Namespace, path: CIMInstanceName) -> CIMInstanceName:
        """``path`` as the store keys it: this namespace, no host."""
        key = path.copy()
        key.namespace = ns.name
        key.host = None
        return key

    def _stored(self, ns: _Namespace, path: CIMInstanceName) -> CIMInstance:
        self._class(ns, path.classname)
        try:
            return ns.instances[self._key(ns, path)]
        except KeyError:
            raise CIMError(CIM_ERR_NOT_FOUND, f"no instance {path}") from None

    def _generated(self, ns: _Namespace, classes: set[str]) -> Iterator[CIMInstance]:
        """The generated instances of ``classes``, each with its path in ``ns``."""
        with self._lock:
            sources = [source for name, source in ns.sources.items() if name in classes]
        for source in sources:
            for instance in source():
                if instance.path is None:
                    instance.path = self._path_of(ns, instance)
                instance.path.namespace = ns.name
                yield instance

    def _stream(
        self, ns: _Namespace, classname: str, convert: Callable[[CIMInstance], _T]
    ) -> Iterator[_T]:
        """The instances of ``classname`` and its subclasses, converted.

        The stored ones are converted now, under the lock (a concurrent write
        must not show half-done); the generated ones as the caller draws them.
        An injected failure is raised when its count of results was drawn.
        """
        wanted = self._subclasses(ns, classname)
        ready = [
            convert(instance)
            for instance in ns.instances.values()
            if instance.classname.lower() in wanted
        ]
        failure = self._failures.get(classname.lower())

        def draw() -> Iterator[_T]:
            yield from ready
            for instance in self._generated(ns, wanted):
                yield convert(instance)

        def results() -> Iterator[_T]:
            for count, result in enumerate(draw()):
                if failure is not None and count == failure[0]:
                    raise failure[1]
                yield result

        return results()

    def _links(
        self,
        ns: _Namespace,
        path: CIMInstanceName,
        assoc_class: str | None,
        role: str | None,
    ) -> Iterator[tuple[CIMInstance, set[str]]]:
        """Each association instance referring to ``path`` once, with the
        (lower-case) names of its reference properties that do."""
        self._class(ns, path.classname)
        classes = self._subclasses(ns, assoc_class) if assoc_class else None
        for inst in ns.instances.values():
            if "Association" not in ns.classes[inst.classname.lower()].qualifiers:
                continue
            if classes is not None and inst.classname.lower() not in classes:
                continue
            near = {
                prop.name.lower()
                for prop in inst.properties.values()
                if prop.type == "reference"
                and prop.value is not None
                and (role is None or prop.name.lower() == role.lower())
                and same_path(prop.value, path)
            }
            if near:
                yield inst, near

    def _far_ends(
        self,
        ns: _Namespace,
        path: CIMInstanceName,
        assoc_class: str | None,
        result_class: str | None,
        role: str | None,
        result_role: str | None,
    ) -> list[CIMInstanceName]:
        """The stored instances associated with ``path``, each once (DSP0200 Associators)."""
        results = self._subclasses(ns, result_class) if result_class else None
        found: dict[CIMInstanceName, None] = {}
        for assoc, near in self._links(ns, path, assoc_class, role):
            for prop in assoc.properties.values():
                if prop.type != "reference" or prop.value is None or prop.name.lower() in near:
                    continue
                if result_role is not None and prop.name.lower() != result_role.lower():
                    continue
                far = self._key(ns, prop.value)
                if results is not None and far.classname.lower() not in results:
                    continue
                if far in ns.instances:
                    found[far] = None
        return list(found)

    @staticmethod
    def _check_caller(caller: Any, what: str) -> None:
        if not caller.may_write:
            raise CIMError(CIM_ERR_ACCESS_DENIED, f"user {caller.user!r} may not {what}")

    def _check_write(self, ns: _Namespace, classname: str, caller: Any, what: str) -> CIMClass:
        self._check_caller(caller, what)
        cls = self._class(ns, classname)
        if cls.classname.lower() not in self._writable:
            raise CIMError(CIM_ERR_NOT_SUPPORTED, f"instances of {cls.classname} are read-only")
        return cls


class _CallScope:
    """One broker call: recorded, counted for ``max_concurrent``, then run under the lock."""

    def __init__(
        self, broker: StandInBroker, name: str, namespace: str | None, kwargs: dict[str, Any]
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


def _ns_key(namespace: str) -> str:
    return namespace.strip("/").lower()


def _is_key(prop: Any) -> bool:
    return bool(prop.qualifiers.get("Key") and prop.qualifiers["Key"].value)


def _shaped_copy(
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
