"""Tags (``LABEL=``, ``UUID=``, ...) to devices as mount(8) finds them without udev: libblkid.

Owns: ``evaluate_tag``, libblkid's ``blkid_evaluate_tag(3)`` through ctypes,
the call libmount makes (``mnt_resolve_tag``) when udev's /dev/disk/by-*
links do not name the device (a container, an initramfs, a host without
udev). Must not know: mounts, fstab, CIM.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import threading
from typing import Final

#: The tags libblkid evaluates (``ID=`` is udev's alone).
TAGS: Final = frozenset({"UUID", "LABEL", "PARTUUID", "PARTLABEL"})

# blkid_evaluate_tag keeps a cache per call when given none; calls are
# serialized all the same: libblkid documents no thread safety.
_lock = threading.Lock()


@functools.cache
def _library() -> tuple[ctypes.CDLL, ctypes.CDLL] | None:
    """libblkid with ``blkid_evaluate_tag`` declared, and the C library (``free``)."""
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("blkid") or "libblkid.so.1")
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    lib.blkid_evaluate_tag.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p)
    lib.blkid_evaluate_tag.restype = ctypes.c_void_p  # malloc'd: the caller frees it
    libc.free.argtypes = (ctypes.c_void_p,)
    libc.free.restype = None
    return lib, libc


def available() -> bool:
    """Whether libblkid can be loaded here."""
    return _library() is not None


def evaluate_tag(tag: str, value: str) -> str | None:
    """The device whose ``tag`` is ``value`` (``/dev/loop3``), as libblkid finds
    it by probing the block devices; None when none has it, the tag is not
    one libblkid knows, or libblkid is not installed."""
    loaded = _library()
    if loaded is None or tag not in TAGS or not value or "\0" in value:
        return None
    lib, libc = loaded
    with _lock:
        found = lib.blkid_evaluate_tag(tag.encode(), value.encode("utf-8", "surrogateescape"),
                                       None)
        if not found:
            return None
        try:
            return ctypes.string_at(found).decode("utf-8", "surrogateescape")
        finally:
            libc.free(found)
