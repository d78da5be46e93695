"""Benchmark: one edit of a 10k-line fstab through lmi-mount vs a plain locked rewrite.

Measured (same file, same temporary directory, same run):

* lmi-mount: ``edit_file(path, edit)`` where ``edit`` parses the text with
  ``FstabDocument`` and replaces one entry (lock, read, compare-and-swap
  just before the rename, temp file, fchown/fchmod, fsync, rename, fsync of
  the directory).
* baseline: the plainest correct locked read-modify-write written inline
  here: flock a lock file, read, ``str.replace`` the one line, write a temp
  file, fsync, rename. No compare-and-swap, no directory fsync, no owner or
  mode handling: the floor an fstab writer cannot go below.

Goal (issue "Mount engine"): lmi-mount <= 2x the baseline. The two are
interleaved, after a warm-up, and the median of each is reported.

Run: ``python benchmarks/fstab_edit.py [--lines N] [--rounds R] [--dir DIR]``.
DIR should be on a real disk file system (fsync is free on tmpfs).
"""

from __future__ import annotations

import argparse
import fcntl
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "provider"))

from lmi_mount.linux.files import edit_file
from lmi_mount.mounts.fstab import FstabDocument, FstabEntry


def make_fstab(lines: int) -> str:
    header = "# /etc/fstab: static file system information.\n#\n"
    body = "".join(
        f"UUID={i:08x}-1b2c-4d5e-8f90-a1b2c3d4e5f6  /srv/data/{i}  ext4  defaults,noatime  0  2\n"
        for i in range(lines - 2)
    )
    return header + body


def lmi_edit(path: str, entry: FstabEntry) -> None:
    def edit(text: str) -> str:
        return FstabDocument.parse(text).replace(entry.spec, entry.target, entry).render()

    edit_file(path, edit)


def baseline_edit(path: str, old: str, new: str) -> None:
    lock_fd = os.open(path + ".lock", os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        with open(path, "rb") as handle:
            text = handle.read().decode("utf-8", "surrogateescape")
        text = text.replace(old, new, 1)
        temp = path + ".tmp"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, text.encode("utf-8", "surrogateescape"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(temp, path)
    finally:
        os.close(lock_fd)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--dir", default=None, help="directory for the test fstab")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(dir=args.dir, prefix="fstab-bench-") as directory:
        lmi_path = os.path.join(directory, "fstab")
        base_path = os.path.join(directory, "fstab.baseline")
        text = make_fstab(args.lines)
        for path in (lmi_path, base_path):
            Path(path).write_text(text)

        index = (args.lines - 2) // 2
        spec = f"UUID={index:08x}-1b2c-4d5e-8f90-a1b2c3d4e5f6"
        target = f"/srv/data/{index}"
        options = ("defaults,relatime", "defaults,noatime")
        entries = [FstabEntry(spec, target, "ext4", option, 0, 2) for option in options]
        old_lines = [f"{spec}  {target}  ext4  {option}  0  2\n" for option in options]

        lmi_times: list[float] = []
        base_times: list[float] = []
        warmup = max(5, args.rounds // 10)
        for round_ in range(warmup + args.rounds):
            flip = round_ % 2
            start = time.perf_counter()
            lmi_edit(lmi_path, entries[flip])
            middle = time.perf_counter()
            baseline_edit(base_path, old_lines[1 - flip], old_lines[flip])
            end = time.perf_counter()
            if round_ >= warmup:
                lmi_times.append(middle - start)
                base_times.append(end - middle)

        # Same entries; the layout may differ (lmi-mount keeps the column of
        # the field after a longer or shorter one, str.replace does not).
        lmi_doc = FstabDocument.parse(Path(lmi_path).read_text())
        base_doc = FstabDocument.parse(Path(base_path).read_text())
        if [line.entry for line in lmi_doc.entries()] != [
            line.entry for line in base_doc.entries()
        ]:
            print("error: the two edits produced different entries", file=sys.stderr)
            return 1

    lmi = statistics.median(lmi_times) * 1000
    base = statistics.median(base_times) * 1000
    size = len(text.encode())
    print(f"fstab: {args.lines} lines, {size} bytes, {args.rounds} rounds (median)")
    print(f"lmi-mount edit (FstabDocument + edit_file): {lmi:.3f} ms")
    print(f"baseline locked read-modify-write-fsync-rename: {base:.3f} ms")
    print(f"ratio lmi/baseline: {lmi / base:.2f}x (goal <= 2x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
