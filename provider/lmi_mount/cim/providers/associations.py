"""Providers of the model's associations.

Owns: the association instances, and answering "which associations refer to
this object" from the object itself where it can (a mount's associations are
built from that one mount, not by projecting every mount of the host).

Must not know: how the generic Associators/References traversal works (the
broker does it from ``references_to``).
"""

from __future__ import annotations

from collections.abc import Iterator

from pywbem import CIMInstance, CIMInstanceName

from lmi_mount.cim import names
from lmi_mount.cim.jobs import Job
from lmi_mount.cim.providers.base import Provider, View
from lmi_mount.cim.providers.jobs import job_number
from lmi_mount.engine import MountStatus

_MOUNT = names.MOUNTED_FILE_SYSTEM.lower()


def _mount_of(view: View, path: CIMInstanceName) -> MountStatus | None:
    if path.classname.lower() != _MOUNT:
        return None
    spec, target = path.keybindings.get("FileSystemSpec"), path.keybindings.get("MountPointPath")
    if not isinstance(spec, str) or not isinstance(target, str):
        return None
    return view.status(spec, target)


class MountAssociationProvider(Provider):
    """The per-mount associations: host, settings, mount point, attached file system."""

    classnames = associations = (
        names.HOSTED_MOUNT,
        names.MOUNTED_FILE_SYSTEM_ELEMENT_SETTING_DATA,
        names.MOUNT_POINT,
        names.ATTACHED_FILE_SYSTEM,
    )

    def instances(self, view: View, classname: str) -> Iterator[CIMInstance]:
        for status in view.statuses:
            yield from self._of_mount(view, classname, status)

    def references_to(
        self, view: View, classname: str, path: CIMInstanceName
    ) -> Iterator[CIMInstance]:
        status = _mount_of(view, path)
        if status is not None:
            yield from self._of_mount(view, classname, status)
        elif path.classname.lower() == _MOUNT:
            return  # a mount that does not exist has no associations
        else:
            yield from super().references_to(view, classname, path)

    def _of_mount(self, view: View, classname: str, status: MountStatus) -> Iterator[CIMInstance]:
        projector = view.projector
        kind = classname.lower()
        if kind == names.HOSTED_MOUNT.lower():
            yield projector.hosted_mount(status)
        elif kind == names.MOUNTED_FILE_SYSTEM_ELEMENT_SETTING_DATA.lower():
            for setting, is_current, is_next in projector.settings_of(status):
                yield projector.element_setting_data(status, setting, is_current, is_next)
        elif kind == names.MOUNT_POINT.lower():
            yield projector.mount_point(status, view.containing_fs_name(status.target))
        elif kind == names.ATTACHED_FILE_SYSTEM.lower() and status.live is not None:
            yield projector.attached_file_system(status, view.file_system_of(status.live)[0])


class ServiceAssociationProvider(Provider):
    """The service's associations: hosted on the computer system, with its capabilities."""

    classnames = associations = (names.HOSTED_MOUNT_SERVICE, names.MOUNT_ELEMENT_CAPABILITIES)

    def instances(self, view: View, classname: str) -> Iterator[CIMInstance]:
        if classname.lower() == names.HOSTED_MOUNT_SERVICE.lower():
            yield view.projector.hosted_service()
        else:
            yield view.projector.element_capabilities()


class JobAssociationProvider(Provider):
    """Jobs: owned by the service, affecting the mount they were started for."""

    classnames = associations = (names.AFFECTED_MOUNT_JOB_ELEMENT, names.OWNING_MOUNT_JOB_ELEMENT)

    def instances(self, view: View, classname: str) -> Iterator[CIMInstance]:
        for job in view.context.jobs.jobs():
            yield from self._of_job(view, classname, job)

    def references_to(
        self, view: View, classname: str, path: CIMInstanceName
    ) -> Iterator[CIMInstance]:
        number = job_number(path) if path.classname.lower() == names.MOUNT_JOB.lower() else None
        if number is not None:
            job = view.context.jobs.get(number)
            if job is not None:
                yield from self._of_job(view, classname, job)
            return
        yield from super().references_to(view, classname, path)

    @staticmethod
    def _of_job(view: View, classname: str, job: Job) -> Iterator[CIMInstance]:
        projector = view.projector
        if classname.lower() == names.OWNING_MOUNT_JOB_ELEMENT.lower():
            yield projector.owning_job_element(job)
        else:
            # The mount by its own name once the job says it (a CreateMount's
            # Mount: the client may have spelled the source through a symlink),
            # and only elements that exist now: the mount a DeleteMount job
            # released, or a failed CreateMount's, would be a reference to nothing.
            made = job.out_parameters.get("Mount") if job.done else None
            elements = [made] if isinstance(made, CIMInstanceName) else job.affected
            for element in elements:
                if element.classname.lower() != _MOUNT or _mount_of(view, element) is not None:
                    yield projector.affected_job_element(job, element)

