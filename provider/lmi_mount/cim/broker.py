"""The broker: one dispatcher of CIM operations to the providers, for both front ends.

Owns: namespace and class checks, routing by class (with the model's
inheritance: enumerating a DMTF parent yields the LMI subclasses), the
DSP0200 request options (PropertyList, DeepInheritance, IncludeClassOrigin,
IncludeQualifiers, LocalOnly), the generic Associators/References traversal,
access control (readers may not write or call methods), and class and
qualifier operations from the compiled model. Every failure is a CIMError
with the DSP0200 status and a message naming the value: a missing instance is
NOT_FOUND, never FAILED.

Must not know: XML, HTTP, pywbem_mock internals, the kernel; how instances are
built (projection) or what methods do (providers).
"""

from __future__ import annotations

import copy
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from pywbem import (
    CIM_ERR_ACCESS_DENIED,
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

from lmi_mount.cim import names
from lmi_mount.cim.jobs import DEFAULT_JOB_THREADS, JobManager
from lmi_mount.cim.model import Model, descends_from, key_names, load_model, method_parameters
from lmi_mount.cim.paths import same_path
from lmi_mount.cim.projection import Projector
from lmi_mount.cim.providers.associations import (
    JobAssociationProvider,
    MountAssociationProvider,
    ServiceAssociationProvider,
)
from lmi_mount.cim.providers.base import Caller, Context, Provider, View
from lmi_mount.cim.providers.capabilities import CapabilitiesProvider
from lmi_mount.cim.providers.jobs import JobProvider
from lmi_mount.cim.providers.mounts import (
    LocalFileSystemProvider,
    MountedFileSystemProvider,
    UnixDirectoryProvider,
)
from lmi_mount.cim.providers.service import HostProvider, ServiceProvider
from lmi_mount.cim.providers.settings import SettingProvider
from lmi_mount.engine import MountManager
from lmi_mount.linux.paths import volume_stats

__all__ = ["ANONYMOUS", "Broker", "Caller"]

#: The caller of a front end without authentication (the mock): may write.
ANONYMOUS = Caller()

# Classes with exactly one instance: a method called on the class path acts on it
# (pywbemcli's "class invokemethod", wbemcli's "cm" on a class).
_SINGLETONS = (names.MOUNT_CONFIGURATION_SERVICE, names.MOUNTED_FILE_SYSTEM_CAPABILITIES)


def default_providers() -> list[Provider]:
    return [
        MountedFileSystemProvider(),
        UnixDirectoryProvider(),
        LocalFileSystemProvider(),
        SettingProvider(),
        CapabilitiesProvider(),
        HostProvider(),
        ServiceProvider(),
        JobProvider(),
        MountAssociationProvider(),
        ServiceAssociationProvider(),
        JobAssociationProvider(),
    ]


class Broker:
    """Serves the Mounting Model of one engine in ``root/cimv2``."""

    def __init__(
        self,
        engine: MountManager,
        *,
        model: Model | None = None,
        host: str | None = None,
        synchronous_seconds: float = 5.0,
        job_threads: int = DEFAULT_JOB_THREADS,
        max_waiting: int | None = None,
        time_before_removal: float = 60.0,
        max_goal_settings: int = 1000,
        default_holder: str = "cim",
        volume_reader: Callable[[str], Any] = volume_stats,
        job_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.model = model or load_model()
        self.namespace = names.NAMESPACE
        self.context = Context(
            engine=engine,
            projector=Projector(self.model, host or socket.getfqdn()),
            jobs=JobManager(
                synchronous_seconds=synchronous_seconds,
                time_before_removal=time_before_removal,
                workers=job_threads,
                max_waiting=max_waiting,
                clock=job_clock,
            ),
            volume_stats=volume_reader,
            max_goal_settings=max_goal_settings,
            default_holder=default_holder,
        )
        self._classes = {cls.classname.lower(): cls for cls in self.model.classes}
        # Per class, read once: every path a request names is checked against them.
        self._keys = {name: key_names(cls) for name, cls in self._classes.items()}
        self._class_views: dict[tuple[str, bool, bool, bool], CIMClass] = {}
        self._providers: dict[str, Provider] = {}
        for provider in default_providers():
            for classname in provider.classnames:
                self._providers[classname.lower()] = provider
        self._associations = [
            name for provider in default_providers() for name in provider.associations
        ]

    def close(self) -> None:
        self.context.jobs.shutdown()

    # -- model ---------------------------------------------------------------------------

    def namespaces(self) -> list[str]:
        return [self.namespace]

    def _check_namespace(self, namespace: str | None) -> None:
        if (namespace or self.namespace).strip("/").lower() != self.namespace:
            raise CIMError(
                CIM_ERR_INVALID_NAMESPACE, f"namespace {namespace!r} does not exist here"
            )

    def _class(self, classname: str) -> CIMClass:
        cls = self._classes.get(classname.lower())
        if cls is None:
            raise CIMError(CIM_ERR_INVALID_CLASS, f"class {classname!r} does not exist")
        return cls

    def _check_path(self, path: CIMInstanceName, what: str) -> None:
        """``path`` names an instance here by exactly its class's keys: the first
        build matched the keys a provider knew and ignored the rest, so a path
        with an extra key reached (and unmounted) a mount it does not name.

        A reference's host and namespace are not held against it: wbemcli
        prints a reference as ``root/cimv2:Class.keys`` and, given that text
        back, reads ``root`` as a host and sends namespace ``cimv2``; a class
        of this model has instances in one namespace only."""
        cls = self._classes.get(path.classname.lower())
        if cls is None:
            raise CIMError(CIM_ERR_INVALID_PARAMETER,
                           f"{what} names class {path.classname!r}, which does not exist here")
        keys = self._keys[path.classname.lower()]
        given = {name.lower() for name in path.keybindings}
        named_by = {key.lower() for key in keys}
        extra = [name for name in path.keybindings if name.lower() not in named_by]
        missing = [key for key in keys if key.lower() not in given]
        if extra or missing:
            wrong = (f"has no key {', '.join(map(repr, extra))}" if extra
                     else f"lacks the key {', '.join(map(repr, missing))}")
            naming = (f"{cls.classname} is named by {', '.join(keys)}" if keys else
                      f"{cls.classname} has no keys: an instance is named by the keys of "
                      "its own class")
            raise CIMError(CIM_ERR_INVALID_PARAMETER,
                           f"{what} {_describe(path)} {wrong}: {naming}")

    def is_subclass(self, classname: str, ancestor: str) -> bool:
        """``classname`` is ``ancestor`` or inherits from it (case-insensitive)."""
        return descends_from(classname, ancestor, lambda name: self._classes.get(name.lower()))

    def _served_under(self, classname: str) -> list[str]:
        """The classes with a provider that are ``classname`` or inherit from it."""
        return [
            cls.classname
            for key, cls in self._classes.items()
            if key in self._providers and self.is_subclass(cls.classname, classname)
        ]

    def get_class(
        self,
        namespace: str | None,
        classname: str,
        *,
        local_only: bool = True,
        include_qualifiers: bool = True,
        include_class_origin: bool = False,
        property_list: Sequence[str] | None = None,
    ) -> CIMClass:
        self._check_namespace(namespace)
        cls = self._class(classname)
        if property_list is not None:
            return class_view(cls, local_only=local_only, include_qualifiers=include_qualifiers,
                              include_class_origin=include_class_origin,
                              property_list=property_list)
        # The model never changes, and a shaped class costs a deep copy (about
        # 10 ms for the service class): each shape is made once and shared, so
        # callers must treat it as read-only (the front ends only encode it).
        key = (cls.classname, local_only, include_qualifiers, include_class_origin)
        view = self._class_views.get(key)
        if view is None:
            view = class_view(cls, local_only=local_only, include_qualifiers=include_qualifiers,
                              include_class_origin=include_class_origin, property_list=None)
            self._class_views[key] = view
        return view

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
        return [
            class_view(
                self._class(name),
                local_only=local_only,
                include_qualifiers=include_qualifiers,
                include_class_origin=include_class_origin,
                property_list=None,
            )
            for name in self.enumerate_class_names(
                namespace, classname, deep_inheritance=deep_inheritance
            )
        ]

    def enumerate_class_names(
        self,
        namespace: str | None,
        classname: str | None = None,
        *,
        deep_inheritance: bool = False,
    ) -> list[str]:
        self._check_namespace(namespace)
        parent = self._class(classname).classname.lower() if classname else None
        result = []
        for cls in self.model.classes:
            superclass = cls.superclass.lower() if cls.superclass else None
            if deep_inheritance:
                if parent is None or (
                    cls.classname.lower() != parent and self.is_subclass(cls.classname, parent)
                ):
                    result.append(cls.classname)
            elif superclass == parent:
                result.append(cls.classname)
        return result

    def get_qualifier(self, namespace: str | None, name: str) -> CIMQualifierDeclaration:
        self._check_namespace(namespace)
        for qualifier in self.model.qualifiers:
            if qualifier.name.lower() == name.lower():
                return qualifier
        raise CIMError(CIM_ERR_NOT_FOUND, f"qualifier {name!r} is not declared")

    def enumerate_qualifiers(self, namespace: str | None) -> list[CIMQualifierDeclaration]:
        self._check_namespace(namespace)
        return list(self.model.qualifiers)

    # -- instance reads ----------------------------------------------------------------------

    def _view(self) -> View:
        return View(self.context)

    def _provider(self, classname: str) -> Provider | None:
        return self._providers.get(classname.lower())

    def get_instance(
        self,
        namespace: str | None,
        path: CIMInstanceName,
        *,
        property_list: Sequence[str] | None = None,
        include_qualifiers: bool = False,
        include_class_origin: bool = False,
        local_only: bool = False,
    ) -> CIMInstance:
        self._check_namespace(namespace or path.namespace)
        instance = self._get(self._view(), path)
        return self._shape(instance, instance.classname, property_list, include_class_origin)

    def _get(self, view: View, path: CIMInstanceName) -> CIMInstance:
        self._class(path.classname)
        self._check_path(path, "the instance path")
        provider = self._provider(path.classname)
        instance = provider.get(view, path) if provider is not None else None
        if instance is None:
            raise CIMError(CIM_ERR_NOT_FOUND, f"no instance {_describe(path)}")
        return instance

    def enumerate_instances(
        self,
        namespace: str | None,
        classname: str,
        *,
        deep_inheritance: bool = True,
        property_list: Sequence[str] | None = None,
        include_qualifiers: bool = False,
        include_class_origin: bool = False,
        local_only: bool = False,
    ) -> Iterator[CIMInstance]:
        self._check_namespace(namespace)
        requested = self._class(classname).classname
        view = self._view()
        # DSP0200: without DeepInheritance, subclass instances carry only the
        # properties of the requested class.
        restrict = (
            None if deep_inheritance else set(k.lower() for k in self._class(requested).properties)
        )
        for served in self._served_under(requested):
            provider = self._providers[served.lower()]
            for instance in provider.instances(view, served):
                limit = restrict if served.lower() != requested.lower() else None
                yield self._shape(instance, served, property_list, include_class_origin, limit)

    def enumerate_instance_names(
        self, namespace: str | None, classname: str
    ) -> Iterator[CIMInstanceName]:
        for instance in self.enumerate_instances(namespace, classname, property_list=[]):
            yield instance.path

    def _association_instances(
        self, view: View, path: CIMInstanceName, assoc_class: str | None, role: str | None
    ) -> Iterator[tuple[CIMInstance, str]]:
        """Association instances that refer to ``path`` (in ``role``), with the role used."""
        self._class(path.classname)
        self._check_path(path, "the object path")
        if assoc_class is not None:
            self._class(assoc_class)
        for association in self._associations:
            if assoc_class is not None and not self.is_subclass(association, assoc_class):
                continue
            provider = self._providers[association.lower()]
            for instance in provider.references_to(view, association, path):
                for name, value in instance.items():
                    if (
                        isinstance(value, CIMInstanceName)
                        and same_path(value, path)
                        and (role is None or name.lower() == role.lower())
                    ):
                        yield instance, name
                        break

    def _associated_paths(
        self,
        view: View,
        path: CIMInstanceName,
        assoc_class: str | None,
        result_class: str | None,
        role: str | None,
        result_role: str | None,
    ) -> Iterator[CIMInstanceName]:
        if result_class is not None:
            self._class(result_class)
        seen: list[CIMInstanceName] = []
        for instance, used_role in self._association_instances(view, path, assoc_class, role):
            for name, value in instance.items():
                if name == used_role or not isinstance(value, CIMInstanceName):
                    continue
                if result_role is not None and name.lower() != result_role.lower():
                    continue
                if result_class is not None and not self.is_subclass(
                    value.classname, result_class
                ):
                    continue
                if not any(same_path(value, other) for other in seen):
                    seen.append(value)
                    yield value

    def associators(
        self,
        namespace: str | None,
        path: CIMInstanceName,
        *,
        assoc_class: str | None = None,
        result_class: str | None = None,
        role: str | None = None,
        result_role: str | None = None,
        property_list: Sequence[str] | None = None,
        include_qualifiers: bool = False,
        include_class_origin: bool = False,
    ) -> Iterator[CIMInstance]:
        self._check_namespace(namespace or path.namespace)
        view = self._view()
        for other in self._associated_paths(
            view, path, assoc_class, result_class, role, result_role
        ):
            provider = self._provider(other.classname)
            instance = provider.get(view, other) if provider is not None else None
            if instance is not None:  # an end that vanished meanwhile is skipped
                yield self._shape(
                    instance, instance.classname, property_list, include_class_origin
                )

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
        self._check_namespace(namespace or path.namespace)
        yield from self._associated_paths(
            self._view(), path, assoc_class, result_class, role, result_role
        )

    def references(
        self,
        namespace: str | None,
        path: CIMInstanceName,
        *,
        result_class: str | None = None,
        role: str | None = None,
        property_list: Sequence[str] | None = None,
        include_qualifiers: bool = False,
        include_class_origin: bool = False,
    ) -> Iterator[CIMInstance]:
        self._check_namespace(namespace or path.namespace)
        for instance, _ in self._association_instances(self._view(), path, result_class, role):
            yield self._shape(instance, instance.classname, property_list, include_class_origin)

    def reference_names(
        self,
        namespace: str | None,
        path: CIMInstanceName,
        *,
        result_class: str | None = None,
        role: str | None = None,
    ) -> Iterator[CIMInstanceName]:
        for instance in self.references(
            namespace, path, result_class=result_class, role=role, property_list=[]
        ):
            yield instance.path

    # -- writes and methods --------------------------------------------------------------------

    @staticmethod
    def _check_write(caller: Caller, what: str) -> None:
        if not caller.may_write:
            raise CIMError(CIM_ERR_ACCESS_DENIED, f"user {caller.user!r} may read but not {what}")

    def create_instance(
        self, namespace: str | None, instance: CIMInstance, *, caller: Caller = ANONYMOUS
    ) -> CIMInstanceName:
        self._check_namespace(namespace)
        self._check_write(caller, "create instances")
        self._class(instance.classname)
        hint = (
            " (use CreateSetting for settings, CreateMount for mounts)"
            if instance.classname.lower().startswith("lmi_")
            else ""
        )
        raise CIMError(
            CIM_ERR_NOT_SUPPORTED, f"instances of {instance.classname} cannot be created{hint}"
        )

    def modify_instance(
        self,
        namespace: str | None,
        instance: CIMInstance,
        *,
        property_list: Sequence[str] | None = None,
        caller: Caller = ANONYMOUS,
    ) -> None:
        self._check_namespace(namespace or (instance.path.namespace if instance.path else None))
        self._check_write(caller, "modify instances")
        if instance.path is None:
            raise CIMError(CIM_ERR_INVALID_PARAMETER, "ModifiedInstance has no path")
        provider = self._provider(instance.path.classname)
        self._class(instance.path.classname)
        self._check_path(instance.path, "the instance path")
        if provider is None:
            raise CIMError(CIM_ERR_NOT_FOUND, f"no instance {_describe(instance.path)}")
        provider.modify(
            self._view(), instance, list(property_list) if property_list is not None else None
        )

    def delete_instance(
        self, namespace: str | None, path: CIMInstanceName, *, caller: Caller = ANONYMOUS
    ) -> None:
        self._check_namespace(namespace or path.namespace)
        self._check_write(caller, "delete instances")
        self._class(path.classname)
        self._check_path(path, "the instance path")
        provider = self._provider(path.classname)
        if provider is None:
            raise CIMError(CIM_ERR_NOT_FOUND, f"no instance {_describe(path)}")
        provider.delete(self._view(), path)

    def invoke_method(
        self,
        namespace: str | None,
        path: CIMInstanceName | CIMClassName,
        method: str,
        params: Mapping[str, Any],
        *,
        caller: Caller = ANONYMOUS,
    ) -> tuple[Any, dict[str, Any]]:
        self._check_namespace(namespace or path.namespace)
        cls = self._class(path.classname)
        declared = cls.methods.get(method)  # a NocaseDict: CIM names ignore case
        if declared is None:
            self._check_write(caller, "call methods")
            raise CIMError(CIM_ERR_METHOD_NOT_FOUND, f"{cls.classname} has no method {method!r}")
        served_by = self._provider(cls.classname)
        if served_by is None or declared.name.lower() not in served_by.read_only_methods:
            self._check_write(caller, f"call {declared.name}")
        signature = method_parameters(declared)
        for name in params:
            parameter = signature.declared.get(name.lower())
            if parameter is None:
                raise CIMError(
                    CIM_ERR_INVALID_PARAMETER, f"{declared.name} has no parameter {name!r}"
                )
            if name.lower() in signature.output_only:
                raise CIMError(
                    CIM_ERR_INVALID_PARAMETER,
                    f"{declared.name} parameter {parameter.name!r} is output only",
                )
            value = params[name]
            for ref in value if isinstance(value, list) else [value]:
                if isinstance(ref, CIMInstanceName):
                    self._check_path(ref, f"parameter {parameter.name!r}:")
        view = self._view()
        target = self._method_target(view, path, cls)
        provider = self._provider(target.classname)
        assert provider is not None
        return provider.invoke(view, target, declared.name, params, caller)

    def _method_target(
        self, view: View, path: CIMInstanceName | CIMClassName, cls: CIMClass
    ) -> CIMInstanceName:
        if isinstance(path, CIMClassName):
            if cls.classname not in _SINGLETONS:
                raise CIMError(
                    CIM_ERR_INVALID_PARAMETER,
                    f"{cls.classname}'s methods are called on an instance, not the class",
                )
            singleton = self._providers[cls.classname.lower()]
            return next(iter(singleton.instances(view, cls.classname))).path
        self._class(path.classname)
        provider = self._provider(path.classname)
        if provider is None or not provider.exists(view, path):
            raise CIMError(CIM_ERR_NOT_FOUND, f"no instance {_describe(path)}")
        return path

    # -- shaping -----------------------------------------------------------------------------

    def _shape(
        self,
        instance: CIMInstance,
        classname: str,
        property_list: Sequence[str] | None,
        include_class_origin: bool,
        restrict: set[str] | None = None,
    ) -> CIMInstance:
        """Apply PropertyList, DeepInheritance's restriction and IncludeClassOrigin."""
        if property_list is None and restrict is None and not include_class_origin:
            return instance
        wanted = {p.lower() for p in property_list} if property_list is not None else None
        cls = self._classes[classname.lower()]
        shaped = CIMInstance(instance.classname, path=instance.path)
        for name, prop in instance.properties.items():
            key = name.lower()
            if (wanted is not None and key not in wanted) or (
                restrict is not None and key not in restrict
            ):
                continue
            copy = prop.copy()
            if include_class_origin:
                copy.class_origin = cls.properties[name].class_origin
            shaped.properties[name] = copy
        return shaped


def class_view(
    cls: CIMClass,
    *,
    local_only: bool,
    include_qualifiers: bool,
    include_class_origin: bool,
    property_list: Sequence[str] | None,
) -> CIMClass:
    """A copy of ``cls`` shaped as DSP0200 GetClass / EnumerateClasses ask.

    The copy is deep: ``CIMClass.copy()`` is "middle-deep" and shares the
    property, method and parameter objects with the cached model, so clearing
    their qualifiers there would change the model for every later caller.
    """
    result = copy.deepcopy(cls)
    # An element the class overrides is its own (DSP0200 LocalOnly: "defined or
    # overridden in the class"): the compiler marks it propagated; its own
    # Override qualifier (not one inherited with it) says it is overridden here.
    for element in [*result.properties.values(), *result.methods.values()]:
        override = element.qualifiers.get("Override")
        if override is not None and override.propagated is False:
            element.propagated = False
    wanted = {p.lower() for p in property_list} if property_list is not None else None
    for name in list(result.properties):
        prop = result.properties[name]
        if (local_only and prop.propagated) or (wanted is not None and name.lower() not in wanted):
            del result.properties[name]
    if local_only:
        for name in [m for m, method in result.methods.items() if method.propagated]:
            del result.methods[name]
    if not include_qualifiers:
        result.qualifiers.clear()
        for element in _elements(result):
            element.qualifiers.clear()
    if not include_class_origin:
        for element in _elements(result):
            if hasattr(element, "class_origin"):
                element.class_origin = None
    return result


def _elements(cls: CIMClass) -> Iterable[Any]:
    yield from cls.properties.values()
    for method in cls.methods.values():
        yield method
        yield from method.parameters.values()


def _describe(path: CIMInstanceName) -> str:
    keys = ", ".join(f"{k}={v!r}" for k, v in path.keybindings.items())
    return f"{path.classname}({keys})"
