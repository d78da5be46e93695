"""Who keeps a mount busy: the processes using files at or under a path.

Owns: the scan of ``<proc_root>/<pid>/{cwd,root,exe,fd/*,maps}`` that names
the processes an unmount would fail on (EBUSY), and the one-line description
used in "in use" messages; ``mount_users``, the same scan by mount id. Must
not know: mount tables, holders or what the caller does with the answer.

The match is by path, like ``lsof +D`` and unlike ``fuser -m``: a process
working in the source directory of a bind mount is not reported for the bind's
mount point, because it does not keep that mount point busy.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from typing import Final, Literal

from lmi_mount.linux import mountapi
from lmi_mount.text import decimal

How = Literal["cwd", "root", "exe", "fd", "map"]

# A process may exit, or hide its files from us, between listing and reading.
_GONE_OR_HIDDEN: Final = frozenset({errno.ENOENT, errno.ESRCH, errno.EACCES, errno.EPERM})
_LINKS: Final[tuple[How, ...]] = ("cwd", "root", "exe")
# proc(5): a link to an unlinked file reads as "<path> (deleted)".
_DELETED: Final = " (deleted)"


@dataclass(frozen=True)
class ProcessUse:
    """One way a process uses a path: as its cwd, root, executable, an open fd or a mapping."""

    pid: int
    command: str
    how: How
    path: str


def busy_processes(target: str, proc_root: str = "/proc") -> list[ProcessUse]:
    """Return the uses of files at or under ``target`` by any process, ordered by pid.

    Processes that vanish during the scan, and files we may not read
    (EACCES), are skipped silently. Each (pid, how, path) appears once: a
    library mapped five times is one use.
    """
    prefix = target if target.endswith("/") else target + "/"

    def inside(path: str) -> bool:
        path = path.removesuffix(_DELETED)
        return path == target or path.startswith(prefix)

    uses: list[ProcessUse] = []
    for pid in sorted(_pids(proc_root)):
        base = f"{proc_root}/{pid}"
        found: dict[tuple[How, str], None] = {}
        for how, path in _paths_of(base):
            if inside(path):
                found.setdefault((how, path))
        if found:
            command = _command(base)
            uses.extend(ProcessUse(pid, command, how, path) for how, path in found)
    return uses


def mount_users(mount_ids: Collection[int], proc_root: str = "/proc") -> list[int] | None:
    """The pids of the processes that keep a mount of ``mount_ids`` busy: a working
    or root directory of any of their threads, the executable, an open file or
    a mapped file on it; None where the kernel does not tell a file's mount
    (STATX_MNT_ID, Linux 5.8).

    By mount id, not path: a process of another mount namespace whose working
    directory has the same path string uses another mount, and a thread that
    left its process's working directory (unshare(CLONE_FS)) is seen by its
    own. A file whose mount cannot be read (a dead FUSE or NFS server) is
    skipped, not taken for the kernel's lack. A bound unix socket keeps its
    mount too and is not seen.
    """
    if not mountapi.has_mount_ids():
        return None
    wanted = set(mount_ids)
    return [pid for pid in sorted(_pids(proc_root))
            if _uses_any(f"{proc_root}/{pid}", wanted)]


def _uses_any(base: str, wanted: set[int]) -> bool:
    """Whether the process at ``base`` uses a mount of ``wanted`` (unreadable
    parts skipped); its open files first, the cheapest to read."""
    for fd_name in _entries(f"{base}/fdinfo"):
        try:
            with open(f"{base}/fdinfo/{fd_name}", encoding="ascii", errors="replace") as info:
                for line in info:
                    if line.startswith("mnt_id:"):
                        if decimal(line[7:].strip()) in wanted:
                            return True
                        break
        except OSError as exc:
            _tolerate(exc)
    links = [f"{base}/{how}" for how in _LINKS]
    links += [f"{base}/task/{task}/{how}" for task in _entries(f"{base}/task")
              for how in ("cwd", "root")]
    # A library is mapped several times: each file once.
    mapped: dict[str, str] = {}
    for area in _entries(f"{base}/map_files"):
        target = _readlink(f"{base}/map_files/{area}")
        if target is not None:
            mapped.setdefault(target, f"{base}/map_files/{area}")
    for link in (*links, *mapped.values()):
        try:
            fd = os.open(link, os.O_PATH | os.O_CLOEXEC)  # the magic link is followed
        except OSError as exc:
            _tolerate(exc)
            continue
        try:
            if mountapi.mount_id(fd) in wanted:
                return True
        finally:
            os.close(fd)
    return False


def describe(uses: Iterable[ProcessUse], limit: int = 10) -> str:
    """Describe uses per process, e.g. ``pid 123 (sleep, cwd /mnt/x)``, for error messages.

    At most ``limit`` processes are named; the rest are counted. No uses gives
    ``no process found``: the mount is then held by a submount or the kernel.
    """
    per_pid: dict[int, tuple[str, list[str]]] = {}
    for use in uses:
        per_pid.setdefault(use.pid, (use.command, []))[1].append(f"{use.how} {use.path}")
    if not per_pid:
        return "no process found"
    parts = [
        f"pid {pid} ({command}, {', '.join(items)})"
        for pid, (command, items) in list(per_pid.items())[:limit]
    ]
    if len(per_pid) > limit:
        parts.append(f"and {len(per_pid) - limit} more processes")
    return "; ".join(parts)


def _pids(proc_root: str) -> Iterator[int]:
    with os.scandir(proc_root) as entries:
        for entry in entries:
            pid = decimal(entry.name)
            if pid is not None:
                yield pid


def _paths_of(base: str) -> Iterator[tuple[How, str]]:
    """Every path the process at ``base`` uses; unreadable parts are skipped."""
    for how in _LINKS:
        link = _readlink(f"{base}/{how}")
        if link is not None:
            yield how, link
    for fd in _entries(f"{base}/fd"):
        link = _readlink(f"{base}/fd/{fd}")
        if link is not None and link.startswith("/"):
            yield "fd", link
    yield from (("map", path) for path in _mapped_files(f"{base}/maps"))


def _mapped_files(maps: str) -> Iterator[str]:
    """File paths in a proc(5) ``maps`` file: the sixth field, which may contain spaces."""
    try:
        with open(maps, encoding="utf-8", errors="surrogateescape") as stream:
            lines = stream.readlines()
    except OSError as exc:
        _tolerate(exc)
        return
    for line in lines:
        fields = line.rstrip("\n").split(maxsplit=5)
        if len(fields) == 6 and fields[5].startswith("/"):
            yield fields[5]


def _entries(directory: str) -> list[str]:
    """The names in a /proc directory; none when it is gone or hidden from us."""
    try:
        return os.listdir(directory)
    except OSError as exc:
        _tolerate(exc)
        return []


def _readlink(path: str) -> str | None:
    try:
        return os.readlink(path)
    except OSError as exc:
        _tolerate(exc)
        return None


def _command(base: str) -> str:
    try:
        with open(f"{base}/comm", encoding="utf-8", errors="replace") as stream:
            return stream.read().rstrip("\n")
    except OSError as exc:
        _tolerate(exc)
        return "?"


def _tolerate(exc: OSError) -> None:
    """Swallow the errors of a process that went away or hides; re-raise anything else."""
    if exc.errno not in _GONE_OR_HIDDEN:
        raise exc
