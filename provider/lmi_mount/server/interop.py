"""The interop namespace (``root/interop``) of lmi-mountd, in front of the broker.

Owns: ``InteropBroker``, which has the broker's interface and serves
``root/interop`` itself, passing every other namespace to the broker: the
DMTF interop classes (compiled once per process from ``mof/interop``, the
DMTF files unchanged, on top of the model's qualifiers and parents), one
CIM_ObjectManager (its ElementName is what ``pywbemcli server brand``
shows; its Description carries the version that pywbem's ``WBEMServer``
reads), a CIM_Namespace with a CIM_NamespaceInManager for each namespace
(pywbem finds the interop namespace and the namespace list this way), and
the CIM_RegisteredProfile of DSP1033 "Profile Registration" 1.0.0 and
DSP1054 "Indications" 1.2.2, which this namespace implements, the
CIM_IndicationService with its capabilities, and the indication
subscriptions that clients create and delete here (kept by
``subscriptions.SubscriptionStore``). Everything else in it is read-only.

Must not know: XML, HTTP, mounts. It knows the broker's interface only.
"""

from __future__ import annotations

import collections
import itertools
import threading
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

from pywbem import (
    CIM_ERR_INVALID_CLASS,
    CIM_ERR_INVALID_PARAMETER,
    CIM_ERR_METHOD_NOT_AVAILABLE,
    CIM_ERR_METHOD_NOT_FOUND,
    CIM_ERR_NOT_FOUND,
    CIM_ERR_NOT_SUPPORTED,
    CIMClass,
    CIMClassName,
    CIMError,
    CIMInstance,
    CIMInstanceName,
    CIMQualifierDeclaration,
    MOFCompileError,
    Uint16,
    Uint32,
)
from pywbem_mock import FakedWBEMConnection

from lmi_mount.cim import model as model_module
from lmi_mount.cim import mof_cache
from lmi_mount.cim.broker import Broker, class_view
from lmi_mount.cim.model import (
    Model,
    ModelError,
    compile_inputs,
    descends_from,
    find_mof_dir,
    install_model,
    load_model,
)
from lmi_mount.cim.names import (
    COMPUTER_SYSTEM,
    INTEROP_NAMESPACE,
    MOUNT_CONFIGURATION_SERVICE,
    NAMESPACE,
)
from lmi_mount.cim.paths import same_path
from lmi_mount.server.subscriptions import CLASSES as SUBSCRIPTION_CLASSES

#: What ``pywbemcli server brand`` shows.
BRAND: Final = "lmi-mount"
OBJECT_MANAGER: Final = "CIM_ObjectManager"
NAMESPACE_CLASS: Final = "CIM_Namespace"
NAMESPACE_IN_MANAGER: Final = "CIM_NamespaceInManager"
REGISTERED_PROFILE: Final = "CIM_RegisteredProfile"
ELEMENT_CONFORMS_TO_PROFILE: Final = "CIM_ElementConformsToProfile"
ENTRY_MOF: Final = Path("interop", "interop.mof")

INDICATION_SERVICE: Final = "CIM_IndicationService"
INDICATION_CAPABILITIES: Final = "CIM_IndicationServiceCapabilities"
ELEMENT_CAPABILITIES: Final = "CIM_ElementCapabilities"
#: Classes of the model that root/interop serves though no interop class refers
#: to them: the service's link to its capabilities (DSP1054).
_FROM_THE_MODEL: Final = (ELEMENT_CAPABILITIES,)

# DSP1033 "Profile Registration": RegisteredOrganization 2 is DMTF;
# AdvertiseTypes 2 is "Not Advertised" (no SLP here).
_PROFILES: Final = (("Profile Registration", "1.0.0"),)
_INDICATION_PROFILE: Final = ("Indications", "1.2.2")
#: The mounting model's own profile, registered as OpenLMI's providers
#: registered theirs (organization "Other", OtherRegisteredOrganization
#: "OpenLMI", "OpenLMI+NAME+VERSION"), which OpenLMI's scripts selected
#: their commands by; its version is the model's (the Version qualifier of
#: its central class, the configuration service).
MOUNTING_ORGANIZATION: Final = "OpenLMI"
MOUNTING_PROFILE: Final = "OpenLMI-Mounting"


class BrokerInterface(Protocol):
    """The part of the broker interface (``lmi_mount.cim.broker.Broker``) this module calls."""

    model: Model

    def namespaces(self) -> list[str]: ...


@dataclass(frozen=True)
class InteropClasses:
    """The classes and qualifier declarations of ``root/interop``, resolved."""

    qualifiers: tuple[CIMQualifierDeclaration, ...]
    classes: tuple[CIMClass, ...]

    def get(self, classname: str) -> CIMClass | None:
        wanted = classname.lower()
        return next((c for c in self.classes if c.classname.lower() == wanted), None)

    def is_subclass(self, classname: str, ancestor: str) -> bool:
        return descends_from(classname, ancestor, self.get)


_cache: dict[Path, InteropClasses] = {}
_cache_lock = threading.Lock()


def load_interop_classes(mof_dir: Path | None = None) -> InteropClasses:
    """The interop classes compiled from ``<mof_dir>/interop/interop.mof``, once per
    process, and kept compiled on disk (``mof_cache``) for the next one."""
    directory = (mof_dir or find_mof_dir()).resolve()
    with _cache_lock:
        classes = _cache.get(directory)
        if classes is None:
            compiled = mof_cache.cached(
                "interop",
                lambda: compile_inputs(directory, Path(model_module.__file__), Path(__file__)),
                lambda: _compile(directory))
            classes = _cache[directory] = InteropClasses(*compiled)
        return classes


def _compile(mof_dir: Path) -> mof_cache.Compiled:
    entry = mof_dir / ENTRY_MOF
    if not entry.is_file():
        raise ModelError(f"{entry}: no such file")
    model = load_model(mof_dir)
    conn = FakedWBEMConnection(default_namespace=INTEROP_NAMESPACE)
    # The qualifier declarations and the DMTF parents come from the model.
    install_model(conn, INTEROP_NAMESPACE, model)
    store = conn.cimrepository.get_class_store(INTEROP_NAMESPACE)
    before = {c.classname.lower() for c in model.classes}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            conn.compile_mof_file(str(entry), namespace=INTEROP_NAMESPACE,
                                  search_paths=[str(entry.parent)], verbose=False)
        except MOFCompileError as exc:
            raise ModelError(f"{entry}: {exc.get_err_msg()}") from exc
    if caught:
        raise ModelError(f"{entry}: the MOF compiler warned: "
                         f"{'; '.join(str(w.message) for w in caught)}")
    every = {c.classname.lower(): c for c in store.iter_values(copy=False)}
    seeds = [name for name in every if name not in before]
    seeds += [name.lower() for name in _FROM_THE_MODEL]
    # The published classes: the interop ones and all they derive from or refer to.
    wanted: set[str] = set()
    todo = list(seeds)
    while todo:
        name = todo.pop()
        if name in wanted or name not in every:
            continue
        wanted.add(name)
        todo.extend(_dependencies(every[name]))
    ordered = tuple(c for name, c in every.items() if name in wanted)
    return model.qualifiers, ordered


def _dependencies(cls: CIMClass) -> Iterator[str]:
    if cls.superclass:
        yield cls.superclass.lower()
    elements: list[Any] = list(cls.properties.values())
    for method in cls.methods.values():
        elements.extend(method.parameters.values())
    for element in elements:
        if element.reference_class:
            yield element.reference_class.lower()
        qualifier = element.qualifiers.get("EmbeddedInstance")
        if qualifier is not None and qualifier.value:
            yield str(qualifier.value).lower()


def _same_namespace(a: str | None, b: str) -> bool:
    return a is not None and a.strip("/").lower() == b.strip("/").lower()


class InteropBroker:
    """``broker``'s interface with ``root/interop`` served from here."""

    def __init__(
        self,
        broker: Any,
        *,
        system_name: str,
        version: str,
        classes: InteropClasses | None = None,
        interop_namespace: str = INTEROP_NAMESPACE,
        indications: Any = None,
    ) -> None:
        self.broker = broker
        #: The service that delivers indications (``indications.IndicationService``),
        #: whose store holds the subscriptions; None: no indications.
        self.indications = indications
        self.subscriptions: Any = indications.store if indications is not None else None
        self.model = broker.model
        self.interop_namespace = interop_namespace
        self._classes = classes or load_interop_classes(broker.model.mof_dir)
        self._system_name = system_name
        self._version = version
        self._manager_name = f"{BRAND}:{system_name}"

    def __getattr__(self, name: str) -> Any:
        # Anything beyond the interface (close(), ...) is the broker's.
        return getattr(self.broker, name)

    def _mine(self, namespace: str | None) -> bool:
        return _same_namespace(namespace, self.interop_namespace)

    def namespaces(self) -> list[str]:
        names = list(self.broker.namespaces())
        if not any(_same_namespace(n, self.interop_namespace) for n in names):
            names.append(self.interop_namespace)
        return names

    # -- classes ---------------------------------------------------------------------------

    def _class(self, classname: str) -> CIMClass:
        cls = self._classes.get(classname)
        if cls is None:
            raise CIMError(CIM_ERR_INVALID_CLASS,
                           f"class {classname!r} does not exist in {self.interop_namespace}")
        return cls

    def get_class(self, namespace: str | None, classname: str, *, local_only: bool = True,
                  include_qualifiers: bool = True, include_class_origin: bool = False,
                  property_list: Sequence[str] | None = None) -> CIMClass:
        if not self._mine(namespace):
            return self.broker.get_class(
                namespace, classname, local_only=local_only,
                include_qualifiers=include_qualifiers,
                include_class_origin=include_class_origin, property_list=property_list)
        return class_view(self._class(classname), local_only=local_only,
                          include_qualifiers=include_qualifiers,
                          include_class_origin=include_class_origin, property_list=property_list)

    def enumerate_classes(self, namespace: str | None, classname: str | None = None, *,
                          deep_inheritance: bool = False, local_only: bool = True,
                          include_qualifiers: bool = True,
                          include_class_origin: bool = False) -> list[CIMClass]:
        if not self._mine(namespace):
            return self.broker.enumerate_classes(  # type: ignore[no-any-return]
                namespace, classname, deep_inheritance=deep_inheritance, local_only=local_only,
                include_qualifiers=include_qualifiers, include_class_origin=include_class_origin)
        return [
            class_view(self._class(name), local_only=local_only,
                       include_qualifiers=include_qualifiers,
                       include_class_origin=include_class_origin, property_list=None)
            for name in self.enumerate_class_names(namespace, classname,
                                                   deep_inheritance=deep_inheritance)
        ]

    def enumerate_class_names(self, namespace: str | None, classname: str | None = None, *,
                              deep_inheritance: bool = False) -> list[str]:
        if not self._mine(namespace):
            return self.broker.enumerate_class_names(  # type: ignore[no-any-return]
                namespace, classname, deep_inheritance=deep_inheritance)
        parent = self._class(classname).classname.lower() if classname else None
        result = []
        for cls in self._classes.classes:
            superclass = cls.superclass.lower() if cls.superclass else None
            if deep_inheritance:
                if parent is None or (cls.classname.lower() != parent
                                      and self._classes.is_subclass(cls.classname, parent)):
                    result.append(cls.classname)
            elif superclass == parent:
                result.append(cls.classname)
        return result

    def get_qualifier(self, namespace: str | None, name: str) -> CIMQualifierDeclaration:
        if not self._mine(namespace):
            return self.broker.get_qualifier(namespace, name)
        for qualifier in self._classes.qualifiers:
            if qualifier.name.lower() == name.lower():
                return qualifier.copy()
        raise CIMError(CIM_ERR_NOT_FOUND, f"qualifier {name!r} is not declared")

    def enumerate_qualifiers(self, namespace: str | None) -> list[CIMQualifierDeclaration]:
        if not self._mine(namespace):
            return self.broker.enumerate_qualifiers(namespace)  # type: ignore[no-any-return]
        return [q.copy() for q in self._classes.qualifiers]

    # -- instances ---------------------------------------------------------------------------

    def _instance(self, classname: str, values: Mapping[str, Any]) -> CIMInstance:
        instance = CIMInstance.from_class(
            self._class(classname), namespace=self.interop_namespace, property_values=values,
            include_missing_properties=True, include_path=True,
        )
        return instance

    def _object_manager(self) -> CIMInstance:
        return self._instance(OBJECT_MANAGER, {
            "SystemCreationClassName": COMPUTER_SYSTEM,
            "SystemName": self._system_name,
            "CreationClassName": OBJECT_MANAGER,
            "Name": self._manager_name,
            "ElementName": BRAND,
            "Caption": f"{BRAND} CIM-XML server",
            "Description": f"{BRAND} CIM-XML server version {self._version}",
            "GatherStatisticalData": False,
            "Started": True,
            "EnabledState": Uint16(2),  # Enabled
            "RequestedState": Uint16(12),  # Not Applicable
            "EnabledDefault": Uint16(2),
            "OperationalStatus": [Uint16(2)],  # OK
            "HealthState": Uint16(5),  # OK
        })

    def _namespace_instances(self) -> list[CIMInstance]:
        return [
            self._instance(NAMESPACE_CLASS, {
                "SystemCreationClassName": COMPUTER_SYSTEM,
                "SystemName": self._system_name,
                "ObjectManagerCreationClassName": OBJECT_MANAGER,
                "ObjectManagerName": self._manager_name,
                "CreationClassName": NAMESPACE_CLASS,
                "Name": name,
                # ClassInfo is Required, but deprecated for ClassType; "1" is Other.
                "ClassInfo": Uint16(1),
                "DescriptionOfClassInfo": "CIM 2.49.0",
                "ClassType": Uint16(2),  # CIM
                "ClassTypeVersion": "2.49.0",
            })
            for name in self.namespaces()
        ]

    def _all_instances(self) -> list[CIMInstance]:
        manager = self._object_manager()
        namespaces = self._namespace_instances()
        links = [
            self._instance(NAMESPACE_IN_MANAGER, {
                "Antecedent": manager.path, "Dependent": namespace.path,
            })
            for namespace in namespaces
        ]
        registered = [*_PROFILES, _INDICATION_PROFILE] if self.indications else list(_PROFILES)
        profiles = [
            self._instance(REGISTERED_PROFILE, {
                "InstanceID": f"{BRAND}:DMTF+{name}+{version}",
                "RegisteredOrganization": Uint16(2),  # DMTF
                "RegisteredName": name,
                "RegisteredVersion": version,
                "AdvertiseTypes": [Uint16(2)],  # Not Advertised
                "ElementName": name,
            })
            for name, version in registered
        ]
        indications = self._indication_instances()
        # Each profile's central instance (the central class methodology that
        # pywbem's WBEMServer.get_central_instances and ``pywbemcli profile
        # centralinsts`` follow): the object manager for Profile Registration,
        # the indication service for Indications (DSP1054), the configuration
        # service (in the model's namespace) for the mounting model.
        central = [manager.path, *([indications[0].path] if indications else [])]
        mounting = self._mounting_profile()
        if mounting is not None:
            profiles.append(mounting[0])
            central.append(mounting[1])
        conformance = [self._conformance(profile, element)
                       for profile, element in zip(profiles, central, strict=True)]
        return [manager, *namespaces, *links, *profiles, *conformance, *indications]

    def _conformance(self, profile: CIMInstance, element: CIMInstanceName) -> CIMInstance:
        return self._instance(ELEMENT_CONFORMS_TO_PROFILE, {
            "ConformantStandard": profile.path, "ManagedElement": element,
        })

    def _links_back(self, namespace: str | None, path: CIMInstanceName,
                    assoc_class: str | None, role: str | None) -> list[CIMInstance]:
        """The CIM_ElementConformsToProfile (root/interop's) that names ``path`` as its
        ManagedElement: the mounting profile's central instance, the service in
        the model's namespace, leads back to its profile (DSP1033: a client at
        a central instance finds the profiles it conforms to)."""
        if (path.classname.lower() != MOUNT_CONFIGURATION_SERVICE.lower()
                or (role is not None and role.lower() != "managedelement")
                or (assoc_class is not None
                    and not self._classes.is_subclass(ELEMENT_CONFORMS_TO_PROFILE,
                                                      assoc_class))):
            return []
        mounting = self._mounting_profile()
        if mounting is None:
            return []
        profile, service = mounting
        if not (_same_namespace(namespace or path.namespace, service.namespace)
                and same_path(path, service)):
            return []
        return [self._conformance(profile, service)]

    def _profiles_back(self, namespace: str | None, path: CIMInstanceName,
                       assoc_class: str | None, result_class: str | None, role: str | None,
                       result_role: str | None) -> list[CIMInstanceName]:
        """The registered profiles ``path`` conforms to (``_links_back``)."""
        if ((result_role is not None and result_role.lower() != "conformantstandard")
                or (result_class is not None
                    and not self._classes.is_subclass(REGISTERED_PROFILE, result_class))):
            return []
        return [link["ConformantStandard"]
                for link in self._links_back(namespace, path, assoc_class, role)]

    def _interop_only(self, classname: str | None) -> bool:
        return (classname is not None and self._model_class(classname) is None
                and self._classes.get(classname) is not None)

    def _from_model(self, operation: str, namespace: str | None, path: CIMInstanceName,
                    **request: Any) -> Iterator[Any]:
        """The model's broker's answer to association ``operation`` (``associators``,
        ``references``, their ``_names``) in its namespace. None when AssocClass
        or ResultClass names a class of root/interop only (the way back to a
        profile), which it would call invalid; it checks the request then all
        the same, without that name: its namespace, its path and the other
        class names (a review: they went unchecked). Its answer, which cannot
        hold that class, is dropped."""
        named = {key: value for key, value in request.items()
                 if key in ("assoc_class", "result_class")}
        if not any(self._interop_only(value) for value in named.values()):
            return getattr(self.broker, operation)(  # type: ignore[no-any-return]
                namespace, path, **request)
        kept = {key: None if self._interop_only(value) else value
                for key, value in named.items()}
        if operation.startswith("reference"):
            checked = self.broker.reference_names(namespace, path, role=request.get("role"),
                                                  **kept)
        else:
            checked = self.broker.associator_names(
                namespace, path, role=request.get("role"),
                result_role=request.get("result_role"), **kept)
        collections.deque(checked, maxlen=0)
        return iter(())

    def _mounting_profile(self) -> tuple[CIMInstance, CIMInstanceName] | None:
        """The mounting model's registered profile and its central instance, the
        configuration service, or None if the model's namespace has none."""
        services = list(self.broker.enumerate_instance_names(NAMESPACE,
                                                             MOUNT_CONFIGURATION_SERVICE))
        if not services:
            return None
        service = services[0].copy()
        service.namespace = service.namespace or NAMESPACE
        service.host = None
        version = self.model.get_class(MOUNT_CONFIGURATION_SERVICE).qualifiers["Version"].value
        profile = self._instance(REGISTERED_PROFILE, {
            "InstanceID": f"{MOUNTING_ORGANIZATION}+{MOUNTING_PROFILE}+{version}",
            "RegisteredOrganization": Uint16(1),  # Other
            "OtherRegisteredOrganization": MOUNTING_ORGANIZATION,
            "RegisteredName": MOUNTING_PROFILE,
            "RegisteredVersion": version,
            "AdvertiseTypes": [Uint16(2)],  # Not Advertised
            "ElementName": "OpenLMI Mounting Model",
        })
        return profile, service

    def _indication_instances(self) -> list[CIMInstance]:
        if self.indications is None:
            return []
        values = self.indications.service_values()
        service = self._instance(INDICATION_SERVICE, {
            "SystemCreationClassName": COMPUTER_SYSTEM,
            "SystemName": self._system_name,
            "CreationClassName": INDICATION_SERVICE,
            "Name": f"{BRAND}:indications",
            "ElementName": f"{BRAND} indications",
            "FilterCreationEnabled": values["FilterCreationEnabled"],
            "DeliveryRetryAttempts": Uint16(values["DeliveryRetryAttempts"]),
            "DeliveryRetryInterval": Uint32(values["DeliveryRetryInterval"]),
            "SubscriptionRemovalAction": Uint16(4),  # Ignore: a dead listener's are kept
            "Started": True,
            "EnabledState": Uint16(2),
            "OperationalStatus": [Uint16(2)],
        })
        capabilities = self._instance(INDICATION_CAPABILITIES, {
            "InstanceID": f"{BRAND}:indication capabilities",
            "ElementName": f"{BRAND} indication capabilities",
            "FilterCreationEnabledIsSettable": False,
            "DeliveryRetryAttemptsIsSettable": False,
            "DeliveryRetryIntervalIsSettable": False,
            "SubscriptionRemovalActionIsSettable": False,
            "SubscriptionRemovalTimeIntervalIsSettable": False,
            "MaxListenerDestinations": Uint32(self.subscriptions.max_each),
            "MaxActiveSubscriptions": Uint32(self.subscriptions.max_each),
            "SubscriptionsPersisted": True,
        })
        link = self._instance(ELEMENT_CAPABILITIES, {
            "ManagedElement": service.path, "Capabilities": capabilities.path,
            "Characteristics": [Uint16(2)],  # Default
        })
        stored = [instance for classname in SUBSCRIPTION_CLASSES
                  for instance in self.subscriptions.instances(classname)]
        return [service, capabilities, link, *stored]

    def _shape(self, instance: CIMInstance, requested: str | None,
               property_list: Sequence[str] | None, include_class_origin: bool) -> CIMInstance:
        wanted = {p.lower() for p in property_list} if property_list is not None else None
        restrict = None
        if requested is not None and requested.lower() != instance.classname.lower():
            # DSP0200: without DeepInheritance, only the requested class's properties.
            restrict = {p.lower() for p in self._class(requested).properties}
        cls = self._class(instance.classname)
        shaped = CIMInstance(instance.classname, path=instance.path)
        for name, prop in instance.properties.items():
            key = name.lower()
            if (wanted is not None and key not in wanted) or (
                    restrict is not None and key not in restrict):
                continue
            copy = prop.copy()
            copy.class_origin = cls.properties[name].class_origin if include_class_origin else None
            copy.propagated = None
            shaped.properties[name] = copy
        return shaped

    def get_instance(self, namespace: str | None, path: CIMInstanceName, *,
                     property_list: Sequence[str] | None = None,
                     include_qualifiers: bool = False, include_class_origin: bool = False,
                     local_only: bool = False) -> CIMInstance:
        if not self._mine(namespace or path.namespace):
            return self.broker.get_instance(
                namespace, path, property_list=property_list,
                include_qualifiers=include_qualifiers,
                include_class_origin=include_class_origin, local_only=local_only)
        self._class(path.classname)
        for instance in self._all_instances():
            if same_path(instance.path, path):
                return self._shape(instance, None, property_list, include_class_origin)
        raise CIMError(CIM_ERR_NOT_FOUND, f"no instance {path} in {self.interop_namespace}")

    def enumerate_instances(self, namespace: str | None, classname: str, *,
                            deep_inheritance: bool = True,
                            property_list: Sequence[str] | None = None,
                            include_qualifiers: bool = False, include_class_origin: bool = False,
                            local_only: bool = False) -> Iterator[CIMInstance]:
        if not self._mine(namespace):
            return self.broker.enumerate_instances(  # type: ignore[no-any-return]
                namespace, classname, deep_inheritance=deep_inheritance,
                property_list=property_list, include_qualifiers=include_qualifiers,
                include_class_origin=include_class_origin, local_only=local_only)
        requested = self._class(classname).classname
        return iter([
            self._shape(i, None if deep_inheritance else requested, property_list,
                        include_class_origin)
            for i in self._all_instances()
            if self._classes.is_subclass(i.classname, requested)
        ])

    def enumerate_instance_names(self, namespace: str | None,
                                 classname: str) -> Iterator[CIMInstanceName]:
        if not self._mine(namespace):
            return self.broker.enumerate_instance_names(  # type: ignore[no-any-return]
                namespace, classname)
        return iter([i.path for i in self.enumerate_instances(namespace, classname)])

    def _links(self, path: CIMInstanceName, assoc_class: str | None,
               role: str | None) -> Iterator[tuple[CIMInstance, str]]:
        self._class(path.classname)
        if assoc_class is not None:
            self._class(assoc_class)
        for instance in self._all_instances():
            cls = self._class(instance.classname)
            if "Association" not in cls.qualifiers:
                continue
            if assoc_class is not None and not self._classes.is_subclass(instance.classname,
                                                                         assoc_class):
                continue
            for name, value in instance.items():
                if (isinstance(value, CIMInstanceName) and same_path(value, path)
                        and (role is None or name.lower() == role.lower())):
                    yield instance, name
                    break

    def _is_subclass(self, path: CIMInstanceName, ancestor: str) -> bool:
        """Whether ``path``'s class is ``ancestor`` or one of its subclasses, by the
        classes of the namespace it lives in (a profile's central instance is
        in the model's)."""
        if path.namespace is None or self._mine(path.namespace):
            return self._classes.is_subclass(path.classname, ancestor)
        return descends_from(path.classname, ancestor, self._model_class)

    def _model_class(self, classname: str) -> CIMClass | None:
        try:
            return self.model.get_class(classname)
        except KeyError:
            return None

    def _associated(self, path: CIMInstanceName, assoc_class: str | None,
                    result_class: str | None, role: str | None,
                    result_role: str | None) -> list[CIMInstanceName]:
        if (result_class is not None and self._classes.get(result_class) is None
                # A class of the model's namespace names what a profile leads to there.
                and self._model_class(result_class) is None):
            self._class(result_class)  # INVALID_CLASS, naming it
        found: list[CIMInstanceName] = []
        for link, used in self._links(path, assoc_class, role):
            for name, value in link.items():
                if name == used or not isinstance(value, CIMInstanceName):
                    continue
                if result_role is not None and name.lower() != result_role.lower():
                    continue
                if result_class is not None and not self._is_subclass(value, result_class):
                    continue
                if not any(same_path(value, f) for f in found):
                    found.append(value)
        return found

    def associators(self, namespace: str | None, path: CIMInstanceName, *,
                    assoc_class: str | None = None, result_class: str | None = None,
                    role: str | None = None, result_role: str | None = None,
                    property_list: Sequence[str] | None = None,
                    include_qualifiers: bool = False,
                    include_class_origin: bool = False) -> Iterator[CIMInstance]:
        if not self._mine(namespace or path.namespace):
            own = self._from_model(
                "associators", namespace, path, assoc_class=assoc_class,
                result_class=result_class, role=role, result_role=result_role,
                property_list=property_list, include_qualifiers=include_qualifiers,
                include_class_origin=include_class_origin)
            back = self._profiles_back(namespace, path, assoc_class, result_class, role,
                                       result_role)
            return itertools.chain(own, (
                self.get_instance(self.interop_namespace, p, property_list=property_list,
                                  include_class_origin=include_class_origin) for p in back))
        paths = self._associated(path, assoc_class, result_class, role, result_role)
        return iter([
            # Each from its own namespace: a profile's central instance is not here.
            self.get_instance(p.namespace or namespace, p, property_list=property_list,
                              include_class_origin=include_class_origin)
            for p in paths
        ])

    def associator_names(self, namespace: str | None, path: CIMInstanceName, *,
                         assoc_class: str | None = None, result_class: str | None = None,
                         role: str | None = None,
                         result_role: str | None = None) -> Iterator[CIMInstanceName]:
        if not self._mine(namespace or path.namespace):
            own = self._from_model("associator_names", namespace, path,
                                   assoc_class=assoc_class, result_class=result_class,
                                   role=role, result_role=result_role)
            return itertools.chain(own, self._profiles_back(
                namespace, path, assoc_class, result_class, role, result_role))
        return iter(self._associated(path, assoc_class, result_class, role, result_role))

    def references(self, namespace: str | None, path: CIMInstanceName, *,
                   result_class: str | None = None, role: str | None = None,
                   property_list: Sequence[str] | None = None, include_qualifiers: bool = False,
                   include_class_origin: bool = False) -> Iterator[CIMInstance]:
        if not self._mine(namespace or path.namespace):
            own = self._from_model(
                "references", namespace, path, result_class=result_class, role=role,
                property_list=property_list, include_qualifiers=include_qualifiers,
                include_class_origin=include_class_origin)
            return itertools.chain(own, (
                self._shape(link, None, property_list, include_class_origin)
                for link in self._links_back(namespace, path, result_class, role)))
        return iter([
            self._shape(link, None, property_list, include_class_origin)
            for link, _ in self._links(path, result_class, role)
        ])

    def reference_names(self, namespace: str | None, path: CIMInstanceName, *,
                        result_class: str | None = None,
                        role: str | None = None) -> Iterator[CIMInstanceName]:
        if not self._mine(namespace or path.namespace):
            own = self._from_model("reference_names", namespace, path,
                                   result_class=result_class, role=role)
            return itertools.chain(own, (link.path for link in self._links_back(
                namespace, path, result_class, role)))
        return iter([link.path for link, _ in self._links(path, result_class, role)])

    # -- writes and methods --------------------------------------------------------------------

    def _read_only(self, what: str) -> CIMError:
        return CIMError(CIM_ERR_NOT_SUPPORTED,
                        f"{self.interop_namespace} is read-only: {what} is not supported there")

    def _subscribable(self, classname: str) -> bool:
        return self.subscriptions is not None and self.subscriptions.handles(classname)

    def create_instance(self, namespace: str | None, instance: CIMInstance, *,
                        caller: Any) -> CIMInstanceName:
        if not self._mine(namespace):
            return self.broker.create_instance(namespace, instance, caller=caller)
        cls = self._class(instance.classname)
        if self._subscribable(instance.classname):
            Broker._check_write(caller, "create subscriptions")
            path: CIMInstanceName = self.subscriptions.create(instance)
            return path
        if self.subscriptions is None:
            raise self._read_only(f"creating a {instance.classname}")
        # A review: "root/interop is read-only" was said where subscriptions
        # are made, even for the abstract class of the destination they need.
        made = [name for name in SUBSCRIPTION_CLASSES
                if self._classes.is_subclass(name, cls.classname)]
        if "Abstract" in cls.qualifiers and len(made) == 1:
            raise CIMError(CIM_ERR_NOT_SUPPORTED,
                           f"{cls.classname} is abstract: create a {made[0]}")
        *others, last = SUBSCRIPTION_CLASSES
        raise CIMError(CIM_ERR_NOT_SUPPORTED,
                       f"only {', '.join(others)} and {last} instances are created in "
                       f"{self.interop_namespace}, not {cls.classname}")

    def modify_instance(self, namespace: str | None, instance: CIMInstance, *,
                        property_list: Sequence[str] | None = None, caller: Any) -> None:
        target = instance.path.namespace if instance.path is not None else None
        if not self._mine(namespace or target):
            self.broker.modify_instance(namespace, instance, property_list=property_list,
                                        caller=caller)
            return
        if instance.path is None:
            raise CIMError(CIM_ERR_INVALID_PARAMETER, "ModifiedInstance has no path")
        self.get_instance(namespace, instance.path)
        if self._subscribable(instance.path.classname):
            Broker._check_write(caller, "modify subscriptions")
            self.subscriptions.modify(instance, property_list)
            return
        raise self._read_only(f"modifying a {instance.path.classname}")

    def delete_instance(self, namespace: str | None, path: CIMInstanceName, *,
                        caller: Any) -> None:
        if not self._mine(namespace or path.namespace):
            self.broker.delete_instance(namespace, path, caller=caller)
            return
        self.get_instance(namespace, path)
        if self._subscribable(path.classname):
            Broker._check_write(caller, "delete subscriptions")
            self.subscriptions.delete(path)
            return
        raise self._read_only(f"deleting a {path.classname}")

    def invoke_method(self, namespace: str | None, path: CIMInstanceName | CIMClassName,
                      method: str, params: Mapping[str, Any], *,
                      caller: Any) -> tuple[Any, dict[str, Any]]:
        if not self._mine(namespace or path.namespace):
            try:
                return self.broker.invoke_method(  # type: ignore[no-any-return]
                    namespace, path, method, params, caller=caller)
            finally:
                if self.indications is not None:
                    # Holders and goal settings change without the kernel or
                    # fstab saying so: the watcher must look.
                    self.indications.poke()
        cls = self._class(path.classname)
        if method not in cls.methods:
            raise CIMError(CIM_ERR_METHOD_NOT_FOUND, f"{cls.classname} has no method {method!r}")
        raise CIMError(CIM_ERR_METHOD_NOT_AVAILABLE,
                       f"{cls.classname}.{cls.methods[method].name} is not implemented in "
                       f"{self.interop_namespace}")

