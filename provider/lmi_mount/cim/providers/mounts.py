"""Providers of the mounts and what they sit on: LMI_MountedFileSystem,
LMI_UnixDirectory (mount points) and LMI_LocalFileSystem (what is attached).

Owns: finding one of these instances by its keys without projecting every
mount. Must not know: how instances are built (projection) or changed (the
service).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

from pywbem import CIMInstance, CIMInstanceName

from lmi_mount.cim import names
from lmi_mount.cim.providers.base import Provider, View
from lmi_mount.mounts.mountinfo import MountRecord


def _key(path: CIMInstanceName, name: str) -> str | None:
    value = path.keybindings.get(name)
    return value if isinstance(value, str) else None


class MountedFileSystemProvider(Provider):
    classnames = (names.MOUNTED_FILE_SYSTEM,)

    def instances(self, view: View, classname: str) -> Iterator[CIMInstance]:
        for status in view.statuses:
            yield view.projector.mounted_file_system(status)

    def get(self, view: View, path: CIMInstanceName) -> CIMInstance | None:
        spec, target = _key(path, "FileSystemSpec"), _key(path, "MountPointPath")
        if spec is None or target is None:
            return None
        status = view.status(spec, target)
        return view.projector.mounted_file_system(status) if status is not None else None


class UnixDirectoryProvider(Provider):
    """Mount points: one directory per mount, on the file system that contains it."""

    classnames = (names.UNIX_DIRECTORY,)

    def instances(self, view: View, classname: str) -> Iterator[CIMInstance]:
        seen: set[str] = set()
        for status in view.statuses:
            if status.target not in seen:
                seen.add(status.target)
                yield view.projector.directory(
                    status.target, view.containing_fs_name(status.target)
                )

    def get(self, view: View, path: CIMInstanceName) -> CIMInstance | None:
        target = _key(path, "Name")
        if target is None or view.status_at(target) is None:
            return None
        instance = view.projector.directory(target, view.containing_fs_name(target))
        return instance if _key(path, "FSName") == instance["FSName"] else None


class LocalFileSystemProvider(Provider):
    """The file systems of live mounts, with sizes from statvfs(3)."""

    classnames = (names.LOCAL_FILE_SYSTEM,)

    def instances(self, view: View, classname: str) -> Iterator[CIMInstance]:
        for name, whole in _file_systems(view):
            yield _file_system(view, name, whole)

    def get(self, view: View, path: CIMInstanceName) -> CIMInstance | None:
        wanted = _key(path, "Name")
        return next((_file_system(view, name, whole) for name, whole in _file_systems(view)
                     if name == wanted), None)


def _file_systems(view: View) -> Iterator[tuple[str, MountRecord]]:
    """Each live file system once: its name and the mount that shows it whole
    (``View.file_system_of``)."""
    seen: set[str] = set()
    for status in view.statuses:
        if status.live is not None:
            name, whole = view.file_system_of(status.live)
            if name not in seen:
                seen.add(name)
                yield name, whole


def _file_system(view: View, name: str, whole: MountRecord) -> CIMInstance:
    # Sizes are the superblock's, through any of its mounts; ReadOnly is the
    # superblock's too, not a mount's own flag (statvfs(3) reports either).
    volume = view.context.volume_stats(whole.target)
    if volume is not None:
        volume = dataclasses.replace(volume, read_only="ro" in whole.super_options)
    return view.projector.file_system(name, whole, volume)
