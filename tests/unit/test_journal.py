"""The holder journal: replay, torn tails, corruption, compaction, reboot, locking."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmi_mount.linux.journal import JOURNAL_NAME, HolderJournal, Intent, JournalError
from lmi_mount.mounts.holders import HeldMount


def held(target: str, *holders: str, made: bool = True) -> HeldMount:
    return HeldMount(
        target,
        "tmpfs",
        "tmpfs",
        "size=1m",
        made_by_us=made,
        mount_id=40,
        unique_id=1 << 33,
        holders=holders,
    )


@pytest.fixture
def paths(tmp_path: Path) -> tuple[Path, Path]:
    boot = tmp_path / "boot_id"
    boot.write_text("boot-1\n")
    return tmp_path / "state", boot


def journal(paths: tuple[Path, Path], **options: int) -> HolderJournal:
    return HolderJournal(paths[0], boot_id_path=paths[1], **options)


def test_records_replay_to_the_last_state(paths: tuple[Path, Path]) -> None:
    with journal(paths) as first:
        assert first.open().mounts == {}
        first.intent(Intent("/a", "tmpfs", "tmpfs", "size=1m"))
        first.set(held("/a", "x"))
        first.set(held("/a", "x", "y"))
        first.intent(Intent("/b", "src", None, "defaults"))
        first.set(held("/c", "z"))
        first.forget("/c")
    with journal(paths) as second:
        state = second.open()
    assert state.mounts == {"/a": held("/a", "x", "y")}
    assert list(state.intents) == ["/b"] and state.intents["/b"].fstype is None


def test_a_torn_last_line_is_dropped(paths: tuple[Path, Path]) -> None:
    with journal(paths) as first:
        first.open()
        first.set(held("/a", "x"))
    file = paths[0] / JOURNAL_NAME
    with file.open("ab") as stream:
        stream.write(b'{"op":"set","target":"/a","hold')  # the crash cut this append
    with journal(paths) as second:
        assert second.open().mounts == {"/a": held("/a", "x")}
    assert file.read_bytes().endswith(b'"holders":["x"]}\n'), "the torn fragment is gone"


def test_corruption_in_the_middle_is_an_error_naming_the_line(paths: tuple[Path, Path]) -> None:
    with journal(paths) as first:
        first.open()
        first.set(held("/a", "x"))
        first.set(held("/b", "y"))
    file = paths[0] / JOURNAL_NAME
    lines = file.read_bytes().split(b"\n")
    lines[1] = b"garbage"
    file.write_bytes(b"\n".join(lines))
    with pytest.raises(JournalError, match="line 2"):
        journal(paths).open()


def test_records_of_another_boot_are_discarded(paths: tuple[Path, Path]) -> None:
    with journal(paths) as first:
        first.open()
        first.set(held("/a", "x"))
    paths[1].write_text("boot-2\n")
    with journal(paths) as second:
        assert second.open().mounts == {}


def test_compaction_keeps_the_state_and_bounds_the_file(paths: tuple[Path, Path]) -> None:
    with journal(paths, compact_after=20) as first:
        first.open()
        for round_ in range(200):
            first.set(held("/a", *[f"h{i}" for i in range(round_ % 5)]))
        first.set(held("/b", "keep"))
    records = (paths[0] / JOURNAL_NAME).read_text().splitlines()
    assert len(records) <= 25, "compaction rewrote the file"
    assert json.loads(records[0]) == {"op": "boot", "boot_id": "boot-1"}
    with journal(paths) as second:
        state = second.open()
    assert state.mounts["/a"] == held("/a", *[f"h{i}" for i in range(199 % 5)])
    assert state.mounts["/b"] == held("/b", "keep")


def test_one_engine_per_state_directory(paths: tuple[Path, Path]) -> None:
    with journal(paths) as first:
        first.open()
        with pytest.raises(JournalError, match="another lmi-mount engine"):
            journal(paths).open()
        assert journal(paths).peek().mounts == {}, "an observer reads without the lock"


def test_a_failed_append_changes_no_state(paths: tuple[Path, Path]) -> None:
    with journal(paths) as first:
        first.open()
        first.set(held("/a", "x"))
        # A descriptor open for reading only: the next append fails with EBADF.
        first._file.close()  # type: ignore[union-attr]
        first._file = (paths[0] / JOURNAL_NAME).open("rb", buffering=0)
        with pytest.raises(JournalError, match="cannot append"):
            first.set(held("/a", "x", "y"))
        assert first._state.mounts["/a"] == held("/a", "x")
