"""The compiled lmi-mount CIM model: classes and qualifier declarations.

Owns: finding the MOF directory, compiling its entry MOF (``lmi_mount.mof``)
once per process, the fix-ups the compiler leaves to do, and installing the
result into any pywbem_mock ``FakedWBEMConnection``.

Must not know: instances, providers, the engine or the kernel. The model is
data; what serves it lives elsewhere.

Where the MOF is, first match wins:

1. the directory named by the environment variable ``LMI_MOUNT_MOF_DIR``;
2. ``mof/`` of the source tree this package is imported from (editable
   installs and checkouts);
3. ``share/lmi-mount/mof`` under the data directory of the install scheme
   (``<sys.prefix>`` for a system or virtualenv install, the user base for
   ``pip install --user``), where a regular install puts the MOF.
"""

from __future__ import annotations

import os
import sysconfig
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from pywbem import (
    CIMClass,
    CIMMethod,
    CIMParameter,
    CIMProperty,
    CIMQualifierDeclaration,
    MOFCompileError,
)
from pywbem_mock import FakedWBEMConnection

from lmi_mount.cim import mof_cache
from lmi_mount.cim.names import NAMESPACE

MOF_DIR_ENV: Final = "LMI_MOUNT_MOF_DIR"
ENTRY_MOF: Final = "lmi_mount.mof"

# provider/lmi_mount/cim/model.py -> the checkout's root is three levels above
# the package directory.
_SOURCE_TREE_MOF: Final = Path(__file__).resolve().parents[3] / "mof"


# Where setup.cfg's data_files puts mof/, relative to the install scheme's data path.
_INSTALLED_MOF: Final = Path("share", "lmi-mount", "mof")


class ModelError(Exception):
    """The model cannot be found, compiled or installed (the message says where and why)."""


def descends_from(classname: str, ancestor: str,
                  lookup: Callable[[str], CIMClass | None]) -> bool:
    """``classname`` is ``ancestor`` or inherits from it (case-insensitive), by the
    classes ``lookup`` finds (None for a class it does not know)."""
    wanted = ancestor.lower()
    current: str | None = classname
    while current is not None:
        if current.lower() == wanted:
            return True
        cls = lookup(current)
        current = cls.superclass if cls is not None else None
    return False


@dataclass(frozen=True, slots=True)
class Model:
    """The compiled model: qualifier declarations and resolved classes.

    ``classes`` are in compile order, so every class comes after its
    superclass and after the classes its references and embedded instances
    name. The objects are shared by every user of the cached model: read
    them, copy them before changing anything (``install_model`` copies).
    """

    mof_dir: Path
    qualifiers: tuple[CIMQualifierDeclaration, ...]
    classes: tuple[CIMClass, ...]

    def get_class(self, classname: str) -> CIMClass:
        """The resolved class (with inherited elements), by case-insensitive name."""
        wanted = classname.lower()
        for cls in self.classes:
            if cls.classname.lower() == wanted:
                return cls
        raise KeyError(classname)

    @property
    def lmi_classnames(self) -> tuple[str, ...]:
        """Names of the model's own classes (the ``LMI_`` ones), in compile order."""
        return tuple(c.classname for c in self.classes if c.classname.startswith("LMI_"))

    def own_properties(self, classname: str) -> dict[str, CIMProperty]:
        """The properties ``classname`` declares or overrides, in declaration order."""
        cls = self.get_class(classname)
        parent = self.get_class(cls.superclass).properties if cls.superclass else {}
        return {
            name: prop
            for name, prop in cls.properties.items()
            if name not in parent or _signature(prop) != _signature(parent[name])
        }

    def own_methods(self, classname: str) -> dict[str, CIMMethod]:
        """The methods ``classname`` declares or overrides, in declaration order."""
        cls = self.get_class(classname)
        parent = self.get_class(cls.superclass).methods if cls.superclass else {}
        return {
            name: method
            for name, method in cls.methods.items()
            if name not in parent or _signature(method) != _signature(parent[name])
        }


def key_names(cls: CIMClass) -> tuple[str, ...]:
    """The names of ``cls``'s key properties (qualified ``Key(true)``), in order."""
    return tuple(
        prop.name for prop in cls.properties.values()
        if (key := prop.qualifiers.get("Key")) is not None and key.value
    )


@dataclass(frozen=True)
class MethodParameters:
    """A method's parameter declarations by lower-case name, and the names (lower
    case) of those that are output only (``In(false)``).

    Every call's parameters are checked against these twice (typed by the
    CIM-XML layer, checked by the broker): plain dictionaries instead of a
    pywbem ``NocaseDict`` lookup per parameter and qualifier (in one process,
    a holder's CreateMount and DeleteMount cost 0.77 to 0.79 ms of CPU with
    them, 0.81 to 0.85 ms without).
    """

    declared: Mapping[str, CIMParameter]
    output_only: frozenset[str]


# id(method) -> (method, its parameters): the method is kept so that its id is
# not reused while the entry lives. Declarations are shared and never change.
_PARAMETERS: dict[int, tuple[CIMMethod, MethodParameters]] = {}
_MAX_PARAMETERS: Final = 1024


def method_parameters(method: CIMMethod) -> MethodParameters:
    """``method``'s ``MethodParameters``, worked out once per declaration object."""
    found = _PARAMETERS.get(id(method))
    if found is not None and found[0] is method:
        return found[1]
    declared = {p.name.lower(): p for p in method.parameters.values()}
    parameters = MethodParameters(declared, frozenset(
        name for name, p in declared.items()
        if (into := p.qualifiers.get("In")) is not None and into.value is False))
    if len(_PARAMETERS) >= _MAX_PARAMETERS:  # copies made per request (class_view)
        _PARAMETERS.clear()
    _PARAMETERS[id(method)] = (method, parameters)
    return parameters


def _signature(element: CIMProperty | CIMMethod | CIMParameter) -> tuple[object, ...]:
    """What a MOF declaration says about an element, without resolver bookkeeping.

    Resolved classes cannot tell an override from an inherited copy by flags:
    pywbem_mock copies inherited elements with every qualifier (Override too,
    although its flavor is Restricted) and marks an override's class_origin and
    Override qualifier as propagated. An override always changes something
    (its Description at least), so the declared content tells them apart.
    """
    quals = tuple(sorted((q.name.lower(), repr(q.value)) for q in element.qualifiers.values()))
    if isinstance(element, CIMMethod):
        params = tuple(_signature(p) for p in element.parameters.values())
        return (element.name, element.return_type, quals, params)
    value = getattr(element, "value", None)
    return (
        element.name,
        element.type,
        element.is_array,
        element.reference_class,
        repr(value),
        quals,
    )


def find_mof_dir() -> Path:
    """The directory that holds ``lmi_mount.mof`` (see the module docstring for the order)."""
    env = os.environ.get(MOF_DIR_ENV)
    if env:
        path = Path(env)
        if not (path / ENTRY_MOF).is_file():
            raise ModelError(f"{MOF_DIR_ENV}={env!r}: no {ENTRY_MOF} in that directory")
        return path
    candidates = [_SOURCE_TREE_MOF]
    # setuptools installs data_files under the scheme's "data" path.
    for scheme in (sysconfig.get_default_scheme(), sysconfig.get_preferred_scheme("user")):
        candidates.append(Path(sysconfig.get_path("data", scheme)) / _INSTALLED_MOF)
    for path in candidates:
        if (path / ENTRY_MOF).is_file():
            return path
    tried = ", ".join(str(p) for p in candidates)
    raise ModelError(f"no {ENTRY_MOF} in {tried}; set {MOF_DIR_ENV} to the MOF directory")


_cache: dict[Path, Model] = {}
_cache_lock = threading.Lock()


def load_model(mof_dir: Path | None = None) -> Model:
    """The model compiled from ``mof_dir`` (default: ``find_mof_dir()``), once per
    process, and kept compiled on disk (``mof_cache``) for the next one."""
    directory = (mof_dir or find_mof_dir()).resolve()
    with _cache_lock:
        model = _cache.get(directory)
        if model is None:
            qualifiers, classes = mof_cache.cached(
                "model", lambda: compile_inputs(directory, Path(__file__)),
                lambda: _compile(directory))
            model = _cache[directory] = Model(directory, qualifiers, classes)
        return model


def compile_inputs(mof_dir: Path, *code: Path) -> list[Path]:
    """What the cache key of a compile of ``mof_dir`` must cover: every MOF file
    (``*.mof``, what includes name) in its tree, through symbolic links (a
    distribution may link a shared CIM schema in), and the modules ``code``
    that compile it. A MOF that includes a file outside its directory is not
    covered. Nothing else is opened: the tree may hold anything."""
    found: list[Path] = []
    seen: set[tuple[int, int]] = set()
    pending = [str(mof_dir)]  # a stack, not recursion: a tree may be deep
    while pending:
        directory = pending.pop()
        try:
            info = os.stat(directory)
            if (info.st_dev, info.st_ino) in seen:  # a link back up the tree
                continue
            seen.add((info.st_dev, info.st_ino))
            with os.scandir(directory) as entries:
                listed = sorted(entries, key=lambda entry: entry.name)
        except OSError:
            continue  # the compile cannot read it either
        for entry in listed:
            if entry.is_dir():
                pending.append(entry.path)
            elif entry.name.lower().endswith(".mof") and entry.is_file():
                found.append(Path(entry.path))
    return [*sorted(found), *code]


def install_model(
    conn: FakedWBEMConnection, namespace: str = NAMESPACE, model: Model | None = None
) -> None:
    """Add the model's qualifier declarations and classes to ``namespace`` of ``conn``.

    The namespace is created if missing. The classes go straight into the
    mock's class store, already resolved, which takes milliseconds where a
    compile takes about half a second. Declarations or classes the namespace
    already holds are kept if they are equal to the model's; a different one
    is an error, and then nothing is added.
    """
    model = model or load_model()
    repo = conn.cimrepository
    if namespace not in repo.namespaces:
        conn.add_namespace(namespace)
    qualifier_store = repo.get_qualifier_store(namespace)
    class_store = repo.get_class_store(namespace)

    new_qualifiers = list(_missing(qualifier_store, ((q.name, q) for q in model.qualifiers)))
    new_classes = list(_missing(class_store, ((c.classname, c) for c in model.classes)))
    conflicts = [name for name, obj in new_qualifiers + new_classes if obj is None]
    if conflicts:
        raise ModelError(
            f"namespace {namespace!r} already defines, differently: {', '.join(conflicts)}"
        )
    # The stores deep-copy on create, so the cached model stays untouched.
    for name, qualifier in new_qualifiers:
        qualifier_store.create(name, qualifier)
    for name, cls in new_classes:
        class_store.create(name, cls)


def _missing(store: Any, objects: Iterable[tuple[str, Any]]) -> Iterator[tuple[str, Any]]:
    """The objects to add to ``store``: (name, object), or (name, None) for a conflict."""
    for name, obj in objects:
        if not store.object_exists(name):
            yield name, obj
        elif store.get(name, copy=False) != obj:
            yield name, None


def _compile(mof_dir: Path) -> mof_cache.Compiled:
    entry = mof_dir / ENTRY_MOF
    if not entry.is_file():
        raise ModelError(f"{entry}: no such file")
    conn = FakedWBEMConnection(default_namespace=NAMESPACE)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            # search_paths only matters if an include is missing: the entry
            # MOF lists every file in dependency order.
            conn.compile_mof_file(
                str(entry), namespace=NAMESPACE, search_paths=[str(mof_dir)], verbose=False
            )
        except MOFCompileError as exc:
            raise ModelError(f"{entry}: {exc.get_err_msg()}") from exc
    if caught:
        messages = "; ".join(str(w.message) for w in caught)
        raise ModelError(f"{entry}: the MOF compiler warned: {messages}")

    repo = conn.cimrepository
    qualifiers = tuple(repo.get_qualifier_store(NAMESPACE).iter_values(copy=False))
    classes = tuple(repo.get_class_store(NAMESPACE).iter_values(copy=False))
    for cls in classes:
        _set_embedded_object(cls)
    return qualifiers, classes


def _set_embedded_object(cls: CIMClass) -> None:
    """Set ``embedded_object`` where an EmbeddedInstance or EmbeddedObject qualifier asks for it.

    pywbem 1.9's MOF compiler leaves it None on properties and parameters, so
    pywbem_mock rejects a CIMInstance passed for such a parameter and the
    CIM-XML of the class lacks its EmbeddedObject attribute (DSP0201).
    EmbeddedInstance wins where a subclass adds it to a property that the
    superclass qualified EmbeddedObject (LMI_MountJob.JobInParameters).
    """
    elements = list(cls.properties.values())
    for method in cls.methods.values():
        elements.extend(method.parameters.values())
    for element in elements:
        if element.embedded_object is not None or element.type != "string":
            continue
        quals = element.qualifiers
        if "EmbeddedInstance" in quals:
            element.embedded_object = "instance"
        elif "EmbeddedObject" in quals and quals["EmbeddedObject"].value:
            element.embedded_object = "object"
