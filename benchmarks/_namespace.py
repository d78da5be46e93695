"""Benchmarks that mount run in a private mount namespace, never in the host's.

Owns: re-executing the running benchmark script under ``unshare --mount
--propagation private`` (util-linux), once, marked by an environment variable,
after checking that it runs as root; the scratch directories such a benchmark
works in; and the tmpfs mounts it makes and removes by hand (mount(2) and
umount2(2) through lmi_mount's one libc, a failure raised as OSError).
Must not know: what the benchmark measures.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from lmi_mount.linux.namespace import libc

_MARK = "LMI_MOUNT_BENCH_NAMESPACE"


def reexec_in_private_namespace() -> int | None:
    """None when this process already runs in the benchmark's private namespace;
    otherwise run this script again inside one and return its exit code."""
    if os.environ.get(_MARK) == "1":
        return None
    env = dict(os.environ, **{_MARK: "1"})
    command = ["unshare", "--mount", "--propagation", "private", sys.executable, *sys.argv]
    return subprocess.call(command, env=env)


def enter_as_root() -> int | None:
    """None when this process runs as root in the benchmark's private namespace;
    otherwise the exit code for the script: 2 without root (said on stderr), or
    that of the script run again inside a namespace."""
    if os.geteuid() != 0:
        print("needs root (mount(2) in a private mount namespace)", file=sys.stderr)
        return 2
    return reexec_in_private_namespace()


@contextlib.contextmanager
def scratch_dirs(state_dir: str | None = None) -> Iterator[tuple[Path, Path]]:
    """(work, state): a work directory under the temporary directory and a state
    directory in /dev/shm (``state_dir`` instead, if given, and then kept),
    both removed afterwards."""
    work = Path(tempfile.mkdtemp(prefix="lmi-bench-"))
    state = Path(state_dir or tempfile.mkdtemp(prefix="lmi-bench-state-", dir="/dev/shm"))
    try:
        yield work, state
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if state_dir is None:
            shutil.rmtree(state, ignore_errors=True)


def mount_tmpfs(target: str | Path, name: str = "bench", data: str | None = None) -> None:
    """mount(2) of a tmpfs named ``name`` on ``target`` (thousands of mount(8) runs
    would take longer than what a benchmark measures)."""
    options = data.encode() if data is not None else None
    if libc().mount(name.encode(), os.fsencode(target), b"tmpfs", 0, options) != 0:
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error), str(target))


def unmount(target: str | Path) -> None:
    """umount2(2) of the mount on ``target``."""
    if libc().umount2(os.fsencode(target), 0) != 0:
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error), str(target))
