"""fanotify's mount events (Linux 6.15+), as a judge of what the kernel reports.

lmi-mountd watches the mount table with the mountinfo poll; this source is kept
here so that the contract suite can show, on each kernel it runs on, why:
fanotify reports attaches and detaches, and no remount.
"""

from __future__ import annotations

import ctypes
import os
from typing import Final

from lmi_mount.linux.namespace import libc
from lmi_mount.linux.watch import DescriptorSource

# <linux/fanotify.h>; the system headers here are older than 6.15.
FAN_CLOEXEC: Final = 0x00000001
FAN_NONBLOCK: Final = 0x00000002
FAN_REPORT_MNT: Final = 0x00004000
FAN_MARK_ADD: Final = 0x00000001
FAN_MARK_MNTNS: Final = 0x00000110
FAN_MNT_ATTACH: Final = 0x01000000
FAN_MNT_DETACH: Final = 0x02000000


class FanotifyMounts(DescriptorSource):
    """Mount events of this process's mount namespace (a ``watch`` source)."""

    name = "fanotify mount events"

    def __init__(self, namespace: str = "/proc/self/ns/mnt") -> None:
        lib = libc()
        lib.fanotify_init.argtypes = (ctypes.c_uint, ctypes.c_uint)
        lib.fanotify_init.restype = ctypes.c_int
        lib.fanotify_mark.argtypes = (ctypes.c_int, ctypes.c_uint, ctypes.c_uint64,
                                      ctypes.c_int, ctypes.c_char_p)
        lib.fanotify_mark.restype = ctypes.c_int
        fd = lib.fanotify_init(FAN_REPORT_MNT | FAN_CLOEXEC | FAN_NONBLOCK, os.O_RDONLY)
        if fd < 0:
            error = ctypes.get_errno()
            raise OSError(error, f"fanotify_init(FAN_REPORT_MNT): {os.strerror(error)}")
        super().__init__(fd)
        ns = os.open(namespace, os.O_RDONLY | os.O_CLOEXEC)
        try:
            if lib.fanotify_mark(fd, FAN_MARK_ADD | FAN_MARK_MNTNS,
                                 FAN_MNT_ATTACH | FAN_MNT_DETACH, ns, None) < 0:
                error = ctypes.get_errno()
                self.close()
                raise OSError(error, f"fanotify_mark(FAN_MARK_MNTNS): {os.strerror(error)}")
        finally:
            os.close(ns)
