"""The layout of a sandbox directory (``lmi-mountd --sandbox DIR``) and finding its daemon.

Owns: where the sandbox keeps its fstab, state directory and pid file, and
``enter_daemon_namespace``, which takes ``lmi-mount --sandbox DIR`` into the
mount namespace that holds the sandbox's mounts, its daemon's, and no other.
Must not know: CIM, the server, the engine.
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
from pathlib import Path
from typing import Final

from lmi_mount.linux import files
from lmi_mount.linux.journal import LOCK_NAME
from lmi_mount.linux.namespace import enter_mount_namespace
from lmi_mount.text import decimal

#: Written by the daemon once it holds the sandbox's state lock; removed when it stops.
PID_FILE: Final = "lmi-mountd.pid"


class NoSandboxDaemon(Exception):
    """No lmi-mountd runs for this sandbox directory (the message says why and what to do)."""


def fstab_of(root: Path) -> Path:
    return root / "fstab"


def state_dir_of(root: Path) -> Path:
    return root / "state"


def enter_daemon_namespace(root: Path, proc_root: str = "/proc") -> int:
    """Enter the mount namespace of the lmi-mountd serving sandbox ``root``; its pid.

    The pid file alone is not trusted: a daemon killed with -9 leaves it, and
    its pid may be anyone's by now. The process must run as root in this
    user namespace and hold open the very file that is ``root``'s state lock
    (same device and inode: a path that reads the same in another mount
    namespace is not it); it is pinned by a pidfd while it is checked, and
    the namespace is taken only if it is still the process that was checked.
    """
    root = Path(os.path.realpath(root))
    where = f"no lmi-mountd runs in {root}"
    hint = f"; start one with: lmi-mountd --sandbox {root}"
    try:
        files.check_trusted(root, "sandbox directory")
        text = (root / PID_FILE).read_text(encoding="ascii", errors="replace").strip()
        lock = os.lstat(state_dir_of(root) / LOCK_NAME)
    except (OSError, files.UntrustedFile) as exc:
        raise NoSandboxDaemon(f"{where} ({exc}){hint}") from None
    pid = decimal(text, maximum=1 << 22)  # PID_MAX_LIMIT
    not_it = NoSandboxDaemon(f"{where} (its pid file names {text!r}, which is not the "
                             f"sandbox's daemon){hint}")
    if pid is None or not stat.S_ISREG(lock.st_mode):
        raise not_it
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        raise not_it from None
    try:
        if not _is_daemon(pid, (lock.st_dev, lock.st_ino), proc_root):
            raise not_it
        namespace = os.open(f"{proc_root}/{pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
        try:
            try:
                signal.pidfd_send_signal(pidfd, 0)  # still the process checked above
            except ProcessLookupError:
                raise not_it from None
            enter_mount_namespace(namespace, f"the mount namespace of lmi-mountd {pid}",
                                  proc_root)
        finally:
            os.close(namespace)
    finally:
        os.close(pidfd)
    return pid


def _is_daemon(pid: int, lock: tuple[int, int], proc_root: str) -> bool:
    """Whether process ``pid`` runs as root in our user namespace and holds ``lock``
    (device, inode) open."""
    process = f"{proc_root}/{pid}"
    try:
        status = Path(f"{process}/status").read_text(encoding="ascii", errors="replace")
        uids = next(line.split()[1:] for line in status.splitlines()
                    if line.startswith("Uid:"))
        ours, theirs = os.stat(f"{proc_root}/self/ns/user"), os.stat(f"{process}/ns/user")
        if set(uids) != {"0"} or (ours.st_dev, ours.st_ino) != (theirs.st_dev, theirs.st_ino):
            return False
        for fd in os.listdir(f"{process}/fd"):
            with contextlib.suppress(OSError):
                held = os.stat(f"{process}/fd/{fd}")  # the open file itself, in any namespace
                if (held.st_dev, held.st_ino) == lock:
                    return True
    except (OSError, StopIteration):
        return False
    return False
