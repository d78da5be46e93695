"""Faults of the fstab writer: kill -9 at every step, ENOSPC, EIO, conflicts, races.

Every test works on a file in its own temporary directory; the ENOSPC test
mounts a tiny tmpfs inside a private mount namespace (tests/support).
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from lmi_mount.linux.files import (
    REPLACE_STEPS,
    ConflictError,
    FileReadError,
    FileVersion,
    FileWriteError,
    default_lock_path,
    edit_file,
    read_versioned,
    replace_atomically,
    temp_path,
)
from lmi_mount.linux.namespace import libc
from lmi_mount.mounts.fstab import FstabDocument, FstabEntry
from tests.support import private_namespace

PROVIDER = str(Path(__file__).resolve().parents[2] / "provider")
OLD = "# old fstab\n" + "".join(
    f"/dev/old{i} /mnt/old/{i} ext4 defaults 0 2\n" for i in range(2000)
)
NEW = "# new fstab\n" + "".join(f"/dev/new{i} /srv/new/{i} xfs ro 0 0\n" for i in range(2500))
STEPS_BEFORE_RENAME = REPLACE_STEPS[: REPLACE_STEPS.index("renamed")]


@pytest.fixture
def fstab(tmp_path: Path) -> Path:
    path = tmp_path / "fstab"
    path.write_text(OLD)
    return path


def listing(directory: Path) -> set[str]:
    return {entry.name for entry in directory.iterdir()}


def run_python(code: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([PROVIDER, os.environ.get("PYTHONPATH", "")])
    )
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


# -- kill -9 at every step ------------------------------------------------------

CRASHING_WRITER = """
    import os, signal, sys
    from lmi_mount.linux import files

    path, step, how, new = sys.argv[1:5]

    def crash(name):
        if name == step:
            os.kill(os.getpid(), signal.SIGKILL)

    if how == "replace_atomically":
        _text, version = files.read_versioned(path)
        files.replace_atomically(path, new, version, crash=crash)
    else:
        files.edit_file(path, lambda old: new, crash=crash)
    sys.exit("the crash hook was never called with " + step)
"""


@pytest.mark.parametrize("how", ["replace_atomically", "edit_file"])
@pytest.mark.parametrize("step", REPLACE_STEPS)
def test_kill_at_every_step_leaves_old_or_new(fstab: Path, step: str, how: str) -> None:
    done = run_python(CRASHING_WRITER, str(fstab), step, how, NEW)
    assert done.returncode == -signal.SIGKILL, done.stderr

    # A reader sees exactly the old file until the rename, the new one after.
    expected = OLD if step in STEPS_BEFORE_RENAME else NEW
    assert fstab.read_text() == expected

    # Whatever the writer left behind does not break the next write, which
    # cleans it up.
    text, version = read_versioned(fstab)
    replace_atomically(fstab, text + "# next\n", version)
    assert fstab.read_text() == expected + "# next\n"
    assert listing(fstab.parent) == {"fstab", "fstab.lock"}


# -- errors of the system -------------------------------------------------------


@pytest.mark.parametrize("step", REPLACE_STEPS)
@pytest.mark.parametrize("code", [errno.EIO, errno.ENOSPC, errno.EDQUOT])
def test_error_at_every_step(fstab: Path, step: str, code: int) -> None:
    def fail(name: str) -> None:
        if name == step:
            raise OSError(code, os.strerror(code))

    _text, version = read_versioned(fstab)
    with pytest.raises(FileWriteError) as caught:
        replace_atomically(fstab, NEW, version, crash=fail)
    error = caught.value
    assert (error.errno, error.step, error.path) == (code, step, str(fstab))
    assert repr(str(fstab)) in str(error)
    assert errno.errorcode[code] in str(error)
    replaced = step not in STEPS_BEFORE_RENAME
    assert error.replaced is replaced
    assert fstab.read_text() == (NEW if replaced else OLD)
    assert listing(fstab.parent) == {"fstab", "fstab.lock"}


@private_namespace
def test_enospc_on_a_full_tmpfs_keeps_the_old_file(tmp_path: Path) -> None:
    small = tmp_path / "small"
    small.mkdir()
    if libc().mount(b"tmpfs", bytes(small), b"tmpfs", 0, b"size=64k,mode=0755") != 0:
        raise OSError(errno.EPERM, "mounting the test tmpfs failed")
    path = small / "fstab"
    old = "/dev/a /a ext4 defaults 0 2\n" * 100
    path.write_text(old)
    _text, version = read_versioned(path)
    filler = os.open(small / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with pytest.raises(OSError) as full:
            while True:
                os.write(filler, b"x" * 4096)
    finally:
        os.close(filler)
    assert full.value.errno == errno.ENOSPC

    new = old + "tmpfs /t tmpfs size=1m 0 0\n" * 200
    with pytest.raises(FileWriteError) as caught:
        replace_atomically(path, new, version)
    assert caught.value.errno == errno.ENOSPC
    assert caught.value.step in ("temp-written", "temp-synced")
    assert str(path) in str(caught.value)
    assert "ENOSPC" in str(caught.value)
    assert path.read_text() == old
    assert listing(small) == {"fstab", "fstab.lock", "filler"}

    with pytest.raises(FileWriteError) as caught_edit:
        edit_file(path, lambda text: new)
    assert caught_edit.value.errno == errno.ENOSPC
    assert path.read_text() == old

    # Once there is room again, the same edit goes through.
    (small / "filler").unlink()
    assert edit_file(path, lambda text: new) == (old, new)
    assert path.read_text() == new
    assert listing(small) == {"fstab", "fstab.lock"}


# -- conflicts: an edit made by someone who does not lock ------------------------


def _append(path: Path) -> str:
    with open(path, "a") as stream:
        stream.write("# added by an editor\n")
    return path.read_text()


def _same_size_same_mtime(path: Path) -> str:
    # Same size and the old mtime restored: only the content digest can tell.
    info = path.stat()
    text = path.read_text().replace("/dev/old1 ", "/dev/OLD1 ", 1)
    with open(path, "r+") as stream:
        stream.write(text)
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (info.st_size, info.st_mtime_ns)
    return text


def _renamed_over(path: Path) -> str:
    # An atomic writer (UDisks2, sed -i) put a new inode there, same content.
    other = path.with_name("other")
    other.write_text(path.read_text())
    os.rename(other, path)
    return path.read_text()


def _deleted(path: Path) -> None:
    path.unlink()


@pytest.mark.parametrize(
    "external",
    [
        pytest.param(_append, id="in-place-append"),
        pytest.param(_same_size_same_mtime, id="same-size-same-mtime"),
        pytest.param(_renamed_over, id="renamed-over"),
        pytest.param(_deleted, id="deleted"),
    ],
)
def test_external_edit_between_read_and_replace_survives(
    fstab: Path, external: Callable[[Path], str | None]
) -> None:
    _text, version = read_versioned(fstab)
    survivor = external(fstab)
    with pytest.raises(ConflictError, match=f"^{str(fstab)!r} was changed by someone else"):
        replace_atomically(fstab, NEW, version)
    if survivor is None:
        assert not fstab.exists()
        assert listing(fstab.parent) == {"fstab.lock"}
    else:
        assert fstab.read_text() == survivor
        assert listing(fstab.parent) == {"fstab", "fstab.lock"}


def test_file_created_after_reading_it_missing_is_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "fstab"
    text, version = read_versioned(path)
    assert (text, version) == ("", FileVersion.missing())
    path.write_text("")  # someone else created it, empty
    with pytest.raises(ConflictError, match="missing -> inode"):
        replace_atomically(path, NEW, version)
    assert path.read_text() == ""


def test_edit_file_reapplies_the_edit_after_a_conflict(fstab: Path) -> None:
    seen: list[str] = []

    def edit(text: str) -> str:
        seen.append(text)
        if len(seen) == 1:
            _append(fstab)  # an editor saves while we are computing
        return text + "# ours\n"

    old, new = edit_file(fstab, edit)
    assert len(seen) == 2
    assert seen[1] == OLD + "# added by an editor\n"
    assert (old, new) == (seen[1], seen[1] + "# ours\n")
    assert fstab.read_text() == OLD + "# added by an editor\n# ours\n"


def test_edit_file_gives_up_after_its_retries(fstab: Path) -> None:
    calls = 0

    def edit(text: str) -> str:
        nonlocal calls
        calls += 1
        _append(fstab)
        return text + "# ours\n"

    with pytest.raises(ConflictError):
        edit_file(fstab, edit, retries=2)
    assert calls == 3
    assert fstab.read_text() == OLD + "# added by an editor\n" * 3
    assert listing(fstab.parent) == {"fstab", "fstab.lock"}


# -- concurrent writers ---------------------------------------------------------

APPENDING_WRITER = """
    import os, sys, time
    from lmi_mount.linux.files import edit_file
    from lmi_mount.mounts.fstab import FstabDocument, FstabEntry

    path, name, count, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    while not os.path.exists(go):
        time.sleep(0.001)
    for i in range(count):
        entry = FstabEntry(f"/dev/{name}{i}", f"/mnt/{name}/{i}", "ext4", "defaults", 0, 2)
        edit_file(path, lambda text: FstabDocument.parse(text).add(entry).render(), retries=0)
"""


def test_concurrent_writers_lose_no_edit(fstab: Path) -> None:
    writers, count = ("p", "q", "r"), 40
    go = fstab.parent / "go"
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([PROVIDER, os.environ.get("PYTHONPATH", "")])
    )
    code = textwrap.dedent(APPENDING_WRITER)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(fstab), name, str(count), str(go)],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in writers
    ]
    time.sleep(0.3)  # let every interpreter start and wait at the barrier
    go.touch()
    for proc in procs:
        _out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err

    document = FstabDocument.parse(fstab.read_text())
    assert document.render().startswith(OLD)
    added = {line.entry.spec for line in document.entries()} - {
        f"/dev/old{i}" for i in range(2000)
    }
    assert added == {f"/dev/{name}{i}" for name in writers for i in range(count)}
    assert document.problems() == []


def test_a_held_lock_times_out_with_a_named_error(fstab: Path) -> None:
    lock = default_lock_path(fstab)
    fd = os.open(lock, os.O_RDONLY | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        _text, version = read_versioned(fstab)
        with pytest.raises(FileWriteError) as caught:
            replace_atomically(fstab, NEW, version, lock_timeout=0.05)
    finally:
        os.close(fd)
    assert (caught.value.errno, caught.value.path, caught.value.step) == (
        errno.ETIMEDOUT,
        lock,
        "lock",
    )
    assert fstab.read_text() == OLD


# -- what a successful write keeps ----------------------------------------------


@pytest.mark.parametrize(
    ("mode", "uid", "gid"),
    [
        pytest.param(0o644, 0, 0, id="0644-root"),
        pytest.param(0o600, 1234, 2345, id="0600-other-owner"),
        pytest.param(0o2640, 1234, 2345, id="setgid-kept-after-chown"),
    ],
)
def test_mode_and_owner_are_kept(fstab: Path, mode: int, uid: int, gid: int) -> None:
    if os.geteuid() != 0 and (uid, gid) != (os.geteuid(), os.getegid()):
        pytest.skip("needs root to give the file another owner")
    os.chown(fstab, uid, gid)
    os.chmod(fstab, mode)
    before = fstab.stat()
    _text, version = read_versioned(fstab)
    written = replace_atomically(fstab, NEW, version)
    after = fstab.stat()
    assert after.st_ino != before.st_ino  # replaced, not rewritten in place
    assert (stat.S_IMODE(after.st_mode), after.st_uid, after.st_gid) == (mode, uid, gid)
    assert read_versioned(fstab) == (NEW, written)


def test_new_file_is_created_0644(tmp_path: Path) -> None:
    path = tmp_path / "fstab"
    old_umask = os.umask(0o077)
    try:
        written = replace_atomically(path, NEW, FileVersion.missing())
    finally:
        os.umask(old_umask)
    info = path.stat()
    assert (stat.S_IMODE(info.st_mode), info.st_uid) == (0o644, os.geteuid())
    assert read_versioned(path) == (NEW, written)


def test_symlink_is_followed_and_kept(tmp_path: Path) -> None:
    real_dir = tmp_path / "real"
    real_dir.mkdir()
    real = real_dir / "fstab"
    real.write_text(OLD)
    link = tmp_path / "fstab"
    link.symlink_to(real)
    edit_file(link, lambda text: text + "# via the link\n")
    assert link.is_symlink()
    assert real.read_text() == OLD + "# via the link\n"
    assert listing(real_dir) == {"fstab", "fstab.lock"}
    assert temp_path(link) == str(real_dir / ".fstab.lmi-tmp")


def test_unchanged_edit_writes_nothing(fstab: Path) -> None:
    inode = fstab.stat().st_ino
    assert edit_file(fstab, lambda text: text) == (OLD, OLD)
    assert fstab.stat().st_ino == inode


def test_bytes_that_are_not_utf8_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "fstab"
    raw = b"/dev/sda1 /mnt/caf\xe9 vfat rw 0 0\r\n\x00\xff# end"
    path.write_bytes(raw)
    edit_file(path, lambda text: text + "\n# more\n")
    assert path.read_bytes() == raw + b"\n# more\n"
    entry = FstabDocument.parse(read_versioned(path)[0]).entries()[0].entry
    assert entry == FstabEntry("/dev/sda1", "/mnt/caf\udce9", "vfat", "rw", 0, 0)


# -- reading --------------------------------------------------------------------


def test_missing_and_empty_files_have_distinct_versions(tmp_path: Path) -> None:
    path = tmp_path / "fstab"
    missing = read_versioned(path)
    path.write_text("")
    empty = read_versioned(path)
    assert missing[0] == empty[0] == ""
    assert missing[1] == FileVersion.missing()
    assert missing[1] != empty[1]
    assert empty[1].exists


@pytest.mark.parametrize(
    ("make", "code"),
    [
        pytest.param(os.mkdir, errno.EISDIR, id="directory"),
        pytest.param(os.mkfifo, errno.EINVAL, id="fifo-does-not-hang"),
    ],
)
def test_reading_something_else_than_a_file(
    tmp_path: Path, make: Callable[[Path], None], code: int
) -> None:
    path = tmp_path / "fstab"
    make(path)
    with pytest.raises(FileReadError) as caught:
        read_versioned(path)
    assert (caught.value.errno, caught.value.path) == (code, str(path))
    with pytest.raises(FileReadError):
        edit_file(path, lambda text: text + "x")


def test_edit_file_refuses_negative_retries(fstab: Path) -> None:
    with pytest.raises(ValueError, match="retries must be >= 0, not -1"):
        edit_file(fstab, lambda text: text, retries=-1)
