"""Benchmarks that mount run in a private mount namespace, never in the host's.

Owns: re-executing the running benchmark script under ``unshare --mount
--propagation private`` (util-linux), once, marked by an environment variable,
after checking that it runs as root.
Must not know: what the benchmark measures.
"""

from __future__ import annotations

import os
import subprocess
import sys

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
