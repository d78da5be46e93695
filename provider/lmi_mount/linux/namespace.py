"""Entering a private mount namespace, and the C library handle of this package.

Owns: ``unshare(CLONE_NEWNS)`` followed by making every mount recursively
private, so that whatever the process mounts afterwards stays invisible to the
host (``lmi-mountd --sandbox`` and the tests); ``setns(2)`` into another
process's mount namespace (``lmi-mount --sandbox``); and ``libc()``, the one ctypes
handle on the C library that ``linux/`` calls through. Must not know: what is
mounted afterwards, mount tables, or options.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import os
from typing import Final

from lmi_mount.mounts.flags import MS_PRIVATE, MS_REC

# <linux/sched.h>. os.unshare() only exists from Python 3.12, hence ctypes.
CLONE_NEWNS: Final = 0x00020000


@functools.cache
def libc() -> ctypes.CDLL:
    """Return the C library, loaded once, with errno capture (``ctypes.get_errno``).

    The prototypes are declared here, once, so that every caller in ``linux/``
    passes the same C types (a ``char *`` is ``bytes`` or ``None``).
    """
    lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    lib.mount.argtypes = (
        ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p,
    )
    lib.mount.restype = ctypes.c_int
    lib.umount2.argtypes = (ctypes.c_char_p, ctypes.c_int)
    lib.umount2.restype = ctypes.c_int
    lib.fstatfs.argtypes = (ctypes.c_int, ctypes.c_void_p)
    lib.fstatfs.restype = ctypes.c_int
    lib.unshare.argtypes = (ctypes.c_int,)
    lib.unshare.restype = ctypes.c_int
    lib.setns.argtypes = (ctypes.c_int, ctypes.c_int)
    lib.setns.restype = ctypes.c_int
    lib.realpath.argtypes = (ctypes.c_char_p, ctypes.c_char_p)
    lib.realpath.restype = ctypes.c_char_p
    return lib


def _single_threaded(action: str, proc_root: str) -> None:
    """EINVAL unless the process runs one thread: a mount namespace belongs to a
    thread's fs_struct, and the kernel moves one that shares it with no other."""
    try:
        threads = len(os.listdir(f"{proc_root}/self/task"))
    except OSError:
        threads = 1  # no procfs to ask: the system call itself is the only check left
    if threads > 1:
        raise OSError(
            errno.EINVAL,
            f"cannot {action}: the process runs {threads} threads and only the calling "
            "one would move; do it before starting any thread",
        )


def enter_mount_namespace(namespace_fd: int, what: str, proc_root: str = "/proc") -> None:
    """Move the calling process into the mount namespace open as ``namespace_fd``
    (``/proc/PID/ns/mnt``; setns(2)), named ``what`` in errors: its mounts, as
    ``lmi-mount --sandbox`` needs to see a sandbox daemon's.

    Call it before any thread starts; needs CAP_SYS_ADMIN. OSError otherwise.
    """
    _single_threaded(f"enter {what}", proc_root)
    if libc().setns(namespace_fd, CLONE_NEWNS) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns(2) into {what} failed: {os.strerror(err)}")


def enter_private_mount_namespace(proc_root: str = "/proc") -> None:
    """Move the calling process into a new mount namespace whose mounts are all private.

    Call it before the process starts any thread: unshare(2) gives the new
    namespace to the calling thread only (CLONE_NEWNS unshares the thread's
    fs_struct), so the other threads would go on mounting in the host's
    namespace. A process with more than one thread (``<proc_root>/self/task``)
    is refused with EINVAL. Needs CAP_SYS_ADMIN (EPERM otherwise).

    Without the second step, mounts of a namespace copied from one with shared
    propagation (systemd makes ``/`` shared) would still propagate to the host
    (mount_namespaces(7), "Shared subtrees"); that is why it is not optional.

    Raises OSError naming the step that failed and the likely cause.
    """
    _single_threaded("enter a private mount namespace", proc_root)
    lib = libc()
    if lib.unshare(CLONE_NEWNS) != 0:
        err = ctypes.get_errno()
        hint = "the process lacks CAP_SYS_ADMIN" if err == errno.EPERM else "see unshare(2)"
        raise OSError(err, f"unshare(CLONE_NEWNS) failed: {os.strerror(err)} ({hint})")
    if lib.mount(None, b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        err = ctypes.get_errno()
        raise OSError(
            err,
            f"mount(none, '/', MS_REC|MS_PRIVATE) failed: {os.strerror(err)}; the new mount "
            "namespace is not private and mounts made now would propagate to the host",
        )
