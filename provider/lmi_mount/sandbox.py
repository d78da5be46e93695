"""The layout of a sandbox directory (``lmi-mountd --sandbox DIR``) and finding its daemon.

Owns: where the sandbox keeps its fstab, state directory and pid file, and
``daemon_pid``, which tells ``lmi-mount --sandbox DIR`` which process's mount
namespace holds the sandbox's mounts. Must not know: CIM, the server, the
engine.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

from lmi_mount.linux import files
from lmi_mount.linux.journal import LOCK_NAME
from lmi_mount.text import decimal

#: Written by the daemon once it holds the sandbox's state lock; removed when it stops.
PID_FILE: Final = "lmi-mountd.pid"


class NoSandboxDaemon(Exception):
    """No lmi-mountd runs for this sandbox directory (the message says why and what to do)."""


def fstab_of(root: Path) -> Path:
    return root / "fstab"


def state_dir_of(root: Path) -> Path:
    return root / "state"


def daemon_pid(root: Path, proc_root: str = "/proc") -> int:
    """The pid of the lmi-mountd serving sandbox ``root``.

    The pid file alone is not trusted: a daemon killed with -9 leaves it, and
    its pid may be another process's by now. The process must hold the
    sandbox's state lock open, which only the daemon of ``root`` does.
    """
    root = root.absolute()
    try:
        files.check_trusted(root, "sandbox directory")
        text = (root / PID_FILE).read_text(encoding="ascii", errors="replace").strip()
    except (OSError, files.UntrustedFile) as exc:
        raise NoSandboxDaemon(f"no lmi-mountd runs in {root} ({exc}); start one with: "
                              f"lmi-mountd --sandbox {root}") from None
    pid = decimal(text, maximum=1 << 22)  # PID_MAX_LIMIT
    lock = str(state_dir_of(root) / LOCK_NAME)
    try:
        holds_lock = pid is not None and any(
            os.readlink(f"{proc_root}/{pid}/fd/{fd}") == lock
            for fd in os.listdir(f"{proc_root}/{pid}/fd"))
    except OSError:
        holds_lock = False
    if pid is None or not holds_lock:
        raise NoSandboxDaemon(f"no lmi-mountd runs in {root} (its pid file names {text!r}, "
                              "which is not the sandbox's daemon); start one with: "
                              f"lmi-mountd --sandbox {root}")
    return pid
