"""CIM instance paths: made from keys already checked, and compared by class and keys.

Owns: ``instance_path``, which builds a ``CIMInstanceName`` without pywbem's
copy and check of every key, ``copied_path`` (a copy made so),
``nocase_dict``, which fills a ``NocaseDict`` without a Python call per key,
and ``same_path``, the one comparison of two instance paths that ignores host
and namespace.

Why not pywbem's constructor everywhere: it copies the keys into a new
``NocaseDict`` and checks each value's type, about 20 µs a path; a method
call makes three or more (its target, its Mount reference, the answer's
reference), a large part of what a call costs the server. Its keys are
checked where they are made instead: by the CIM-XML parser (a value of a CIM
type or an instance path, never NULL) or by the projection (the model's keys).

Must not know: XML, the model, the engine.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from pywbem import CIMInstanceName, NocaseDict

_ABSENT: Final = object()


def nocase_dict(items: Iterable[tuple[str, Any]]) -> NocaseDict:
    """A ``NocaseDict`` of ``items``, whose names are unique whatever their case.

    pywbem's own ``__setitem__`` goes through two layers and a casefold per
    name; this fills the dictionary it keeps (casefolded name to the name as
    given and its value) in one step. It is equal to and reads back as the one
    pywbem's constructor makes (a test holds pywbem to that)."""
    result = NocaseDict()
    result._data = {name.casefold(): (name, value) for name, value in items}
    return result


def instance_path(classname: str, keybindings: NocaseDict, namespace: str | None = None,
                  host: str | None = None) -> CIMInstanceName:
    """The path of ``classname`` with ``keybindings`` (taken, not copied: the
    caller made it for this path), whose values are CIM-typed values, numbers,
    strings, booleans or instance paths, none NULL. It is equal to, hashes as
    and reads back as the one pywbem's constructor makes (a test holds pywbem
    to that)."""
    path = CIMInstanceName.__new__(CIMInstanceName)
    path._classname = classname
    path._keybindings = keybindings
    # pywbem's setters: they strip a namespace's slashes and check the types.
    path.namespace = namespace
    path.host = host
    return path


def copied_path(path: CIMInstanceName) -> CIMInstanceName:
    """A copy of ``path`` that shares nothing a consumer may change with it:
    its keys, and the paths among them, are copied too (their other values
    are immutable)."""
    keys = NocaseDict()
    keys._data = {folded: (name, copied_path(value) if isinstance(value, CIMInstanceName)
                           else value)
                  for folded, (name, value) in path.keybindings._data.items()}
    return instance_path(path.classname, keys, path.namespace, path.host)


def same_path(a: CIMInstanceName, b: CIMInstanceName) -> bool:
    """Instance paths equal by class and keys (names ignore case, as every CIM
    name does), whatever their host and namespace; references among the keys
    compare the same way, and a reference never equals a value (a client may
    send either for any key)."""
    if a.classname.lower() != b.classname.lower():
        return False
    theirs = b.keybindings
    if len(a.keybindings) != len(theirs):
        return False
    for key, value in a.keybindings.items():
        other: Any = theirs.get(key, _ABSENT)
        mine_path = isinstance(value, CIMInstanceName)
        if mine_path or isinstance(other, CIMInstanceName):
            # pywbem's path equality raises TypeError for anything but a path.
            if not (mine_path and isinstance(other, CIMInstanceName)
                    and same_path(value, other)):
                return False
        elif other is _ABSENT or value != other:
            return False
    return True
