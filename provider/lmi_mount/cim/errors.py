"""Engine errors -> CIM: one table, and the CIM_Error instances that carry details.

Owns: how every domain error becomes either a CIMError (the request itself
is wrong: DSP0200 status codes) or a method return value of the service's
ValueMap (the request was fine and the operation failed: 3 Timeout, 4 Failed,
6 In Use) with a CIM_Error instance (DSP1054 / CIM_Error 2.49) for the
``Error`` OUT parameter and for jobs.

Must not know: the engine's internals, the kernel, XML.
"""

from __future__ import annotations

import errno as errno_codes
from typing import Final

from pywbem import (
    CIM_ERR_FAILED,
    CIM_ERR_INVALID_PARAMETER,
    CIM_ERR_NOT_FOUND,
    CIMError,
    CIMInstance,
    CIMProperty,
    Uint16,
    Uint32,
)

from lmi_mount.mounts.errors import (
    AlreadyExists,
    InUse,
    InvalidRequest,
    MountError,
    NotFound,
    OperationFailed,
)

#: Return values of CreateMount / ModifyMount / DeleteMount (the draft's ValueMap).
RV_SUCCESS: Final = Uint32(0)
RV_NOT_SUPPORTED: Final = Uint32(1)
RV_UNKNOWN: Final = Uint32(2)
RV_TIMEOUT: Final = Uint32(3)
RV_FAILED: Final = Uint32(4)
RV_INVALID_PARAMETER: Final = Uint32(5)
RV_IN_USE: Final = Uint32(6)
RV_JOB_STARTED: Final = Uint32(4096)

OWNING_ENTITY: Final = "lmi-mount"

# The one table. A class maps either to a CIMError status (the request is at
# fault: the client gets an exception and nothing changed) or to a return
# value (the request was valid; the operation failed and says why in Error).
_AS_CIM_ERROR: Final[tuple[tuple[type[MountError], int], ...]] = (
    (InvalidRequest, CIM_ERR_INVALID_PARAMETER),
    (NotFound, CIM_ERR_NOT_FOUND),
)
# A mount point taken by another fstab line is In Use, as one mounted
# otherwise is: DSP0200 allows a method call no CIM_ERR_ALREADY_EXISTS.
_AS_RETURN_VALUE: Final[tuple[tuple[type[MountError], Uint32], ...]] = (
    (InUse, RV_IN_USE),
    (AlreadyExists, RV_IN_USE),
    (OperationFailed, RV_FAILED),
)

# CIM_Error.ErrorType (CIM_Error.mof): 4 Software Error, 10 Unknown... and
# PerceivedSeverity: 2 Low, 4 Major. ProbableCause 0 Unknown. ErrorSourceFormat
# 1 Other (the source is the request's bad value, not an object path).
_ERROR_TYPE_SOFTWARE: Final = Uint16(4)
_ERROR_TYPE_OTHER: Final = Uint16(1)
_SEVERITY_MAJOR: Final = Uint16(4)
_SEVERITY_LOW: Final = Uint16(2)
_SOURCE_FORMAT_OTHER: Final = Uint16(1)
_SOURCE_FORMAT_TEXT: Final = (
    "the value of the request that the error is about (a path, an option or a name)")

_MESSAGE_IDS: Final = {InUse: "LMIMNT0006", AlreadyExists: "LMIMNT0011",
                       OperationFailed: "LMIMNT0004"}


def cim_error_for(exc: MountError) -> CIMError | None:
    """The CIMError a request-level domain error becomes, or None for an operation failure."""
    for kind, status in _AS_CIM_ERROR:
        if isinstance(exc, kind):
            return CIMError(status, str(exc))
    return None


def return_value_for(exc: MountError) -> Uint32:
    """The method return value of an operation failure (4 Failed when nothing closer fits)."""
    for kind, value in _AS_RETURN_VALUE:
        if isinstance(exc, kind):
            if isinstance(exc, OperationFailed) and exc.errno == errno_codes.ETIMEDOUT:
                return RV_TIMEOUT
            return value
    return RV_FAILED


def cim_error_instance(
    message: str,
    *,
    status: int = CIM_ERR_FAILED,
    source: str | None = None,
    message_id: str = "LMIMNT0004",
    arguments: list[str] | None = None,
) -> CIMInstance:
    """A CIM_Error instance (embedded, no path) describing ``message``."""
    properties: dict[str, object] = {
        "ErrorType": _ERROR_TYPE_SOFTWARE,
        "OwningEntity": OWNING_ENTITY,
        "MessageID": message_id,
        "Message": message,
        # An empty array has no type of its own: declare it.
        "MessageArguments": CIMProperty(
            "MessageArguments", arguments or [], type="string", is_array=True
        ),
        "PerceivedSeverity": _SEVERITY_MAJOR,
        "ProbableCause": Uint16(0),
        "CIMStatusCode": Uint32(status),
    }
    if source is not None:
        properties["ErrorSource"] = source
        # CIM_Error.mof: a format of Other MUST be spelled out.
        properties["ErrorSourceFormat"] = _SOURCE_FORMAT_OTHER
        properties["OtherErrorSourceFormat"] = _SOURCE_FORMAT_TEXT
    return CIMInstance("CIM_Error", properties=properties)


def error_instance_for(exc: MountError) -> CIMInstance:
    """The CIM_Error that explains an operation failure (In Use names the processes)."""
    message_id = next(
        (mid for kind, mid in _MESSAGE_IDS.items() if isinstance(exc, kind)), "LMIMNT0004"
    )
    arguments = list(exc.processes) if isinstance(exc, InUse) else []
    source = None if exc.value is None else str(exc.value)
    return cim_error_instance(str(exc), source=source, message_id=message_id, arguments=arguments)
