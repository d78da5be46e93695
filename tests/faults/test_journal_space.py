"""Faults of the holder journal: a full state file system, and a failure at every write.

The full file system is real: a 1 MiB tmpfs mounted inside a private mount
namespace (tests/support) and filled to its last byte. The failures at every
write are injected into os.pwrite and os.fdatasync, one call at a time.
"""

from __future__ import annotations

import errno
import os
import random
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lmi_mount.linux.journal import (
    JOURNAL_NAME,
    JOURNAL_NAMES,
    LOCK_NAME,
    HolderJournal,
    Intent,
    JournalError,
    JournalState,
)
from lmi_mount.linux.namespace import libc
from lmi_mount.mounts.holders import HeldMount
from tests.support import private_namespace


def held(target: str, *holders: str) -> HeldMount:
    return HeldMount(
        target, "tmpfs", "tmpfs", "size=1m", made_by_us=True, mount_id=40, holders=holders
    )


def exact(state: JournalState) -> tuple[Any, ...]:
    """A state with the order of its transactions, to compare exactly."""
    return (state.mounts, state.intents, list(state.transactions.items()))


def on_disk(state_dir: Path, boot: Path) -> JournalState:
    """What a fresh journal replays from disk (without the lock, changing nothing)."""
    return HolderJournal(state_dir, boot_id_path=boot).peek()


@pytest.fixture
def boot(tmp_path: Path) -> Path:
    path = tmp_path / "boot_id"
    path.write_text("boot-1\n")
    return path


# -- a real full file system ------------------------------------------------------


def mount_small_tmpfs(where: Path, size: str = "1m") -> None:
    where.mkdir()
    if libc().mount(b"tmpfs", bytes(where), b"tmpfs", 0, f"size={size},mode=0755".encode()) != 0:
        raise OSError(errno.EPERM, f"mounting the test tmpfs on {where} failed")


def fill(file_system: Path) -> Path:
    """Fill ``file_system`` to its last byte with one file; return that file."""
    filler = file_system / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for chunk in (1 << 16, 4096, 1):
            try:
                while True:
                    os.write(fd, b"x" * chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)
    assert os.statvfs(file_system).f_bavail == 0
    with pytest.raises(OSError) as full:
        (file_system / "one-more").write_bytes(b"x")
    assert full.value.errno == errno.ENOSPC
    (file_system / "one-more").unlink(missing_ok=True)
    return filler


class Model:
    """What the journal should hold, kept independently of it."""

    def __init__(self) -> None:
        self.mounts: dict[str, HeldMount] = {}
        self.intents: dict[str, Intent] = {}
        self.transactions: list[int] = []


def churn(journal: HolderJournal, model: Model, rounds: int, seed: int) -> None:
    """Random set/forget/intent/begin/end/reserve records; none may fail."""
    rng = random.Random(seed)
    targets = [f"/srv/mount/{n:02}" for n in range(12)]
    for round_ in range(rounds):
        target = rng.choice(targets)
        choice = rng.random()
        if choice < 0.35:
            mount = held(target, *[f"holder-{rng.randrange(99)}" for _ in range(rng.randrange(4))])
            journal.set(mount)
            model.mounts[target] = mount
            model.intents.pop(target, None)
        elif choice < 0.5:
            journal.forget(target)
            model.mounts.pop(target, None)
            model.intents.pop(target, None)
        elif choice < 0.6:
            intent = Intent(target, "tmpfs", rng.choice(["tmpfs", None]), "size=1m")
            journal.intent(intent)
            model.intents[target] = intent
        elif choice < 0.8 or not model.transactions:
            if len(model.transactions) < 5:
                steps = [{"kind": "mount", "target": target, "round": round_}]
                txn = journal.begin("create", steps)
                assert not model.transactions or txn > model.transactions[-1]
                model.transactions.append(txn)
        elif choice < 0.97:
            txn = model.transactions.pop(rng.randrange(len(model.transactions)))
            journal.end(txn)
        else:
            journal.reserve(2048)


def check(state: JournalState, model: Model) -> None:
    assert state.mounts == model.mounts
    assert state.intents == model.intents
    assert list(state.transactions) == model.transactions


@private_namespace
def test_a_full_state_file_system_never_fails_a_record(tmp_path: Path, boot: Path) -> None:
    small = tmp_path / "small"
    mount_small_tmpfs(small)
    state = small / "state"
    legacy = small / "legacy"
    legacy.mkdir(mode=0o700)
    (legacy / JOURNAL_NAME).write_text(
        '{"op":"boot","boot_id":"boot-1"}\n'
        '{"op":"set","target":"/old","source":"s","fstype":null,"options":"ro",'
        '"made_by_us":false,"mount_id":7,"holders":["h"]}\n'
    )
    capacity = 16 << 10
    model = Model()
    journal = HolderJournal(state, boot_id_path=boot, capacity=capacity)
    journal.open()
    filler = fill(small)

    start = journal._generation
    churn(journal, model, rounds=6000, seed=1)
    assert journal._generation - start >= 20, "the records forced many compactions"
    check(journal._state, model)
    journal.close()
    assert os.statvfs(small).f_bavail == 0, "still full: nothing was appended"

    # Existing preallocated files need no room: they open read-write.
    again = HolderJournal(state, boot_id_path=boot, capacity=capacity)
    check(again.open(), model)
    assert not again.read_only and again.read_only_reason is None
    churn(again, model, rounds=1000, seed=2)
    again.close()
    reopened = HolderJournal(state, boot_id_path=boot, capacity=capacity)
    check(reopened.open(), model)
    reopened.close()
    for name in JOURNAL_NAMES:
        assert (state / name).stat().st_size == capacity

    # A journal that would need new room opens read-only and says why.
    fresh_dir = small / "fresh"
    fresh = HolderJournal(fresh_dir, boot_id_path=boot, capacity=capacity)
    assert fresh.open() == JournalState()
    assert fresh.read_only
    reason = fresh.read_only_reason or ""
    assert str(fresh_dir) in reason and "ENOSPC" in reason, reason
    for write in (
        lambda: fresh.set(held("/a", "x")),
        lambda: fresh.intent(Intent("/a", "s", None, "")),
        lambda: fresh.forget("/a"),
        lambda: fresh.begin("create", []),
        lambda: fresh.end(1),
        lambda: fresh.reserve(10),
    ):
        with pytest.raises(JournalError) as refused:
            write()
        assert refused.value.errno == errno.EROFS
        assert "read-only" in str(refused.value) and reason in str(refused.value)
    fresh.close()
    assert not any(fresh_dir.glob(f"{JOURNAL_NAME}*")), "what could not be filled is gone"

    # The single-file journal of an earlier version is still replayed.
    old = HolderJournal(legacy, boot_id_path=boot, capacity=capacity)
    assert list(old.open().mounts) == ["/old"]
    assert old.read_only and (legacy / JOURNAL_NAME).exists()
    old.close()

    # Once there is room again, the same journals open read-write (and migrate).
    filler.unlink()
    with HolderJournal(fresh_dir, boot_id_path=boot, capacity=capacity) as later:
        later.open()
        assert not later.read_only
        later.set(held("/a", "x"))
    with HolderJournal(legacy, boot_id_path=boot, capacity=capacity) as migrated:
        assert list(migrated.open().mounts) == ["/old"] and not migrated.read_only
    assert sorted(p.name for p in legacy.iterdir()) == sorted([*JOURNAL_NAMES, LOCK_NAME])


# -- a failure at every write -------------------------------------------------------


class FailAt:
    """Replace ``os.<name>``: the ``at``-th call (from 1) raises OSError(code)."""

    def __init__(self, name: str, at: int, code: int) -> None:
        self.name, self.at, self.code = name, at, code
        self.real: Callable[..., Any] = getattr(os, name)
        self.calls = 0

    def __call__(self, *args: Any) -> Any:
        self.calls += 1
        if self.calls == self.at:
            raise OSError(self.code, os.strerror(self.code))
        return self.real(*args)


def workload(
    journal: HolderJournal, state_dir: Path, boot: Path, every_step: bool
) -> Iterator[None]:
    """Records of every kind, with compactions; yields after each (failed or not).

    A failed record must change nothing, and after it (or after every step)
    the journal's state must equal what a fresh journal replays from disk.
    """
    txns: list[int] = []

    def begin(target: str, round_: int) -> None:
        txns.append(journal.begin("create", [{"target": target, "round": round_}]))

    def end() -> None:
        journal.end(txns[0])
        txns.pop(0)

    for round_ in range(40):
        target = f"/m{round_ % 5}"
        actions: list[Callable[[], object]] = [
            lambda: journal.reserve(1500),
            lambda t=target, r=round_: begin(t, r),  # type: ignore[misc]
            lambda t=target: journal.intent(Intent(t, "tmpfs", "tmpfs", "size=1m")),  # type: ignore[misc]
            lambda t=target, r=round_: journal.set(held(t, *["h"] * (r % 4))),  # type: ignore[misc]
        ]
        if round_ % 3 == 0:
            actions.append(lambda r=round_: journal.forget(f"/m{(r + 2) % 5}"))  # type: ignore[misc]
        if txns and round_ % 2:
            actions.append(end)
        for action in actions:
            before = exact(journal._state.copy())
            try:
                action()
            except JournalError as exc:
                assert exc.errno in (errno.ENOSPC, errno.EIO), exc
                assert exact(journal._state) == before, "a failed record changed the state"
                failed = True
            else:
                failed = False
            if every_step or failed:
                assert exact(on_disk(state_dir, boot)) == exact(journal._state)
            yield


def run_workload(state_dir: Path, boot: Path, injector: FailAt | None) -> tuple[int, Any]:
    with HolderJournal(state_dir, boot_id_path=boot, capacity=4096) as first:  # a state to start
        first.open()
        first.set(held("/m0", "a"))
        first.begin("modify", [{"kept": True}])
    before = exact(on_disk(state_dir, boot))
    journal = HolderJournal(state_dir, boot_id_path=boot, capacity=4096)
    with pytest.MonkeyPatch.context() as patch:
        if injector is not None:
            patch.setattr(os, injector.name, injector)
        try:
            journal.open()
        except JournalError:
            assert injector is not None and injector.calls >= injector.at
            assert exact(on_disk(state_dir, boot)) == before, "a failed open changed nothing"
            journal = HolderJournal(state_dir, boot_id_path=boot, capacity=4096)
            patch.undo()
            journal.open()
        assert exact(journal._state) == before
        steps = sum(1 for _ in workload(journal, state_dir, boot, injector is None))
    generations = journal._generation
    final = exact(journal._state)
    assert exact(on_disk(state_dir, boot)) == final
    journal.close()
    with HolderJournal(state_dir, boot_id_path=boot, capacity=4096) as reopened:
        assert exact(reopened.open()) == final
    return steps, (generations, final, injector.calls if injector else 0)


def count_calls(tmp_path: Path, boot: Path, name: str) -> int:
    counter = FailAt(name, 0, 0)  # never fails, counts
    run_workload(tmp_path / "count", boot, counter)
    return counter.calls


@pytest.fixture
def fast_dir() -> Iterator[Path]:
    """A directory on tmpfs where there is one: thousands of fdatasyncs take no time."""
    shm = "/dev/shm" if Path("/dev/shm").is_dir() else None
    path = Path(tempfile.mkdtemp(prefix="lmi-test-journal-", dir=shm))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize(
    ("name", "code"),
    [
        pytest.param("pwrite", errno.ENOSPC, id="pwrite-ENOSPC"),
        pytest.param("fdatasync", errno.EIO, id="fdatasync-EIO"),
    ],
)
def test_a_failure_at_every_write_leaves_memory_and_disk_alike(
    fast_dir: Path, boot: Path, name: str, code: int
) -> None:
    tmp_path = fast_dir
    _, (generations, _, _) = run_workload(tmp_path / "reference", boot, None)
    assert generations > 8, "the workload compacts several times"
    total = count_calls(tmp_path, boot, name)  # in a run without failure
    assert total > 100
    for at in range(1, total + 1):
        injector = FailAt(name, at, code)
        run_workload(tmp_path / f"{name}-{at}", boot, injector)
        assert injector.calls >= at, "the failure happened"
