"""CIM operations to broker calls: DSP0200 1.4 parameters, defaults, results and errors.

Owns: the table of intrinsic operations (name, parameters with their DSP0200
types and defaults, the broker call, the shape of the result), extrinsic
method calls (typing their parameters from the method's declaration), the
pull operations over the server's enumeration contexts (``pull``), ExecQuery
and OpenQueryInstances over WQL (``wql``), and turning every failure into the
CIM-XML ERROR the client expects. A result is encoded eagerly up to
``prefetch_bytes`` (so that the errors of a broker's first steps, a missing
class or instance, still make a clean ERROR response) and streamed after.

Must not know: HTTP, sockets, authentication, XML syntax (``cimxml`` writes
every byte), mounts. It speaks to the broker interface only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

from pywbem import (
    CIM_ERR_FAILED,
    CIM_ERR_FILTERED_ENUMERATION_NOT_SUPPORTED,
    CIM_ERR_INVALID_CLASS,
    CIM_ERR_INVALID_PARAMETER,
    CIM_ERR_METHOD_NOT_FOUND,
    CIM_ERR_NO_SUCH_PROPERTY,
    CIM_ERR_NOT_SUPPORTED,
    CIM_ERR_TYPE_MISMATCH,
    CIMClass,
    CIMClassName,
    CIMError,
    CIMInstance,
    CIMInstanceName,
    CIMProperty,
)

from lmi_mount.cim import jobs, wql
from lmi_mount.cim.broker import class_view
from lmi_mount.server import cimxml
from lmi_mount.server.pull import Batch, ContextTable

log = logging.getLogger("lmi_mount.server.dispatch")

# Enumeration context kinds: what a context's pulls return.
_WITH_PATH: Final = "instances with paths"
_PATHS: Final = "instance paths"
_INSTANCES: Final = "instances"

# DSP0200's intrinsic operations that change classes or qualifier declarations;
# the model is fixed, this server does not offer them.
_UNSUPPORTED: Final = frozenset(
    name.lower() for name in (
        "CreateClass", "ModifyClass", "DeleteClass", "SetQualifier", "DeleteQualifier",
    )
)


@dataclass(frozen=True)
class CimResult:
    """An encoded response: bytes, or chunks drawn lazily; ``status`` is 0 or the CIM error."""

    body: bytes | Iterator[bytes]
    status: int = 0
    #: The CIM error's description (for the log), when ``status`` is one.
    description: str | None = None


def _failed(call: cimxml.IntrinsicCall | cimxml.ExtrinsicCall, exc: Exception) -> CimResult:
    """The error response to ``call`` that raised ``exc``: a CIMError as it is, a
    result CIM-XML cannot carry or an internal error as CIM_ERR_FAILED."""
    if isinstance(exc, CIMError):
        error = exc
    elif isinstance(exc, cimxml.EncodeError):
        error = CIMError(CIM_ERR_FAILED, f"the result cannot be sent: {exc}")
    else:
        log.exception("%s on %s failed", call.method, call_object(call))
        error = CIMError(CIM_ERR_FAILED, f"internal error in {call.method}: "
                         f"{type(exc).__name__}")
    encode = (cimxml.imethod_error if isinstance(call, cimxml.IntrinsicCall)
              else cimxml.method_error)
    return CimResult(encode(call.message_id, call.method, error), int(error.status_code),
                     error.status_description)


#: The intrinsic parameters that name what an operation acts on, most precise first.
_OBJECT_PARAMETERS: Final = ("InstanceName", "ModifiedInstance", "NewInstance", "ObjectName",
                             "ClassName", "SourceInstance")


def call_object(call: cimxml.IntrinsicCall | cimxml.ExtrinsicCall) -> str:
    """What ``call`` acts on, for a log line: its method's target, or the
    instance, object or class an operation names (its namespace when it names
    none)."""
    if isinstance(call, cimxml.ExtrinsicCall):
        return str(call.target)
    for name in _OBJECT_PARAMETERS:
        value = call.params.get(name)
        if isinstance(value, CIMInstance):
            value = value.path if value.path is not None else value.classname
        if isinstance(value, (CIMInstanceName, CIMClassName)) and value.namespace:
            return str(value)  # a path given with its namespace
        if value is not None and not isinstance(value, cimxml.Unsupported):
            return f"{call.namespace}:{value}"
    return call.namespace



class _Params:
    """The IPARAMVALUEs of one call, read with their DSP0200 types; unknown ones are errors."""

    def __init__(self, call: cimxml.IntrinsicCall) -> None:
        self._params = call.params
        self._operation = call.method
        self._used: set[str] = set()

    def raw(self, name: str) -> Any:
        """The value as parsed (str, list, path, instance or None), for untyped parameters."""
        self._used.add(name.lower())
        return self._params.get(name)

    def _error(self, name: str, message: str) -> CIMError:
        return CIMError(CIM_ERR_INVALID_PARAMETER, f"{self._operation}: {name} {message}")

    def boolean(self, name: str, default: bool) -> bool:
        value = self.raw(name)
        if value is None:
            return default
        if not isinstance(value, str):
            raise self._error(name, "must be a boolean")
        return bool(cimxml.typed_value(value, "boolean", f"{self._operation} {name}"))

    def optional_boolean(self, name: str) -> bool | None:
        value = self.raw(name)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self._error(name, "must be a boolean")
        return bool(cimxml.typed_value(value, "boolean", f"{self._operation} {name}"))

    def uint32(self, name: str) -> int | None:
        value = self.raw(name)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self._error(name, "must be an unsigned integer")
        return int(cimxml.typed_value(value, "uint32", f"{self._operation} {name}"))

    def string(self, name: str, *, required: bool = False) -> str | None:
        value = self.raw(name)
        if value is None:
            if required:
                raise self._error(name, "is required")
            return None
        if not isinstance(value, str):
            raise self._error(name, "must be a string")
        return value

    def text(self, name: str) -> str:
        """A required string parameter."""
        value = self.string(name, required=True)
        assert value is not None
        return value

    def classname(self, name: str, *, required: bool = False) -> str | None:
        value = self.raw(name)
        if value is None:
            if required:
                # A missing class name crashed SFCB (CVE-2015-5185): say it instead.
                raise self._error(name, "is required")
            return None
        if isinstance(value, CIMClassName):
            value = value.classname
        if not isinstance(value, str) or not value.strip():
            raise self._error(name, "must be a class name")
        return value

    def instancename(self, name: str, namespace: str) -> CIMInstanceName:
        value = self.raw(name)
        if value is None:
            raise self._error(name, "is required")
        if not isinstance(value, CIMInstanceName):
            raise self._error(name, "must be an instance path (INSTANCENAME)")
        value.namespace = value.namespace or namespace
        return value

    def objectname(self, name: str, namespace: str) -> CIMInstanceName:
        value = self.raw(name)
        if value is None:
            raise self._error(name, "is required")
        if isinstance(value, CIMClassName):
            raise CIMError(
                CIM_ERR_NOT_SUPPORTED,
                f"{self._operation} on a class ({value.classname}) is not supported; "
                "give an instance path",
            )
        if not isinstance(value, CIMInstanceName):
            raise self._error(name, "must be an instance path")
        value.namespace = value.namespace or namespace
        return value

    def instance(self, name: str, *, named: bool) -> CIMInstance:
        value = self.raw(name)
        if not isinstance(value, CIMInstance):
            element = "VALUE.NAMEDINSTANCE" if named else "INSTANCE"
            raise self._error(name, f"is required (an {element})")
        if named and value.path is None:
            raise self._error(name, "must hold the instance's path (VALUE.NAMEDINSTANCE)")
        return value

    def property_list(self, name: str = "PropertyList") -> list[str] | None:
        value = self.raw(name)
        if value is None:
            return None
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or any(not isinstance(v, str) for v in value):
            raise self._error(name, "must be an array of property names")
        return [str(v) for v in value]

    def check_unknown(self) -> None:
        """DSP0200: a parameter the operation does not define is an invalid parameter."""
        unknown = [n for n in self._params if n.lower() not in self._used]
        if unknown:
            named = ", ".join(repr(n[:60]) for n in unknown[:5])
            more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
            raise CIMError(
                CIM_ERR_INVALID_PARAMETER, f"{self._operation} has no parameter {named}{more}")

    def check_filter(self) -> None:
        """Open* with a filter query (DMTF:FQL, DSP0212) is not supported here."""
        language = self.string("FilterQueryLanguage")
        query = self.string("FilterQuery")
        if language is not None or query is not None:
            raise CIMError(
                CIM_ERR_FILTERED_ENUMERATION_NOT_SUPPORTED,
                f"{self._operation}: filter queries ({language or 'FilterQuery'}) are not "
                "supported; use OpenQueryInstances with WQL",
            )


class Dispatcher:
    """Runs decoded CIM operations against ``broker``."""

    def __init__(
        self,
        broker: Any,
        contexts: ContextTable,
        *,
        host: str,
        prefetch_bytes: int = cimxml.CHUNK_SIZE,
    ) -> None:
        self.broker = broker
        self.contexts = contexts
        self.host = host
        self.prefetch_bytes = prefetch_bytes
        self._operations: dict[str, Callable[[cimxml.IntrinsicCall, _Params, Any], CimResult]] = {
            name.lower(): getattr(self, f"_op_{name}")
            for name in (
                "GetClass", "EnumerateClasses", "EnumerateClassNames", "GetQualifier",
                "EnumerateQualifiers", "GetInstance", "EnumerateInstances",
                "EnumerateInstanceNames", "Associators", "AssociatorNames", "References",
                "ReferenceNames", "CreateInstance", "ModifyInstance", "DeleteInstance",
                "GetProperty", "SetProperty",
                "ExecQuery", "OpenEnumerateInstances", "OpenEnumerateInstancePaths",
                "OpenAssociatorInstances", "OpenAssociatorInstancePaths",
                "OpenReferenceInstances", "OpenReferenceInstancePaths", "OpenQueryInstances",
                "PullInstancesWithPath", "PullInstancePaths", "PullInstances",
                "CloseEnumeration", "EnumerationCount",
            )
        }

    # -- entry points ----------------------------------------------------------------------

    def intrinsic(self, call: cimxml.IntrinsicCall, caller: Any) -> CimResult:
        try:
            operation = self._operations.get(call.method.lower())
            if operation is None:
                if call.method.lower() in _UNSUPPORTED:
                    raise CIMError(CIM_ERR_NOT_SUPPORTED,
                                   f"{call.method} is not supported by this server")
                raise CIMError(CIM_ERR_NOT_SUPPORTED, f"unknown operation {call.method!r}")
            return operation(call, _Params(call), caller)
        except Exception as exc:
            return _failed(call, exc)

    def extrinsic(self, call: cimxml.ExtrinsicCall, caller: Any,
                  answer_early: Callable[[], Callable[[bytes], bool] | None] | None = None
                  ) -> CimResult:
        """The response to ``call``. With ``answer_early`` (asked when a method's
        work would start: a function that sends a response body from any
        thread, or None if the call cannot be answered so), a method whose
        job outlasts its window is answered with the job that way while its
        work goes on here."""
        try:
            return self._invoke(call, caller, answer_early)
        except Exception as exc:
            return _failed(call, exc)

    def _invoke(self, call: cimxml.ExtrinsicCall, caller: Any,
                answer_early: Callable[[], Callable[[bytes], bool] | None] | None
                ) -> CimResult:
        target = call.target
        cls = self.broker.get_class(call.namespace, target.classname, local_only=False,
                                    include_qualifiers=True, include_class_origin=False)
        declaration = cls.methods.get(call.method)
        if declaration is None:
            raise CIMError(CIM_ERR_METHOD_NOT_FOUND,
                           f"{cls.classname} has no method {call.method!r}")
        where = f"{cls.classname}.{declaration.name}"
        params = cimxml.type_method_params(call.params, declaration, where)

        def respond(return_value: Any, out: dict[str, Any]) -> bytes:
            return cimxml.method_response(call.message_id, call.method, return_value,
                                          declaration.return_type, out, declaration)

        def may_answer_early() -> Callable[[Any, dict[str, Any]], bool] | None:
            send = answer_early() if answer_early is not None else None
            return None if send is None else lambda rv, out: send(respond(rv, out))

        token = jobs.answer_early.set(None if answer_early is None else may_answer_early)
        try:
            return_value, out = self.broker.invoke_method(
                call.namespace, target, declaration.name, params, caller=caller)
        finally:
            jobs.answer_early.reset(token)
        return CimResult(respond(return_value, out))

    # -- result shaping --------------------------------------------------------------------

    def _single(self, call: cimxml.IntrinsicCall, element: str | None) -> CimResult:
        """A response with one IRETURNVALUE element, or none (``element`` None: void)."""
        items = None if element is None else [element]
        return CimResult(cimxml.imethod_response(call.message_id, call.method, items))

    def _many(
        self,
        call: cimxml.IntrinsicCall,
        items: Iterable[Any],
        encode: Callable[[Any], str],
        out_params: Callable[[], Sequence[cimxml.OutParam]] = lambda: (),
    ) -> CimResult:
        """IRETURNVALUE of many elements: encoded now up to ``prefetch_bytes``, then streamed.

        An error while the prefix is encoded becomes the ERROR response; one
        later, while streaming, raises from the body (the HTTP layer aborts
        the response).
        """
        encode = _skipping_unencodable(encode, call)
        iterator = iter(items)
        encoded: list[str] = []
        size = 0
        finished = True
        for item in iterator:
            text = encode(item)
            encoded.append(text)
            size += len(text)
            if size >= self.prefetch_bytes:
                finished = False
                break
        if finished:
            return CimResult(cimxml.imethod_response(call.message_id, call.method, encoded,
                                                     out_params()))

        def rest() -> Iterator[str]:
            yield from encoded
            try:
                for item in iterator:
                    yield encode(item)
            except cimxml.EncodeError as exc:
                raise CIMError(CIM_ERR_FAILED, f"the result cannot be sent: {exc}") from None
            finally:
                close = getattr(iterator, "close", None)
                if close is not None:
                    close()

        return CimResult(cimxml.imethod_stream(call.message_id, call.method, rest(), out_params))

    def _pull_result(
        self, call: cimxml.IntrinsicCall, batch: Batch, encode: Callable[[Any], str],
        extra: Sequence[cimxml.OutParam] = (),
    ) -> CimResult:
        def out_params() -> list[cimxml.OutParam]:
            return [
                *extra,
                cimxml.OutParam("EnumerationContext", "string", batch.context_id),
                cimxml.OutParam("EndOfSequence", "boolean", batch.end_of_sequence),
            ]

        return self._many(call, batch, encode, out_params)

    # -- classes and qualifiers ------------------------------------------------------------

    def _op_GetClass(self, call: cimxml.IntrinsicCall, p: _Params, caller: Any) -> CimResult:
        classname = p.classname("ClassName", required=True)
        kwargs = dict(local_only=p.boolean("LocalOnly", True),
                      include_qualifiers=p.boolean("IncludeQualifiers", True),
                      include_class_origin=p.boolean("IncludeClassOrigin", False),
                      property_list=p.property_list())
        p.check_unknown()
        cls = self.broker.get_class(call.namespace, classname, **kwargs)
        return self._single(call, cimxml.class_xml(cls))

    def _op_EnumerateClasses(self, call: cimxml.IntrinsicCall, p: _Params,
                             caller: Any) -> CimResult:
        classname = p.classname("ClassName")
        kwargs = dict(deep_inheritance=p.boolean("DeepInheritance", False),
                      local_only=p.boolean("LocalOnly", True),
                      include_qualifiers=p.boolean("IncludeQualifiers", True),
                      include_class_origin=p.boolean("IncludeClassOrigin", False))
        p.check_unknown()
        classes = self.broker.enumerate_classes(call.namespace, classname, **kwargs)
        return self._many(call, classes, cimxml.class_xml)

    def _op_EnumerateClassNames(self, call: cimxml.IntrinsicCall, p: _Params,
                                caller: Any) -> CimResult:
        classname = p.classname("ClassName")
        deep = p.boolean("DeepInheritance", False)
        p.check_unknown()
        names = self.broker.enumerate_class_names(call.namespace, classname,
                                                  deep_inheritance=deep)
        return self._many(call, names, cimxml.classname_xml)

    def _op_GetQualifier(self, call: cimxml.IntrinsicCall, p: _Params, caller: Any) -> CimResult:
        name = p.text("QualifierName")
        p.check_unknown()
        declaration = self.broker.get_qualifier(call.namespace, name)
        return self._single(call, cimxml.qualifier_declaration_xml(declaration))

    def _op_EnumerateQualifiers(self, call: cimxml.IntrinsicCall, p: _Params,
                                caller: Any) -> CimResult:
        p.check_unknown()
        declarations = self.broker.enumerate_qualifiers(call.namespace)
        return self._many(call, declarations, cimxml.qualifier_declaration_xml)

    # -- instance reads ----------------------------------------------------------------------
    #
    # DSP0200 1.4 deprecates LocalOnly for instance operations and recommends
    # that servers treat it as false: it is read (a malformed value is still
    # an error) and then ignored, as pywbem_mock does.

    def _op_GetInstance(self, call: cimxml.IntrinsicCall, p: _Params, caller: Any) -> CimResult:
        path = p.instancename("InstanceName", call.namespace)
        p.boolean("LocalOnly", True)
        kwargs = dict(property_list=p.property_list(),
                      include_qualifiers=p.boolean("IncludeQualifiers", False),
                      include_class_origin=p.boolean("IncludeClassOrigin", False),
                      local_only=False)
        p.check_unknown()
        instance = self.broker.get_instance(call.namespace, path, **kwargs)
        return self._single(call, cimxml.instance_xml(instance))

    def _op_EnumerateInstances(self, call: cimxml.IntrinsicCall, p: _Params,
                               caller: Any) -> CimResult:
        classname = p.classname("ClassName", required=True)
        p.boolean("LocalOnly", True)
        kwargs = dict(
            deep_inheritance=p.boolean("DeepInheritance", True),
            property_list=p.property_list(),
            include_qualifiers=p.boolean("IncludeQualifiers", False),
            include_class_origin=p.boolean("IncludeClassOrigin", False),
            local_only=False,
        )
        p.check_unknown()
        instances = self.broker.enumerate_instances(call.namespace, classname, **kwargs)
        return self._many(call, instances, cimxml.named_instance_xml)

    def _op_EnumerateInstanceNames(self, call: cimxml.IntrinsicCall, p: _Params,
                                   caller: Any) -> CimResult:
        classname = p.classname("ClassName", required=True)
        p.check_unknown()
        names = self.broker.enumerate_instance_names(call.namespace, classname)
        return self._many(call, names, cimxml.instancename_of_path_xml)

    def _association_args(self, p: _Params, *, associators: bool) -> dict[str, Any]:
        args: dict[str, Any] = {}
        if associators:
            args["assoc_class"] = p.classname("AssocClass")
        args["result_class"] = p.classname("ResultClass")
        args["role"] = p.string("Role")
        if associators:
            args["result_role"] = p.string("ResultRole")
        return args

    def _op_Associators(self, call: cimxml.IntrinsicCall, p: _Params, caller: Any) -> CimResult:
        path = p.objectname("ObjectName", call.namespace)
        args = self._association_args(p, associators=True)
        args.update(property_list=p.property_list(),
                    include_qualifiers=p.boolean("IncludeQualifiers", False),
                    include_class_origin=p.boolean("IncludeClassOrigin", False))
        p.check_unknown()
        instances = self.broker.associators(call.namespace, path, **args)
        return self._many(call, instances,
                          cimxml.make_object_with_path_xml(self.host, call.namespace))

    def _op_AssociatorNames(self, call: cimxml.IntrinsicCall, p: _Params,
                            caller: Any) -> CimResult:
        path = p.objectname("ObjectName", call.namespace)
        args = self._association_args(p, associators=True)
        p.check_unknown()
        names = self.broker.associator_names(call.namespace, path, **args)
        return self._many(call, names, cimxml.make_object_path_xml(self.host, call.namespace))

    def _op_References(self, call: cimxml.IntrinsicCall, p: _Params, caller: Any) -> CimResult:
        path = p.objectname("ObjectName", call.namespace)
        args = self._association_args(p, associators=False)
        args.update(property_list=p.property_list(),
                    include_qualifiers=p.boolean("IncludeQualifiers", False),
                    include_class_origin=p.boolean("IncludeClassOrigin", False))
        p.check_unknown()
        instances = self.broker.references(call.namespace, path, **args)
        return self._many(call, instances,
                          cimxml.make_object_with_path_xml(self.host, call.namespace))

    def _op_ReferenceNames(self, call: cimxml.IntrinsicCall, p: _Params,
                           caller: Any) -> CimResult:
        path = p.objectname("ObjectName", call.namespace)
        args = self._association_args(p, associators=False)
        p.check_unknown()
        names = self.broker.reference_names(call.namespace, path, **args)
        return self._many(call, names, cimxml.make_object_path_xml(self.host, call.namespace))

    # -- instance writes ---------------------------------------------------------------------

    def _op_CreateInstance(self, call: cimxml.IntrinsicCall, p: _Params,
                           caller: Any) -> CimResult:
        instance = p.instance("NewInstance", named=False)
        p.check_unknown()
        path = self.broker.create_instance(call.namespace, instance, caller=caller)
        return self._single(call, cimxml.instancename_of_path_xml(path))

    def _op_ModifyInstance(self, call: cimxml.IntrinsicCall, p: _Params,
                           caller: Any) -> CimResult:
        instance = p.instance("ModifiedInstance", named=True)
        instance.path.namespace = instance.path.namespace or call.namespace
        p.boolean("IncludeQualifiers", True)  # deprecated (DSP0200 1.4); read, then ignored
        property_list = p.property_list()
        p.check_unknown()
        self.broker.modify_instance(call.namespace, instance, property_list=property_list,
                                    caller=caller)
        return self._single(call, None)

    def _op_DeleteInstance(self, call: cimxml.IntrinsicCall, p: _Params,
                           caller: Any) -> CimResult:
        path = p.instancename("InstanceName", call.namespace)
        p.check_unknown()
        self.broker.delete_instance(call.namespace, path, caller=caller)
        return self._single(call, None)

    # DSP0200 1.4 deprecates GetProperty and SetProperty; sblim wbemcli still
    # offers them (gp, sp), so they map onto GetInstance and ModifyInstance.

    def _declared_property(self, namespace: str, classname: str, name: str) -> CIMProperty:
        cls = self.broker.get_class(namespace, classname, local_only=False,
                                    include_qualifiers=False, include_class_origin=False)
        declared = cls.properties.get(name)
        if declared is None:
            raise CIMError(CIM_ERR_NO_SUCH_PROPERTY, f"{cls.classname} has no property {name!r}")
        return declared

    def _op_GetProperty(self, call: cimxml.IntrinsicCall, p: _Params, caller: Any) -> CimResult:
        path = p.instancename("InstanceName", call.namespace)
        name = p.text("PropertyName")
        p.check_unknown()
        declared = self._declared_property(call.namespace, path.classname, name)
        instance = self.broker.get_instance(call.namespace, path, property_list=[declared.name])
        prop = instance.properties.get(declared.name)
        return self._single(call, "" if prop is None else cimxml.property_value_xml(prop))

    def _op_SetProperty(self, call: cimxml.IntrinsicCall, p: _Params, caller: Any) -> CimResult:
        path = p.instancename("InstanceName", call.namespace)
        name = p.text("PropertyName")
        raw = p.raw("NewValue")
        p.check_unknown()
        declared = self._declared_property(call.namespace, path.classname, name)
        what = f"SetProperty {declared.name}"
        if declared.type == "reference":
            if raw is not None and not isinstance(raw, CIMInstanceName):
                raise CIMError(CIM_ERR_TYPE_MISMATCH, f"{what}: expected a reference")
            value = raw
        elif declared.embedded_object and isinstance(raw, str):
            value = cimxml.parse_embedded(raw, what)
        elif raw is None or isinstance(raw, (str, list)):
            if raw is not None and isinstance(raw, list) != bool(declared.is_array):
                raise CIMError(CIM_ERR_TYPE_MISMATCH, f"{what}: expected "
                               f"{'an array' if declared.is_array else 'a single value'}")
            value = cimxml.typed_value(raw, declared.type, what)
        else:
            raise CIMError(CIM_ERR_TYPE_MISMATCH, f"{what}: expected a {declared.type} value")
        prop = CIMProperty(declared.name, value, type=declared.type, is_array=declared.is_array,
                           reference_class=declared.reference_class,
                           embedded_object=declared.embedded_object)
        instance = CIMInstance(path.classname, path=path, properties=[prop])
        self.broker.modify_instance(call.namespace, instance, property_list=[declared.name],
                                    caller=caller)
        return self._single(call, None)

    # -- queries -------------------------------------------------------------------------------

    def _query(self, namespace: str, language: str | None, text: str | None
               ) -> tuple[wql.Query, CIMClass, Iterator[CIMInstance]]:
        def get_class(classname: str) -> CIMClass | None:
            try:
                return self.broker.get_class(namespace, classname, local_only=False,
                                             include_qualifiers=False,
                                             include_class_origin=False)
            except CIMError as error:
                if error.status_code != CIM_ERR_INVALID_CLASS:
                    raise
                return None

        return wql.execute(
            language, text, get_class=get_class,
            enumerate_instances=lambda classname, properties: self.broker.enumerate_instances(
                namespace, classname, deep_inheritance=True, property_list=properties))

    def _op_ExecQuery(self, call: cimxml.IntrinsicCall, p: _Params, caller: Any) -> CimResult:
        language = p.string("QueryLanguage", required=True)
        text = p.string("Query", required=True)
        p.check_unknown()
        _query, _cls, rows = self._query(call.namespace, language, text)
        return self._many(call, rows, cimxml.make_object_with_path_xml(self.host, call.namespace))

    def _op_OpenQueryInstances(self, call: cimxml.IntrinsicCall, p: _Params,
                               caller: Any) -> CimResult:
        language = p.string("FilterQueryLanguage", required=True)
        text = p.string("FilterQuery", required=True)
        return_class = p.boolean("ReturnQueryResultClass", False)
        timeout, max_count = self._open_options(p)
        p.check_unknown()
        query, cls, rows = self._query(call.namespace, language, text)
        extra: list[cimxml.OutParam] = []
        if return_class:
            # The result rows are instances of the queried class, narrowed to the selection.
            result_class = class_view(cls, local_only=False, include_qualifiers=False,
                                      include_class_origin=False,
                                      property_list=list(query.properties)
                                      if query.properties is not None else None)
            extra.append(cimxml.OutParam("QueryResultClass", None, result_class))
        batch = self.contexts.open(rows, namespace=call.namespace, kind=_INSTANCES,
                                   owner=_owner(caller), timeout=timeout, max_count=max_count)
        return self._pull_result(call, batch, cimxml.instance_xml, extra)

    # -- pull operations -----------------------------------------------------------------------

    def _open_options(self, p: _Params) -> tuple[int, int]:
        timeout = self.contexts.timeout(p.uint32("OperationTimeout"))
        self.contexts.check_continue_on_error(p.optional_boolean("ContinueOnError"))
        max_count = self.contexts.max_count(p.uint32("MaxObjectCount"), required=False)
        return timeout, max_count

    def _open(self, call: cimxml.IntrinsicCall, p: _Params, caller: Any,
              items: Callable[[], Iterator[Any]], kind: str) -> CimResult:
        p.check_filter()
        timeout, max_count = self._open_options(p)
        p.check_unknown()
        iterator = items()
        batch = self.contexts.open(iterator, namespace=call.namespace, kind=kind,
                                   owner=_owner(caller), timeout=timeout, max_count=max_count)
        if kind == _PATHS:
            encode = cimxml.make_instancepath_xml(self.host, call.namespace)
        else:
            encode = cimxml.make_instance_with_path_xml(self.host, call.namespace)
        return self._pull_result(call, batch, encode)

    def _op_OpenEnumerateInstances(self, call: cimxml.IntrinsicCall, p: _Params,
                                   caller: Any) -> CimResult:
        classname = p.classname("ClassName", required=True)
        kwargs = dict(deep_inheritance=p.boolean("DeepInheritance", True),
                      property_list=p.property_list(),
                      include_class_origin=p.boolean("IncludeClassOrigin", False))
        return self._open(call, p, caller, lambda: iter(self.broker.enumerate_instances(
            call.namespace, classname, **kwargs)), _WITH_PATH)

    def _op_OpenEnumerateInstancePaths(self, call: cimxml.IntrinsicCall, p: _Params,
                                       caller: Any) -> CimResult:
        classname = p.classname("ClassName", required=True)
        return self._open(call, p, caller, lambda: iter(self.broker.enumerate_instance_names(
            call.namespace, classname)), _PATHS)

    def _op_OpenAssociatorInstances(self, call: cimxml.IntrinsicCall, p: _Params,
                                    caller: Any) -> CimResult:
        path = p.instancename("InstanceName", call.namespace)
        args = self._association_args(p, associators=True)
        args.update(property_list=p.property_list(),
                    include_class_origin=p.boolean("IncludeClassOrigin", False))
        return self._open(call, p, caller, lambda: iter(self.broker.associators(
            call.namespace, path, **args)), _WITH_PATH)

    def _op_OpenAssociatorInstancePaths(self, call: cimxml.IntrinsicCall, p: _Params,
                                        caller: Any) -> CimResult:
        path = p.instancename("InstanceName", call.namespace)
        args = self._association_args(p, associators=True)
        return self._open(call, p, caller, lambda: iter(self.broker.associator_names(
            call.namespace, path, **args)), _PATHS)

    def _op_OpenReferenceInstances(self, call: cimxml.IntrinsicCall, p: _Params,
                                   caller: Any) -> CimResult:
        path = p.instancename("InstanceName", call.namespace)
        args = self._association_args(p, associators=False)
        args.update(property_list=p.property_list(),
                    include_class_origin=p.boolean("IncludeClassOrigin", False))
        return self._open(call, p, caller, lambda: iter(self.broker.references(
            call.namespace, path, **args)), _WITH_PATH)

    def _op_OpenReferenceInstancePaths(self, call: cimxml.IntrinsicCall, p: _Params,
                                       caller: Any) -> CimResult:
        path = p.instancename("InstanceName", call.namespace)
        args = self._association_args(p, associators=False)
        return self._open(call, p, caller, lambda: iter(self.broker.reference_names(
            call.namespace, path, **args)), _PATHS)

    def _pull(self, call: cimxml.IntrinsicCall, p: _Params, caller: Any, kind: str,
              encode: Callable[[Any], str]) -> CimResult:
        identifier = p.text("EnumerationContext")
        max_count = self.contexts.max_count(p.uint32("MaxObjectCount"), required=True)
        p.check_unknown()
        batch = self.contexts.pull(identifier, namespace=call.namespace, kind=kind,
                                   owner=_owner(caller), max_count=max_count)
        return self._pull_result(call, batch, encode)

    def _op_PullInstancesWithPath(self, call: cimxml.IntrinsicCall, p: _Params,
                                  caller: Any) -> CimResult:
        return self._pull(call, p, caller, _WITH_PATH,
                          cimxml.make_instance_with_path_xml(self.host, call.namespace))

    def _op_PullInstancePaths(self, call: cimxml.IntrinsicCall, p: _Params,
                              caller: Any) -> CimResult:
        return self._pull(call, p, caller, _PATHS,
                          cimxml.make_instancepath_xml(self.host, call.namespace))

    def _op_PullInstances(self, call: cimxml.IntrinsicCall, p: _Params,
                          caller: Any) -> CimResult:
        return self._pull(call, p, caller, _INSTANCES, cimxml.instance_xml)

    def _op_CloseEnumeration(self, call: cimxml.IntrinsicCall, p: _Params,
                             caller: Any) -> CimResult:
        identifier = p.text("EnumerationContext")
        p.check_unknown()
        self.contexts.close(identifier, namespace=call.namespace, owner=_owner(caller))
        return self._single(call, None)

    def _op_EnumerationCount(self, call: cimxml.IntrinsicCall, p: _Params,
                             caller: Any) -> CimResult:
        identifier = p.text("EnumerationContext")
        p.check_unknown()
        # DSP0200: a server that cannot tell the count cheaply returns NULL.
        # Counting would mean drawing the whole enumeration; the context is
        # only checked (it must exist and be the caller's).
        self.contexts.check(identifier, namespace=call.namespace, owner=_owner(caller))
        return CimResult(cimxml.imethod_response(call.message_id, call.method, []))


def _owner(caller: Any) -> str | None:
    return getattr(caller, "user", None)


def _skipping_unencodable(encode: Callable[[Any], str],
                          call: cimxml.IntrinsicCall) -> Callable[[Any], str]:
    """``encode`` for one element of a many-element result, leaving out (and
    logging) one that CIM-XML cannot carry: a control character in a mount
    point's name, which any local user can make with FUSE, must not fail
    every enumeration for everyone. A single-element result still fails."""
    def skipping(item: Any) -> str:
        try:
            return encode(item)
        except cimxml.EncodeError as exc:
            log.warning("%s of %s: an element is left out: %s", call.method, call.namespace,
                        exc)
            return ""
    return skipping
