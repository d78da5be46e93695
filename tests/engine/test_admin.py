"""lmi-mount status and plan: a read-only observer beside a running engine."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from lmi_mount.admin import main, parser
from lmi_mount.engine import MountManager
from lmi_mount.mounts.options import parse_options
from lmi_mount.mounts.plan import MountSpec
from tests.engine.conftest import KERNELS, World


def _observer(world: World) -> MountManager:
    return MountManager(
        world.kernel,
        fstab_path=world.fstab,
        state_dir=world.state,
        boot_id_path=world.boot_id,
        observer=True,
        processes=getattr(world.kernel, "processes", None),
    )


def test_status_shows_holders_and_drift_beside_a_running_engine(world: World) -> None:
    target = world.dir("data")
    world.fstab.write_text(f"tmpfs {target} tmpfs noexec,size=1m 0 0\n")
    with world.manager() as service:
        service.acquire(MountSpec("tmpfs", target, "tmpfs", parse_options("size=1m")), "alice")
        out = io.StringIO()
        assert main(["status", "--json"], engine=_observer(world), out=out) == 0
        [row] = [row for row in json.loads(out.getvalue())["mounts"] if row["target"] == target]
        assert row["holders"] == ["alice"] and row["mounted"] and row["fstab"] == "noexec,size=1m"
        assert any("exec" in drift for drift in row["drift"])
        table = io.StringIO()
        main(["status"], engine=_observer(world), out=table)
        assert table.getvalue().startswith("MOUNT POINT")
        assert target in table.getvalue() and "alice" in table.getvalue()
        held = service.held(target)
        assert held is not None and held.holders == ("alice",), "the observer changed nothing"
        # A name with a comma is one holder, quoted (a review: "a,b" read as two).
        service.acquire(MountSpec("tmpfs", target, "tmpfs", parse_options("size=1m")),
                        "Smith, John")
        table = io.StringIO()
        main(["status"], engine=_observer(world), out=table)
        assert 'alice,"Smith, John"' in table.getvalue()


@pytest.mark.parametrize("world", [k for k in KERNELS if k.id == "real"],  # no stacking
                         indirect=True)
def test_status_says_a_mount_covers_a_held_one(world: World) -> None:
    # A review: a mount made over alice's showed 0 references and no holder.
    target = world.dir("held")
    with world.manager() as service:
        service.acquire(MountSpec("tmpfs", target, "tmpfs", parse_options("size=1m")), "alice")
        world.kernel.mount("tmpfs", target, "tmpfs", 0, "size=2m")
        out = io.StringIO()
        main(["status", "--json"], engine=_observer(world), out=out)
        [row] = [row for row in json.loads(out.getvalue())["mounts"] if row["target"] == target]
        assert row["holders"] == [] and row["covers_holders"] == ["alice"]
        table = io.StringIO()
        main(["status"], engine=_observer(world), out=table)
        [line] = [line for line in table.getvalue().splitlines() if target in line]
        assert "- (covers alice's)" in line
        world.kernel.unmount(target)


def test_plan_prints_the_steps_and_changes_nothing(world: World) -> None:
    target = world.dir("mnt")
    out = io.StringIO()
    code = main(
        [
            "plan",
            "create",
            "--mode",
            "1",
            "--target",
            target,
            "--spec",
            "tmpfs",
            "--type",
            "tmpfs",
            "--options",
            "size=2m",
        ],
        engine=_observer(world),
        out=out,
    )
    assert code == 0
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("1. mount tmpfs tmpfs on") and "fstab: add line" in lines[-1]
    assert world.mounts_at(target) == [] and world.fstab.read_text() == "# test fstab\n"


def test_plan_of_a_no_effect_cell(world: World) -> None:
    out = io.StringIO()
    assert (
        main(
            ["plan", "delete", "--mode", "1", "--target", world.dir("x")],
            engine=_observer(world),
            out=out,
        )
        == 0
    )
    assert out.getvalue() == "Mode 1 has no effect on DeleteMount\n"


def test_plan_of_a_release_says_what_the_service_would(world: World) -> None:
    # A DeleteMount naming a Holder is a release: on a mount nobody holds the
    # service refuses it; the plan said it would unmount (a review).
    target = world.dir("mnt")
    world.kernel.mount("tmpfs", target, "tmpfs", 0)
    common = ["plan", "delete", "--mode", "32769", "--target", target]
    out = io.StringIO()
    assert main([*common], engine=_observer(world), out=out) == 0
    assert out.getvalue().startswith(f"1. unmount {target}")
    with contextlib.redirect_stderr(io.StringIO()) as err:
        code = main([*common, "--holder", "alice"], engine=_observer(world), out=io.StringIO())
    assert code == 1 and "'alice' holds no reference" in err.getvalue()
    assert len(world.mounts_at(target)) == 1


def test_status_reports_the_lines_of_fstab_that_are_no_entry(world: World) -> None:
    target = world.dir("d")
    world.fstab.write_text(f"only-one-field\n/dev/sdz1 {target} ext4 ro\n/dev/sdz2 {target} xfs\n")
    table = io.StringIO()
    assert main(["status"], engine=_observer(world), out=table) == 0
    assert "fstab line 1: 1 field;" in table.getvalue()
    assert f"fstab line 3: mount point {target!r} is already on line 2" in table.getvalue()
    out = io.StringIO()
    main(["status", "--json"], engine=_observer(world), out=out)
    problems = json.loads(out.getvalue())["fstab_problems"]
    assert [(row["fstab_line"], row["problem"]) for row in problems] == [
        (1, "unparsable"), (3, "duplicate")]
    lines = io.StringIO()
    main(["status", "--json-lines"], engine=_observer(world), out=lines)
    rows = [json.loads(line) for line in lines.getvalue().splitlines()]
    assert [row for row in rows if "fstab_line" in row] == problems
    assert [row for row in rows if "target" in row] == json.loads(out.getvalue())["mounts"]


def test_control_characters_in_a_name_print_no_second_row(world: World) -> None:
    # A mount point with a newline split the table into a forged row (review).
    target = world.dir("new\nline\tname")
    with world.manager() as service:
        service.acquire(MountSpec("tmpfs", target, "tmpfs"), "alice")
        table = io.StringIO()
        main(["status"], engine=_observer(world), out=table)
        [row] = [line for line in table.getvalue().splitlines() if "alice" in line]
        assert "new\\012line\\011name" in row
        document = io.StringIO()
        main(["status", "--json"], engine=_observer(world), out=document)
        parsed = json.loads(document.getvalue())
        assert target in [m["target"] for m in parsed["mounts"]]
        assert parsed["fstab_backups"] == []
        service.release(target, "alice")


def test_a_relative_or_empty_sandbox_directory(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # Entering the namespace moves the working directory to its root: a
    # relative DIR named another directory afterwards (third review).
    monkeypatch.chdir(tmp_path)
    assert parser().parse_args(["--sandbox", "box", "status"]).sandbox == tmp_path / "box"
    with pytest.raises(SystemExit):
        parser().parse_args(["--sandbox", "", "status"])


def test_a_line_whose_mount_point_is_no_path_is_a_problem(world: World) -> None:
    # "this is not valid" is an entry with mount point "is": no status showed
    # it and it was no problem either (third review); swap lines are fine.
    world.fstab.write_text("this is not valid\n/dev/sdz2 none swap sw 0 0\n"
                           "/dev/sdz3 swap swap sw 0 0\n")
    out = io.StringIO()
    main(["status", "--json"], engine=_observer(world), out=out)
    problems = json.loads(out.getvalue())["fstab_problems"]
    assert [(p["fstab_line"], p["problem"], p["detail"]) for p in problems] == [
        (1, "relative", "mount point 'is' is not an absolute path")]


@pytest.mark.parametrize("command", [["status", "--json"], ["status"]])
def test_a_reader_that_goes_away_ends_the_output_quietly(tmp_path: Path,
                                                        command: list[str]) -> None:
    # ``lmi-mount status --json | head -1`` ended in a BrokenPipeError traceback.
    (tmp_path / "fstab").write_text("tmpfs /srv/scratch tmpfs size=1m 0 0\n")
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first write
    try:
        done = subprocess.run(
            [sys.executable, "-c", "import sys; from lmi_mount.cli import mount_main; "
             "sys.exit(mount_main())", "--fstab", str(tmp_path / "fstab"),
             "--state-dir", str(tmp_path / "state"), *command],
            stdout=write, stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(write)
    assert done.stderr == ""
    assert done.returncode == 128 + signal.SIGPIPE


def test_plan_of_a_bind_without_options_names_no_flag_as_the_service(world: World) -> None:
    # A bind's defaults are its origin's flags (mount --bind): the service's
    # plan names none, and lmi-mount plan said (rw,suid,dev,exec,async).
    source, target = world.dir("data"), world.dir("mnt")
    out = io.StringIO()
    assert main(["plan", "create", "--mode", "32768", "--target", target, "--spec", source],
                engine=_observer(world), out=out) == 0
    assert out.getvalue().splitlines()[0] == f"1. mount bind {source} on {target}"
