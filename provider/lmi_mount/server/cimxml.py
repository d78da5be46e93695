"""CIM-XML (DSP0201 2.x, operations of DSP0200 1.4): parse requests, encode responses.

Owns: every byte of XML the server reads or writes. Requests are parsed by
lxml with entity resolution, DTD loading and network access off, a DOCTYPE
refused and the element depth bounded; a small converter turns the request
subset of DSP0201 (paths, values, instances) into pywbem objects. Responses
are written by hand as text, element by element, so that a result of 10k
instances streams as chunks and never becomes one tree; every element is
written with an end tag (sblim wbemcli trips on some self-closing ones).
Method calls a client repeats are kept parsed (``KeptCalls``); which ones
may be, and when, its user says.

Must not know: HTTP, authentication, the broker, or what an operation does
(``dispatch``). It knows pywbem's object model (with helpers of
``lmi_mount.cim`` for it: ``paths.instance_path`` and ``copied_path``,
``model.method_parameters``) and DSP0201's grammar only.

pywbem's own CIM-XML parsing (``xml_to_tupletree_sax``) is not used on
requests: it is quadratic on large inputs and expands entities (FIELD_NOTES
"pywbem and pywbem_mock"), and its ``TupleParser`` parses embedded objects
with it again. Classes and qualifier declarations (small, read from the
compiled model) are encoded by pywbem's ``tocimxmlstr`` with their empty
elements expanded; instances and paths (the hot path) by this module.
"""

from __future__ import annotations

import operator
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final, cast

from lxml import etree
from pywbem import (
    CIM_ERR_INVALID_PARAMETER,
    CIMClass,
    CIMClassName,
    CIMDateTime,
    CIMError,
    CIMInstance,
    CIMInstanceName,
    CIMMethod,
    CIMProperty,
    CIMQualifier,
    CIMQualifierDeclaration,
    NocaseDict,
    Real32,
    cimtype,
    type_from_name,
)

from lmi_mount.cim.model import method_parameters
from lmi_mount.cim.paths import copied_path, instance_path, nocase_dict

#: Deepest element nesting accepted in a request. The deepest DSP0201 request
#: structure (an embedded instance aside) is about 12 levels; libxml2 stops
#: at 256 by itself.
MAX_DEPTH: Final = 40
#: Embedded objects (a string holding an INSTANCE) nest at most this deep.
MAX_EMBEDDING: Final = 3
#: Encoded responses are handed out in chunks of about this many bytes.
CHUNK_SIZE: Final = 64 * 1024

XML_DECLARATION: Final = '<?xml version="1.0" encoding="utf-8" ?>\n'


class RequestError(Exception):
    """A request that is not a CIM operation request we can read (HTTP 400 or 501).

    ``cim_error`` is the value of DSP0200's ``CIMError`` response header
    (``request-not-well-formed``, ``request-not-valid``, ...).
    """

    def __init__(self, cim_error: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.cim_error = cim_error
        self.status = status


class CallRefused(Exception):
    """A call whose element the DTD allows holds a value that does not fit its type
    (a boolean property ``maybe``, a numeric key ``abc``: VALUE and KEYVALUE are
    PCDATA): DSP0200 answers it with the call's CIM error, not with HTTP 400."""

    def __init__(self, message_id: str, method: str, intrinsic: bool, error: CIMError) -> None:
        super().__init__(str(error))
        self.message_id = message_id
        self.method = method
        self.intrinsic = intrinsic
        self.error = error

    def body(self) -> bytes:
        """The response message carrying the error."""
        answer = imethod_error if self.intrinsic else method_error
        return answer(self.message_id, self.method, self.error)


class EncodeError(ValueError):
    """A value that CIM-XML cannot carry (a character XML 1.0 forbids)."""


# --------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------

_parsers = threading.local()


def _parser() -> etree.XMLParser:
    # lxml parsers must not be shared between threads.
    parser = getattr(_parsers, "parser", None)
    if parser is None:
        parser = etree.XMLParser(
            resolve_entities=False,
            no_network=True,
            load_dtd=False,
            dtd_validation=False,
            huge_tree=False,
            remove_comments=True,
            remove_pis=True,
        )
        _parsers.parser = parser
    return parser


def parse_xml(data: bytes, what: str = "request") -> etree._Element:
    """Parse ``data`` safely; raise RequestError naming what is wrong with it.

    Billion laughs and external entities never expand (no entity is resolved,
    and libxml2 caps amplification and depth by itself); a DOCTYPE is refused
    outright, as SFCB and Pegasus never need one either.
    """
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as exc:
        raise RequestError("request-not-well-formed", f"{what}: {exc}") from None
    if root is None:
        raise RequestError("request-not-well-formed", f"{what}: no root element")
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None:
        raise RequestError("request-not-valid", f"{what}: a DOCTYPE is not accepted")
    if _too_deep()(root):
        raise RequestError("request-not-valid",
                           f"{what}: elements nest deeper than {MAX_DEPTH} levels")
    return root


def _too_deep() -> etree.XPath:
    """Whether any element lies MAX_DEPTH + 1 levels down (the root is level 1):
    evaluated by libxml2, a level at a time, where a walk in Python cost a
    request more than parsing it. One per thread, as the parsers."""
    xpath = getattr(_parsers, "too_deep", None)
    if xpath is None:
        xpath = _parsers.too_deep = etree.XPath("boolean(/" + "*/" * MAX_DEPTH + "*)")
    return xpath


def _invalid(message: str) -> RequestError:
    return RequestError("request-not-valid", message)


def _children(element: etree._Element) -> list[etree._Element]:
    # Elements only (no comment, PI or entity node), filtered by lxml in C.
    return list(element.iterchildren(etree.Element))


def _attr(element: etree._Element, name: str) -> str:
    value = element.get(name)
    if value is None:
        raise _invalid(f"{element.tag} without the {name} attribute")
    return str(value)


def _one(element: etree._Element, *tags: str) -> etree._Element:
    kids = _children(element)
    if len(kids) != 1 or kids[0].tag not in tags:
        got = ", ".join(str(k.tag) for k in kids) or "nothing"
        raise _invalid(f"{element.tag} must hold one of {', '.join(tags)}, not {got}")
    return kids[0]


def _text(element: etree._Element) -> str:
    # VALUE holds only text (#PCDATA); a child element is invalid. The parser
    # drops comments and PIs and resolves the only entities there can be:
    # any child is an element.
    if len(element):
        raise _invalid(f"{element.tag} must hold text only")
    return element.text or ""


@dataclass(frozen=True)
class Unsupported:
    """A parameter value that this server never accepts (a CLASS, a QUALIFIER.DECLARATION)."""

    element: str


@dataclass(frozen=True)
class IntrinsicCall:
    """An IMETHODCALL: ``params`` maps each IPARAMVALUE name to its converted value.

    Values are: None (empty IPARAMVALUE), str (VALUE), list (VALUE.ARRAY),
    CIMClassName, CIMInstanceName, CIMInstance (INSTANCE, VALUE.NAMEDINSTANCE
    with its path), or Unsupported.
    """

    message_id: str
    method: str
    namespace: str
    params: NocaseDict


@dataclass(frozen=True)
class RawParam:
    """A PARAMVALUE of a METHODCALL before it is typed (``type_method_params``).

    ``value`` is None, str (VALUE), list of str/None (VALUE.ARRAY),
    CIMInstanceName/CIMClassName (VALUE.REFERENCE and friends), a list of
    those (VALUE.REFARRAY), or CIMInstance (INSTANCE, VALUE.NAMEDINSTANCE).
    """

    name: str
    paramtype: str | None
    embedded_object: str | None
    value: Any


@dataclass(frozen=True)
class ExtrinsicCall:
    """A METHODCALL on a class (CIMClassName) or an instance (CIMInstanceName)."""

    message_id: str
    method: str
    namespace: str
    target: CIMInstanceName | CIMClassName
    params: tuple[RawParam, ...] = field(default=())


#: Method calls kept parsed (``KeptCalls``): how many, and the largest body.
KEPT_CALLS: Final = 256
KEPT_BODY_BYTES: Final = 16 * 1024


class KeptCalls:
    """Method calls kept parsed, by caller and body: a client sends the same few
    calls again and again (pywbem sends MESSAGE ID 1001 every time, so one
    call's bodies are equal byte for byte), and parsing one cost about a fifth
    of the server's CPU for a CreateMount.

    ``parse`` gives each request a copy of the call that shares nothing it may
    change, and, for a call not kept yet that may be, the function that keeps
    it, to be called once the call succeeded (a refused one is not kept).
    Kept: calls that ``may_keep`` (the model names the methods whose
    parameters carry no secret: CreateSetting's Options may name a password),
    whose parameters are values and paths only (no instance, no embedded
    object), of bodies up to ``KEPT_BODY_BYTES``; ``KEPT_CALLS`` of them, the
    least recently used out first. By caller: one user's calls are no hits
    (to time) and no evictions for another.
    """

    def __init__(self, may_keep: Callable[[ExtrinsicCall], bool]) -> None:
        self._may_keep = may_keep
        self._calls: OrderedDict[tuple[str, bytes], ExtrinsicCall] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._calls)

    def items(self) -> list[tuple[bytes, ExtrinsicCall]]:
        """(body, call) of every call kept."""
        with self._lock:
            return [(body, call) for (_, body), call in self._calls.items()]

    def parse(self, data: bytes, user: str
              ) -> tuple[IntrinsicCall | ExtrinsicCall, Callable[[], None] | None]:
        """``parse_request(data)`` for ``user``, and the function that keeps it (or None)."""
        key = (user, data)
        small = len(data) <= KEPT_BODY_BYTES
        if small:
            with self._lock:
                kept = self._calls.get(key)
                if kept is not None:
                    self._calls.move_to_end(key)
            if kept is not None:
                return _copied_call(kept), None
        call = parse_request(data)
        if not (small and isinstance(call, ExtrinsicCall) and _keepable(call)
                and self._may_keep(call)):
            return call, None
        original = call  # never handed out: consumers get copies

        def keep() -> None:
            with self._lock:
                self._calls[key] = original
                if len(self._calls) > KEPT_CALLS:
                    self._calls.popitem(last=False)

        return _copied_call(call), keep


def _keepable(call: ExtrinsicCall) -> bool:
    return all(param.embedded_object is None and not isinstance(param.value, CIMInstance)
               for param in call.params)


def _copied_call(call: ExtrinsicCall) -> ExtrinsicCall:
    """``call`` with its own paths and lists (the rest is immutable)."""
    return replace(call, target=_copied(call.target), params=tuple(
        param if param.value is None or isinstance(param.value, str)
        else replace(param, value=_copied(param.value)) for param in call.params))


def _copied(value: Any) -> Any:
    if isinstance(value, list):
        return [_copied(item) for item in value]
    if isinstance(value, CIMInstanceName):
        return copied_path(value)
    if isinstance(value, CIMClassName):
        return value.copy()
    return value


def parse_request(data: bytes) -> IntrinsicCall | ExtrinsicCall:
    root = parse_xml(data)
    if root.tag != "CIM":
        raise _invalid(f"the root element is {root.tag}, not CIM")
    # DSP0201: CIMVERSION 2.x and DTDVERSION 2.x; DSP0200 answers others with 501.
    for attr, error in (("CIMVERSION", "unsupported-cim-version"),
                        ("DTDVERSION", "unsupported-dtd-version")):
        version = _attr(root, attr)
        if not version.startswith("2."):
            raise RequestError(error, f"{attr} {version!r} is not supported (2.x is)", 501)
    message = _one(root, "MESSAGE")
    message_id = _attr(message, "ID")
    protocol = _attr(message, "PROTOCOLVERSION")
    if not protocol.startswith("1."):
        raise RequestError(
            "unsupported-protocol-version",
            f"PROTOCOLVERSION {protocol!r} is not supported (1.x is)",
            501,
        )
    body = _one(message, "SIMPLEREQ", "MULTIREQ", "SIMPLERSP", "MULTIRSP",
                "SIMPLEEXPREQ", "MULTIEXPREQ")
    if body.tag == "MULTIREQ":
        raise RequestError(
            "multiple-requests-unsupported", "multiple operation requests are not supported", 501
        )
    if body.tag != "SIMPLEREQ":
        raise _invalid(f"{body.tag} is not an operation request")
    # Later DSP0201 versions allow CORRELATOR elements before the call; they carry no
    # meaning here.
    calls = [c for c in _children(body) if c.tag != "CORRELATOR"]
    if len(calls) != 1 or calls[0].tag not in ("IMETHODCALL", "METHODCALL"):
        got = ", ".join(str(c.tag) for c in calls) or "nothing"
        raise _invalid(f"SIMPLEREQ must hold IMETHODCALL or METHODCALL, not {got}")
    call = calls[0]
    try:
        if call.tag == "IMETHODCALL":
            return _parse_imethodcall(call, message_id)
        return _parse_methodcall(call, message_id)
    except CIMError as exc:
        raise CallRefused(message_id, str(call.get("NAME") or ""), call.tag == "IMETHODCALL",
                          exc) from None


def _parse_imethodcall(call: etree._Element, message_id: str) -> IntrinsicCall:
    method = _attr(call, "NAME")
    kids = _children(call)
    if not kids or kids[0].tag != "LOCALNAMESPACEPATH":
        raise _invalid("IMETHODCALL must start with LOCALNAMESPACEPATH")
    namespace = _localnamespacepath(kids[0])
    params = NocaseDict()
    for kid in kids[1:]:
        if kid.tag == "RESPONSEDESTINATION":
            raise _invalid("asynchronous responses (RESPONSEDESTINATION) are not supported")
        if kid.tag != "IPARAMVALUE":
            raise _invalid(f"IMETHODCALL holds {kid.tag}, expected IPARAMVALUE")
        name = _attr(kid, "NAME")
        if name in params:
            raise _invalid(f"IPARAMVALUE {name!r} appears twice")
        params[name] = _iparamvalue(kid)
    return IntrinsicCall(message_id, method, namespace, params)


def _parse_methodcall(call: etree._Element, message_id: str) -> ExtrinsicCall:
    method = _attr(call, "NAME")
    kids = _children(call)
    if not kids or kids[0].tag not in ("LOCALINSTANCEPATH", "LOCALCLASSPATH"):
        raise _invalid("METHODCALL must start with LOCALINSTANCEPATH or LOCALCLASSPATH")
    target = _reference(kids[0], 0)
    assert target.namespace is not None
    params: list[RawParam] = []
    for kid in kids[1:]:
        if kid.tag == "RESPONSEDESTINATION":
            raise _invalid("asynchronous responses (RESPONSEDESTINATION) are not supported")
        if kid.tag != "PARAMVALUE":
            raise _invalid(f"METHODCALL holds {kid.tag}, expected PARAMVALUE")
        # A parameter given twice is valid CIM-XML and an invalid parameter
        # (DSP0200): type_method_params says so, as a CIM error.
        params.append(_paramvalue(kid))
    return ExtrinsicCall(message_id, method, target.namespace, target, tuple(params))


def _localnamespacepath(element: etree._Element) -> str:
    parts = []
    for kid in _children(element):
        if kid.tag != "NAMESPACE":
            raise _invalid(f"LOCALNAMESPACEPATH holds {kid.tag}, expected NAMESPACE")
        parts.append(_attr(kid, "NAME"))
    if not parts:
        raise _invalid("LOCALNAMESPACEPATH without NAMESPACE")
    return "/".join(parts)


def _namespacepath(element: etree._Element) -> tuple[str, str]:
    kids = _children(element)
    if len(kids) != 2 or kids[0].tag != "HOST" or kids[1].tag != "LOCALNAMESPACEPATH":
        raise _invalid("NAMESPACEPATH must hold HOST and LOCALNAMESPACEPATH")
    return _text(kids[0]), _localnamespacepath(kids[1])


def _classname(element: etree._Element) -> str:
    return _attr(element, "NAME")


def _instancename(element: etree._Element, embedding: int) -> CIMInstanceName:
    classname = _attr(element, "CLASSNAME")
    # By casefolded name, as NocaseDict keeps them: names ignore case.
    keys: dict[str, tuple[str, Any]] = {}
    kids = _children(element)
    if len(kids) == 1 and kids[0].tag in ("KEYVALUE", "VALUE.REFERENCE"):
        # DSP0201: a single key may be given without its name.
        raise _invalid(f"INSTANCENAME of {classname} must name its key (KEYBINDING)")
    for kid in kids:
        if kid.tag != "KEYBINDING":
            raise _invalid(f"INSTANCENAME holds {kid.tag}, expected KEYBINDING")
        name = _attr(kid, "NAME")
        folded = name.casefold()
        if folded in keys:  # two values of one key
            raise _invalid(f"INSTANCENAME of {classname} names the key {name!r} twice")
        value = _one(kid, "KEYVALUE", "VALUE.REFERENCE")
        if value.tag == "KEYVALUE":
            keys[folded] = (name, _keyvalue(value))
            continue
        reference = _value_reference(value, embedding)
        if not isinstance(reference, CIMInstanceName):
            raise _invalid(f"the key {name!r} of {classname} holds a class path, which is "
                           "no key value (a value or an instance path)")
        keys[folded] = (name, reference)
    # The values are checked above (a CIM type, an instance path, never NULL):
    # pywbem's constructor would copy and check them all again.
    return instance_path(classname, nocase_dict(keys.values()))


def _keyvalue(element: etree._Element) -> Any:
    text = _text(element)
    cim_type = element.get("TYPE")
    if cim_type is not None:
        return _typed_scalar(text, cim_type, "KEYVALUE")
    valuetype = element.get("VALUETYPE", "string")
    if valuetype == "string":
        return text
    if valuetype == "boolean":
        return _boolean(text, "KEYVALUE")
    if valuetype == "numeric":
        stripped = text.strip()
        if _INTEGER.fullmatch(stripped) or _HEX.fullmatch(stripped):
            return _integer(stripped, "KEYVALUE")
        if _REAL.fullmatch(stripped):
            return float(stripped)
        # A value the DTD allows (KEYVALUE is PCDATA): the call's error.
        raise CIMError(CIM_ERR_INVALID_PARAMETER, f"KEYVALUE {text!r} is not numeric")
    raise _invalid(f"KEYVALUE VALUETYPE {valuetype!r} is not string, boolean or numeric")


def _reference(element: etree._Element, embedding: int) -> CIMInstanceName | CIMClassName:
    """CLASSPATH, LOCALCLASSPATH, CLASSNAME, INSTANCEPATH, LOCALINSTANCEPATH or INSTANCENAME."""
    tag = element.tag
    if tag == "INSTANCENAME":
        return _instancename(element, embedding)
    if tag == "CLASSNAME":
        return CIMClassName(_classname(element))
    kids = _children(element)
    if len(kids) != 2:
        raise _invalid(f"{tag} must hold a namespace path and a name")
    if tag in ("LOCALINSTANCEPATH", "LOCALCLASSPATH"):
        if kids[0].tag != "LOCALNAMESPACEPATH":
            raise _invalid(f"{tag} must start with LOCALNAMESPACEPATH")
        host, namespace = None, _localnamespacepath(kids[0])
    elif tag in ("INSTANCEPATH", "CLASSPATH"):
        if kids[0].tag != "NAMESPACEPATH":
            raise _invalid(f"{tag} must start with NAMESPACEPATH")
        host, namespace = _namespacepath(kids[0])
    else:
        raise _invalid(f"{tag} is not a reference")
    if tag.endswith("INSTANCEPATH"):
        if kids[1].tag != "INSTANCENAME":
            raise _invalid(f"{tag} must end with INSTANCENAME")
        path = _instancename(kids[1], embedding)
        path.namespace = namespace
        path.host = host
        return path
    if kids[1].tag != "CLASSNAME":
        raise _invalid(f"{tag} must end with CLASSNAME")
    return CIMClassName(_classname(kids[1]), namespace=namespace, host=host)


def _value_reference(element: etree._Element, embedding: int) -> CIMInstanceName | CIMClassName:
    return _reference(
        _one(element, "CLASSPATH", "LOCALCLASSPATH", "CLASSNAME",
             "INSTANCEPATH", "LOCALINSTANCEPATH", "INSTANCENAME"),
        embedding,
    )


def _value_array(element: etree._Element) -> list[str | None]:
    items: list[str | None] = []
    for kid in _children(element):
        if kid.tag == "VALUE":
            items.append(_text(kid))
        elif kid.tag == "VALUE.NULL":
            items.append(None)
        else:
            raise _invalid(f"VALUE.ARRAY holds {kid.tag}, expected VALUE or VALUE.NULL")
    return items


def _value_refarray(element: etree._Element, embedding: int) -> list[Any]:
    items: list[Any] = []
    for kid in _children(element):
        if kid.tag == "VALUE.REFERENCE":
            items.append(_value_reference(kid, embedding))
        elif kid.tag == "VALUE.NULL":
            items.append(None)
        else:
            raise _invalid(f"VALUE.REFARRAY holds {kid.tag}, expected VALUE.REFERENCE")
    return items


def _iparamvalue(element: etree._Element) -> Any:
    kids = _children(element)
    if not kids:
        return None
    if len(kids) > 1:
        raise _invalid(f"IPARAMVALUE {element.get('NAME')!r} holds more than one value")
    kid = kids[0]
    tag = kid.tag
    if tag == "VALUE":
        return _text(kid)
    if tag == "VALUE.ARRAY":
        return _value_array(kid)
    if tag == "VALUE.REFERENCE":
        return _value_reference(kid, 0)
    if tag in ("CLASSNAME", "INSTANCENAME"):
        return _reference(kid, 0)
    if tag == "INSTANCE":
        return _instance(kid, 0)
    if tag == "VALUE.NAMEDINSTANCE":
        return _named_instance(kid, 0)
    if tag in ("CLASS", "QUALIFIER.DECLARATION"):
        return Unsupported(str(tag))
    raise _invalid(f"IPARAMVALUE {element.get('NAME')!r} holds {tag}")


def _paramvalue(element: etree._Element) -> RawParam:
    name = _attr(element, "NAME")
    paramtype = element.get("PARAMTYPE")
    # DSP0201 spells it EmbeddedObject; old Pegasus clients sent EMBEDDEDOBJECT.
    embedded = element.get("EmbeddedObject") or element.get("EMBEDDEDOBJECT")
    kids = _children(element)
    if not kids:
        return RawParam(name, paramtype, embedded, None)
    if len(kids) > 1:
        raise _invalid(f"PARAMVALUE {name!r} holds more than one value")
    kid = kids[0]
    tag = kid.tag
    value: Any
    if tag == "VALUE":
        value = _text(kid)
    elif tag == "VALUE.ARRAY":
        value = _value_array(kid)
    elif tag == "VALUE.REFERENCE":
        value = _value_reference(kid, 0)
    elif tag == "VALUE.REFARRAY":
        value = _value_refarray(kid, 0)
    elif tag in ("CLASSNAME", "INSTANCENAME"):
        value = _reference(kid, 0)
    elif tag == "INSTANCE":
        value = _instance(kid, 0)
    elif tag == "VALUE.NAMEDINSTANCE":
        value = _named_instance(kid, 0)
    else:
        raise _invalid(f"PARAMVALUE {name!r} holds {tag}")
    return RawParam(name, paramtype, embedded, value)


def _named_instance(element: etree._Element, embedding: int) -> CIMInstance:
    kids = _children(element)
    if len(kids) != 2 or kids[0].tag != "INSTANCENAME" or kids[1].tag != "INSTANCE":
        raise _invalid("VALUE.NAMEDINSTANCE must hold INSTANCENAME and INSTANCE")
    instance = _instance(kids[1], embedding)
    instance.path = _instancename(kids[0], embedding)
    return instance


def _qualifier(element: etree._Element) -> CIMQualifier:
    name = _attr(element, "NAME")
    cim_type = _attr(element, "TYPE")
    kids = _children(element)
    value: Any = None
    if kids:
        kid = _one(element, "VALUE", "VALUE.ARRAY")
        if kid.tag == "VALUE":
            value = _typed_scalar(_text(kid), cim_type, f"qualifier {name}")
        else:
            value = [
                None if v is None else _typed_scalar(v, cim_type, f"qualifier {name}")
                for v in _value_array(kid)
            ]
    return CIMQualifier(
        name,
        value,
        type=cim_type,
        propagated=_optional_bool(element, "PROPAGATED"),
        overridable=_optional_bool(element, "OVERRIDABLE"),
        tosubclass=_optional_bool(element, "TOSUBCLASS"),
        toinstance=_optional_bool(element, "TOINSTANCE"),
        translatable=_optional_bool(element, "TRANSLATABLE"),
    )


def _optional_bool(element: etree._Element, name: str) -> bool | None:
    value = element.get(name)
    return None if value is None else _boolean(value, f"{element.tag} {name}")


def _instance(element: etree._Element, embedding: int) -> CIMInstance:
    classname = _attr(element, "CLASSNAME")
    instance = CIMInstance(classname)
    for kid in _children(element):
        tag = kid.tag
        if tag == "QUALIFIER":
            qualifier = _qualifier(kid)
            instance.qualifiers[qualifier.name] = qualifier
            continue
        if tag not in ("PROPERTY", "PROPERTY.ARRAY", "PROPERTY.REFERENCE"):
            raise _invalid(f"INSTANCE of {classname} holds {tag}")
        name = _attr(kid, "NAME")
        if name in instance.properties:
            raise _invalid(f"property {name!r} of {classname} appears twice")
        instance.properties[name] = _property(kid, name, embedding)
    return instance


def _property(element: etree._Element, name: str, embedding: int) -> CIMProperty:
    tag = element.tag
    qualifiers = []
    value_element = None
    for kid in _children(element):
        if kid.tag == "QUALIFIER":
            qualifiers.append(_qualifier(kid))
        elif value_element is None:
            value_element = kid
        else:
            raise _invalid(f"property {name!r} holds more than one value")
    common: dict[str, Any] = {
        "class_origin": element.get("CLASSORIGIN"),
        "propagated": _optional_bool(element, "PROPAGATED"),
        "qualifiers": qualifiers,
    }
    if tag == "PROPERTY.REFERENCE":
        value = None
        if value_element is not None:
            if value_element.tag != "VALUE.REFERENCE":
                raise _invalid(f"PROPERTY.REFERENCE {name!r} holds {value_element.tag}")
            value = _value_reference(value_element, embedding)
        return CIMProperty(
            name, value, type="reference",
            reference_class=element.get("REFERENCECLASS"), **common,
        )
    cim_type = _attr(element, "TYPE")
    embedded = element.get("EmbeddedObject") or element.get("EMBEDDEDOBJECT")
    what = f"property {name!r}"
    if tag == "PROPERTY.ARRAY":
        items: list[Any] | None = None
        if value_element is not None:
            if value_element.tag != "VALUE.ARRAY":
                raise _invalid(f"PROPERTY.ARRAY {name!r} holds {value_element.tag}")
            items = [
                _typed_or_embedded(v, cim_type, embedded, what, embedding)
                for v in _value_array(value_element)
            ]
        return CIMProperty(
            name, items, type=cim_type, is_array=True,
            embedded_object=embedded, **common,
        )
    scalar = None
    if value_element is not None:
        if value_element.tag != "VALUE":
            raise _invalid(f"PROPERTY {name!r} holds {value_element.tag}")
        scalar = _typed_or_embedded(_text(value_element), cim_type, embedded, what, embedding)
    return CIMProperty(name, scalar, type=cim_type, embedded_object=embedded, **common)


def _typed_or_embedded(
    text: str | None, cim_type: str, embedded: str | None, what: str, embedding: int
) -> Any:
    if text is None:
        return None
    if embedded:
        return parse_embedded(text, what, embedding + 1)
    return _typed_scalar(text, cim_type, what)


def parse_embedded(text: str, what: str, embedding: int = 1) -> CIMInstance:
    """The INSTANCE (or VALUE.NAMEDINSTANCE) that an embedded-object string holds."""
    if embedding > MAX_EMBEDDING:
        raise _invalid(f"{what}: embedded objects nest deeper than {MAX_EMBEDDING} levels")
    if not text.strip():
        raise CIMError(CIM_ERR_INVALID_PARAMETER, f"{what}: empty embedded object")
    try:
        root = parse_xml(text.encode("utf-8"), f"embedded object of {what}")
    except UnicodeEncodeError as exc:
        raise _invalid(f"{what}: embedded object is not text: {exc}") from None
    if root.tag == "INSTANCE":
        return _instance(root, embedding)
    if root.tag == "VALUE.NAMEDINSTANCE":
        return _named_instance(root, embedding)
    raise CIMError(
        CIM_ERR_INVALID_PARAMETER,
        f"{what}: the embedded object is a {root.tag}; only an INSTANCE is accepted here",
    )


# --------------------------------------------------------------------------
# Values: text <-> typed CIM values
# --------------------------------------------------------------------------

_INTEGER = re.compile(r"[+-]?[0-9]+")
_HEX = re.compile(r"[+-]?0[xX][0-9a-fA-F]+")
_REAL = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[+-]?INF|NaN")
_INTEGER_TYPES = frozenset(
    ("uint8", "uint16", "uint32", "uint64", "sint8", "sint16", "sint32", "sint64")
)


def _integer(text: str, what: str) -> int:
    # DSP0201 integer values are decimal; DSP0004's hex form (0x1F) is accepted too.
    try:
        return int(text, 16) if _HEX.fullmatch(text) else int(text, 10)
    except ValueError as exc:  # more digits than Python converts (4,300)
        raise CIMError(CIM_ERR_INVALID_PARAMETER,
                       f"{what}: {text[:20]!r}... ({len(text)} characters): {exc}") from None


def _boolean(text: str, what: str) -> bool:
    value = text.strip().lower()
    if value == "true":
        return True
    if value == "false":
        return False
    raise CIMError(CIM_ERR_INVALID_PARAMETER, f"{what}: {text!r} is not a boolean (TRUE or FALSE)")


def _typed_scalar(text: str, cim_type: str, what: str) -> Any:
    """``text`` (the content of a VALUE) as a value of ``cim_type``."""
    if cim_type == "string":
        return text
    if cim_type == "boolean":
        return _boolean(text, what)
    if cim_type in _INTEGER_TYPES:
        stripped = text.strip()
        if not (_INTEGER.fullmatch(stripped) or _HEX.fullmatch(stripped)):
            raise CIMError(CIM_ERR_INVALID_PARAMETER, f"{what}: {text!r} is not an integer")
        try:
            return type_from_name(cim_type)(_integer(stripped, what))
        except ValueError as exc:
            raise CIMError(CIM_ERR_INVALID_PARAMETER, f"{what}: {text!r}: {exc}") from None
    if cim_type in ("real32", "real64"):
        stripped = text.strip()
        if not _REAL.fullmatch(stripped):
            raise CIMError(CIM_ERR_INVALID_PARAMETER, f"{what}: {text!r} is not a real number")
        return type_from_name(cim_type)(float(stripped))
    if cim_type == "char16":
        if len(text) != 1:
            raise CIMError(CIM_ERR_INVALID_PARAMETER, f"{what}: {text!r} is not one character")
        return text
    if cim_type == "datetime":
        try:
            return CIMDateTime(text.strip())
        except ValueError as exc:
            raise CIMError(CIM_ERR_INVALID_PARAMETER, f"{what}: {text!r}: {exc}") from None
    raise _invalid(f"{what}: unknown CIM type {cim_type!r}")


def typed_value(value: Any, cim_type: str, what: str) -> Any:
    """A parsed VALUE (str) or VALUE.ARRAY (list) converted to ``cim_type``."""
    if value is None:
        return None
    if isinstance(value, list):
        return [None if v is None else typed_value(v, cim_type, what) for v in value]
    if not isinstance(value, str):
        raise CIMError(CIM_ERR_INVALID_PARAMETER, f"{what}: expected a {cim_type} value")
    return _typed_scalar(value, cim_type, what)


#: CIM types of one kind: a parameter sent as one is read as another of its kind.
_TYPE_KIND: Final = {
    **{name: "integer" for name in ("uint8", "sint8", "uint16", "sint16", "uint32",
                                    "sint32", "uint64", "sint64")},
    "real32": "real", "real64": "real", "string": "string", "char16": "string",
}


def type_method_params(
    params: Sequence[RawParam], method: CIMMethod | None, where: str
) -> dict[str, Any]:
    """The IN parameters of a METHODCALL as typed CIM values, by name as the method
    declares it (as the client spelled it without a declaration); each name
    once, whatever its case.

    The method's declaration gives the type: a PARAMTYPE the client sends must
    be of its kind (an integer of another width is read as the declared one,
    if the value fits), else the parameter is invalid, named; untyped
    parameters (sblim wbemcli sends none) and embedded instances, which
    arrive as strings, take it too. Without a declaration the client's type
    is used. A parameter the declaration lacks is an invalid parameter, named.
    """
    typed: dict[str, Any] = {}
    seen: set[str] = set()
    signature = method_parameters(method) if method is not None else None
    for raw in params:
        key = raw.name.lower()
        decl = signature.declared.get(key) if signature is not None else None
        what = f"parameter {raw.name!r} of {where}"
        if decl is None and signature is not None:
            raise CIMError(CIM_ERR_INVALID_PARAMETER, f"{where} has no parameter {raw.name!r}")
        if key in seen:
            raise CIMError(CIM_ERR_INVALID_PARAMETER, f"{what} is given twice")
        seen.add(key)
        name = decl.name if decl is not None else raw.name
        value = raw.value
        if signature is not None and key in signature.output_only:
            typed[name] = value  # not read: the broker refuses it as output only
            continue
        if value is None or isinstance(value, (CIMInstanceName, CIMClassName, CIMInstance)):
            typed[name] = value
            continue
        if isinstance(value, list) and any(
            isinstance(v, (CIMInstanceName, CIMClassName)) for v in value
        ):
            typed[name] = value
            continue
        embedded = raw.embedded_object or (decl.embedded_object if decl is not None else None)
        cim_type = decl.type if decl is not None else raw.paramtype
        if (decl is not None and raw.paramtype is not None
                and _TYPE_KIND.get(raw.paramtype, raw.paramtype)
                != _TYPE_KIND.get(decl.type, decl.type)):
            raise CIMError(CIM_ERR_INVALID_PARAMETER,
                           f"{what} is declared {decl.type}, sent as {raw.paramtype}")
        if embedded:
            items = value if isinstance(value, list) else [value]
            try:
                parsed = [None if v is None else parse_embedded(v, what) for v in items]
            except RequestError as exc:
                raise CIMError(CIM_ERR_INVALID_PARAMETER, str(exc)) from None
            typed[name] = parsed if isinstance(value, list) else parsed[0]
            continue
        if cim_type is None:
            raise CIMError(
                CIM_ERR_INVALID_PARAMETER, f"{what}: untyped and not declared by {where}"
            )
        if cim_type == "reference":
            raise CIMError(CIM_ERR_INVALID_PARAMETER, f"{what}: expected a reference")
        if decl is not None and decl.is_array != isinstance(value, list):
            shape = "an array" if decl.is_array else "a single value"
            raise CIMError(CIM_ERR_INVALID_PARAMETER, f"{what}: expected {shape}")
        typed[name] = typed_value(value, cim_type, what)
    return typed


# --------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------

# Characters that need work in text or attribute values; the common case
# (none) costs one regex search.
_SPECIAL = re.compile('[&<>"\r\t\n\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]')
# XML 1.0 section 2.2: characters no document can hold, not even as references.
_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _check_chars(value: str) -> None:
    bad = _FORBIDDEN.search(value)
    if bad is not None:
        raise EncodeError(
            f"{value!r} holds the character U+{ord(bad.group()):04X}, which XML 1.0 cannot carry"
        )


def esc_text(value: str) -> str:
    """``value`` as element content. CR becomes ``&#13;``: XML parsers turn a
    raw CR into LF (XML 1.0 section 2.11)."""
    if _SPECIAL.search(value) is None:
        return value
    _check_chars(value)
    return (
        value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        .replace("\r", "&#13;")
    )


def esc_attr(value: str) -> str:
    """``value`` as a double-quoted attribute value (whitespace survives
    attribute-value normalization, XML 1.0 section 3.3.3)."""
    if _SPECIAL.search(value) is None:
        return value
    _check_chars(value)
    return (
        value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        .replace('"', "&quot;").replace("\r", "&#13;").replace("\n", "&#10;")
        .replace("\t", "&#9;")
    )


def _real_text(value: float, digits: int) -> str:
    # DSP0201: real32 with at least 11 significant digits, real64 with 17;
    # the special values are spelled INF, -INF and NaN.
    text = f"{value:.{digits}G}"
    if text == "NAN":
        return "NaN"
    if text in ("INF", "-INF"):
        return text
    if "." not in text:
        mantissa, _, exponent = text.partition("E")
        text = mantissa + ".0" + ("E" + exponent if exponent else "")
    return text


def scalar_text(value: Any, cim_type: str) -> str:
    """An atomic value as the escaped content of a VALUE element."""
    if cim_type in ("string", "char16"):
        return esc_text(str(value))
    if cim_type == "boolean":
        return "TRUE" if value else "FALSE"
    if cim_type in _INTEGER_TYPES:
        return str(int(value))
    if cim_type == "real32":
        return _real_text(float(value), 11)
    if cim_type == "real64":
        return _real_text(float(value), 17)
    if cim_type == "datetime":
        return str(value if isinstance(value, CIMDateTime) else CIMDateTime(value))
    raise EncodeError(f"cannot encode a value of CIM type {cim_type!r}")


def _namespace_xml(namespace: str) -> str:
    return "".join(
        f'<NAMESPACE NAME="{esc_attr(part)}"></NAMESPACE>' for part in namespace.split("/") if part
    )


def localnamespacepath_xml(namespace: str) -> str:
    return f"<LOCALNAMESPACEPATH>{_namespace_xml(namespace)}</LOCALNAMESPACEPATH>"


def _namespacepath_xml(host: str, namespace: str) -> str:
    return (
        f"<NAMESPACEPATH><HOST>{esc_text(host)}</HOST>"
        f"{localnamespacepath_xml(namespace)}</NAMESPACEPATH>"
    )


def _keyvalue_xml(value: Any) -> str:
    if isinstance(value, (CIMInstanceName, CIMClassName)):
        return value_reference_xml(value)
    if isinstance(value, bool):
        text = "TRUE" if value else "FALSE"
        return f'<KEYVALUE VALUETYPE="boolean" TYPE="boolean">{text}</KEYVALUE>'
    if isinstance(value, str):
        return f'<KEYVALUE VALUETYPE="string" TYPE="string">{esc_text(value)}</KEYVALUE>'
    if isinstance(value, CIMDateTime):
        return f'<KEYVALUE VALUETYPE="string" TYPE="datetime">{value}</KEYVALUE>'
    if isinstance(value, int):
        # A plain int carries no CIM type: send it without TYPE (DSP0201 KEYVALUE).
        type_attr = f' TYPE="{cimtype(value)}"' if type(value) is not int else ""
        return f'<KEYVALUE VALUETYPE="numeric"{type_attr}>{int(value)}</KEYVALUE>'
    if isinstance(value, float):
        cim_type = "real32" if isinstance(value, Real32) else "real64"
        text = _real_text(value, 11 if cim_type == "real32" else 17)
        return f'<KEYVALUE VALUETYPE="numeric" TYPE="{cim_type}">{text}</KEYVALUE>'
    raise EncodeError(f"cannot encode a key value of Python type {type(value).__name__}")


def instancename_xml(path: CIMInstanceName) -> str:
    """INSTANCENAME: the class and keys, without namespace or host."""
    parts = [f'<INSTANCENAME CLASSNAME="{esc_attr(path.classname)}">']
    for name, value in path.keybindings.items():
        parts.append(f'<KEYBINDING NAME="{esc_attr(name)}">{_keyvalue_xml(value)}</KEYBINDING>')
    parts.append("</INSTANCENAME>")
    return "".join(parts)


def instancepath_xml(path: CIMInstanceName, host: str, namespace: str | None = None) -> str:
    """INSTANCEPATH with ``host`` unless the path names its own, and the path's namespace."""
    ns = path.namespace or namespace
    if ns is None:
        raise EncodeError(f"instance path {path} has no namespace")
    return (
        f"<INSTANCEPATH>{_namespacepath_xml(path.host or host, ns)}"
        f"{instancename_xml(path)}</INSTANCEPATH>"
    )


def classname_xml(name: str) -> str:
    return f'<CLASSNAME NAME="{esc_attr(name)}"></CLASSNAME>'


def value_reference_xml(ref: CIMInstanceName | CIMClassName) -> str:
    """VALUE.REFERENCE, as detailed as the reference is (DSP0201 VALUE.REFERENCE)."""
    if isinstance(ref, CIMInstanceName):
        if ref.host and ref.namespace:
            inner = instancepath_xml(ref, ref.host)
        elif ref.namespace:
            inner = (
                f"<LOCALINSTANCEPATH>{localnamespacepath_xml(ref.namespace)}"
                f"{instancename_xml(ref)}</LOCALINSTANCEPATH>"
            )
        else:
            inner = instancename_xml(ref)
    elif isinstance(ref, CIMClassName):
        if ref.host and ref.namespace:
            inner = (
                f"<CLASSPATH>{_namespacepath_xml(ref.host, ref.namespace)}"
                f"{classname_xml(ref.classname)}</CLASSPATH>"
            )
        elif ref.namespace:
            inner = (
                f"<LOCALCLASSPATH>{localnamespacepath_xml(ref.namespace)}"
                f"{classname_xml(ref.classname)}</LOCALCLASSPATH>"
            )
        else:
            inner = classname_xml(ref.classname)
    else:
        raise EncodeError(f"{ref!r} is not a reference")
    return f"<VALUE.REFERENCE>{inner}</VALUE.REFERENCE>"


def _embedded_text(value: Any) -> str:
    if isinstance(value, CIMInstance):
        return esc_text(instance_xml(value))
    if isinstance(value, CIMClass):
        return esc_text(class_xml(value))
    if isinstance(value, str):
        return esc_text(value)
    raise EncodeError(f"cannot embed a {type(value).__name__}")


def _value_xml(value: Any, cim_type: str, embedded: str | None) -> str:
    if embedded:
        return f"<VALUE>{_embedded_text(value)}</VALUE>"
    return f"<VALUE>{scalar_text(value, cim_type)}</VALUE>"


def _array_xml(values: Iterable[Any], cim_type: str, embedded: str | None) -> str:
    if cim_type == "reference":
        items = [
            "<VALUE.NULL></VALUE.NULL>" if v is None else value_reference_xml(v) for v in values
        ]
        return f"<VALUE.REFARRAY>{''.join(items)}</VALUE.REFARRAY>"
    items = [
        "<VALUE.NULL></VALUE.NULL>" if v is None else _value_xml(v, cim_type, embedded)
        for v in values
    ]
    return f"<VALUE.ARRAY>{''.join(items)}</VALUE.ARRAY>"


def _flavor_attrs(qualifier: CIMQualifier) -> str:
    attrs = []
    for attr, value in (
        ("PROPAGATED", qualifier.propagated),
        ("OVERRIDABLE", qualifier.overridable),
        ("TOSUBCLASS", qualifier.tosubclass),
        ("TOINSTANCE", qualifier.toinstance),
        ("TRANSLATABLE", qualifier.translatable),
    ):
        if value is not None:
            attrs.append(f' {attr}="{"true" if value else "false"}"')
    return "".join(attrs)


def _qualifiers_xml(qualifiers: Mapping[str, CIMQualifier]) -> str:
    parts = []
    for qualifier in qualifiers.values():
        head = (
            f'<QUALIFIER NAME="{esc_attr(qualifier.name)}" TYPE="{qualifier.type}"'
            f"{_flavor_attrs(qualifier)}>"
        )
        value = qualifier.value
        if value is None:
            body = ""
        elif isinstance(value, list):
            body = _array_xml(value, qualifier.type, None)
        else:
            body = _value_xml(value, qualifier.type, None)
        parts.append(f"{head}{body}</QUALIFIER>")
    return "".join(parts)


def _qualifiers_of(element: Any) -> Mapping[str, CIMQualifier] | None:
    """The qualifiers of a pywbem element without creating an empty dict.

    pywbem 1.x creates the qualifier dictionary of a property on the first
    read of ``.qualifiers``; doing that for every property of 10k instances
    was half of the encoder's time. Read the slot when there is one.
    """
    try:
        return cast("Mapping[str, CIMQualifier] | None", element._qualifiers)
    except AttributeError:
        return cast("Mapping[str, CIMQualifier]", element.qualifiers)


# Start tags of properties by (name, type, class origin, propagated, embedded
# object, array, array size, reference class): a model has a few hundred, and
# building them once per property of 10k instances was the encoder's main cost.
_property_heads: dict[tuple[Any, ...], tuple[str, str]] = {}
_MAX_PROPERTY_HEADS: Final = 4096

# What the encoder reads of a CIMProperty, in one C-level call. pywbem 1.x
# keeps these in __slots__ behind Python properties; reading the slots
# directly halves the cost of a property. Should a pywbem release rename
# them, the public names (the same values) are read instead.
_PROPERTY_PUBLIC: Final = ("name", "type", "class_origin", "propagated", "embedded_object",
                           "is_array", "array_size", "reference_class", "value", "qualifiers")
_PROPERTY_SLOTS: Final = tuple(f"_{name}" for name in _PROPERTY_PUBLIC)
_property_fields = operator.attrgetter(
    *(_PROPERTY_SLOTS if set(_PROPERTY_SLOTS) <= set(getattr(CIMProperty, "__slots__", ()))
      else _PROPERTY_PUBLIC)
)


def _property_head(key: tuple[Any, ...]) -> tuple[str, str]:
    """The start and end tag of a property element, from its key (see ``_property_heads``)."""
    name, cim_type, class_origin, propagated, embedded, is_array, array_size, ref_class = key
    attrs = f' NAME="{esc_attr(name)}"'
    if cim_type == "reference" and not is_array:
        tag = "PROPERTY.REFERENCE"
        if ref_class:
            attrs += f' REFERENCECLASS="{esc_attr(ref_class)}"'
    else:
        tag = "PROPERTY.ARRAY" if is_array else "PROPERTY"
        attrs += f' TYPE="{esc_attr(cim_type)}"'
    if class_origin:
        attrs += f' CLASSORIGIN="{esc_attr(class_origin)}"'
    if propagated is not None:
        attrs += ' PROPAGATED="true"' if propagated else ' PROPAGATED="false"'
    if embedded and tag != "PROPERTY.REFERENCE":
        attrs += f' EmbeddedObject="{esc_attr(embedded)}"'
    if is_array and array_size is not None:
        attrs += f' ARRAYSIZE="{int(array_size)}"'
    if is_array and cim_type == "reference" and ref_class:
        attrs += f' REFERENCECLASS="{esc_attr(ref_class)}"'
    head = (f"<{tag}{attrs}>", f"</{tag}>")
    if len(_property_heads) >= _MAX_PROPERTY_HEADS:
        _property_heads.clear()
    _property_heads[key] = head
    return head


def _property_xml(prop: CIMProperty) -> str:
    fields = _property_fields(prop)
    key = fields[:8]
    start, end = _property_heads.get(key) or _property_head(key)
    qualifiers = fields[9]
    quals = _qualifiers_xml(qualifiers) if qualifiers else ""
    value = fields[8]
    if value is None:
        return f"{start}{quals}{end}"
    cim_type = fields[1]
    embedded = fields[4]
    if fields[5]:
        body = _array_xml(value, cim_type, embedded)
    elif cim_type == "string":
        body = f"<VALUE>{_embedded_text(value) if embedded else esc_text(value)}</VALUE>"
    elif cim_type == "reference":
        body = value_reference_xml(value)
    else:
        body = f"<VALUE>{scalar_text(value, cim_type)}</VALUE>"
    return f"{start}{quals}{body}{end}"


def property_xml(prop: CIMProperty) -> str:
    """PROPERTY, PROPERTY.ARRAY or PROPERTY.REFERENCE of ``prop``."""
    return _property_xml(prop)


def integer_property_xml(name: str, cim_type: str) -> Callable[[int], str]:
    """The PROPERTY named ``name`` of integer type ``cim_type`` for each value given
    later, without a CIMProperty for each: what changes with every message
    (SequenceNumber) costs a format, not pywbem's checks."""
    if cim_type not in _INTEGER_TYPES:
        raise ValueError(f"{cim_type!r} is no integer type")
    empty = _property_xml(CIMProperty(name, None, type=cim_type))
    cut = empty.rindex("</PROPERTY>")
    start, end = empty[:cut] + "<VALUE>", "</VALUE>" + empty[cut:]

    def xml(value: int) -> str:
        return f"{start}{int(value)}{end}"
    return xml


def property_value_xml(prop: CIMProperty) -> str:
    """The value of ``prop`` alone: VALUE, VALUE.ARRAY or VALUE.REFERENCE ("" for NULL)."""
    value = prop.value
    if value is None:
        return ""
    if prop.is_array:
        return _array_xml(value, prop.type, prop.embedded_object)
    if prop.type == "reference":
        return value_reference_xml(value)
    return _value_xml(value, prop.type, prop.embedded_object)


def instance_xml(instance: CIMInstance) -> str:
    """INSTANCE, with the qualifiers and properties the instance holds."""
    try:
        parts = [f'<INSTANCE CLASSNAME="{esc_attr(instance.classname)}">']
        qualifiers = _qualifiers_of(instance)
        if qualifiers:
            parts.append(_qualifiers_xml(qualifiers))
        parts.extend(_property_xml(p) for p in instance.properties.values())
        parts.append("</INSTANCE>")
    except EncodeError as exc:
        raise EncodeError(f"instance of {instance.classname}: {exc}") from None
    return "".join(parts)


# pywbem's minidom-based output writes empty elements as <X .../>; wbemcli
# trips on some of them (FIELD_NOTES "CIM-XML on the wire"). minidom escapes
# '<' and '>' in attribute values, so no '>' occurs inside a tag.
_EMPTY_ELEMENT = re.compile(r"<([A-Za-z_][A-Za-z0-9_.:-]*)((?:\s[^<>]*?)?)\s*/>")


def expand_empty_elements(xml: str) -> str:
    return _EMPTY_ELEMENT.sub(r"<\1\2></\1>", xml)


def class_xml(cls: CIMClass) -> str:
    """CLASS, by pywbem (classes are few and small), empty elements expanded."""
    return expand_empty_elements(cls.tocimxmlstr())


_SCOPES: Final = ("CLASS", "ASSOCIATION", "REFERENCE", "PROPERTY", "METHOD", "PARAMETER",
                  "INDICATION")


def qualifier_declaration_xml(declaration: CIMQualifierDeclaration) -> str:
    """QUALIFIER.DECLARATION with its SCOPE (DSP0201).

    Written here rather than by pywbem: pywbem 1.9 writes the MOF scope
    "any" as an ``ANY`` attribute of SCOPE, which DSP0201 does not define
    and pywbem's own client refuses; "any" means every scope.
    """
    scopes = {k.upper(): bool(v) for k, v in (declaration.scopes or {}).items()}
    every = scopes.get("ANY", False)
    scope = "".join(
        f' {name}="{"true" if every or scopes.get(name, False) else "false"}"'
        for name in _SCOPES
    )
    attrs = f' NAME="{esc_attr(declaration.name)}" TYPE="{declaration.type}"'
    attrs += f' ISARRAY="{"true" if declaration.is_array else "false"}"'
    if declaration.array_size is not None:
        attrs += f' ARRAYSIZE="{int(declaration.array_size)}"'
    for attr, value in (
        ("OVERRIDABLE", declaration.overridable),
        ("TOSUBCLASS", declaration.tosubclass),
        ("TOINSTANCE", declaration.toinstance),
        ("TRANSLATABLE", declaration.translatable),
    ):
        if value is not None:
            attrs += f' {attr}="{"true" if value else "false"}"'
    value = declaration.value
    if value is None:
        body = ""
    elif declaration.is_array:
        body = _array_xml(value, declaration.type, None)
    else:
        body = _value_xml(value, declaration.type, None)
    return (f"<QUALIFIER.DECLARATION{attrs}><SCOPE{scope}></SCOPE>{body}"
            "</QUALIFIER.DECLARATION>")


# Return-value shapes of the intrinsic operations (DSP0200, each operation's), each a
# function from the result object to its CIM-XML element.


def named_instance_xml(instance: CIMInstance) -> str:
    """VALUE.NAMEDINSTANCE (EnumerateInstances)."""
    return (
        f"<VALUE.NAMEDINSTANCE>{instancename_xml(instance.path)}"
        f"{instance_xml(instance)}</VALUE.NAMEDINSTANCE>"
    )


def make_instance_with_path_xml(host: str, namespace: str) -> Callable[[CIMInstance], str]:
    """VALUE.INSTANCEWITHPATH (OpenEnumerateInstances and friends, PullInstancesWithPath)."""

    def encode(instance: CIMInstance) -> str:
        return (
            f"<VALUE.INSTANCEWITHPATH>{instancepath_xml(instance.path, host, namespace)}"
            f"{instance_xml(instance)}</VALUE.INSTANCEWITHPATH>"
        )

    return encode


def make_object_with_path_xml(host: str, namespace: str) -> Callable[[CIMInstance], str]:
    """VALUE.OBJECTWITHPATH (Associators, References, ExecQuery)."""

    def encode(instance: CIMInstance) -> str:
        return (
            f"<VALUE.OBJECTWITHPATH>{instancepath_xml(instance.path, host, namespace)}"
            f"{instance_xml(instance)}</VALUE.OBJECTWITHPATH>"
        )

    return encode


def make_object_path_xml(host: str, namespace: str) -> Callable[[CIMInstanceName], str]:
    """OBJECTPATH (AssociatorNames, ReferenceNames)."""

    def encode(path: CIMInstanceName) -> str:
        return f"<OBJECTPATH>{instancepath_xml(path, host, namespace)}</OBJECTPATH>"

    return encode


def make_instancepath_xml(host: str, namespace: str) -> Callable[[CIMInstanceName], str]:
    """INSTANCEPATH (OpenEnumerateInstancePaths and friends, PullInstancePaths)."""

    def encode(path: CIMInstanceName) -> str:
        return instancepath_xml(path, host, namespace)

    return encode


def instancename_of_path_xml(path: CIMInstanceName) -> str:
    """INSTANCENAME (EnumerateInstanceNames, CreateInstance)."""
    return instancename_xml(path)


# sblim wbemcli (1.6) checks every attribute against its own list and
# refuses EmbeddedObject where later DSP0201 versions allow it besides the scalar
# PROPERTY: on PROPERTY.ARRAY and on PARAMVALUE ("Parse Exception: Unknown
# attribute in list for PROPERTY.ARRAY"). Text content never holds a raw '<'
# (it is escaped), so a match is always a start tag.
_SBLIM_REFUSED = re.compile(rb'(<(?:PROPERTY\.ARRAY|PARAMVALUE)\s[^<>]*?)\sEmbeddedObject="[^"]*"')


def sblim_compatible(chunk: bytes) -> bytes:
    """``chunk`` of a response without the EmbeddedObject attributes sblim wbemcli refuses.

    The values stay: such a client sees an embedded object as the string
    that carries it, which is what it would see from SFCB.
    """
    if b"EmbeddedObject" not in chunk:
        return chunk
    return _SBLIM_REFUSED.sub(rb"\1", chunk)


# --------------------------------------------------------------------------
# Messages
# --------------------------------------------------------------------------


def _message_head(message_id: str) -> str:
    return (
        f'{XML_DECLARATION}<CIM CIMVERSION="2.0" DTDVERSION="2.0">'
        f'<MESSAGE ID="{esc_attr(message_id)}" PROTOCOLVERSION="1.0"><SIMPLERSP>'
    )


_MESSAGE_TAIL: Final = "</SIMPLERSP></MESSAGE></CIM>"


@dataclass(frozen=True)
class OutParam:
    """An OUT parameter of an intrinsic operation (EnumerationContext, EndOfSequence, ...)."""

    name: str
    cim_type: str | None
    value: Any


def paramvalue_xml(
    name: str, value: Any, cim_type: str | None, *, is_array: bool = False,
    embedded: str | None = None,
) -> str:
    """PARAMVALUE with PARAMTYPE (and EmbeddedObject for embedded objects).

    A class (OpenQueryInstances' QueryResultClass) goes as a CLASS element.
    """
    if isinstance(value, CIMClass):
        return f'<PARAMVALUE NAME="{esc_attr(name)}">{class_xml(value)}</PARAMVALUE>'
    if cim_type is None:
        cim_type = _infer_type(value, name)
    if embedded is None and _holds_instance(value):
        embedded = "instance"
    attrs = f' NAME="{esc_attr(name)}"'
    if cim_type is not None:
        attrs += f' PARAMTYPE="{cim_type}"'
    if embedded:
        attrs += f' EmbeddedObject="{embedded}"'
    if value is None:
        body = ""
    elif isinstance(value, list) or is_array:
        body = _array_xml(value, cim_type or "string", embedded)
    elif cim_type == "reference":
        body = value_reference_xml(value)
    else:
        body = _value_xml(value, cim_type or "string", embedded)
    return f"<PARAMVALUE{attrs}>{body}</PARAMVALUE>"


def _holds_instance(value: Any) -> bool:
    if isinstance(value, list):
        return any(isinstance(v, CIMInstance) for v in value)
    return isinstance(value, CIMInstance)


def _infer_type(value: Any, name: str) -> str | None:
    sample = value
    if isinstance(value, list):
        sample = next((v for v in value if v is not None), None)
    if sample is None:
        return None
    if isinstance(sample, (CIMInstance, CIMClass)):
        return "string"
    try:
        return str(cimtype(sample))
    except (TypeError, ValueError) as exc:
        raise EncodeError(f"parameter {name!r}: {exc}") from None


#: The longest error description sent: whatever a message quotes of a
#: request, the answer stays small.
MAX_ERROR_DESCRIPTION = 2000


def _error_xml(error: CIMError) -> str:
    code = int(error.status_code)
    description = error.status_description or ""
    if len(description) > MAX_ERROR_DESCRIPTION:
        description = description[:MAX_ERROR_DESCRIPTION] + "... (cut)"
    instances = "".join(instance_xml(i) for i in (error.instances or ()))
    return f'<ERROR CODE="{code}" DESCRIPTION="{esc_attr(description)}">{instances}</ERROR>'


def imethod_error(message_id: str, method: str, error: CIMError) -> bytes:
    """An IMETHODRESPONSE with ERROR (and the error's CIM_Error instances)."""
    return _encode_message(
        message_id, f'<IMETHODRESPONSE NAME="{esc_attr(method)}">', _safe_error_xml(error),
        "</IMETHODRESPONSE>",
    )


def method_error(message_id: str, method: str, error: CIMError) -> bytes:
    """A METHODRESPONSE with ERROR."""
    return _encode_message(
        message_id, f'<METHODRESPONSE NAME="{esc_attr(method)}">', _safe_error_xml(error),
        "</METHODRESPONSE>",
    )


def _safe_error_xml(error: CIMError) -> str:
    try:
        return _error_xml(error)
    except EncodeError:
        # The error's own text or instances cannot be carried: keep the code,
        # say why the rest is missing rather than failing the response.
        fallback = CIMError(
            error.status_code,
            f"{error.status_code_name}: the error description holds characters "
            "that XML 1.0 cannot carry",
        )
        return _error_xml(fallback)


def export_indication_request(message_id: str, indication: CIMInstance | str,
                              extra: Sequence[CIMProperty | str] = ()) -> bytes:
    """The CIM-XML export request that delivers ``indication`` to a listener
    (DSP0200 "ExportIndication"; DSP0201 SIMPLEEXPREQ).

    ``indication`` is the instance or its INSTANCE (``instance_xml``): one
    indication goes to many listeners, and is encoded once for them all.
    ``extra`` properties, which the instance must not hold, are added to it:
    what differs per listener (IndicationFilterName, SequenceNumber), each a
    CIMProperty or its PROPERTY (``property_xml``, ``integer_property_xml``).
    """
    text = indication if isinstance(indication, str) else instance_xml(indication)
    if extra:
        cut = text.rindex("</INSTANCE>")
        text = "".join((text[:cut], *(p if isinstance(p, str) else _property_xml(p)
                                      for p in extra), text[cut:]))
    return (
        f'{XML_DECLARATION}<CIM CIMVERSION="2.0" DTDVERSION="2.0">'
        f'<MESSAGE ID="{esc_attr(message_id)}" PROTOCOLVERSION="1.0"><SIMPLEEXPREQ>'
        '<EXPMETHODCALL NAME="ExportIndication"><EXPPARAMVALUE NAME="NewIndication">'
        f"{text}"
        "</EXPPARAMVALUE></EXPMETHODCALL></SIMPLEEXPREQ></MESSAGE></CIM>"
    ).encode()


def _encode_message(message_id: str, *middle: str) -> bytes:
    return "".join((_message_head(message_id), *middle, _MESSAGE_TAIL)).encode("utf-8")


def method_response(
    message_id: str,
    method: str,
    return_value: Any,
    return_type: str | None,
    out_params: Mapping[str, Any],
    declaration: CIMMethod | None,
) -> bytes:
    """A METHODRESPONSE: RETURNVALUE with PARAMTYPE, then the OUT parameters.

    Types come from the method's declaration where it has the parameter (so a
    NULL value is typed as well), else from the value.
    """
    parts = [f'<METHODRESPONSE NAME="{esc_attr(method)}">']
    if return_value is not None or return_type is not None:
        cim_type = return_type or _infer_type(return_value, "return value")
        attr = f' PARAMTYPE="{cim_type}"' if cim_type else ""
        body = "" if return_value is None else _value_xml(return_value, cim_type or "string", None)
        parts.append(f"<RETURNVALUE{attr}>{body}</RETURNVALUE>")
    declared = declaration.parameters if declaration is not None else {}
    for name, value in out_params.items():
        decl = declared.get(name)
        if decl is not None:
            parts.append(
                paramvalue_xml(
                    decl.name, value, decl.type, is_array=decl.is_array,
                    embedded=decl.embedded_object,
                )
            )
        else:
            parts.append(paramvalue_xml(name, value, None))
    parts.append("</METHODRESPONSE>")
    return _encode_message(message_id, *parts)


def imethod_response(
    message_id: str, method: str, items: Iterable[str] | None = None,
    out_params: Sequence[OutParam] = (),
) -> bytes:
    """An IMETHODRESPONSE built at once (``items`` None: no IRETURNVALUE, a void operation)."""
    return b"".join(imethod_stream(message_id, method, items, lambda: out_params))


def imethod_stream(
    message_id: str,
    method: str,
    items: Iterable[str] | None,
    out_params: Callable[[], Sequence[OutParam]] = lambda: (),
    chunk_size: int = CHUNK_SIZE,
) -> Iterator[bytes]:
    """An IMETHODRESPONSE as chunks of about ``chunk_size`` bytes.

    ``items`` are the encoded elements of IRETURNVALUE, consumed lazily;
    ``out_params`` is called once they are all written (a pull operation
    knows EndOfSequence only then). An exception from ``items`` propagates
    after the chunks already made: the caller decides how to end the stream.
    """
    buffer = [_message_head(message_id), f'<IMETHODRESPONSE NAME="{esc_attr(method)}">']
    size = 0
    if items is not None:
        buffer.append("<IRETURNVALUE>")
        for item in items:
            buffer.append(item)
            size += len(item)
            if size >= chunk_size:
                yield "".join(buffer).encode("utf-8")
                buffer = []
                size = 0
        buffer.append("</IRETURNVALUE>")
    for param in out_params():
        buffer.append(paramvalue_xml(param.name, param.value, param.cim_type))
    buffer.append("</IMETHODRESPONSE>")
    buffer.append(_MESSAGE_TAIL)
    yield "".join(buffer).encode("utf-8")


__all__ = [
    "CHUNK_SIZE",
    "EncodeError",
    "ExtrinsicCall",
    "IntrinsicCall",
    "KeptCalls",
    "OutParam",
    "RawParam",
    "RequestError",
    "Unsupported",
    "class_xml",
    "classname_xml",
    "expand_empty_elements",
    "imethod_error",
    "imethod_response",
    "imethod_stream",
    "instance_xml",
    "instancename_of_path_xml",
    "instancename_xml",
    "instancepath_xml",
    "make_instance_with_path_xml",
    "make_instancepath_xml",
    "make_object_path_xml",
    "make_object_with_path_xml",
    "method_error",
    "method_response",
    "named_instance_xml",
    "parse_embedded",
    "parse_request",
    "parse_xml",
    "property_value_xml",
    "qualifier_declaration_xml",
    "sblim_compatible",
    "type_method_params",
    "typed_value",
]
