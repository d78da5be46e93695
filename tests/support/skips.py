"""Skip markers for tests that need root, a kernel file system type or a tool.

Owns: ``requires_root``, ``requires_fs(fstype)`` and ``requires_tool(name)``,
each a ``pytest.mark.skipif`` whose reason says what is missing. Must not
know: what the tests do with it.
"""

from __future__ import annotations

import functools
import os
import shutil

import pytest

# Tools such as mkfs.ext4 live in sbin, which a non-login PATH may lack.
_SBIN = ("/usr/local/sbin", "/usr/sbin", "/sbin")

requires_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root (uid 0): mount(2), unshare(2) and loop devices"
)


@functools.cache
def kernel_filesystems(proc_root: str = "/proc") -> frozenset[str]:
    """The file system types the running kernel knows (``/proc/filesystems``)."""
    try:
        with open(f"{proc_root}/filesystems", encoding="ascii") as stream:
            return frozenset(line.split()[-1] for line in stream if line.strip())
    except OSError:
        return frozenset()


def has_tool(name: str) -> str | None:
    """Path of the program ``name`` on PATH or in the sbin directories, or None."""
    search = os.pathsep.join([os.environ.get("PATH", os.defpath), *_SBIN])
    return shutil.which(name, path=search)


def requires_fs(fstype: str) -> pytest.MarkDecorator:
    """Skip unless the kernel lists ``fstype`` in /proc/filesystems."""
    return pytest.mark.skipif(
        fstype not in kernel_filesystems(),
        reason=f"the kernel does not know file system type {fstype!r} (not in /proc/filesystems)",
    )


def requires_tool(name: str) -> pytest.MarkDecorator:
    """Skip unless the program ``name`` is installed."""
    return pytest.mark.skipif(
        has_tool(name) is None, reason=f"{name} is not installed (not on PATH nor in sbin)"
    )
