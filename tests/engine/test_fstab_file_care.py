"""Care of the fstab file: its attributes survive an edit, backups are kept, and the
administrator edits it by hand (``lmi-mount edit-fstab``) without losing a line to the
running service, or the service one to the administrator.

The first build replaced fstab without its extended attributes (an SELinux
label, ACLs), and an administrator's ``sed -i`` raced the daemon's writes.
"""

from __future__ import annotations

import errno
import io
import os
import shutil
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest

from lmi_mount.admin import main
from lmi_mount.engine import MountManager
from lmi_mount.fstab_editor import edit_fstab
from lmi_mount.linux import files
from lmi_mount.mounts.errors import OperationFailed
from lmi_mount.mounts.plan import MountSpec
from tests.engine.conftest import World


def _supports_xattrs(path: Path) -> bool:
    try:
        os.setxattr(path, "user.lmi-probe", b"1")
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return False
        raise
    os.removexattr(path, "user.lmi-probe")
    return True


def test_an_edit_keeps_owner_mode_and_extended_attributes(world: World) -> None:
    if not _supports_xattrs(world.fstab):
        pytest.skip(f"the file system of {world.fstab} has no user extended attributes")
    os.setxattr(world.fstab, "user.origin", b"admin")
    os.chmod(world.fstab, 0o640)
    if shutil.which("setfacl"):
        subprocess.run(["setfacl", "-m", "u:nobody:r", str(world.fstab)], check=True)
    before = {name: os.getxattr(world.fstab, name) for name in os.listxattr(world.fstab)}
    with world.manager() as engine:
        engine.create(MountSpec("tmpfs", world.dir("a"), "tmpfs"), current=False, persist=True)
    after = {name: os.getxattr(world.fstab, name) for name in os.listxattr(world.fstab)}
    assert after == before and "user.origin" in after
    assert stat.S_IMODE(world.fstab.stat().st_mode) == stat.S_IMODE(0o640)


def test_backups_keep_the_replaced_files_newest_first_pruned(world: World) -> None:
    texts = [world.fstab.read_text()]
    with world.manager(fstab_backups=2) as engine:
        for name in ("a", "b", "c"):
            engine.create(MountSpec("tmpfs", world.dir(name), "tmpfs"), current=False,
                          persist=True)
            texts.append(world.fstab.read_text())
        kept = files.backups_of(world.fstab)
        assert [Path(path).read_text() for path in kept] == texts[1:3]
        out = io.StringIO()
        observer = MountManager(world.kernel, fstab_path=world.fstab, state_dir=world.state,
                                boot_id_path=world.boot_id, observer=True)
        main(["status"], engine=observer, out=out)
        assert f"fstab backups: {', '.join(kept)}" in out.getvalue()


def _editor(tmp_path: Path, *steps: str) -> str:
    """An $EDITOR that runs the next of ``steps`` (shell, "$1" is the file) each time."""
    counter = tmp_path / "editor-runs"
    counter.write_text("0")
    cases = "".join(f"{n}) {step} ;;\n" for n, step in enumerate(steps))
    script = tmp_path / "editor.sh"
    script.write_text(f"#!/bin/sh\nn=$(cat {counter}); echo $((n+1)) > {counter}\n"
                      f"case $n in\n{cases}esac\n")
    script.chmod(0o755)
    return str(script)


def test_edit_fstab_writes_a_checked_edit_with_a_backup(tmp_path: Path) -> None:
    fstab = tmp_path / "fstab"
    fstab.write_text("# mine\n")
    editor = _editor(tmp_path, f'echo "tmpfs {tmp_path}/t tmpfs size=1m 0 0" >> "$1"')
    out = io.StringIO()
    assert edit_fstab(str(fstab), editor=editor, out=out, backups=1) == 0
    assert fstab.read_text() == f"# mine\ntmpfs {tmp_path}/t tmpfs size=1m 0 0\n"
    [backup] = files.backups_of(fstab)
    assert Path(backup).read_text() == "# mine\n" and backup in out.getvalue()


def test_edit_fstab_shows_problems_and_asks_again(tmp_path: Path) -> None:
    fstab = tmp_path / "fstab"
    fstab.write_text("# mine\n")
    editor = _editor(tmp_path,
                     'echo "tmpfs /x nosuchfs defaults 0 0" >> "$1"',
                     f'sed -i "s|/x nosuchfs|{tmp_path}/x tmpfs|" "$1"')
    answers = iter(["e"])
    out = io.StringIO()
    assert edit_fstab(str(fstab), editor=editor, out=out, ask=lambda _: next(answers)) == 0
    assert "problem: fstab line 2: file system type 'nosuchfs' is unknown" in out.getvalue()
    assert fstab.read_text() == f"# mine\ntmpfs {tmp_path}/x tmpfs defaults 0 0\n"


@pytest.mark.parametrize("answer", ["q", None])
def test_edit_fstab_never_writes_a_broken_file_unless_told(tmp_path: Path,
                                                           answer: str | None) -> None:
    fstab = tmp_path / "fstab"
    fstab.write_text("# mine\n")
    editor = _editor(tmp_path, 'echo "broken-line" >> "$1"')

    def ask(_prompt: str) -> str:
        if answer is None:
            raise EOFError  # no terminal: as under CI, or a script
        return answer

    out = io.StringIO()
    assert edit_fstab(str(fstab), editor=editor, out=out, ask=ask) == 1
    assert fstab.read_text() == "# mine\n"
    assert "problem: fstab line 2: 1 field" in out.getvalue()


def test_the_service_and_the_editor_never_lose_each_others_lines(world: World) -> None:
    # The editor holds the lock while the administrator edits; the service's
    # write waits for it and then goes on top: both lines are in the file.
    editor = _editor(world.root, f'sleep 0.5; echo "tmpfs {world.root}/by-hand tmpfs '
                                 'defaults 0 0" >> "$1"')
    with world.manager() as engine:
        done = threading.Event()

        def service_write() -> None:
            time.sleep(0.2)  # the editor has the lock by now
            engine.create(MountSpec("tmpfs", world.dir("by-service"), "tmpfs"), current=False,
                          persist=True)
            done.set()

        writer = threading.Thread(target=service_write)
        writer.start()
        assert edit_fstab(str(world.fstab), editor=editor, out=io.StringIO()) == 0
        writer.join(timeout=30)
        assert done.is_set()
    text = world.fstab.read_text()
    assert "by-hand" in text and "by-service" in text
    assert text.index("by-hand") < text.index("by-service"), "the service waited"


def test_review_accepts_swap_lines() -> None:
    from lmi_mount.fstab_editor import review

    assert review("UUID=2 none swap sw 0 0\n/swapfile none swap defaults 0 0\n",
                  findmnt="").problems == []


def test_review_names_each_problem_once() -> None:
    # A relative mount point was said twice, once as the document's problem and
    # once as the boot check's (an outside review).
    from lmi_mount.fstab_editor import review

    assert review("tmpfs line tmpfs defaults 0 0\n", findmnt="").problems == [
        "fstab line 1: mount point 'line' is not an absolute path"]


def test_a_conflicting_edit_is_kept_for_the_administrator(tmp_path: Path) -> None:
    # A writer that does not lock (an ansible run) changes fstab meanwhile:
    # nothing is overwritten, and the edit is not thrown away either.
    fstab = tmp_path / "fstab"
    fstab.write_text("# mine\n")
    editor = _editor(tmp_path, f'echo "tmpfs {tmp_path}/mine tmpfs defaults 0 0" >> "$1"; '
                               f'echo "tmpfs {tmp_path}/theirs tmpfs defaults 0 0" >> {fstab}')
    out = io.StringIO()
    assert edit_fstab(str(fstab), editor=editor, out=out) == 1
    assert "/theirs " in fstab.read_text() and "/mine " not in fstab.read_text()
    kept = out.getvalue().split("your edit is kept in ")[1].strip()
    assert "/mine " in Path(kept).read_text()


def test_the_written_message_names_the_backup_or_none(tmp_path: Path) -> None:
    fstab = tmp_path / "fstab"
    fstab.write_text("# mine\n")
    for backups in (0, 1):
        editor = _editor(tmp_path, f'echo "tmpfs {tmp_path}/t{backups} tmpfs defaults 0 0" '
                                   '>> "$1"')
        out = io.StringIO()
        assert edit_fstab(str(fstab), editor=editor, out=out, backups=backups) == 0
        if backups:
            [backup] = files.backups_of(fstab)
            assert out.getvalue().endswith(f"\n{fstab} written (the old one is {backup})\n")
        else:
            assert out.getvalue().endswith(f"\n{fstab} written\n")


def test_backup_names_sort_as_they_were_taken_across_a_second(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A backup's name took its second from one clock read (gmtime()) and its
    fraction from another (time_ns()): across a second's boundary it sorted
    before an older backup, and pruning removed the newer one."""
    fstab = tmp_path / "fstab"
    second = 1_700_000_000
    readings = iter([second * 10**9 + 999_000_000, (second + 1) * 10**9 + 1_000])
    real_gmtime = time.gmtime
    # gmtime() without an argument reads the clock just before the boundary.
    monkeypatch.setattr(files.time, "time_ns", lambda: next(readings))
    monkeypatch.setattr(files.time, "gmtime", lambda secs=None: real_gmtime(
        second if secs is None else secs))
    for text in ("first\n", "second\n"):
        fstab.write_text(text)
        files.edit_file(fstab, lambda old: old + "x\n", backups=5)
    assert [Path(p).read_text() for p in files.backups_of(fstab)] == ["first\n", "second\n"]


@pytest.mark.parametrize("operation", ["create", "delete"])
def test_an_fstab_edit_whose_directory_sync_fails_is_undone_with_the_rest(
    world: World, monkeypatch: pytest.MonkeyPatch, operation: str
) -> None:
    # fsync of fstab's directory fails after the rename: the new file is in
    # place. The request failed and its mount was undone, but the line stayed
    # (create) or stayed gone (delete): half an operation.
    target = world.dir("mnt")
    spec = MountSpec("tmpfs", target, "tmpfs")
    directory = os.path.realpath(world.fstab.parent)
    sync = files.fsync_directory
    failures = [errno.EIO]

    def failing_once(path: str | os.PathLike[str]) -> None:
        if failures and os.path.realpath(path) == directory:
            raise OSError(failures.pop(), "injected")
        sync(path)

    with world.manager() as manager:
        if operation == "delete":
            manager.create(spec, current=True, persist=True, holder="a")
        fstab, mounted = world.fstab.read_bytes(), len(world.mounts_at(target))
        held = manager.held(target)
        monkeypatch.setattr(files, "fsync_directory", failing_once)
        with pytest.raises(OperationFailed, match="dir-synced"):
            if operation == "create":
                manager.create(spec, current=True, persist=True, holder="a")
            else:
                manager.delete(target, current=True, persist=True, holder="a")
        assert not failures
        assert world.fstab.read_bytes() == fstab
        assert len(world.mounts_at(target)) == mounted
        assert manager.held(target) == held
