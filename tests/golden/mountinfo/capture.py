#!/usr/bin/env python3
"""Capture the mountinfo golden files of tests/unit/test_mountinfo.py on this machine.

Run as root from anywhere: ``python tests/golden/mountinfo/capture.py``. It
re-executes itself twice inside ``unshare --mount --propagation private``, so
every mount it makes lives and dies in a private mount namespace; the only
trace outside is the empty directory /tmp/lmi-golden, removed at the end.

Scenario (scenario.*): a tmpfs with a size, a path and a source with space,
tab, newline and backslash, bind mounts (a directory, a whole file system, a
file, a read-only bind, a bind from the odd path), an rbind with a submount,
a loop-mounted ext4 image with a bind of a directory in it and a second mount
of the same loop device, a squashfs image, an overlay, a stack of two
mounts, a mount left hidden under a covered parent, and shared / slave /
unbindable propagation with a mount propagated to peers.
It writes:

* scenario.mountinfo: /proc/self/mountinfo as read;
* scenario.loops.json: loop device -> /sys/block/loopN/loop/backing_file;
* scenario.expected.json: ``records``, the table as findmnt(8) (libmount, an
  independent parser) reports it, and what the scenario built, written down
  here rather than computed by the code under test: the source a user would
  name for each mount point, the stacks, the mount visible at a path, and the
  hidden mounts.

Bind10k (bind10k.*): 10,000 bind mounts of directories of one tmpfs, every
tenth a bind of the previous bind mount; bind10k.mountinfo.gz and
bind10k.findmnt.gz (findmnt --raw of the same namespace).

The machine's own mounts under /mnt belong to its sandboxing harness and are
left out of every file; everything else is kept as the kernel printed it.
"""

from __future__ import annotations

import ctypes
import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BASE = "/tmp/lmi-golden"
MARK = "LMI_GOLDEN_STAGE"
ODD = BASE + "/we ird\ttab\nnl\\bs"
FINDMNT_COLUMNS = "ID,PARENT,MAJ:MIN,FSROOT,TARGET,FSTYPE,SOURCE,VFS-OPTIONS,FS-OPTIONS,OPT-FIELDS"
MS_BIND = 0x1000


def run(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def kept(target: str) -> bool:
    return not (target == "/mnt" or target.startswith("/mnt/"))


def kept_lines(text: str) -> str:
    # Field 5 is the mount point; no field holds a raw space (mountinfo escapes).
    lines = [line for line in text.splitlines(keepends=True) if kept(line.split(" ")[4])]
    return "".join(lines)


def write(name: str, data: str) -> None:
    (HERE / name).write_text(data, encoding="utf-8")


def write_gz(name: str, data: str) -> None:
    # mtime=0 and no file name: the same capture gives the same bytes.
    with open(HERE / name, "wb") as raw, gzip.GzipFile(
        filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9
    ) as gz:
        gz.write(data.encode("utf-8"))


def tmpfs(source: str, target: str, options: str = "size=1m") -> None:
    os.makedirs(target, exist_ok=True)
    run("mount", "-t", "tmpfs", "-o", options, source, target)


def bind(source: str, target: str, *, recursive: bool = False) -> None:
    run("mount", "--rbind" if recursive else "--bind", source, target)


def scenario() -> None:
    b = BASE
    tmpfs("golden", b, "size=64m,mode=755")
    for d in ("images", "data/sub", "tree/inner", "sqsrc/dir", "ovl/lower", "ovl/upper",
              "ovl/work", "ovl/merged", "bind-sub", "bind-whole", "ro-bind", "rbind",
              "ext4", "ext4-bind", "ext4-again", "squash", "bind-odd", "prop-peer",
              "prop-slave"):
        os.makedirs(f"{b}/{d}", exist_ok=True)
    Path(f"{b}/data/file").write_text("bound file\n")
    Path(f"{b}/file-bind").touch()
    Path(f"{b}/sqsrc/dir/hello").write_text("hello\n")
    Path(f"{b}/ovl/lower/from-lower").write_text("lower\n")

    tmpfs("sized-tmpfs", f"{b}/sized", "size=10m,nr_inodes=1k,mode=0700")
    tmpfs("odd src", ODD)
    os.makedirs(f"{ODD}/inner")

    bind(f"{b}/data/sub", f"{b}/bind-sub")
    bind(f"{b}/sized", f"{b}/bind-whole")
    bind(f"{b}/data/file", f"{b}/file-bind")
    bind(f"{b}/data", f"{b}/ro-bind")
    run("mount", "-o", "remount,bind,ro", f"{b}/ro-bind")
    bind(f"{ODD}/inner", f"{b}/bind-odd")

    tmpfs("tree-inner", f"{b}/tree/inner")
    bind(f"{b}/tree", f"{b}/rbind", recursive=True)

    run("truncate", "-s", "16M", f"{b}/images/fs.ext4")
    run("mkfs.ext4", "-q", "-F", f"{b}/images/fs.ext4")
    run("mount", "-o", "loop", f"{b}/images/fs.ext4", f"{b}/ext4")
    os.makedirs(f"{b}/ext4/d")
    bind(f"{b}/ext4/d", f"{b}/ext4-bind")
    ext4_device = run("findmnt", "-n", "-o", "SOURCE", f"{b}/ext4").strip()
    run("mount", ext4_device, f"{b}/ext4-again")

    run("mksquashfs", f"{b}/sqsrc", f"{b}/images/fs.sqfs", "-quiet", "-noappend",
        "-no-progress")
    run("mount", "-o", "loop", "-t", "squashfs", f"{b}/images/fs.sqfs", f"{b}/squash")

    run("mount", "-t", "overlay", "-o",
        f"lowerdir={b}/ovl/lower,upperdir={b}/ovl/upper,workdir={b}/ovl/work",
        "ovl-golden", f"{b}/ovl/merged")

    tmpfs("stack-bottom", f"{b}/stack")
    tmpfs("stack-top", f"{b}/stack")

    tmpfs("shadow-a", f"{b}/shadow")
    tmpfs("hidden-x", f"{b}/shadow/x")
    tmpfs("shadow-b", f"{b}/shadow")
    tmpfs("visible-x", f"{b}/shadow/x")

    tmpfs("prop", f"{b}/prop")
    os.makedirs(f"{b}/prop/sub")
    run("mount", "--make-shared", f"{b}/prop")
    bind(f"{b}/prop", f"{b}/prop-peer")
    bind(f"{b}/prop", f"{b}/prop-slave")
    run("mount", "--make-slave", f"{b}/prop-slave")
    run("mount", "--make-shared", f"{b}/prop-slave")
    # Mounted after the peers exist: the kernel copies it to each of them.
    tmpfs("prop-sub", f"{b}/prop/sub")
    tmpfs("unbind", f"{b}/unbindable")
    run("mount", "--make-unbindable", f"{b}/unbindable")

    mountinfo = Path("/proc/self/mountinfo").read_text(encoding="utf-8")
    findmnt = json.loads(run("findmnt", "--json", "--list", "--nofsroot", "-o", FINDMNT_COLUMNS))
    loops = {}
    for name in sorted(os.listdir("/sys/block")):
        backing = Path("/sys/block", name, "loop", "backing_file")
        if name.startswith("loop") and backing.exists():
            loops[f"/dev/{name}"] = backing.read_text(encoding="utf-8").rstrip("\n")

    expected = {
        "records": [r for r in findmnt["filesystems"] if kept(r["target"])],
        "user_sources": {
            b: "golden",
            f"{b}/sized": "sized-tmpfs",
            ODD: "odd src",
            f"{b}/bind-sub": f"{b}/data/sub",
            f"{b}/bind-whole": f"{b}/sized",
            f"{b}/file-bind": f"{b}/data/file",
            f"{b}/ro-bind": f"{b}/data",
            f"{b}/bind-odd": f"{ODD}/inner",
            f"{b}/tree/inner": "tree-inner",
            f"{b}/rbind": f"{b}/tree",
            f"{b}/rbind/inner": f"{b}/tree/inner",
            f"{b}/ext4": f"{b}/images/fs.ext4",
            f"{b}/ext4-bind": f"{b}/ext4/d",
            # A second mount of the same loop device: named by its device.
            f"{b}/ext4-again": f"{b}/images/fs.ext4",
            f"{b}/squash": f"{b}/images/fs.sqfs",
            f"{b}/ovl/merged": "ovl-golden",
            f"{b}/prop": "prop",
            f"{b}/prop-peer": f"{b}/prop",
            f"{b}/prop-slave": f"{b}/prop",
            f"{b}/prop/sub": "prop-sub",
            # Copies the kernel made by propagation are binds of the original.
            f"{b}/prop-peer/sub": f"{b}/prop/sub",
            f"{b}/prop-slave/sub": f"{b}/prop/sub",
            f"{b}/unbindable": "unbind",
        },
        # Mount point -> sources of the mounts there, bottom first; the last is visible.
        "stacks": {
            f"{b}/stack": ["stack-bottom", "stack-top"],
            f"{b}/shadow": ["shadow-a", "shadow-b"],
            f"{b}/shadow/x": ["hidden-x", "visible-x"],
        },
        "hidden": ["stack-bottom", "shadow-a", "hidden-x"],
        "propagation": {
            f"{b}/prop": "shared",
            f"{b}/prop-peer": "shared",
            f"{b}/prop-slave": "shared master",
            f"{b}/unbindable": "unbindable",
            f"{b}/sized": "private",
        },
        "loop_devices": {"ext4": ext4_device},
        "base": b,
        "odd": ODD,
    }
    write("scenario.mountinfo", kept_lines(mountinfo))
    write("scenario.loops.json", json.dumps(loops, indent=1, sort_keys=True) + "\n")
    write("scenario.expected.json", json.dumps(expected, indent=1, ensure_ascii=False) + "\n")


def bind10k() -> None:
    b = BASE
    tmpfs("golden10k", b, "size=64m")
    libc = ctypes.CDLL(None, use_errno=True)
    for i in range(10_000):
        os.makedirs(f"{b}/s/{i:05d}")
        os.makedirs(f"{b}/b/{i:05d}")
    for i in range(10_000):
        # mount(8) would take ~20 s for 10k binds; mount(2) takes well under one.
        source = f"{b}/b/{i - 1:05d}" if i % 10 == 9 else f"{b}/s/{i:05d}"
        if libc.mount(source.encode(), f"{b}/b/{i:05d}".encode(), None, MS_BIND, None) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), source)
    mountinfo = Path("/proc/self/mountinfo").read_text(encoding="utf-8")
    findmnt = run("findmnt", "--raw", "--noheadings", "--nofsroot", "-o",
                  "ID,PARENT,MAJ:MIN,FSROOT,TARGET,FSTYPE,SOURCE")
    write_gz("bind10k.mountinfo.gz", kept_lines(mountinfo))
    write_gz("bind10k.findmnt.gz", "".join(
        line + "\n" for line in findmnt.splitlines() if kept(line.split(" ")[4])
    ))


def main() -> int:
    if os.geteuid() != 0:
        print("capture.py must run as root (it mounts, in a private namespace)", file=sys.stderr)
        return 1
    stage = os.environ.get(MARK)
    if stage == "scenario":
        scenario()
        return 0
    if stage == "bind10k":
        bind10k()
        return 0
    os.makedirs(BASE, exist_ok=True)
    try:
        for name in ("scenario", "bind10k"):
            subprocess.run(
                ["unshare", "--mount", "--propagation", "private", sys.executable, __file__],
                env={**os.environ, MARK: name},
                check=True,
            )
    finally:
        os.rmdir(BASE)
    print(f"golden files written to {HERE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
