"""busy_processes and describe: who keeps a mount busy, and how it is said."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from lmi_mount.linux import mountapi
from lmi_mount.linux.processes import ProcessUse, busy_processes, describe, mount_users


def _process(proc: Path, pid: int, command: str | None, links: dict[str, str],
             fds: dict[str, str] | None = None, maps: str | None = None) -> None:
    """One /proc/<pid> directory; parts left out behave as a vanished process's."""
    base = proc / str(pid)
    base.mkdir(parents=True)
    if command is not None:
        (base / "comm").write_text(command + "\n")
    for name, target in links.items():
        (base / name).symlink_to(target)
    if fds is not None:
        (base / "fd").mkdir()
        for fd, target in fds.items():
            (base / "fd" / fd).symlink_to(target)
    if maps is not None:
        (base / "maps").write_text(maps)


@pytest.fixture
def proc(tmp_path: Path) -> Path:
    root = tmp_path / "proc"
    _process(root, 10, "sleep", {"cwd": "/mnt/x/work", "root": "/", "exe": "/usr/bin/sleep"},
             {"0": "/dev/null", "1": "pipe:[123]", "3": "/mnt/x/log (deleted)"},
             "55d0-55d1 r--p 00000000 fd:00 12  /usr/bin/sleep\n"
             "7f00-7f01 r-xp 00000000 07:00 34  /mnt/x/lib/libz.so\n"
             "7f02-7f03 r--p 00001000 07:00 34  /mnt/x/lib/libz.so\n"
             "7f04-7f05 rw-p 00000000 00:00 0   [heap]\n"
             "7f06-7f07 r--p 00000000 07:00 35  /mnt/x/with space.dat\n")
    _process(root, 7, "chroot-ed", {"cwd": "/", "root": "/mnt/x", "exe": "/mnt/x/bin/sh"})
    _process(root, 8, "neighbour", {"cwd": "/mnt/xy", "root": "/"}, {"4": "/mnt/xy/f"}, "")
    _process(root, 9, None, {})  # exited while we looked: nothing readable
    (root / "self").symlink_to("10")
    (root / "meminfo").write_text("")
    return root


def test_every_kind_of_use_is_found_once_and_neighbours_are_not(proc: Path) -> None:
    assert busy_processes("/mnt/x", str(proc)) == [
        ProcessUse(7, "chroot-ed", "root", "/mnt/x"),
        ProcessUse(7, "chroot-ed", "exe", "/mnt/x/bin/sh"),
        ProcessUse(10, "sleep", "cwd", "/mnt/x/work"),
        ProcessUse(10, "sleep", "fd", "/mnt/x/log (deleted)"),
        ProcessUse(10, "sleep", "map", "/mnt/x/lib/libz.so"),
        ProcessUse(10, "sleep", "map", "/mnt/x/with space.dat"),
    ]


@pytest.mark.parametrize(
    ("target", "pids"),
    [
        pytest.param("/mnt/x/", [7, 10], id="trailing-slash"),
        pytest.param("/mnt/xy", [8], id="prefix-is-not-a-parent"),
        pytest.param("/mnt/x/lib", [10], id="below"),
        pytest.param("/srv", [], id="unused"),
        pytest.param("/", [7, 8, 10], id="root"),
    ],
)
def test_matching_is_by_path_component(proc: Path, target: str, pids: list[int]) -> None:
    assert sorted({use.pid for use in busy_processes(target, str(proc))}) == pids


def test_a_real_process_with_its_cwd_and_an_open_file(tmp_path: Path) -> None:
    (tmp_path / "inner").mkdir()
    with open(tmp_path / "held", "w") as held:
        sleeper = subprocess.Popen(["sleep", "30"], cwd=tmp_path / "inner")
        try:
            uses = busy_processes(str(tmp_path))
        finally:
            sleeper.kill()
            sleeper.wait()
    assert ProcessUse(sleeper.pid, "sleep", "cwd", str(tmp_path / "inner")) in uses
    mine = [use for use in uses if use.pid == os.getpid()]
    assert ProcessUse(os.getpid(), mine[0].command, "fd", held.name) in mine


@pytest.mark.parametrize(
    ("uses", "limit", "text"),
    [
        pytest.param([], 10, "no process found", id="none"),
        pytest.param([ProcessUse(123, "sleep", "cwd", "/mnt/x")], 10,
                     "pid 123 (sleep, cwd /mnt/x)", id="one"),
        pytest.param([ProcessUse(1, "a", "cwd", "/m"), ProcessUse(1, "a", "fd", "/m/f"),
                      ProcessUse(2, "b", "map", "/m/l")], 10,
                     "pid 1 (a, cwd /m, fd /m/f); pid 2 (b, map /m/l)", id="grouped"),
        pytest.param([ProcessUse(pid, "p", "cwd", "/m") for pid in range(5)], 2,
                     "pid 0 (p, cwd /m); pid 1 (p, cwd /m); and 3 more processes", id="limit"),
    ],
)
def test_describe(uses: list[ProcessUse], limit: int, text: str) -> None:
    assert describe(uses, limit) == text


def test_one_file_whose_mount_cannot_be_read_does_not_turn_the_check_to_paths(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # statx fails on a file of a dead FUSE or NFS server; the whole scan fell
    # back to matching by path, with the errors mount ids avoid (a review).
    monkeypatch.setattr(mountapi, "has_mount_ids", lambda unique=False: True)
    monkeypatch.setattr(mountapi, "mount_id", lambda fd: None)
    assert mount_users({-1}) == []


def test_mount_users_names_a_process_working_on_the_mount() -> None:
    fd = os.open("/", os.O_PATH)
    try:
        root_mount = mountapi.mount_id(fd)
    finally:
        os.close(fd)
    if root_mount is None:
        pytest.skip("this kernel's statx has no STATX_MNT_ID (Linux 5.8)")
    process = subprocess.Popen(["sleep", "30"], cwd="/")
    try:
        assert process.pid in (mount_users({root_mount}) or [])
    finally:
        process.kill()
        process.wait()
