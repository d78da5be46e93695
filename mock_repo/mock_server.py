"""pywbemcli ``--mock-server`` startup script: a live lmi-mount playground.

Owns: wiring pywbemcli's own mock connection to a live lmi-mount broker over
a scratch fstab and state directory (``$LMI_MOUNT_PLAYGROUND``, default
``/tmp/lmi-mount-playground``), with a few directories to mount on. As root,
the script first moves pywbemcli's process into a private mount namespace, so
mounts made here never reach the host and vanish when pywbemcli exits; without
root (or without a usable namespace) it runs on lmi-mount's fake kernel, an
in-memory mount table held to the same contract.

Must not know: how the broker, the engine or the mock front end work inside.

Usage (see README.md next to this file)::

    pywbemcli --mock-server mock_repo/mock_server.py instance enumerate LMI_MountedFileSystem
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from lmi_mount.cim.broker import Broker
from lmi_mount.cim.mock import refuse_pywbemcli_cache, setup_live
from lmi_mount.engine import MountManager
from lmi_mount.linux.fake import FakeKernel
from lmi_mount.linux.kernel import Kernel, LinuxKernel
from lmi_mount.linux.namespace import enter_private_mount_namespace

# A live mount table cannot be pickled into pywbemcli's connection cache.
refuse_pywbemcli_cache(globals())

PLAYGROUND_ENV = "LMI_MOUNT_PLAYGROUND"
#: "real", "fake" or unset (the real kernel when root can have a private namespace).
KERNEL_ENV = "LMI_MOUNT_PLAYGROUND_KERNEL"
DIRECTORIES = ("data", "mnt/a", "mnt/b", "mnt/c")


def _kernel() -> tuple[Kernel, str]:
    choice = os.environ.get(KERNEL_ENV, "")
    if choice == "fake":
        return FakeKernel(), f"lmi-mount's fake kernel ({KERNEL_ENV}=fake)"
    if os.geteuid() == 0:
        try:
            enter_private_mount_namespace()
            return LinuxKernel(), "the real kernel, in a private mount namespace"
        except OSError as exc:
            if choice == "real":
                raise
            reason = f"no private mount namespace ({exc})"
    else:
        reason = "not root"
    return FakeKernel(), f"lmi-mount's fake kernel ({reason})"


def setup(conn: Any, server: Any, verbose: bool) -> None:
    """Called by pywbemcli with its FakedWBEMConnection, its WBEMServer and --verbose."""
    default = Path(tempfile.gettempdir(), "lmi-mount-playground")
    root = Path(os.environ.get(PLAYGROUND_ENV) or default)
    for name in DIRECTORIES:
        (root / name).mkdir(parents=True, exist_ok=True)
    fstab = root / "fstab"
    if not fstab.exists():
        fstab.write_text("# lmi-mount playground: a scratch fstab, not the system's\n")
    kernel, which = _kernel()
    engine = MountManager(kernel, fstab_path=fstab, state_dir=root / "state").start()
    setup_live(conn, Broker(engine, host="playground.example"))
    if verbose:
        print(f"lmi-mount playground in {root}, on {which}", file=sys.stderr)
