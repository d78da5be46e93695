"""Being told that the mount table or a file changed, instead of asking again.

Owns: the kernel's change notifications this service listens to:

* changes of this process's mount namespace: ``poll(2)`` on
  ``/proc/self/mountinfo`` reports ``POLLPRI`` after any change of the
  namespace's mount table (proc(5), "mountinfo"), remounts included.
  fanotify's mount events (``FAN_MNT_ATTACH``/``FAN_MNT_DETACH``, Linux
  6.15+) report attaches and detaches but no remount (the contract suite
  shows it on this kernel), so they cannot replace the poll, and the poll
  needs no help from them;
* changes of one file (fstab) by inotify(7) on its directory, because editors
  and lmi-mount itself replace the file by a rename;
* and ``Poke``, an eventfd(2) others set to wake the watcher.

Each source is a descriptor to poll and a ``drain()`` that consumes what it
reported; what changed is read afterwards by whoever was woken (a change is a
reason to look, not a description). Must not know: CIM, mount tables' content.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import struct
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Final, Protocol

from lmi_mount.linux.namespace import libc

# <sys/inotify.h>
IN_NONBLOCK: Final = os.O_NONBLOCK
IN_CLOEXEC: Final = os.O_CLOEXEC
IN_MODIFY: Final = 0x00000002
IN_ATTRIB: Final = 0x00000004
IN_CLOSE_WRITE: Final = 0x00000008
IN_MOVED_FROM: Final = 0x00000040
IN_MOVED_TO: Final = 0x00000080
IN_CREATE: Final = 0x00000100
IN_DELETE: Final = 0x00000200
IN_Q_OVERFLOW: Final = 0x00004000
_FILE_EVENTS: Final = (IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO
                       | IN_CREATE | IN_DELETE)
_INOTIFY_EVENT: Final = struct.Struct("iIII")  # wd, mask, cookie, len; then the name


class Source(Protocol):
    """A descriptor that becomes ready on a change."""

    name: str

    def fileno(self) -> int: ...

    def events(self) -> int: ...

    def drain(self) -> bool:
        """Consume what the descriptor reported; whether it was a change of interest."""
        ...

    def close(self) -> None: ...


def _check(result: int, what: str) -> int:
    if result < 0:
        error = ctypes.get_errno()
        raise OSError(error, f"{what}: {os.strerror(error)}")
    return result


class DescriptorSource:
    """A source that is one descriptor of ours: polled for ``EVENTS``, closed once."""

    name = "descriptor"
    EVENTS = select.POLLIN

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def fileno(self) -> int:
        return self._fd

    def events(self) -> int:
        return self.EVENTS

    def drain(self) -> bool:
        return bool(self.read_all())

    def read_all(self) -> list[bytes]:
        """Everything the (non-blocking) descriptor has to read now."""
        chunks: list[bytes] = []
        while True:
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                return chunks
            if not data:
                return chunks
            chunks.append(data)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)


class MountinfoPoll(DescriptorSource):
    """``poll(2)`` on ``/proc/self/mountinfo``: POLLPRI after any mount table change."""

    name = "mountinfo poll"
    EVENTS = select.POLLPRI

    def __init__(self, path: str = "/proc/self/mountinfo") -> None:
        super().__init__(os.open(path, os.O_RDONLY | os.O_CLOEXEC))

    def drain(self) -> bool:
        # The poll itself takes the event (fs/proc_namespace.c mounts_poll):
        # nothing is left to read.
        return True


class FileChanges(DescriptorSource):
    """inotify on the directory of ``path``, for changes of that name and of the
    ``also`` names beside it."""

    def __init__(self, path: str | os.PathLike[str], also: Sequence[str] = ()) -> None:
        target = Path(path)
        self.name = f"changes of {target}"
        self._wanted = {os.fsencode(target.name), *(os.fsencode(name) for name in also)}
        lib = libc()
        lib.inotify_init1.argtypes = (ctypes.c_int,)
        lib.inotify_init1.restype = ctypes.c_int
        lib.inotify_add_watch.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32)
        lib.inotify_add_watch.restype = ctypes.c_int
        super().__init__(_check(lib.inotify_init1(IN_NONBLOCK | IN_CLOEXEC), "inotify_init1"))
        try:
            _check(lib.inotify_add_watch(self._fd, os.fsencode(target.parent), _FILE_EVENTS),
                   f"inotify_add_watch({target.parent})")
        except BaseException:
            self.close()
            raise

    def drain(self) -> bool:
        seen = False
        for data in self.read_all():
            offset = 0
            while offset + _INOTIFY_EVENT.size <= len(data):
                _, mask, _, length = _INOTIFY_EVENT.unpack_from(data, offset)
                start = offset + _INOTIFY_EVENT.size
                name = data[start:start + length].rstrip(b"\0")
                offset = start + length
                if mask & IN_Q_OVERFLOW or name in self._wanted:
                    seen = True
        return seen


class Poke(DescriptorSource):
    """An eventfd that another thread sets to wake the watcher (``poke()``)."""

    name = "poke"

    def __init__(self) -> None:
        super().__init__(os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC))
        # Other threads poke while one closes: after close, the number may be
        # another file's, which a late poke must not write 8 bytes into.
        self._lock = threading.Lock()
        self._closed = False

    def poke(self) -> None:
        with self._lock:
            if not self._closed:
                with contextlib.suppress(OSError):
                    os.eventfd_write(self._fd, 1)

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                super().close()

    def drain(self) -> bool:
        try:
            os.eventfd_read(self._fd)
        except BlockingIOError:
            return False
        return True


def wait(sources: Sequence[Source], timeout: float | None) -> list[Source]:
    """The sources that report a change of interest within ``timeout`` seconds."""
    poller = select.poll()
    by_fd = {}
    for source in sources:
        poller.register(source.fileno(), source.events())
        by_fd[source.fileno()] = source
    ready = poller.poll(None if timeout is None else max(0, int(timeout * 1000)))
    return [by_fd[fd] for fd, _ in ready if by_fd[fd].drain()]
