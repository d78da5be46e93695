"""The machine's libmount, through ctypes: the oracle for fstab parsing and option meaning.

util-linux's libmount is what mount(8), findmnt(8) and systemd's fstab
generator read fstab with, so the tests compare lmi-mount's reading with it
(same input to both, same result) instead of with the project's own idea of
the format. Owns: loading ``libmount.so.1`` (``requires_libmount`` skips with a
reason where it is absent), ``parse_fstab`` (every entry of a file as libmount
reads it, fields as bytes) and ``mount_flags`` (the MS_* flags mount(8)
derives from an option string, left to right). Must not know: lmi-mount.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import tempfile
from dataclasses import dataclass

import pytest

_MNT_ITER_FORWARD = 0
_MNT_LINUX_MAP = 1


@functools.cache
def _library() -> ctypes.CDLL | None:
    for name in ("libmount.so.1", ctypes.util.find_library("mount")):
        if not name:
            continue
        try:
            lib = ctypes.CDLL(name, use_errno=True)
        except OSError:
            continue
        lib.mnt_new_table.restype = ctypes.c_void_p
        lib.mnt_free_table.argtypes = [ctypes.c_void_p]
        lib.mnt_table_parse_fstab.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.mnt_table_set_parser_errcb.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        lib.mnt_new_iter.restype = ctypes.c_void_p
        lib.mnt_new_iter.argtypes = [ctypes.c_int]
        lib.mnt_free_iter.argtypes = [ctypes.c_void_p]
        lib.mnt_table_next_fs.argtypes = [ctypes.c_void_p, ctypes.c_void_p,
                                          ctypes.POINTER(ctypes.c_void_p)]
        for getter in ("source", "target", "fstype", "options"):
            function = getattr(lib, f"mnt_fs_get_{getter}")
            function.restype = ctypes.c_char_p
            function.argtypes = [ctypes.c_void_p]
        for getter in ("freq", "passno"):
            function = getattr(lib, f"mnt_fs_get_{getter}")
            function.restype = ctypes.c_int
            function.argtypes = [ctypes.c_void_p]
        lib.mnt_get_builtin_optmap.restype = ctypes.c_void_p
        lib.mnt_get_builtin_optmap.argtypes = [ctypes.c_int]
        lib.mnt_optstr_get_flags.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_ulong),
                                             ctypes.c_void_p]
        return lib
    return None


requires_libmount = pytest.mark.skipif(
    _library() is None,
    reason="libmount.so.1 (util-linux) is not installed: it is the oracle of these tests",
)

_ERRCB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int)


@dataclass(frozen=True)
class Entry:
    """One fstab entry as libmount reads it; ``options`` is None when the line has none."""

    source: bytes
    target: bytes
    fstype: bytes
    options: bytes | None
    freq: int
    passno: int


@dataclass(frozen=True)
class Table:
    entries: tuple[Entry, ...]
    #: Line numbers libmount reported as parse errors (and skipped).
    errors: tuple[int, ...]


def parse_fstab(data: bytes) -> Table:
    """Every entry of an fstab whose bytes are ``data``, as mnt_table_parse_fstab reads it."""
    lib = _library()
    assert lib is not None, "use requires_libmount"
    errors: list[int] = []

    def on_error(_table: int, _filename: bytes, line: int) -> int:
        errors.append(line)
        return 1  # recoverable: skip the line, go on (libmount's default)

    callback = _ERRCB(on_error)
    with tempfile.NamedTemporaryFile(prefix="fstab-oracle-") as scratch:
        scratch.write(data)
        scratch.flush()
        table = lib.mnt_new_table()
        try:
            lib.mnt_table_set_parser_errcb(table, ctypes.cast(callback, ctypes.c_void_p))
            code = lib.mnt_table_parse_fstab(table, os.fsencode(scratch.name))
            if code < 0:
                raise OSError(-code, f"libmount could not read {scratch.name}")
            entries = []
            iterator = lib.mnt_new_iter(_MNT_ITER_FORWARD)
            fs = ctypes.c_void_p()
            try:
                while lib.mnt_table_next_fs(table, iterator, ctypes.byref(fs)) == 0:
                    entries.append(Entry(
                        lib.mnt_fs_get_source(fs) or b"",
                        lib.mnt_fs_get_target(fs) or b"",
                        lib.mnt_fs_get_fstype(fs) or b"",
                        lib.mnt_fs_get_options(fs),
                        lib.mnt_fs_get_freq(fs),
                        lib.mnt_fs_get_passno(fs),
                    ))
            finally:
                lib.mnt_free_iter(iterator)
        finally:
            lib.mnt_free_table(table)
    return Table(tuple(entries), tuple(errors))


def mount_flags(options: str) -> int:
    """The MS_* flags mount(8) asks the kernel for with ``options``, read left to
    right by libmount (mnt_optstr_get_flags with the Linux map: a later word wins,
    ``user``/``users`` add nosuid,nodev,noexec and ``owner``/``group`` nosuid,nodev
    where they stand)."""
    lib = _library()
    assert lib is not None, "use requires_libmount"
    flags = ctypes.c_ulong(0)
    code = lib.mnt_optstr_get_flags(os.fsencode(options), ctypes.byref(flags),
                                    lib.mnt_get_builtin_optmap(_MNT_LINUX_MAP))
    if code < 0:
        raise ValueError(f"libmount cannot read the options {options!r} ({code})")
    return flags.value
