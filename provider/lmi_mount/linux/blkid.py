"""Tags (``LABEL=``, ``UUID=``, ...) to devices as mount(8) finds them without udev: libblkid.

Owns: ``devices_with_tag``, every device libblkid's probe finds with a tag
(through ctypes), what libmount asks libblkid (``mnt_resolve_tag``) when
udev's /dev/disk/by-* links do not name the device (a container, an
initramfs, a host without udev). Must not know: mounts, fstab, CIM.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import threading
from collections.abc import Iterator
from typing import Final

#: The tags libblkid evaluates (``ID=`` is udev's alone).
TAGS: Final = frozenset({"UUID", "LABEL", "PARTUUID", "PARTLABEL"})

# Each call has a cache of its own; calls are serialized all the same:
# libblkid documents no thread safety. Probing is libblkid's, unbounded as
# it is for mount(8): a block device that hangs its reads hangs the call.
_lock = threading.Lock()


@functools.cache
def _library() -> ctypes.CDLL | None:
    """libblkid with its calls declared."""
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("blkid") or "libblkid.so.1")
    except OSError:
        return None
    lib.blkid_get_cache.argtypes = (ctypes.c_void_p, ctypes.c_char_p)
    lib.blkid_get_cache.restype = ctypes.c_int
    lib.blkid_put_cache.argtypes = (ctypes.c_void_p,)
    lib.blkid_put_cache.restype = None
    lib.blkid_probe_all.argtypes = (ctypes.c_void_p,)
    lib.blkid_probe_all.restype = ctypes.c_int
    lib.blkid_dev_iterate_begin.argtypes = (ctypes.c_void_p,)
    lib.blkid_dev_iterate_begin.restype = ctypes.c_void_p
    lib.blkid_dev_set_search.argtypes = (ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p)
    lib.blkid_dev_set_search.restype = ctypes.c_int
    lib.blkid_dev_next.argtypes = (ctypes.c_void_p, ctypes.c_void_p)
    lib.blkid_dev_next.restype = ctypes.c_int
    lib.blkid_dev_iterate_end.argtypes = (ctypes.c_void_p,)
    lib.blkid_dev_iterate_end.restype = None
    lib.blkid_dev_devname.argtypes = (ctypes.c_void_p,)
    lib.blkid_dev_devname.restype = ctypes.c_char_p
    return lib


def available() -> bool:
    """Whether libblkid can be loaded here."""
    return _library() is not None


def devices_with_tag(tag: str, value: str) -> list[str]:
    """Every block device whose ``tag`` is ``value``, as libblkid probes them all
    (``blkid -t TAG=value -o device``): a tag names a device only when it names
    one. Empty when none has it, or libblkid is not installed."""
    lib = _library()
    if lib is None or tag not in TAGS or not value or "\0" in value:
        return []
    found: list[str] = []
    with _private_cache(lib) as cache:
        if cache is None:
            return []
        lib.blkid_probe_all(cache)
        iterator = lib.blkid_dev_iterate_begin(cache)
        if not iterator:
            return []
        try:
            lib.blkid_dev_set_search(iterator, tag.encode(),
                                     value.encode("utf-8", "surrogateescape"))
            device = ctypes.c_void_p()
            while lib.blkid_dev_next(iterator, ctypes.byref(device)) == 0:
                name = lib.blkid_dev_devname(device)
                if name:
                    found.append(name.decode("utf-8", "surrogateescape"))
        finally:
            lib.blkid_dev_iterate_end(iterator)
    return sorted(set(found))


@contextlib.contextmanager
def _private_cache(lib: ctypes.CDLL) -> Iterator[ctypes.c_void_p | None]:
    """A libblkid cache of this call's own, kept in /dev/null (None if libblkid
    gives none), under the lock: without one, libblkid writes the host's
    /run/blkid/blkid.tab, from a sandbox too."""
    with _lock:
        cache = ctypes.c_void_p()
        if lib.blkid_get_cache(ctypes.byref(cache), b"/dev/null") != 0:
            yield None
            return
        try:
            yield cache
        finally:
            lib.blkid_put_cache(cache)
