"""The holder journal: replay, torn tails, corruption, generations, compaction,
transactions, reservations, migration, reboot, read-only start, locking, hazards."""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from lmi_mount.linux import journal as journal_module
from lmi_mount.linux.journal import (
    JOURNAL_NAME,
    JOURNAL_NAMES,
    LOCK_NAME,
    HolderJournal,
    Intent,
    JournalError,
    JournalState,
    Transaction,
)
from lmi_mount.mounts.holders import HeldMount
from tests.support import requires_root

SMALL = 8192


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


def lines_of(file: Path) -> list[dict[str, Any]]:
    """The records of a journal file up to the first line that is not one of its
    generation (unused zeros, stale content); the CRC is not checked here."""
    records: list[dict[str, Any]] = []
    for line in file.read_bytes().split(b"\n"):
        try:
            record = json.loads(line)
        except ValueError:
            break
        if records and record.get("g") != records[0]["g"]:
            break
        records.append(record)
    return records


def current_file(j: HolderJournal) -> Path:
    return j.path


def snapshot_of(state: JournalState) -> tuple[Any, ...]:
    """A state with the order of transactions, to compare exactly."""
    return (state.mounts, state.intents, list(state.transactions.items()))


# -- replay ----------------------------------------------------------------------


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
    assert state.transactions == {}


def test_one_journal_object_can_be_opened_again(paths: tuple[Path, Path]) -> None:
    reused = journal(paths)
    reused.open()
    reused.set(held("/a", "x"))
    reused.close()
    assert reused.open().mounts == {"/a": held("/a", "x")}
    reused.close()
    for name in JOURNAL_NAMES:
        (paths[0] / name).unlink()
    assert reused.open() == JournalState(), "nothing left over from the last opening"
    reused.close()


def test_the_files_are_preallocated_and_private(paths: tuple[Path, Path]) -> None:
    with journal(paths, capacity=SMALL) as first:
        first.open()
        first.set(held("/a", "x"))
        for name in JOURNAL_NAMES:
            info = (paths[0] / name).stat()
            assert info.st_size == SMALL, "preallocated to the capacity"
            assert info.st_blocks * 512 >= SMALL, "blocks reserved, not a sparse file"
            assert stat.S_IMODE(info.st_mode) == 0o600
        assert stat.S_IMODE((paths[0] / LOCK_NAME).stat().st_mode) == 0o600
        assert stat.S_IMODE(paths[0].stat().st_mode) == 0o700
        assert not (paths[0] / JOURNAL_NAME).exists()
        records = lines_of(current_file(first))
        assert records[0]["op"] == "boot" and records[0]["boot_id"] == "boot-1"
        assert {r["g"] for r in records} == {records[0]["g"]}, "every record has the generation"
        assert records[-1]["op"] == "set" and records[-1]["holders"] == ["x"]
        before = first.free
        first.forget("/a")
        assert first.free < before
    assert sorted(p.name for p in paths[0].iterdir()) == sorted([*JOURNAL_NAMES, LOCK_NAME])


def test_replay_after_reopen_keeps_everything(paths: tuple[Path, Path]) -> None:
    generations = []
    for round_ in range(5):
        with journal(paths, capacity=SMALL) as each:
            state = each.open()
            assert set(state.mounts) == {f"/m{i}" for i in range(round_)}
            each.set(held(f"/m{round_}", "x"))
            generations.append(each._generation)
    assert generations == sorted(set(generations)), "every open starts a newer generation"


def test_a_torn_record_is_dropped(paths: tuple[Path, Path]) -> None:
    with journal(paths) as first:
        first.open()
        first.set(held("/a", "x"))
        file, offset = current_file(first), first._offset
    # The crash cut this write: a partial line, then the zeros of unused space.
    with file.open("r+b") as stream:
        stream.seek(offset)
        stream.write(b'{"op":"set","target":"/a","hold')
    assert journal(paths).peek().mounts == {"/a": held("/a", "x")}
    with journal(paths) as second:
        assert second.open().mounts == {"/a": held("/a", "x")}
        second.set(held("/b", "y"))
    with journal(paths) as third:
        assert third.open().mounts == {"/a": held("/a", "x"), "/b": held("/b", "y")}


def test_a_whole_record_that_fails_its_checksum_is_dropped(paths: tuple[Path, Path]) -> None:
    with journal(paths) as first:
        first.open()
        first.set(held("/a", "x"))
        first.set(held("/a", "x", "y"))
        file = current_file(first)
    data = bytearray(file.read_bytes())
    at = data.rindex(b'"y"')
    data[at + 1] = ord("z")  # still valid JSON, no longer the record that was written
    file.write_bytes(bytes(data))
    assert journal(paths).peek().mounts == {"/a": held("/a", "x")}


def test_corruption_in_the_middle_stops_replay_there(paths: tuple[Path, Path]) -> None:
    with journal(paths) as first:
        first.open()
        first.set(held("/a", "x"))
        first.set(held("/b", "y"))
        first.set(held("/c", "z"))
        file = current_file(first)
    data = file.read_bytes()
    start = data.index(b'"target":"/b"')
    file.write_bytes(data[:start] + b"garbage" + data[start + 7 :])
    assert journal(paths).peek().mounts == {"/a": held("/a", "x")}
    with journal(paths) as second:
        assert second.open().mounts == {"/a": held("/a", "x")}


def test_stale_records_of_an_older_generation_are_not_replayed(paths: tuple[Path, Path]) -> None:
    with journal(paths, capacity=SMALL) as first:
        first.open()
        first.set(held("/a", "x"))
        # A complete, checksummed record of an older use of the file, right at
        # the write offset, as a compaction may leave it behind.
        stale = journal_module._encode({**journal_module._held_to_record(held("/z")), "g": 0})
        file, offset = current_file(first), first._offset
        with file.open("r+b") as stream:
            stream.seek(offset)
            stream.write(stale)
    assert journal(paths).peek().mounts == {"/a": held("/a", "x")}

    # And the natural way: after compactions the files hold older generations
    # past the snapshot; the state is still only what was written last.
    with journal(paths, capacity=SMALL) as second:
        second.open()
        for round_ in range(300):
            second.set(held(f"/r{round_ % 7}", *[f"h{i}" for i in range(round_ % 4)]))
        for round_ in range(7):
            if round_ % 2:
                second.forget(f"/r{round_}")
        expected = second._state.copy()
        assert second._generation > 5, "the records forced compactions"
    generations = set()
    for name in JOURNAL_NAMES:
        data = (paths[0] / name).read_bytes()
        generations |= {int(g) for g in __import__("re").findall(rb'"g":(\d+)', data)}
    assert len(generations) > 2, "older generations remain on disk"
    with journal(paths, capacity=SMALL) as third:
        assert snapshot_of(third.open()) == snapshot_of(expected)


def test_an_incomplete_snapshot_falls_back_to_the_other_file(paths: tuple[Path, Path]) -> None:
    with journal(paths, capacity=SMALL) as first:
        first.open()
        for _ in range(10):
            first.set(held("/a", "x"))
        first.set(held("/b", "y"))
        current = current_file(first)
        other = first.paths[1 - first._current]
        first.reserve(first.free + 1)  # compacts into the other file
        assert current_file(first) == other
        snapshot = other.read_bytes()[: first._offset]
    # A crash during the next compaction: only its boot record reached the disk.
    header = snapshot.split(b"\n")[0] + b"\n"
    newer = json.loads(header)
    newer["g"] += 1
    newer.pop("crc")
    with current.open("r+b") as stream:
        stream.write(journal_module._encode(newer) + bytes(300))
    assert journal(paths).peek().mounts == {"/a": held("/a", "x"), "/b": held("/b", "y")}
    with journal(paths, capacity=SMALL) as second:
        assert set(second.open().mounts) == {"/a", "/b"}
        assert second._generation == newer["g"] + 1, "generations never go back"


def test_records_of_another_boot_are_discarded(paths: tuple[Path, Path]) -> None:
    with journal(paths) as first:
        first.open()
        first.set(held("/a", "x"))
        txn = first.begin("create", [{"step": 1}])
    paths[1].write_text("boot-2\n")
    assert journal(paths).peek() == JournalState()
    with journal(paths) as second:
        assert second.open() == JournalState()
        assert second.begin("create", []) > txn, "transaction ids never repeat"
    with journal(paths) as third:
        assert third.open().mounts == {}


def test_no_boot_id_is_a_boot_id_too(paths: tuple[Path, Path]) -> None:
    paths[1].unlink()
    with journal(paths) as first:
        first.open()
        first.set(held("/a", "x"))
    with journal(paths) as second:
        assert second.open().mounts == {"/a": held("/a", "x")}


# -- compaction and reservations -------------------------------------------------


def test_compaction_keeps_the_state_and_bounds_the_files(paths: tuple[Path, Path]) -> None:
    with journal(paths, capacity=SMALL) as first:
        first.open()
        start = first._generation
        for round_ in range(200):
            first.set(held("/a", *[f"h{i}" for i in range(round_ % 5)]))
        first.set(held("/b", "keep"))
        assert first._generation - start >= 4, "compacted several times"
    for name in JOURNAL_NAMES:
        assert (paths[0] / name).stat().st_size == SMALL, "never written past the capacity"
    with journal(paths, capacity=SMALL) as second:
        state = second.open()
        records = lines_of(current_file(second))
    assert state.mounts["/a"] == held("/a", *[f"h{i}" for i in range(199 % 5)])
    assert state.mounts["/b"] == held("/b", "keep")
    header = records[0]
    assert header["op"] == "boot" and header["records"] == 2 and header["boot_id"] == "boot-1"
    assert [r["op"] for r in records] == ["boot", "set", "set"]


def test_a_live_state_that_does_not_fit_is_enospc_and_changes_nothing(
    paths: tuple[Path, Path],
) -> None:
    with journal(paths, capacity=4096) as first:
        first.open()
        with pytest.raises(JournalError) as full:
            for number in range(100):
                first.set(held(f"/mount/{number:03}", "holder-with-a-long-name"))
        assert full.value.errno == errno.ENOSPC
        assert "capacity of 4096 bytes" in str(full.value)
        state = first._state.copy()
        assert 5 < len(state.mounts) < 100
        assert snapshot_of(journal(paths).peek()) == snapshot_of(state)
        # Shrinking always works: a forget fits wherever the state did.
        for target in list(state.mounts)[:3]:
            first.forget(target)
        first.set(held("/mount/new", "x"))
        expected = first._state.copy()
    with journal(paths, capacity=4096) as second:
        assert snapshot_of(second.open()) == snapshot_of(expected)


def test_reserve_compacts_or_refuses_with_enospc(paths: tuple[Path, Path]) -> None:
    with journal(paths, capacity=SMALL) as first:
        first.open()
        first.set(held("/a", "x"))
        generation = first._generation
        first.reserve(100)
        assert first._generation == generation, "room enough: nothing to do"
        for number in range(20):
            first.set(held("/a", *["x"] * number))
        assert first.free < SMALL - 1000
        first.reserve(SMALL - 1000)
        assert first._generation == generation + 1 and first.free >= SMALL - 1000
        offset = first._offset
        with pytest.raises(JournalError) as refused:
            first.reserve(SMALL)
        assert refused.value.errno == errno.ENOSPC and "8192" in str(refused.value)
        assert (first._generation, first._offset) == (generation + 1, offset)
        with pytest.raises(ValueError):
            first.reserve(-1)
    with journal(paths, capacity=SMALL) as second:
        assert second.open().mounts == {"/a": held("/a", *["x"] * 19)}


def test_open_transactions_keep_the_room_they_reserved(paths: tuple[Path, Path]) -> None:
    """Writers of different mount points run transactions side by side: a second
    begin must not take the room the first one was promised for its records."""
    room = 2500
    with journal(paths, capacity=SMALL) as first:
        first.open()
        for number in range(19):
            first.set(held("/a", *["x"] * number))
        assert room + 500 < first.free < 2 * room, "room for one transaction, not two"
        one = first.begin("create", [], room=lambda size: room)
        generation = first._generation
        two = first.begin("create", [], room=lambda size: room)
        assert first._generation == generation + 1, "the second begin compacts"
        assert first.free >= 2 * room, "both transactions' records fit without compaction"
        first.end(one)
        first.end(two)
        assert first._reserved == {}


def test_a_record_written_alone_leaves_the_room_open_transactions_reserved(
        paths: tuple[Path, Path]) -> None:
    """A holder change that is a transaction of its own (``alone``) runs beside a
    begun transaction of another mount point: it must not spend that one's room
    (a review filled it with 115 such records, and the release that had begun
    failed after its unmount)."""
    room = 3000
    with journal(paths, capacity=SMALL) as first:
        first.open()
        txn = first.begin("delete", [], room=lambda size: room)
        written = 0
        with pytest.raises(JournalError) as full:
            for number in range(1000):  # more mounts each time: compactions, then no room
                first.set(held(f"/a{number:03}", "holder"), alone=True)
                written += 1
                assert first.free >= room, "the begun transaction's records still fit"
        assert full.value.errno == errno.ENOSPC and written > 0
        assert first.free >= room
        first.set(held("/b", "in the transaction"))
        first.end(txn)
        # Its room given back, the same change is written again.
        first.set(held("/a", "after"), alone=True)
        expected = first._state.copy()
    with journal(paths, capacity=SMALL) as second:
        assert snapshot_of(second.open()) == snapshot_of(expected)


def test_a_capacity_below_a_page_is_refused(paths: tuple[Path, Path]) -> None:
    with pytest.raises(ValueError, match="capacity"):
        journal(paths, capacity=100)


# -- transactions ----------------------------------------------------------------


def test_transactions_replay_until_they_end(paths: tuple[Path, Path]) -> None:
    steps: list[dict[str, Any]] = [
        {"kind": "mount", "target": "/a", "flags": [1, 2]},
        {"kind": "fstab", "line": "x"},
    ]
    with journal(paths) as first:
        first.open()
        one = first.begin("create", steps)
        two = first.begin("delete", [])
        three = first.begin("modify", [{"kind": "remount"}])
        assert one < two < three
        first.end(two)
        with pytest.raises(JournalError) as unknown:
            first.end(two)
        assert unknown.value.errno == errno.EINVAL
    with journal(paths) as second:
        state = second.open()
        assert list(state.transactions) == [one, three]
        assert state.transactions[one] == Transaction(one, "create", tuple(steps))
        assert state.transactions[three].steps == ({"kind": "remount"},)
        second.end(one)
        four = second.begin("create", [])
        assert four > three, "ids continue after a restart"
        second.end(three)
        second.end(four)
    with journal(paths) as third:
        assert third.open().transactions == {}
        assert third.begin("x", []) > four, "even when no transaction was left open"


def test_steps_that_replay_could_not_read_are_refused_before_writing(
    paths: tuple[Path, Path],
) -> None:
    with journal(paths) as first:
        first.open()
        offset = first._offset
        with pytest.raises(TypeError):
            first.begin("create", [{"when": object()}])
        with pytest.raises(TypeError):
            first.begin("create", ["not an object"])  # type: ignore[list-item]
        with pytest.raises(ValueError):
            first.begin("create", [{"size": float("nan")}])
        assert first._offset == offset and first._state.transactions == {}
        txn = first.begin("create", [{1: (2, 3)}])  # type: ignore[dict-item]
        assert first._state.transactions[txn].steps == ({"1": [2, 3]},), "as replay reads it"
        assert journal(paths).peek().transactions == first._state.transactions


def test_open_transactions_survive_compaction(paths: tuple[Path, Path]) -> None:
    with journal(paths, capacity=SMALL) as first:
        first.open()
        kept = [first.begin(f"op{n}", [{"n": n}]) for n in range(3)]
        start = first._generation
        for round_ in range(300):
            txn = first.begin("churn", [{"round": round_}])
            first.set(held("/a", *["x"] * (round_ % 3)))
            first.end(txn)
        assert first._generation - start >= 5
        last = first.begin("last", [])
        expected = first._state.copy()
    assert list(expected.transactions) == [*kept, last]
    assert snapshot_of(journal(paths).peek()) == snapshot_of(expected)
    with journal(paths, capacity=SMALL) as second:
        state = second.open()
        assert snapshot_of(state) == snapshot_of(expected)
        assert [t.operation for t in state.transactions.values()] == ["op0", "op1", "op2", "last"]


# -- migration from the single-file journal --------------------------------------


def legacy_lines(*records: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(r, separators=(",", ":")).encode() + b"\n" for r in records)


def legacy_set(target: str, *holders: str) -> dict[str, Any]:
    return journal_module._held_to_record(held(target, *holders))


def test_the_single_file_journal_is_migrated(paths: tuple[Path, Path]) -> None:
    paths[0].mkdir(mode=0o700)
    old = paths[0] / JOURNAL_NAME
    old.write_bytes(
        legacy_lines(
            {"op": "boot", "boot_id": "boot-1"},
            legacy_set("/a", "x"),
            {"op": "intent", "target": "/b", "source": "s", "fstype": None, "options": "ro"},
            legacy_set("/c", "y"),
            {"op": "forget", "target": "/c"},
        )
        + b'{"op":"set","target":"/a","hol'  # a torn last append
    )
    expected_intents = {"/b": Intent("/b", "s", None, "ro")}
    assert journal(paths).peek().mounts == {"/a": held("/a", "x")}, "peek reads the old file"
    with journal(paths) as first:
        state = first.open()
        assert state.mounts == {"/a": held("/a", "x")} and state.intents == expected_intents
        assert not old.exists(), "migrated, then removed"
        first.set(held("/d", "z"))
    with journal(paths) as second:
        state = second.open()
    assert state.mounts == {"/a": held("/a", "x"), "/d": held("/d", "z")}
    assert state.intents == expected_intents


def test_a_single_file_journal_of_another_boot_migrates_to_nothing(
    paths: tuple[Path, Path],
) -> None:
    paths[0].mkdir(mode=0o700)
    (paths[0] / JOURNAL_NAME).write_bytes(
        legacy_lines({"op": "boot", "boot_id": "boot-0"}, legacy_set("/a", "x"))
    )
    with journal(paths) as first:
        assert first.open() == JournalState()
    assert not (paths[0] / JOURNAL_NAME).exists()


def test_the_old_file_wins_over_new_files_of_an_interrupted_migration(
    paths: tuple[Path, Path],
) -> None:
    with journal(paths) as first:
        first.open()
        first.set(held("/new", "x"))
    (paths[0] / JOURNAL_NAME).write_bytes(
        legacy_lines({"op": "boot", "boot_id": "boot-1"}, legacy_set("/old", "y"))
    )
    with journal(paths) as second:
        assert second.open().mounts == {"/old": held("/old", "y")}
    with journal(paths) as third:
        assert third.open().mounts == {"/old": held("/old", "y")}


def test_corruption_in_the_middle_of_the_old_file_is_an_error_naming_the_line(
    paths: tuple[Path, Path],
) -> None:
    paths[0].mkdir(mode=0o700)
    (paths[0] / JOURNAL_NAME).write_bytes(
        legacy_lines({"op": "boot", "boot_id": "boot-1"}, legacy_set("/a", "x"))
        + b"garbage\n"
        + legacy_lines(legacy_set("/b", "y"))
    )
    with pytest.raises(JournalError, match="line 3"):
        journal(paths).open()
    assert (paths[0] / JOURNAL_NAME).exists(), "nothing is lost"


# -- failures --------------------------------------------------------------------


def test_one_engine_per_state_directory(paths: tuple[Path, Path]) -> None:
    with journal(paths) as first:
        first.open()
        with pytest.raises(JournalError, match="another lmi-mount engine"):
            journal(paths).open()
        assert journal(paths).peek().mounts == {}, "an observer reads without the lock"
        with pytest.raises(JournalError) as twice:
            first.open()
        assert twice.value.errno == errno.EBUSY
    with journal(paths) as again:
        again.open()


def test_writing_a_closed_journal_is_ebadf(paths: tuple[Path, Path]) -> None:
    first = journal(paths)
    with pytest.raises(JournalError) as closed:
        first.set(held("/a"))
    assert closed.value.errno == errno.EBADF
    first.open()
    first.close()
    with pytest.raises(JournalError):
        first.forget("/a")


def test_a_failed_write_changes_no_state(
    paths: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    with journal(paths) as first:
        first.open()
        first.set(held("/a", "x"))
        offset = first._offset
        real = os.pwrite
        calls: list[int] = []

        def short_then_fail(fd: int, data: Any, position: int) -> int:
            calls.append(position)
            if len(calls) == 1:
                return real(fd, bytes(data)[:10], position)  # a short write ...
            if len(calls) == 2:
                raise OSError(errno.EIO, "Input/output error")  # ... then the error
            return real(fd, data, position)

        monkeypatch.setattr(os, "pwrite", short_then_fail)
        with pytest.raises(JournalError, match="cannot write a journal record") as failed:
            first.set(held("/a", "x", "y"))
        assert failed.value.errno == errno.EIO
        assert failed.value.filename == str(current_file(first))
        assert first._state.mounts["/a"] == held("/a", "x")
        assert first._offset == offset
        assert current_file(first).read_bytes()[offset : offset + 64] == bytes(64), "zeroed"
        assert journal(paths).peek().mounts == {"/a": held("/a", "x")}
        first.set(held("/a", "x", "z"))
    with journal(paths) as second:
        assert second.open().mounts == {"/a": held("/a", "x", "z")}


def test_a_failed_sync_changes_no_state(
    paths: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    with journal(paths) as first:
        first.open()
        first.set(held("/a", "x"))
        real = os.fdatasync
        calls = []

        def fail_once(fd: int) -> None:
            calls.append(fd)
            if len(calls) == 1:
                raise OSError(errno.EIO, "Input/output error")
            real(fd)

        monkeypatch.setattr(os, "fdatasync", fail_once)
        with pytest.raises(JournalError):
            first.set(held("/a", "x", "y"))
        assert journal(paths).peek().mounts == {"/a": held("/a", "x")}, "the record was wiped"


def test_a_full_state_directory_opens_read_only(
    paths: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    with journal(paths) as first:
        assert first.open() == JournalState()
        assert first.read_only
        reason = first.read_only_reason
        assert reason is not None
        assert str(paths[0] / JOURNAL_NAMES[0]) in reason and "ENOSPC" in reason
        for write in (
            lambda: first.set(held("/a")),
            lambda: first.intent(Intent("/a", "s", None, "")),
            lambda: first.forget("/a"),
            lambda: first.begin("x", []),
            lambda: first.end(1),
            lambda: first.reserve(1),
        ):
            with pytest.raises(JournalError, match="read-only") as refused:
                write()
            assert refused.value.errno == errno.EROFS
            assert reason in str(refused.value)
        with pytest.raises(JournalError, match="another lmi-mount engine"):
            journal(paths).open()
    assert sorted(p.name for p in paths[0].iterdir()) == [LOCK_NAME], "space given back"


def test_a_full_state_directory_still_replays_the_old_file(
    paths: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    paths[0].mkdir(mode=0o700)
    (paths[0] / JOURNAL_NAME).write_bytes(
        legacy_lines({"op": "boot", "boot_id": "boot-1"}, legacy_set("/a", "x"))
    )

    def full(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.EDQUOT, "Disk quota exceeded")

    monkeypatch.setattr(os, "posix_fallocate", full)
    with journal(paths) as first:
        assert first.open().mounts == {"/a": held("/a", "x")}
        assert first.read_only and "EDQUOT" in (first.read_only_reason or "")
    assert (paths[0] / JOURNAL_NAME).exists(), "kept until it can be migrated"


def test_existing_files_open_read_write_when_the_file_system_is_full(
    paths: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    with journal(paths, capacity=SMALL) as first:
        first.open()
        first.set(held("/a", "x"))

    def full(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    with journal(paths, capacity=SMALL) as second:
        assert second.open().mounts == {"/a": held("/a", "x")}
        assert not second.read_only
        for round_ in range(100):
            second.set(held("/a", *["x"] * (round_ % 4)))
    with journal(paths, capacity=SMALL) as third:
        assert third.open().mounts == {"/a": held("/a", *["x"] * 3)}


def test_without_fallocate_the_files_are_filled_with_zeros(
    paths: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    def unsupported(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")

    monkeypatch.setattr(os, "posix_fallocate", unsupported)
    with journal(paths, capacity=SMALL) as first:
        first.open()
        first.set(held("/a", "x"))
        assert not first.read_only
    for name in JOURNAL_NAMES:
        info = (paths[0] / name).stat()
        assert info.st_size == SMALL and info.st_blocks * 512 >= SMALL
    with journal(paths, capacity=SMALL) as second:
        assert second.open().mounts == {"/a": held("/a", "x")}


# -- hazards ---------------------------------------------------------------------


@pytest.mark.parametrize("name", [JOURNAL_NAMES[0], JOURNAL_NAMES[1], LOCK_NAME, JOURNAL_NAME])
def test_a_symbolic_link_is_refused(paths: tuple[Path, Path], name: str) -> None:
    paths[0].mkdir(mode=0o700)
    victim = paths[0].parent / "victim"
    victim.write_text("precious\n")
    (paths[0] / name).symlink_to(victim)
    with pytest.raises(JournalError, match="symbolic link") as refused:
        journal(paths).open()
    assert str(paths[0] / name) in str(refused.value)
    assert victim.read_text() == "precious\n"


@pytest.mark.parametrize("kind", ["directory", "fifo"])
def test_something_else_than_a_regular_file_is_refused(
    paths: tuple[Path, Path], kind: str
) -> None:
    paths[0].mkdir(mode=0o700)
    target = paths[0] / JOURNAL_NAMES[1]
    if kind == "directory":
        target.mkdir()
    else:
        os.mkfifo(target, 0o600)
    with pytest.raises(JournalError) as refused:
        journal(paths).open()
    assert str(target) in str(refused.value)
    if kind == "fifo":
        assert "not a regular file" in str(refused.value)
        with pytest.raises(JournalError, match="not a regular file"):
            journal(paths).peek()


@requires_root
@pytest.mark.root
def test_a_file_of_another_owner_is_refused(paths: tuple[Path, Path]) -> None:
    with journal(paths, capacity=SMALL) as first:
        first.open()
    os.chown(paths[0] / JOURNAL_NAMES[0], 4321, 4321)
    with pytest.raises(JournalError, match="owned by uid 4321") as refused:
        journal(paths).open()
    assert str(paths[0] / JOURNAL_NAMES[0]) in str(refused.value)


def test_a_begin_whose_reservation_compacts_is_written_in_the_new_generation(
    paths: tuple[Path, Path]
) -> None:
    # The reservation of begin's later records may compact the journal; the
    # begin record must then carry the new file's generation, or replay
    # stops at it and loses it and everything after.
    with journal(paths, capacity=4096) as first:
        first.open()
        for number in range(12):
            first.set(held(f"/m{number}", "h"))
            first.forget(f"/m{number}")
        txn = first.begin("create", [{"step": "x" * 200}], room=lambda size: 2000)
        first.progress(txn, {"mounted": 7})
    with journal(paths, capacity=4096) as again:
        state = again.open()
    assert list(state.transactions) == [txn]
    assert state.transactions[txn].progress == ({"mounted": 7},)
