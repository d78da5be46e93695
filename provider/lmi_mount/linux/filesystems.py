"""Which file system types can mount on this machine, and which spec is a local path.

Owns: the boot check of an fstab line's type (the kernel's ``/proc/filesystems``,
a module the kernel would load for it (``fs-TYPE`` in ``modules.alias``, what
``request_module("fs-%s")`` asks for), or a ``mount.TYPE`` helper of mount(8)),
the well-known network and FUSE types accepted before their helper is
installed (with the package that provides it), and the shapes of specs that
name no local path (network shares, tags). Must not know: fstab syntax, CIM.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

#: Where mount(8) looks for mount.TYPE helpers (util-linux: /sbin, /sbin/fs.d,
#: /sbin/fs), and /usr/sbin of merged-/usr systems.
HELPER_DIRS: Final = ("/sbin", "/sbin/fs.d", "/sbin/fs", "/usr/sbin")

#: Types an administrator writes into fstab before the machine can mount them
#: (the helper comes with a package), and that package (Debian's name).
WELL_KNOWN_TYPES: Final = {
    "nfs": "nfs-common",
    "nfs4": "nfs-common",
    "cifs": "cifs-utils",
    "smb3": "cifs-utils",
    "sshfs": "sshfs",
    "fuse.sshfs": "sshfs",
    "9p": "the kernel's 9p module",
    "virtiofs": "the kernel's virtiofs module",
    "ceph": "ceph-common",
    "glusterfs": "glusterfs-client",
    "fuse": "fuse3",
    "fuse3": "fuse3",
    "fuseblk": "fuse3",
}

#: The tags mount(8) and systemd resolve through /dev/disk/by-*.
TAGS: Final = ("UUID", "LABEL", "PARTUUID", "PARTLABEL", "ID")

# A FUSE type names its program: fuse.sshfs, fuse3.gocryptfs.
_FUSE_TYPE: Final = re.compile(r"fuse3?\.([A-Za-z0-9_.+-]+)")


def is_local_path(spec: str) -> bool:
    """Whether ``spec`` names a local file or device (and may be checked as one).

    Not a local path: ``//host/share`` (CIFS), ``host:/path`` and
    ``user@host:path`` (NFS, sshfs), a tag (``UUID=``, ``LABEL=``, ...), and any
    word without a leading ``/`` (``tmpfs``, a 9p or virtiofs tag).
    """
    return spec.startswith("/") and not spec.startswith("//")


def tag_of(spec: str) -> tuple[str, str] | None:
    """(tag, value) of a ``TAG=value`` spec mount(8) resolves, else None."""
    tag, sep, value = spec.partition("=")
    return (tag, value) if sep and tag in TAGS and value else None


@dataclass(frozen=True, slots=True)
class TypeCheck:
    """Whether a type can mount here: ``problem`` refuses it, ``warning`` accepts it."""

    problem: str | None = None
    warning: str | None = None


def check_fstype(
    fstype: str,
    *,
    proc_root: str = "/proc",
    modules_root: str = "/lib/modules",
    helper_dirs: Sequence[str] = HELPER_DIRS,
) -> TypeCheck:
    """The boot check of ``fstype``: known to the kernel, to a module, or to a helper.

    A well-known network or FUSE type whose helper is missing is accepted
    with a warning naming the package that provides it (the line is meant
    for a machine that will have it); any other unknown type is refused:
    ``mount -a`` and systemd would fail on it at boot.
    """
    if fstype in ("none", "auto", "swap"):
        # A bind's "none", "auto" probed by mount(8), a swap line for swapon(8).
        return TypeCheck()
    if "," in fstype:
        # A list mount(8) tries in turn: each must be one it can try.
        checks = [check_fstype(part, proc_root=proc_root, modules_root=modules_root,
                               helper_dirs=helper_dirs) for part in fstype.split(",")]
        problems = [check.problem for check in checks if check.problem]
        warnings = [check.warning for check in checks if check.warning]
        return TypeCheck("; ".join(problems) or None, "; ".join(warnings) or None)
    if _known(fstype, proc_root, modules_root, helper_dirs):
        return TypeCheck()
    fuse = _FUSE_TYPE.fullmatch(fstype)
    if fuse is not None:
        program = fuse.group(1)
        if _helper(fstype.split(".", 1)[0], helper_dirs) and _on_path(program):
            return TypeCheck()
        return TypeCheck(warning=(
            f"file system type {fstype!r} needs mount.fuse and the FUSE program "
            f"{program!r}, not installed here yet"))
    package = WELL_KNOWN_TYPES.get(fstype)
    if package is not None:
        return TypeCheck(warning=(
            f"file system type {fstype!r} cannot be mounted here yet: install {package}"))
    return TypeCheck(problem=(
        f"file system type {fstype!r} is unknown here: not in /proc/filesystems, no kernel "
        f"module provides it and there is no mount.{fstype} helper; mount -a and systemd "
        "would fail on the line at boot"))


def _known(fstype: str, proc_root: str, modules_root: str, helper_dirs: Sequence[str]) -> bool:
    try:
        with open(f"{proc_root}/filesystems", encoding="utf-8", errors="replace") as stream:
            if any(line.split()[-1:] == [fstype] for line in stream):
                return True
    except OSError:
        pass
    if _helper(fstype, helper_dirs):
        return True
    release = os.uname().release
    try:
        with open(f"{modules_root}/{release}/modules.alias", encoding="utf-8",
                  errors="replace") as stream:
            wanted = f"alias fs-{fstype} "
            return any(line.startswith(wanted) for line in stream)
    except OSError:
        return False


def _helper(fstype: str, helper_dirs: Sequence[str]) -> bool:
    return any(os.access(os.path.join(d, f"mount.{fstype}"), os.X_OK) for d in helper_dirs)


def _on_path(program: str) -> bool:
    path = os.environ.get("PATH", os.defpath) + os.pathsep + os.pathsep.join(HELPER_DIRS)
    return any(os.access(os.path.join(d, program), os.X_OK) for d in path.split(os.pathsep) if d)
