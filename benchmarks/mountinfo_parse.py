"""Benchmark: parse a 10k-mount /proc/self/mountinfo vs ``findmnt --list --noheadings``.

Run as root: ``python benchmarks/mountinfo_parse.py [--mounts N] [--repeat R]``.

The process moves itself into a private mount namespace first (unshare(2)
with CLONE_NEWNS, then everything made private, so nothing propagates back
to the machine), mounts a tmpfs on a fresh temporary directory and makes N
bind mounts of its subdirectories there. Both contenders then read the same
namespace's table:

* ours: read /proc/self/mountinfo and ``parse_mountinfo`` it (the read is
  included: the kernel formats the text during it);
* baseline: run ``findmnt --list --noheadings`` (libmount's parser plus
  formatting, output to /dev/null), process start included, as a caller
  would pay it.

A second comparison is the read a request makes after each change (a
method's Mount reference, a GetInstance): one bind mount is made or
removed, then the table is read and the mount at one path found, with its
user source. ``MountinfoParser`` (what the service uses: the lines of the
last read are not parsed again, and visibility is worked out for the mount
asked about) against a fresh ``parse_mountinfo`` of every line.

Each is run R times and the median is reported, with the minimum; the ratio
is baseline / ours (above 1: ours is faster), of the medians and of the
minimums (the runs least disturbed by other load). The temporary directory is
detached and removed at the end; the namespace dies with the process.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "provider"))

from lmi_mount.linux.namespace import enter_private_mount_namespace
from lmi_mount.mounts import flags as ms
from lmi_mount.mounts.mountinfo import MountinfoParser, MountTable, parse_mountinfo

MOUNTINFO = "/proc/self/mountinfo"

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def make_binds(base: str, count: int) -> None:
    _check(_libc.mount(b"lmi-bench", base.encode(), b"tmpfs", 0, b"size=64m"), "mount tmpfs")
    for i in range(count):
        os.makedirs(f"{base}/s/{i:05d}")
        os.makedirs(f"{base}/b/{i:05d}")
    for i in range(count):
        _check(_libc.mount(f"{base}/s/{i:05d}".encode(), f"{base}/b/{i:05d}".encode(), None,
                           ms.MS_BIND, None), "mount --bind")


def timed(fn: Callable[[], object], repeat: int) -> list[float]:
    fn()  # warm caches (page cache of findmnt, imports, the regex)
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return runs


def ours() -> None:
    with open(MOUNTINFO, encoding="utf-8") as f:
        parse_mountinfo(f.read())


def read_only() -> None:
    with open(MOUNTINFO, encoding="utf-8") as f:
        f.read()


def findmnt() -> None:
    subprocess.run(["findmnt", "--list", "--noheadings"], stdout=subprocess.DEVNULL, check=True)


def after_each_change(base: str, repeat: int) -> tuple[list[float], list[float]]:
    """Times of a point read after one change: (MountinfoParser, fresh parse)."""
    extra, target = f"{base}/extra", f"{base}/b/00000"
    os.makedirs(extra, exist_ok=True)
    parser = MountinfoParser()

    def point_read(parse: Callable[[str], list]) -> None:  # type: ignore[type-arg]
        with open(MOUNTINFO, encoding="utf-8") as f:
            table = MountTable(parse(f.read()))
        found = table.at(target)
        assert found is not None
        table.user_source(found, lambda device: None)

    timings: tuple[list[float], list[float]] = ([], [])
    mounted = False
    for _ in range(repeat + 1):  # the first round warms both up
        for parse, runs in ((parser.parse, timings[0]), (parse_mountinfo, timings[1])):
            if mounted:
                _check(_libc.umount2(extra.encode(), 0), "umount")
            else:
                _check(_libc.mount(f"{base}/s".encode(), extra.encode(), None, ms.MS_BIND,
                                   None), "mount --bind")
            mounted = not mounted
            start = time.perf_counter()
            point_read(parse)
            runs.append(time.perf_counter() - start)
    if mounted:
        _check(_libc.umount2(extra.encode(), 0), "umount")
    return timings[0][1:], timings[1][1:]


def report(name: str, runs: list[float]) -> tuple[float, float]:
    median = statistics.median(runs)
    print(f"{name:<44} median {median * 1e3:8.2f} ms   min {min(runs) * 1e3:8.2f} ms")
    return median, min(runs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--mounts", type=int, default=10_000, help="bind mounts to make")
    parser.add_argument("--repeat", type=int, default=15, help="timed runs of each")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("mountinfo_parse.py needs root (it mounts, in a private namespace)",
              file=sys.stderr)
        return 1
    if shutil.which("findmnt") is None:
        print("findmnt(8) (util-linux) is needed for the baseline", file=sys.stderr)
        return 1

    enter_private_mount_namespace()
    base = tempfile.mkdtemp(prefix="lmi-bench-")
    try:
        make_binds(base, args.mounts)
        with open(MOUNTINFO, encoding="utf-8") as f:
            text = f.read()
        lines = text.count("\n")
        print(f"{lines} mountinfo lines ({len(text) / 1e6:.2f} MB) in a private namespace, "
              f"{args.repeat} runs each")
        table = MountTable(parse_mountinfo(text))
        assert len(table) == lines

        ours_median, ours_min = report("ours: read + parse_mountinfo", timed(ours, args.repeat))
        findmnt_median, findmnt_min = report("baseline: findmnt --list --noheadings",
                                             timed(findmnt, args.repeat))
        # The minimum is the run least disturbed by other load on the machine.
        print(f"{'ratio findmnt / ours':<44} median {findmnt_median / ours_median:7.2f}x   "
              f"min {findmnt_min / ours_min:7.2f}x   "
              f"({'ours faster' if findmnt_median > ours_median else 'findmnt faster'})")
        kept, fresh = after_each_change(base, args.repeat)
        print("a point read after each change (read, table, the mount at one path, its source):")
        kept_median, _ = report("  ours: MountinfoParser (lines kept)", kept)
        fresh_median, _ = report("  baseline: parse_mountinfo of every line", fresh)
        print(f"{'  ratio baseline / ours':<44} median {fresh_median / kept_median:7.2f}x")
        print("breakdown:")
        report("  read /proc/self/mountinfo only", timed(read_only, args.repeat))
        report("  parse_mountinfo of text in memory", timed(lambda: parse_mountinfo(text),
                                                            args.repeat))
        records = parse_mountinfo(text)
        report("  MountTable(records).visible()", timed(lambda: MountTable(records).visible(),
                                                        args.repeat))
        report(f"  user_source of all {lines} mounts",
               timed(lambda: [table.user_source(r, lambda device: None) for r in table],
                     args.repeat))
    finally:
        # Detach the tmpfs and its binds (only in this namespace), then remove the directory.
        _libc.umount2(base.encode(), ms.MNT_DETACH)
        os.rmdir(base)
    return 0


if __name__ == "__main__":
    sys.exit(main())
