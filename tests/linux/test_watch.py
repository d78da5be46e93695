"""The change notifications the indications rest on, judged by the kernel itself.

One contract for every mount event source: a mount, a remount and an unmount
each wake it, and nothing else does. The mountinfo poll (what lmi-mountd uses)
keeps it; fanotify's mount events (Linux 6.15+) keep it but for the remount,
which is why the service does not use them.
"""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lmi_mount.linux import watch
from tests.support.fanotify import FanotifyMounts

SOURCES: dict[str, Callable[[], Any]] = {
    "mountinfo-poll": watch.MountinfoPoll,
    "fanotify": FanotifyMounts,
}


def _source(kind: str) -> Any:
    try:
        return SOURCES[kind]()
    except OSError as exc:
        pytest.skip(f"{kind} is not available here: {exc}")


def _woken(source: Any, timeout: float = 2.0) -> bool:
    return bool(watch.wait([source], timeout))


@pytest.mark.root
@pytest.mark.private_namespace
@pytest.mark.parametrize("kind", list(SOURCES))
def test_a_mount_and_an_unmount_wake_the_source(tmp_path: Path, kind: str) -> None:
    source = _source(kind)
    try:
        assert not _woken(source, 0.1)
        subprocess.run(["mount", "-t", "tmpfs", "watched", str(tmp_path)], check=True)
        assert _woken(source)
        assert not _woken(source, 0.1)  # drained: one change, one wake
        subprocess.run(["umount", str(tmp_path)], check=True)
        assert _woken(source)
    finally:
        source.close()


@pytest.mark.root
@pytest.mark.private_namespace
@pytest.mark.parametrize(("kind", "reported"), [("mountinfo-poll", True), ("fanotify", False)])
def test_a_remount_wakes_the_poll_and_not_fanotify(tmp_path: Path, kind: str,
                                                   reported: bool) -> None:
    subprocess.run(["mount", "-t", "tmpfs", "watched", str(tmp_path)], check=True)
    source = _source(kind)
    try:
        subprocess.run(["mount", "-o", "remount,ro", str(tmp_path)], check=True)
        assert _woken(source, 0.5) is reported
    finally:
        source.close()


def test_a_file_replaced_by_a_rename_is_seen_and_its_neighbours_are_not(
        tmp_path: Path) -> None:
    fstab = tmp_path / "fstab"
    fstab.write_text("# empty\n")
    changes = watch.FileChanges(fstab)
    try:
        (tmp_path / "other").write_text("x")
        assert not _woken(changes, 0.1)
        scratch = tmp_path / ".fstab.tmp"
        scratch.write_text("tmpfs /mnt tmpfs defaults 0 0\n")
        os.replace(scratch, fstab)
        assert _woken(changes)
        with open(fstab, "a", encoding="utf-8") as stream:  # an editor writing in place
            stream.write("# more\n")
        assert _woken(changes)
    finally:
        changes.close()


def test_a_poke_wakes_the_watcher_from_another_thread() -> None:
    poke = watch.Poke()
    try:
        threading.Timer(0.05, poke.poke).start()
        assert _woken(poke)
        assert not _woken(poke, 0.1)
    finally:
        poke.close()


def test_a_closed_poke_writes_into_no_descriptor_that_took_its_number() -> None:
    # Requests poke the watcher's eventfd from their own threads, also while
    # the service closes it: a poke after close must not write 8 bytes into
    # whatever file the number was given to next.
    read_end, write_end = os.pipe()
    poke = watch.Poke()
    number = poke.fileno()
    poke.close()
    try:
        os.dup2(write_end, number)
        os.set_blocking(read_end, False)
        poke.poke()
        with pytest.raises(BlockingIOError):
            os.read(read_end, 64)
    finally:
        for fd in {read_end, write_end, number}:
            os.close(fd)
