"""A small in-memory broker for the server tests, with the real compiled model.

Owns: ``StandInBroker``, which implements the broker interface
(/work/notes/broker.md) over instances the test gives it: DSP0200
PropertyList and DeepInheritance on enumerations, associations found
through the reference properties of association instances, a writable
class for the instance-write operations, extrinsic methods answered by
handlers the test registers, lazily generated classes (10k instances
without holding them), a failure injected after the n-th instance of a
class, and a record of the calls. Readers (``may_write`` false) get
CIM_ERR_ACCESS_DENIED for writes and methods, as from the real broker.

Must not know: mounts, the engine, XML, HTTP. It decides nothing about
the model's meaning; the server under test must not notice the difference.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from pywbem import (
    CIM_ERR_ACCESS_DENIED,
    CIM_ERR_ALREADY_EXISTS,
    CIM_ERR_INVALID_CLASS,
    CIM_ERR_INVALID_NAMESPACE,
    CIM_ERR_METHOD_NOT_FOUND,
    CIM_ERR_NOT_FOUND,
    CIM_ERR_NOT_SUPPORTED,
    CIMClass,
    CIMClassName,
    CIMError,
    CIMInstance,
    CIMInstanceName,
    CIMQualifierDeclaration,
    Uint16,
    Uint32,
)

from lmi_mount.cim.model import Model
from lmi_mount.cim.names import NAMESPACE
from lmi_mount.server.interop import class_view

Handler = Callable[[CIMInstanceName | CIMClassName, Mapping[str, Any], Any],
                   tuple[Any, dict[str, Any]]]


def same_path(a: CIMInstanceName, b: CIMInstanceName) -> bool:
    if a.classname.lower() != b.classname.lower():
        return False
    ka = {k.lower(): v for k, v in a.keybindings.items()}
    kb = {k.lower(): v for k, v in b.keybindings.items()}
    if ka.keys() != kb.keys():
        return False
    return all(
        same_path(v, kb[k]) if isinstance(v, CIMInstanceName) else v == kb[k]
        for k, v in ka.items()
    )


class StandInBroker:
    def __init__(self, model: Model, instances: Iterable[CIMInstance] = (), *,
                 writable: Sequence[str] = ()) -> None:
        self.model = model
        self.namespace = NAMESPACE
        self._classes = {c.classname.lower(): c for c in model.classes}
        self._lock = threading.Lock()
        self._instances: list[CIMInstance] = []
        self._sources: dict[str, Callable[[], Iterator[CIMInstance]]] = {}
        self._failures: dict[str, tuple[int, CIMError]] = {}
        self._handlers: dict[tuple[str, str], Handler] = {}
        self._writable = {c.lower() for c in writable}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        for instance in instances:
            self.add(instance)

    # -- test set-up ---------------------------------------------------------------------

    def add(self, instance: CIMInstance) -> CIMInstance:
        if instance.path is None:
            instance.path = CIMInstanceName.from_instance(
                self._class(instance.classname), instance, namespace=self.namespace)
        instance.path.namespace = self.namespace
        with self._lock:
            self._instances.append(instance)
        return instance

    def generate(self, classname: str, source: Callable[[], Iterator[CIMInstance]]) -> None:
        """Serve ``classname`` from ``source()`` (lazily, a fresh iterator per enumeration)."""
        self._sources[classname.lower()] = source

    def fail_after(self, classname: str, count: int, error: CIMError) -> None:
        """Enumerating ``classname`` raises ``error`` after ``count`` instances."""
        self._failures[classname.lower()] = (count, error)

    def on_method(self, classname: str, method: str, handler: Handler) -> None:
        self._handlers[(classname.lower(), method.lower())] = handler

    def _record(self, name: str, **kwargs: Any) -> None:
        with self._lock:
            self.calls.append((name, kwargs))

    def last_call(self, name: str) -> dict[str, Any]:
        with self._lock:
            return next(kw for n, kw in reversed(self.calls) if n == name)

    # -- model -----------------------------------------------------------------------------

    def namespaces(self) -> list[str]:
        return [self.namespace]

    def _check_namespace(self, namespace: str | None) -> None:
        if (namespace or "").strip("/").lower() != self.namespace:
            raise CIMError(CIM_ERR_INVALID_NAMESPACE, f"namespace {namespace!r} does not exist")

    def _class(self, classname: str) -> CIMClass:
        cls = self._classes.get(classname.lower())
        if cls is None:
            raise CIMError(CIM_ERR_INVALID_CLASS, f"class {classname!r} does not exist")
        return cls

    def _is_subclass(self, classname: str, ancestor: str) -> bool:
        current: str | None = classname
        while current is not None:
            if current.lower() == ancestor.lower():
                return True
            current = self._class(current).superclass
        return False

    def get_class(self, namespace: str | None, classname: str, *, local_only: bool = True,
                  include_qualifiers: bool = True, include_class_origin: bool = False,
                  property_list: Sequence[str] | None = None) -> CIMClass:
        self._record("get_class", classname=classname, local_only=local_only,
                     include_qualifiers=include_qualifiers)
        self._check_namespace(namespace)
        return class_view(self._class(classname), local_only=local_only,
                          include_qualifiers=include_qualifiers,
                          include_class_origin=include_class_origin, property_list=property_list)

    def enumerate_class_names(self, namespace: str | None, classname: str | None = None, *,
                              deep_inheritance: bool = False) -> list[str]:
        self._record("enumerate_class_names", classname=classname,
                     deep_inheritance=deep_inheritance)
        self._check_namespace(namespace)
        parent = self._class(classname).classname.lower() if classname else None
        names = []
        for cls in self.model.classes:
            if deep_inheritance:
                if parent is None or (cls.classname.lower() != parent
                                      and self._is_subclass(cls.classname, parent)):
                    names.append(cls.classname)
            elif (cls.superclass.lower() if cls.superclass else None) == parent:
                names.append(cls.classname)
        return names

    def enumerate_classes(self, namespace: str | None, classname: str | None = None, *,
                          deep_inheritance: bool = False, local_only: bool = True,
                          include_qualifiers: bool = True,
                          include_class_origin: bool = False) -> list[CIMClass]:
        return [
            class_view(self._class(name), local_only=local_only,
                       include_qualifiers=include_qualifiers,
                       include_class_origin=include_class_origin, property_list=None)
            for name in self.enumerate_class_names(namespace, classname,
                                                   deep_inheritance=deep_inheritance)
        ]

    def get_qualifier(self, namespace: str | None, name: str) -> CIMQualifierDeclaration:
        self._check_namespace(namespace)
        for qualifier in self.model.qualifiers:
            if qualifier.name.lower() == name.lower():
                return qualifier.copy()
        raise CIMError(CIM_ERR_NOT_FOUND, f"qualifier {name!r} is not declared")

    def enumerate_qualifiers(self, namespace: str | None) -> list[CIMQualifierDeclaration]:
        self._check_namespace(namespace)
        return [q.copy() for q in self.model.qualifiers]

    # -- instances ------------------------------------------------------------------------------

    def _shape(self, instance: CIMInstance, property_list: Sequence[str] | None,
               restrict: set[str] | None) -> CIMInstance:
        if property_list is None and restrict is None:
            # The server never changes what a broker returns; sharing keeps
            # the stand-in's cost out of the benchmark's figures.
            return instance
        result = instance.copy()
        wanted = {p.lower() for p in property_list} if property_list is not None else None
        for name in list(result.properties):
            key = name.lower()
            if (wanted is not None and key not in wanted) or (
                    restrict is not None and key not in restrict):
                del result.properties[name]
        return result

    def _all(self, classname: str) -> Iterator[CIMInstance]:
        with self._lock:
            stored = list(self._instances)
        for instance in stored:
            if self._is_subclass(instance.classname, classname):
                yield instance
        for served, source in self._sources.items():
            if self._is_subclass(served, classname):
                yield from source()

    def get_instance(self, namespace: str | None, path: CIMInstanceName, *,
                     property_list: Sequence[str] | None = None,
                     include_qualifiers: bool = False, include_class_origin: bool = False,
                     local_only: bool = False) -> CIMInstance:
        self._record("get_instance", path=path, property_list=property_list,
                     local_only=local_only)
        self._check_namespace(namespace or path.namespace)
        self._class(path.classname)
        for instance in self._all(path.classname):
            if same_path(instance.path, path):
                return self._shape(instance, property_list, None)
        raise CIMError(CIM_ERR_NOT_FOUND, f"no instance {path}")

    def enumerate_instances(self, namespace: str | None, classname: str, *,
                            deep_inheritance: bool = True,
                            property_list: Sequence[str] | None = None,
                            include_qualifiers: bool = False, include_class_origin: bool = False,
                            local_only: bool = False) -> Iterator[CIMInstance]:
        self._record("enumerate_instances", classname=classname,
                     deep_inheritance=deep_inheritance, property_list=property_list,
                     local_only=local_only)
        self._check_namespace(namespace)
        requested = self._class(classname)
        restrict = None if deep_inheritance else {p.lower() for p in requested.properties}
        failure = self._failures.get(classname.lower())
        for count, instance in enumerate(self._all(classname)):
            if failure is not None and count == failure[0]:
                raise failure[1]
            same = instance.classname.lower() == classname.lower()
            yield self._shape(instance, property_list, None if same else restrict)

    def enumerate_instance_names(self, namespace: str | None,
                                 classname: str) -> Iterator[CIMInstanceName]:
        for instance in self.enumerate_instances(namespace, classname, property_list=[]):
            yield instance.path

    def _links(self, path: CIMInstanceName, assoc_class: str | None,
               role: str | None) -> Iterator[tuple[CIMInstance, str]]:
        self._class(path.classname)
        with self._lock:
            stored = list(self._instances)
        for instance in stored:
            if assoc_class is not None and not self._is_subclass(instance.classname,
                                                                 assoc_class):
                continue
            if "Association" not in self._class(instance.classname).qualifiers:
                continue
            for name, value in instance.items():
                if (isinstance(value, CIMInstanceName) and same_path(value, path)
                        and (role is None or name.lower() == role.lower())):
                    yield instance, name
                    break

    def _associated(self, path: CIMInstanceName, assoc_class: str | None,
                    result_class: str | None, role: str | None,
                    result_role: str | None) -> Iterator[CIMInstanceName]:
        for link, used in self._links(path, assoc_class, role):
            for name, value in link.items():
                if name == used or not isinstance(value, CIMInstanceName):
                    continue
                if result_role is not None and name.lower() != result_role.lower():
                    continue
                if result_class is not None and not self._is_subclass(value.classname,
                                                                      result_class):
                    continue
                yield value

    def associators(self, namespace: str | None, path: CIMInstanceName, *,
                    assoc_class: str | None = None, result_class: str | None = None,
                    role: str | None = None, result_role: str | None = None,
                    property_list: Sequence[str] | None = None, include_qualifiers: bool = False,
                    include_class_origin: bool = False) -> Iterator[CIMInstance]:
        self._check_namespace(namespace or path.namespace)
        for other in self._associated(path, assoc_class, result_class, role, result_role):
            yield self.get_instance(namespace, other, property_list=property_list)

    def associator_names(self, namespace: str | None, path: CIMInstanceName, *,
                         assoc_class: str | None = None, result_class: str | None = None,
                         role: str | None = None,
                         result_role: str | None = None) -> Iterator[CIMInstanceName]:
        self._check_namespace(namespace or path.namespace)
        yield from self._associated(path, assoc_class, result_class, role, result_role)

    def references(self, namespace: str | None, path: CIMInstanceName, *,
                   result_class: str | None = None, role: str | None = None,
                   property_list: Sequence[str] | None = None, include_qualifiers: bool = False,
                   include_class_origin: bool = False) -> Iterator[CIMInstance]:
        self._check_namespace(namespace or path.namespace)
        for link, _ in self._links(path, result_class, role):
            yield self._shape(link, property_list, None)

    def reference_names(self, namespace: str | None, path: CIMInstanceName, *,
                        result_class: str | None = None,
                        role: str | None = None) -> Iterator[CIMInstanceName]:
        for link in self.references(namespace, path, result_class=result_class, role=role):
            yield link.path

    # -- writes and methods -----------------------------------------------------------------

    def _check_write(self, caller: Any, what: str) -> None:
        if not caller.may_write:
            raise CIMError(CIM_ERR_ACCESS_DENIED, f"user {caller.user!r} may not {what}")

    def _check_writable(self, classname: str) -> None:
        self._class(classname)
        if classname.lower() not in self._writable:
            raise CIMError(CIM_ERR_NOT_SUPPORTED, f"instances of {classname} are read-only")

    def create_instance(self, namespace: str | None, instance: CIMInstance, *,
                        caller: Any) -> CIMInstanceName:
        self._record("create_instance", instance=instance, caller=caller)
        self._check_namespace(namespace)
        self._check_write(caller, "create instances")
        self._check_writable(instance.classname)
        path = CIMInstanceName.from_instance(self._class(instance.classname), instance,
                                             namespace=self.namespace)
        if any(same_path(i.path, path) for i in self._all(instance.classname)):
            raise CIMError(CIM_ERR_ALREADY_EXISTS, f"{path} exists")
        instance.path = path
        self.add(instance)
        return path

    def modify_instance(self, namespace: str | None, instance: CIMInstance, *,
                        property_list: Sequence[str] | None = None, caller: Any) -> None:
        self._record("modify_instance", instance=instance, property_list=property_list,
                     caller=caller)
        self._check_namespace(namespace)
        self._check_write(caller, "modify instances")
        self._check_writable(instance.path.classname)
        wanted = {p.lower() for p in property_list} if property_list is not None else None
        for stored in self._all(instance.path.classname):
            if same_path(stored.path, instance.path):
                for name, prop in instance.properties.items():
                    if wanted is None or name.lower() in wanted:
                        stored.properties[name] = prop
                return
        raise CIMError(CIM_ERR_NOT_FOUND, f"no instance {instance.path}")

    def delete_instance(self, namespace: str | None, path: CIMInstanceName, *,
                        caller: Any) -> None:
        self._record("delete_instance", path=path, caller=caller)
        self._check_namespace(namespace)
        self._check_write(caller, "delete instances")
        self._check_writable(path.classname)
        with self._lock:
            for stored in self._instances:
                if same_path(stored.path, path):
                    self._instances.remove(stored)
                    return
        raise CIMError(CIM_ERR_NOT_FOUND, f"no instance {path}")

    def invoke_method(self, namespace: str | None, path: CIMInstanceName | CIMClassName,
                      method: str, params: Mapping[str, Any], *,
                      caller: Any) -> tuple[Any, dict[str, Any]]:
        self._record("invoke_method", path=path, method=method, params=dict(params),
                     caller=caller)
        self._check_namespace(namespace or path.namespace)
        self._check_write(caller, "call methods")
        cls = self._class(path.classname)
        if method not in cls.methods:
            raise CIMError(CIM_ERR_METHOD_NOT_FOUND, f"{cls.classname} has no method {method!r}")
        handler = self._handlers.get((cls.classname.lower(), method.lower()))
        if handler is None:
            raise CIMError(CIM_ERR_NOT_SUPPORTED, f"{cls.classname}.{method} has no handler")
        return handler(path, params, caller)


# --------------------------------------------------------------------------
# Test data: a few instances of the Mounting Model
# --------------------------------------------------------------------------

HOST = "host.example"
SERVICE_KEYS = {
    "SystemCreationClassName": "LMI_ComputerSystem",
    "SystemName": HOST,
    "CreationClassName": "LMI_MountConfigurationService",
    "Name": "LMI_MountConfigurationService",
}
#: Mount points with characters that XML and URIs must carry.
MOUNT_POINTS = ("/mnt/data", "/mnt/with space & <angle> \"quote\"", "/mnt/ünïcödé\ttab")


def mount(model: Model, index: int, target: str, *, holders: Sequence[str] = ("root",)
          ) -> CIMInstance:
    cls = model.get_class("LMI_MountedFileSystem")
    return CIMInstance.from_class(cls, namespace=NAMESPACE, include_path=True,
                                  include_missing_properties=True, property_values={
        "FileSystemSpec": f"/dev/vd{chr(ord('a') + index % 26)}{index}",
        "MountPointPath": target,
        "FileSystemType": "ext4",
        "ReferenceCount": Uint32(len(holders)),
        "Holders": list(holders),
        "ElementName": target,
    })


def setting(model: Model, target: str) -> CIMInstance:
    cls = model.get_class("LMI_MountedFileSystemSetting")
    return CIMInstance.from_class(cls, namespace=NAMESPACE, include_path=True,
                                  include_missing_properties=False, property_values={
        "InstanceID": f"LMI:LMI_MountedFileSystemSetting:{target}",
        "AllowWrite": True,
        "Dump": False,
        "OtherOptions": ["noauto", "x-systemd.device-timeout=5"],
    })


def populate(broker: StandInBroker) -> dict[str, Any]:
    """The standard test data; returns the paths the tests refer to."""
    model = broker.model
    service_cls = model.get_class("LMI_MountConfigurationService")
    service = broker.add(CIMInstance.from_class(
        service_cls, namespace=NAMESPACE, include_path=True, include_missing_properties=False,
        property_values={**SERVICE_KEYS, "ElementName": "mounts", "Started": True}))
    mounts = [broker.add(mount(model, i, target)) for i, target in enumerate(MOUNT_POINTS)]
    settings = [broker.add(setting(model, target)) for target in MOUNT_POINTS[:2]]
    link_cls = model.get_class("LMI_MountedFileSystemElementSettingData")
    for m, s in zip(mounts, settings, strict=False):
        broker.add(CIMInstance.from_class(
            link_cls, namespace=NAMESPACE, include_path=True, include_missing_properties=False,
            property_values={"ManagedElement": m.path, "SettingData": s.path,
                             "IsCurrent": Uint16(1)}))
    return {"service": service.path, "mounts": [m.path for m in mounts],
            "settings": [s.path for s in settings]}
