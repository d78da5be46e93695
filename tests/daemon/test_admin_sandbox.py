"""``lmi-mount --sandbox DIR`` beside a real ``lmi-mountd --sandbox DIR``.

The sandbox's mounts live in its daemon's private mount namespace: read from the
host's, ``status`` showed the host alone, and ``--fstab``/``--state-dir`` dropped the
holders. ``--sandbox`` enters the daemon's namespace (found by its pid file, checked
by the state lock it holds) and reads its fstab and journal.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from pywbem import Uint16, WBEMConnection

from tests.daemon import sandbox
from tests.daemon.sandbox import NAMESPACE, PASSWORD, USER
from tests.support.skips import requires_root, requires_tool

pytestmark = [pytest.mark.root, requires_root]


def lmi_mount(*args: str) -> subprocess.CompletedProcess[str]:
    script = shutil.which("lmi-mount")
    command = [script] if script else [sys.executable, "-c", "import sys; from lmi_mount.cli "
                                       "import mount_main; sys.exit(mount_main())"]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)


def test_status_and_plan_in_the_sandbox(tmp_path: Path) -> None:
    root = (tmp_path / "sandbox").absolute()
    with sandbox.running(root) as daemon:
        conn = WBEMConnection(daemon.http_url, (USER, PASSWORD), default_namespace=NAMESPACE)
        [service] = conn.EnumerateInstanceNames("LMI_MountConfigurationService")
        target = str(root / "mnt" / "a")
        rv, _ = conn.InvokeMethod("CreateMount", service, Mode=Uint16(32768),
                                  FileSystemSpec="tmpfs", FileSystemType="tmpfs",
                                  MountPoint=target, Holder="alice")
        assert rv == 0
        assert (root / "lmi-mountd.pid").read_text().strip() == str(daemon.process.pid)

        shown = lmi_mount("--sandbox", str(root), "status", "--json")
        assert shown.returncode == 0, shown.stderr
        document = json.loads(shown.stdout)
        [row] = [row for row in document["mounts"] if row["target"] == target]
        assert row["mounted"] and row["holders"] == ["alice"] and row["made_by_lmi_mount"]
        # The host's namespace has no such mount: read from there, it would be missing.
        host = lmi_mount("--fstab", str(root / "fstab"), "--state-dir", str(root / "state"),
                         "status", "--json")
        assert not [r for r in json.loads(host.stdout)["mounts"]
                    if r["target"] == target and r["mounted"]]

        table = lmi_mount("--sandbox", str(root), "status")
        assert target in table.stdout and "alice" in table.stdout
        plan = lmi_mount("--sandbox", str(root), "plan", "delete", "--mode", "32769",
                         "--target", target, "--holder", "alice")
        assert plan.returncode == 0, plan.stderr
        assert "unmount" in plan.stdout and target in plan.stdout, plan.stdout
        assert f" {target} " in daemon.mountinfo(), "a plan changes nothing"
        assert daemon.stop() == 0
    assert not (root / "lmi-mountd.pid").exists(), "a stopped daemon leaves no pid file"
    gone = lmi_mount("--sandbox", str(root), "status")
    assert gone.returncode == 1
    assert gone.stderr.startswith(f"lmi-mount: no lmi-mountd runs in {root}")
    assert f"lmi-mountd --sandbox {root}" in gone.stderr


def test_a_stale_pid_file_names_no_other_process(tmp_path: Path) -> None:
    # A daemon killed with -9 leaves its pid file; the pid may be anyone's by now.
    root = (tmp_path / "sandbox").absolute()
    (root / "state").mkdir(parents=True, mode=0o700)
    (root / "state" / "lock").touch()
    root.chmod(0o700)
    (root / "lmi-mountd.pid").write_text("1\n")
    stale = lmi_mount("--sandbox", str(root), "status")
    assert stale.returncode == 1
    assert "its pid file names '1', which is not the sandbox's daemon" in stale.stderr


@requires_tool("setpriv")
@requires_tool("unshare")
def test_a_process_that_holds_a_look_alike_lock_is_not_entered() -> None:
    # `nobody`, in a user and mount namespace of its own, holds open a file whose
    # path reads DIR/state/lock there; with a stale pid file naming it (pid
    # reuse), root entered the attacker's namespace (second review of issue 11).
    root = Path(tempfile.mkdtemp(prefix="lmi-sandbox-", dir="/tmp"))
    try:
        (root / "state").mkdir(mode=0o700)
        (root / "state" / "lock").touch()
        with subprocess.Popen(
            ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "unshare", "-Urm",
             "sh", "-c", f"mount -t tmpfs attacker /tmp && mkdir -p {root}/state && "
             f"exec 3>{root}/state/lock && echo ready && exec sleep 60"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as attacker:
            try:
                assert attacker.stdout is not None and attacker.stderr is not None
                if attacker.stdout.readline().strip() != "ready":
                    pytest.skip(f"no unprivileged user namespace: {attacker.stderr.read()}")
                # setpriv, unshare and sh exec one another: one process holds it.
                holder = attacker.pid
                assert os.readlink(f"/proc/{holder}/fd/3") == str(root / "state" / "lock")
                (root / "lmi-mountd.pid").write_text(f"{holder}\n")
                refused = lmi_mount("--sandbox", str(root), "status")
                assert refused.returncode == 1
                assert f"its pid file names '{holder}', which is not the sandbox's daemon" in (
                    refused.stderr)
            finally:
                attacker.kill()
    finally:
        shutil.rmtree(root)



def test_watch_prints_each_change_as_it_happens(tmp_path: Path) -> None:
    root = (tmp_path / "sandbox").absolute()
    with sandbox.running(root) as daemon:
        script = shutil.which("lmi-mount")
        command = [script] if script else [sys.executable, "-c", "import sys; from lmi_mount."
                                           "cli import mount_main; sys.exit(mount_main())"]
        watcher, first = (
            subprocess.Popen([*command, "--sandbox", str(root), "watch", "--json",
                              "--count", str(count), "--seconds", "30"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             stdin=subprocess.DEVNULL)
            for count in (3, 1))
        try:
            time.sleep(1.5)  # its first read of the model
            conn = WBEMConnection(daemon.http_url, (USER, PASSWORD), default_namespace=NAMESPACE)
            [service] = conn.EnumerateInstanceNames("LMI_MountConfigurationService")
            target = str(root / "mnt" / "a")
            for holder in ("alice", "bob"):
                conn.InvokeMethod("CreateMount", service, Mode=Uint16(32768),
                                  MountPoint=target, FileSystemSpec="tmpfs",
                                  FileSystemType="tmpfs", Holder=holder)
                time.sleep(0.5)
            out, err = watcher.communicate(timeout=30)
            first_out, _ = first.communicate(timeout=30)
        finally:
            watcher.kill()
            first.kill()
    # The first read held two changes (the mount and its setting): --count 1
    # printed both.
    assert [json.loads(line)["class"] for line in first_out.splitlines()] == [
        "LMI_MountedFileSystem"]
    rows = [json.loads(line) for line in out.splitlines()]
    assert err == "" and watcher.returncode == 0
    assert [(r["event"], r["class"]) for r in rows] == [
        ("created", "LMI_MountedFileSystem"), ("created", "LMI_MountedFileSystemSetting"),
        ("changed", "LMI_MountedFileSystem")]
    assert rows[0]["mount_point"] == target
    assert rows[2]["changed"] == {"Holders": [["alice"], ["alice", "bob"]],
                                  "ReferenceCount": [1, 2]}
