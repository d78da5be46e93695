"""The domain errors of mount management, raised by the planner and the engine.

Owns: one small hierarchy that every boundary translates once (the CIM layer
maps it with one table in ``cim/errors.py``). Each error names the value it is
about in its message and keeps it in ``value``.

Must not know: CIM status codes or return values, HTTP, or the kernel API.
"""

from __future__ import annotations

from collections.abc import Sequence


class MountError(Exception):
    """Base of the domain errors; ``value`` is the bad or busy value it names."""

    def __init__(self, message: str, *, value: object = None) -> None:
        super().__init__(message)
        self.value = value


class InvalidRequest(MountError):
    """A malformed or impossible argument: relative path, bad option, unknown mode."""


class NotFound(MountError):
    """The mount, fstab line or holder the request names does not exist."""


class AlreadyExists(MountError):
    """The request would create what already exists differently (an fstab line)."""


class InUse(MountError):
    """The mount point is busy: held by others, mounted differently, or open.

    ``processes`` lists the processes that keep it busy, as readable strings,
    when the kernel refused an unmount with EBUSY.
    """

    def __init__(
        self, message: str, *, value: object = None, processes: Sequence[str] = ()
    ) -> None:
        super().__init__(message, value=value)
        self.processes = tuple(processes)


class OperationFailed(MountError):
    """The kernel or the file system refused an operation that was well formed.

    ``errno`` is the OS error number when one is known.
    """

    def __init__(self, message: str, *, value: object = None, errno: int | None = None) -> None:
        super().__init__(message, value=value)
        self.errno = errno


class NotApplied(OperationFailed):
    """The kernel accepted a mount or remount but what is live is not what was asked.

    ``differences`` names each one (an option that did not take, another
    source, another mount point); the change was rolled back.
    """

    def __init__(self, message: str, *, value: object = None,
                 differences: Sequence[str] = ()) -> None:
        super().__init__(message, value=value)
        self.differences = tuple(differences)
