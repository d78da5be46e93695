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
and its result replaces the entry. The key covers the MOF bytes, the
compiling modules' source, pywbem's and Python's versions, so a changed
input never meets an old entry. Where the cache is: ``cache_dir``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import pickle
import stat
import sys
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
    cache); systemd's ``$CACHE_DIRECTORY`` (the first one); for root
    ``/var/cache/lmi-mount``; else ``$XDG_CACHE_HOME/lmi-mount`` (default
    ``~/.cache``)."""
    named = os.environ.get(CACHE_DIR_ENV)
    if named is not None:
        return Path(named) if named else None
    systemd = os.environ.get(SYSTEMD_CACHE_ENV, "").split(":")[0]
    if systemd:
        return Path(systemd)
    if os.geteuid() == 0:
        return SYSTEM_CACHE_DIR
    base = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):  # unset, or relative: invalid (XDG Base Directory)
        base = os.path.expanduser("~/.cache")
    return Path(base, "lmi-mount") if os.path.isabs(base) else None


def key(inputs: Iterable[Path]) -> str:
    """The digest of a compile's inputs: their names and bytes, pywbem's and
    Python's versions (a pickle is read by the classes that wrote it)."""
    digest = hashlib.sha256(FORMAT)
    digest.update(f"\0{pywbem.__version__}\0{sys.version_info[:2]}".encode())
    for path in sorted(inputs):
        data = path.read_bytes()
        digest.update(f"\0{path.name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()[:40]


def cached(kind: str, inputs: Iterable[Path], compile_: Callable[[], Compiled],
           directory: Path | None = None) -> Compiled:
    """What ``compile_()`` returns for ``inputs``: read from the cache entry of
    ``kind`` if there is a trusted one, else compiled and stored. ``directory``
    defaults to ``cache_dir()``."""
    where = directory if directory is not None else cache_dir()
    if where is None:
        return compile_()
    entry = where / f"{kind}-{key(inputs)}{SUFFIX}"
    found = _read(entry)
    if _is_compiled(found):
        return found
    result = compile_()
    _write(where, kind, entry, result)
    return result


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


def _read(entry: Path) -> object | None:
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
            return loaded
        except Exception as exc:  # any damaged entry is compiled again
            _LOG.warning("not using the compiled MOF cache entry %s (%s: %s); "
                         "it is compiled again", entry, type(exc).__name__, exc)
            return None


def _write(where: Path, kind: str, entry: Path, result: Compiled) -> None:
    """Store ``result`` as ``entry`` and remove the older entries of ``kind``. A
    cache that cannot be written (read-only, full, untrusted) only costs time."""
    try:
        where.mkdir(mode=0o700, parents=True, exist_ok=True)
        files.check_trusted(where, "MOF cache directory")
        files.write_new(entry, pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL),
                        mode=0o600)
    except (OSError, files.UntrustedFile) as exc:
        _LOG.debug("compiled MOF not cached: %s", exc)
        return
    for old in where.glob(f"{kind}-*{SUFFIX}"):
        if old != entry:
            with contextlib.suppress(OSError):
                old.unlink()
