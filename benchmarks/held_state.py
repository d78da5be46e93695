"""Benchmark: a state read after a change beside N mounts the service holds, against
the same read beside N mounts made by hand.

Measured in the same run, in a private mount namespace, on the real kernel:

* held: N tmpfs mounts acquired through ``MountManager.acquire`` (each has a
  holder record with its mount's unique id), then, N times over, one mount
  made or removed by hand and ``MountManager.state()`` read: what an
  enumeration or the indication watcher pays after each change;
* baseline: the same with N tmpfs mounts made by hand (mount(2)), which
  have no holder records.

A held mount's record must be checked against the kernel on every read (a
mount made at its mount point by hand since, reusing its mount id, is not
the holders'). That was one statmount(2) per held mount (53 ms a read at
2,000, 4x the baseline); one listmount(2) of the live unique ids now answers
them all. Goal: held / baseline <= 1.25x.

Run as root: ``python benchmarks/held_state.py [--mounts N] [--reads R]``; it
re-executes itself under ``unshare --mount --propagation private``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "provider"))

from _namespace import enter_as_root, mount_tmpfs, scratch_dirs, unmount

from lmi_mount.engine import MountManager
from lmi_mount.linux.kernel import LinuxKernel
from lmi_mount.mounts.plan import MountSpec


def _read_after_changes(engine: MountManager, scratch: Path, reads: int) -> float:
    """The median of ``reads`` state reads, each after a mount or unmount by hand."""
    samples = []
    for n in range(reads):
        if n % 2 == 0:
            mount_tmpfs(scratch, "scratch")
        else:
            unmount(scratch)
        start = time.perf_counter()
        engine.state()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mounts", type=int, default=2000)
    parser.add_argument("--reads", type=int, default=40)
    args = parser.parse_args()
    code = enter_as_root()
    if code is not None:
        return code
    with scratch_dirs() as (work, state):
        (work / "fstab").write_text("")
        scratch = work / "scratch"
        scratch.mkdir()
        targets = [work / "m" / str(n) for n in range(args.mounts)]
        for target in targets:
            target.mkdir(parents=True)
        with MountManager(LinuxKernel(), fstab_path=work / "fstab", state_dir=state,
                          timers=False, after_fstab_edit=lambda: None) as engine:
            for target in targets:
                mount_tmpfs(target, "byhand")
            by_hand = _read_after_changes(engine, scratch, args.reads)
            for target in targets:
                unmount(target)
            for target in targets:
                engine.acquire(MountSpec("tmpfs", str(target), "tmpfs"), "bench")
            held = _read_after_changes(engine, scratch, args.reads)
            for target in targets:
                engine.release(str(target), "bench")
        print(f"state() after a change, median of {args.reads} reads:")
        rows = [(f"beside {args.mounts} held mounts", f"{held * 1e3:8.2f} ms"),
                (f"beside {args.mounts} mounts by hand (baseline)", f"{by_hand * 1e3:8.2f} ms"),
                ("ratio held / by hand", f"{held / by_hand:8.2f}x (goal <= 1.25x)")]
        for label, value in rows:
            print(f"  {label:<44}{value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
