"""cim.paths: an instance path made without pywbem's checks is pywbem's own path.

The judge is pywbem: ``instance_path`` sets private attributes of
``CIMInstanceName`` and ``nocase_dict`` those of ``NocaseDict``, so every
public reading of the result (equality, hash, WBEM URI, CIM-XML, repr, copy,
lookup in any case) must equal that of the object pywbem's constructor makes
from the same keys; a pywbem release that changes its internals fails here,
not in a client.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pywbem import CIMInstanceName, NocaseDict, Sint64, Uint16

from lmi_mount.cim.paths import instance_path, nocase_dict, same_path

_NAMES = st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,12}", fullmatch=True)
_FEW_NAMES = st.sampled_from(["A", "a", "B", "Name"])
_SCALARS = st.one_of(
    st.text(max_size=20),
    st.booleans(),
    st.integers(0, 65535).map(Uint16),
    st.integers(-(2**63), 2**63 - 1).map(Sint64),
)


def _keys(values: st.SearchStrategy[Any],
          names: st.SearchStrategy[str] = _NAMES) -> st.SearchStrategy[dict[str, Any]]:
    # Names unique whatever their case, as a path's keys are.
    return st.dictionaries(names, values, min_size=1, max_size=4).map(
        lambda keys: {name: keys[name] for name in {k.lower(): k for k in keys}.values()})


_NESTED = st.builds(lambda c, k: CIMInstanceName(c, k), _NAMES, _keys(_SCALARS))
_NAMESPACES = st.one_of(st.none(), st.sampled_from(["root/cimv2", "/root/interop/", "root"]))
_HOSTS = st.one_of(st.none(), st.sampled_from(["host", "host.example:5989"]))


@given(_NAMES, _keys(st.one_of(_SCALARS, _NESTED)), _NAMESPACES, _HOSTS)
@settings(max_examples=300, deadline=None)
def test_an_instance_path_reads_as_the_one_pywbem_makes(
        classname: str, keys: dict[str, Any], namespace: str | None, host: str | None) -> None:
    ours = instance_path(classname, NocaseDict(keys), namespace, host)
    theirs = CIMInstanceName(classname, keys, namespace=namespace, host=host)
    assert ours == theirs
    assert hash(ours) == hash(theirs)
    assert ours.to_wbem_uri() == theirs.to_wbem_uri()
    assert ours.tocimxmlstr() == theirs.tocimxmlstr()
    assert repr(ours) == repr(theirs)
    assert ours.copy() == theirs
    assert (ours.namespace, ours.host) == (theirs.namespace, theirs.host)


@given(_NAMES, _keys(st.one_of(_SCALARS, _NESTED)), _NAMESPACES)
@settings(max_examples=300, deadline=None)
def test_a_nocase_dict_reads_as_the_one_pywbem_makes(
        classname: str, keys: dict[str, Any], namespace: str | None) -> None:
    ours, theirs = nocase_dict(keys.items()), NocaseDict(keys)
    assert ours == theirs
    assert list(ours.items()) == list(theirs.items())
    assert repr(ours) == repr(theirs)
    assert ours.copy() == theirs
    for name in keys:
        for spelled in (name, name.upper(), name.lower(), name.swapcase()):
            assert spelled in ours
            assert ours[spelled] == theirs[spelled]
    assert "no such key" not in ours
    ours["_Added"] = 1  # and it stays pywbem's: it takes keys in any case (no _NAMES name)
    assert ours["_ADDED"] == 1 and len(ours) == len(theirs) + 1
    del ours["_added"]
    assert (instance_path(classname, nocase_dict(keys.items()), namespace)
            == CIMInstanceName(classname, keys, namespace=namespace))


def _reference_same(a: CIMInstanceName, b: CIMInstanceName) -> bool:
    """By class and keys, names in any case: the comparison written the plain way."""
    if a.classname.lower() != b.classname.lower():
        return False
    mine = {k.lower(): v for k, v in a.keybindings.items()}
    theirs = {k.lower(): v for k, v in b.keybindings.items()}
    if mine.keys() != theirs.keys():
        return False
    for key, value in mine.items():
        paths = [isinstance(v, CIMInstanceName) for v in (value, theirs[key])]
        if paths == [True, True]:
            if not _reference_same(value, theirs[key]):
                return False
        elif True in paths or value != theirs[key]:
            return False
    return True


def _recased(path: CIMInstanceName, upper: bool) -> CIMInstanceName:
    def case(name: str) -> str:
        return name.upper() if upper else name.lower()
    return CIMInstanceName(case(path.classname), {
        case(k): _recased(v, upper) if isinstance(v, CIMInstanceName) else v
        for k, v in path.keybindings.items()}, namespace="elsewhere", host="other")


_PATHS = st.builds(lambda c, k: CIMInstanceName(c, k), st.sampled_from(["A", "a", "B"]),
                   _keys(st.one_of(_SCALARS, _NESTED), _FEW_NAMES))


# Few class and key names, so that many pairs share them; a key may be a path in
# one and a value in the other (pywbem's path equality raises TypeError then).
@given(_PATHS, _PATHS, st.booleans())
@settings(max_examples=300, deadline=None)
def test_same_path_ignores_case_host_and_namespace_only(
        a: CIMInstanceName, b: CIMInstanceName, upper: bool) -> None:
    assert same_path(a, _recased(a, upper))
    assert same_path(a, b) == _reference_same(a, b) == same_path(b, a)
    fewer = a.copy()
    if len(fewer.keybindings) > 1:
        del fewer.keybindings[next(iter(fewer.keybindings))]
        assert not same_path(a, fewer) and not same_path(fewer, a)
