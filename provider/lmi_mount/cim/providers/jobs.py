"""Provider of LMI_MountJob: reading jobs, GetError, RequestStateChange, DeleteInstance.

Owns: the CIM face of ``cim.jobs`` (CIM_ConcreteJob semantics: only a job that
has not started can be terminated; an ended job may be deleted before its
TimeBeforeRemoval runs out). Must not know: what a job's work does.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Final

from pywbem import (
    CIM_ERR_FAILED,
    CIM_ERR_INVALID_PARAMETER,
    CIM_ERR_NOT_FOUND,
    CIMError,
    CIMInstance,
    CIMInstanceName,
    Uint32,
)

from lmi_mount.cim import names
from lmi_mount.cim.jobs import Job
from lmi_mount.cim.providers.base import Caller, Provider, View
from lmi_mount.text import decimal

_PREFIX: Final = f"LMI:{names.MOUNT_JOB}:"

# CIM_ConcreteJob.RequestStateChange: RequestedState 4 Terminate, 5 Kill;
# return values 0 Completed with No Error, 4097 Invalid State Transition.
_TERMINATE: Final = (4, 5)
_RSC_OK: Final = Uint32(0)
_RSC_INVALID_TRANSITION: Final = Uint32(4097)
_RSC_NOT_SUPPORTED: Final = Uint32(1)


def job_number(path: CIMInstanceName | None) -> int | None:
    value = path.keybindings.get("InstanceID") if path is not None else None
    if isinstance(value, str) and value.startswith(_PREFIX):
        return decimal(value[len(_PREFIX) :])
    return None


class JobProvider(Provider):
    classnames = (names.MOUNT_JOB,)
    read_only_methods = frozenset({"geterror", "geterrors"})

    def instances(self, view: View, classname: str) -> Iterator[CIMInstance]:
        jobs = view.context.jobs
        for job in jobs.jobs():
            yield view.projector.job(job, jobs.time_before_removal)

    def get(self, view: View, path: CIMInstanceName) -> CIMInstance | None:
        job = self._job(view, path)
        if job is None:
            return None
        return view.projector.job(job, view.context.jobs.time_before_removal)

    def invoke(
        self,
        view: View,
        path: CIMInstanceName,
        method: str,
        params: Mapping[str, Any],
        caller: Caller,
    ) -> tuple[Any, dict[str, Any]]:
        job = self._job(view, path)
        if job is None:
            raise CIMError(CIM_ERR_NOT_FOUND, f"no job {path.keybindings.get('InstanceID')!r}")
        name = method.lower()
        if name == "geterror":
            return Uint32(0), ({"Error": job.error} if job.error is not None else {})
        if name == "geterrors":
            return Uint32(0), {"Errors": [job.error] if job.error is not None else []}
        if name == "requeststatechange":
            args = {k.lower(): v for k, v in params.items()}
            requested = args.get("requestedstate")
            if requested is None:
                raise CIMError(
                    CIM_ERR_INVALID_PARAMETER, "RequestStateChange needs RequestedState"
                )
            if int(requested) not in _TERMINATE:
                return _RSC_NOT_SUPPORTED, {}
            ok = view.context.jobs.terminate(job.number)
            return (_RSC_OK if ok else _RSC_INVALID_TRANSITION), {}
        return super().invoke(view, path, method, params, caller)

    def delete(self, view: View, path: CIMInstanceName) -> None:
        job = self._job(view, path)
        if job is None:
            raise CIMError(CIM_ERR_NOT_FOUND, f"no job {path.keybindings.get('InstanceID')!r}")
        if not view.context.jobs.delete(job.number):
            raise CIMError(CIM_ERR_FAILED, f"job {job.instance_id!r} is still running")

    @staticmethod
    def _job(view: View, path: CIMInstanceName) -> Job | None:
        number = job_number(path)
        return view.context.jobs.get(number) if number is not None else None
