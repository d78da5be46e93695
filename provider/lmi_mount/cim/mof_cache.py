"""Compiled MOF kept on disk, so that a process starts in milliseconds, not a second.

Owns: where the cache lives, the key of an entry (a digest of every input of
a compile), reading an entry only from a place no one else can write and
only as pywbem CIM objects, and writing entries whole. Must not know: what
is compiled or how (the caller passes its inputs and its compile).

Compiling the model with pywbem's MOF compiler into pywbem_mock takes about a
second, most of it the mock repository deep-copying superclasses while it
resolves each class; every lmi-mountd start, every ``pywbemcli --mock-server``
run of the playground and every test process paid it again for the same
bytes. An entry loads in about 50 ms.

Entries are pickles, as pywbemcli's own mock cache is, and loading a pickle
can run code. So an entry is read only if

- its directory passes ``files.check_trusted`` (owned by root or this user,
  not writable by anyone else, nor is any directory above it, not a link);
- the entry itself, opened with ``O_NOFOLLOW``, is a regular file owned by
  this user that neither group nor others may write;
- it names no class but pywbem's CIM objects and CIM types (the unpickler
  resolves nothing else), and holds what the caller stored.

Otherwise it is not an error: the caller's compile runs, as with no cache,
and its result replaces the entry. The key covers the path and bytes of
every file the caller names (``model.compile_inputs``: the MOF tree and the
compiling modules), pywbem's and Python's versions, so a changed input never
meets an old entry; a result is stored only if its inputs read the same
after the compile as before. The cache removes only its own entries of a
kind beyond the newest ``KEEP``. Where the cache is: ``cache_dir``.

Not defended: someone who may already write the trusted directory (root)
can plant an entry of pywbem objects with nonsense inside; it fails where
it is used, not where it is loaded.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import pickle
import re
import stat
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Final, TypeGuard

import pywbem
from pywbem import (
    Char16,
    CIMClass,
    CIMDateTime,
    CIMMethod,
    CIMParameter,
    CIMProperty,
    CIMQualifier,
    CIMQualifierDeclaration,
    MinutesFromUTC,
    NocaseDict,
    Real32,
    Real64,
    Sint8,
    Sint16,
    Sint32,
    Sint64,
    Uint8,
    Uint16,
    Uint32,
    Uint64,
)

from lmi_mount.linux import files

_LOG: Final = logging.getLogger(__name__)

#: Names a cache directory; empty: no cache.
CACHE_DIR_ENV: Final = "LMI_MOUNT_CACHE_DIR"
#: Set by systemd for a unit with ``CacheDirectory=`` (systemd.exec(5)).
SYSTEMD_CACHE_ENV: Final = "CACHE_DIRECTORY"
SYSTEM_CACHE_DIR: Final = Path("/var/cache/lmi-mount")
SUFFIX: Final = ".pickle"
#: Entries kept per kind: two checkouts, or an install and a checkout, sharing
#: a cache do not evict each other at every start.
KEEP: Final = 4
#: The names of our entries, the only files the cache ever removes.
_ENTRY: Final = re.compile(r"[a-z]+-[0-9a-f]{40}" + re.escape(SUFFIX))
_SCRATCH: Final = re.compile(r"\.[a-z]+-[0-9a-f]{40}" + re.escape(SUFFIX) + r"\.\d+\.[0-9a-f]{8}")
#: A scratch file this old is no writer's any more (a write takes milliseconds).
SCRATCH_SECONDS: Final = 3600
#: Changes whenever what an entry holds changes shape.
FORMAT: Final = b"lmi-mount compiled MOF 1"

_CIM_OBJECTS: Final = (
    CIMClass, CIMMethod, CIMParameter, CIMProperty, CIMQualifier, CIMQualifierDeclaration,
    CIMDateTime, MinutesFromUTC, NocaseDict, Char16, Real32, Real64,
    Sint8, Sint16, Sint32, Sint64, Uint8, Uint16, Uint32, Uint64,
)
_LOADABLE: Final[dict[tuple[str, str], type]] = {
    (cls.__module__, cls.__qualname__): cls for cls in _CIM_OBJECTS}

#: What a compile gives and an entry holds: qualifier declarations and classes.
Compiled = tuple[tuple[CIMQualifierDeclaration, ...], tuple[CIMClass, ...]]


def cache_dir() -> Path | None:
    """The cache directory, first match wins: ``$LMI_MOUNT_CACHE_DIR`` (empty: no
    cache); systemd's ``$CACHE_DIRECTORY`` (its first directory, if it is named
    ``lmi-mount``: a program another unit runs inherits that unit's); for root
    ``/var/cache/lmi-mount``; else ``$XDG_CACHE_HOME/lmi-mount`` (default
    ``~/.cache``)."""
    named = os.environ.get(CACHE_DIR_ENV)
    if named is not None:
        return Path(named) if named else None
    systemd = os.environ.get(SYSTEMD_CACHE_ENV, "").split(":")[0]
    if systemd and os.path.isabs(systemd) and Path(systemd).name == SYSTEM_CACHE_DIR.name:
        return Path(systemd)
    if os.geteuid() == 0:
        return SYSTEM_CACHE_DIR
    base = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):  # unset, or relative: invalid (XDG Base Directory)
        base = os.path.expanduser("~/.cache")
    return Path(base, "lmi-mount") if os.path.isabs(base) else None


def key(inputs: Iterable[Path]) -> str:
    """The digest of a compile's inputs: their paths and bytes, pywbem's and
    Python's versions (a pickle is read by the classes that wrote it)."""
    digest = hashlib.sha256(FORMAT)
    digest.update(f"\0{pywbem.__version__}\0{sys.version_info[:2]}".encode())
    for path in sorted(inputs):
        # O_NONBLOCK: a FIFO put in place of a file after the listing does not hang.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
        with open(fd, "rb") as stream:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise OSError(f"{path} is not a regular file")
            content = hashlib.file_digest(stream, "sha256").digest()
        digest.update(f"\0{path}\0{info.st_size}\0".encode(errors="surrogateescape"))
        digest.update(content)
    return digest.hexdigest()[:40]


def cached(kind: str, inputs: Callable[[], Iterable[Path]], compile_: Callable[[], Compiled],
           directory: Path | None = None) -> Compiled:
    """What ``compile_()`` returns: read from the cache entry of ``kind`` for the
    files ``inputs()`` names if there is a trusted one, else compiled and stored
    (unless an input changed while it compiled: the result is then of bytes
    that no key names). ``directory`` defaults to ``cache_dir()``."""
    where = directory if directory is not None else cache_dir()
    if where is None:
        return compile_()
    before = _key_or_none(inputs)
    if before is None:
        return compile_()
    entry = where / f"{kind}-{before}{SUFFIX}"
    found = _read(entry)
    if found is not None:
        return found
    result = compile_()
    if _key_or_none(inputs) == before:
        _write(where, kind, entry, result)
    else:
        _LOG.info("the MOF changed while it compiled; not cached")
    return result


def _key_or_none(inputs: Callable[[], Iterable[Path]]) -> str | None:
    """The key of ``inputs()``; None if one cannot be read (the compile says why
    if it needs that file)."""
    try:
        return key(inputs())
    except Exception as exc:  # any failure here only costs the cache
        _LOG.warning("the compiled MOF cache is not used: %s: %s", type(exc).__name__, exc)
        return None


def _is_compiled(value: object) -> TypeGuard[Compiled]:
    return (isinstance(value, tuple) and len(value) == 2
            and isinstance(value[0], tuple) and isinstance(value[1], tuple)
            and all(isinstance(q, CIMQualifierDeclaration) for q in value[0])
            and all(isinstance(c, CIMClass) for c in value[1]))


class _CimUnpickler(pickle.Unpickler):
    """Resolves pywbem's CIM object and type classes, and nothing else."""

    def find_class(self, module: str, name: str) -> type:
        try:
            return _LOADABLE[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"{module}.{name} is not a CIM object") from None


def _read(entry: Path) -> Compiled | None:
    """The trusted entry's content if it has the shape of a compile's; else None."""
    if not os.path.lexists(entry.parent):
        return None  # the first compile makes it
    try:
        files.check_trusted(entry.parent, "MOF cache directory")
        fd = os.open(entry, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY)
    except FileNotFoundError:
        return None
    except (OSError, files.UntrustedFile) as exc:
        _LOG.warning("not using the compiled MOF cache: %s", exc)
        return None
    with open(fd, "rb") as stream:
        info = os.fstat(stream.fileno())
        if (not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid()
                or info.st_mode & 0o022):
            _LOG.warning("not using the compiled MOF cache entry %s: uid %d, mode %o; "
                         "it is compiled again", entry, info.st_uid,
                         stat.S_IMODE(info.st_mode))
            return None
        try:
            loaded: object = _CimUnpickler(io.BytesIO(stream.read())).load()
        except Exception as exc:  # any damaged entry is compiled again
            _LOG.warning("not using the compiled MOF cache entry %s (%s: %s); "
                         "it is compiled again", entry, type(exc).__name__, exc)
            return None
        if not _is_compiled(loaded):
            return None
        with contextlib.suppress(OSError):
            os.utime(stream.fileno())  # the newest again: pruning goes by age
        return loaded


def _write(where: Path, kind: str, entry: Path, result: Compiled) -> None:
    """Store ``result`` as ``entry`` and remove the entries of ``kind`` beyond the
    newest ``KEEP``. A cache that cannot be written (read-only, full,
    untrusted) only costs time."""
    try:
        where.mkdir(mode=0o700, parents=True, exist_ok=True)
        files.check_trusted(where, "MOF cache directory")
        files.write_new(entry, pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL),
                        mode=0o600)
    except (OSError, files.UntrustedFile) as exc:
        _LOG.debug("compiled MOF not cached: %s", exc)
        return
    ours = [path for path in where.glob(f"{kind}-*{SUFFIX}") if _ENTRY.fullmatch(path.name)]
    with contextlib.suppress(OSError):
        ours.sort(key=lambda path: path.stat().st_mtime_ns, reverse=True)
        for old in (path for path in ours[KEEP:] if path != entry):
            old.unlink()
    # What a writer killed before its rename left (files.write_new's scratch names).
    for scratch in where.glob(f".{kind}-*{SUFFIX}.*"):
        with contextlib.suppress(OSError):
            if (_SCRATCH.fullmatch(scratch.name)
                    and time.time() - scratch.stat().st_mtime > SCRATCH_SECONDS):
                scratch.unlink()
