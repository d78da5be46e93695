"""lmi.mount.mount one task at a time, on what an outside review broke.

Each case runs the module as ansible-core runs it on a host (its own process,
AnsibleModule reading the arguments; ``ansible -m`` where the rendered diff is
the point) against a real sandbox daemon, and reads the result the module
reported and, where it matters, what the daemon's kernel and fstab say."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import certifi
import pytest
from pywbem import WBEMConnection

from tests.daemon import sandbox
from tests.daemon.sandbox import NAMESPACE, PASSWORD, USER
from tests.support.skips import requires_root

REPO = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.root,
    requires_root,
    pytest.mark.skipif(shutil.which("ansible") is None,
                       reason="ansible is not installed (the test extra has it)"),
]


@dataclass
class Task:
    daemon: sandbox.Daemon
    scratch: Path

    def run(self, *, check: bool = False, diff: bool = False,
            env: dict[str, str] | None = None, **args: Any) -> dict[str, Any]:
        """The module's result for ``args`` (the connection filled in), with
        ``failed`` and ``output``, what it printed.

        The module runs as ansible-core runs it on a host: a Python process of
        its own that reads ``{"ANSIBLE_MODULE_ARGS": ...}`` (ansible's documented
        way to run a module alone; ``_ansible_check_mode`` and ``_ansible_diff``
        are how the controller passes ``--check`` and ``--diff``), 1.5 s faster
        than ``ansible -m`` a run. With ``diff`` it goes through ``ansible -m``,
        whose callback renders the diff a user reads; the playbook tests
        (``play``, test_ansible.py) run the controller every time.
        """
        args = {"url": self.daemon.http_url, "username": USER, "password": PASSWORD, **args}
        if diff:
            return self._through_ansible(args, check=check, env=env)
        module_args = {**args, "_ansible_check_mode": check, "_ansible_diff": diff}
        done = subprocess.run(
            [sys.executable, "-m", "ansible_collections.lmi.mount.plugins.modules.mount"],
            input=json.dumps({"ANSIBLE_MODULE_ARGS": module_args}), capture_output=True,
            text=True, timeout=120, cwd=REPO, env={**sandbox.client_env(), **(env or {})})
        result: dict[str, Any] = json.loads(done.stdout)
        result["failed"] = bool(result.get("failed")) or done.returncode != 0
        result["output"] = done.stdout + done.stderr
        return result

    def _through_ansible(self, args: dict[str, Any], *, check: bool,
                         env: dict[str, str] | None) -> dict[str, Any]:
        command = ["ansible", "localhost", "-c", "local", "-m", "lmi.mount.mount",
                   "-a", json.dumps(args), "--diff",
                   "-e", f"ansible_python_interpreter={sys.executable}"]
        command += ["--check"] if check else []
        done = subprocess.run(command, capture_output=True, text=True, timeout=120,
                              stdin=subprocess.DEVNULL, env={
                                  **sandbox.client_env(), **(env or {}),
                                  "ANSIBLE_COLLECTIONS_PATH": str(REPO),
                                  "ANSIBLE_HOME": str(self.scratch / "home"),
                                  "ANSIBLE_LOCAL_TEMP": str(self.scratch / "tmp"),
                                  "ANSIBLE_LOCALHOST_WARNING": "false",
                                  "ANSIBLE_INVENTORY_UNPARSED_WARNING": "false"})
        # The ad-hoc callback (minimal): "localhost | CHANGED => {" and the JSON.
        start = done.stdout.index("localhost | ")
        status, _, body = done.stdout[start:].partition(" => ")
        result: dict[str, Any] = json.JSONDecoder().raw_decode(body)[0]
        result["failed"] = status.endswith("FAILED!")
        result["output"] = done.stdout + done.stderr
        return result

    def play(self, tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Each task's result, the module run once per task in one ansible-playbook
        (the connection filled in; a failed task does not stop the others)."""
        report = self.scratch / "report.json"
        connection = {"url": self.daemon.http_url, "username": USER, "password": PASSWORD}
        steps = [{"lmi.mount.mount": {**connection, **args}, "register": f"r{number}",
                  "ignore_errors": True} for number, args in enumerate(tasks)]
        steps.append({"copy": {"dest": str(report), "content": "{{ [" + ", ".join(
            f"r{number}" for number in range(len(tasks))) + "] | to_json }}"}})
        playbook = self.scratch / "play.json"
        playbook.write_text(json.dumps([{"hosts": "localhost", "gather_facts": False,
                                         "tasks": steps}]))
        subprocess.run(["ansible-playbook", "-c", "local", "-i", "localhost,",
                        "-e", f"ansible_python_interpreter={sys.executable}", str(playbook)],
                       capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
                       env={**sandbox.client_env(), "ANSIBLE_COLLECTIONS_PATH": str(REPO),
                            "ANSIBLE_HOME": str(self.scratch / "home"),
                            "ANSIBLE_LOCAL_TEMP": str(self.scratch / "tmp")})
        results: list[dict[str, Any]] = json.loads(report.read_text())
        return results

    def live(self, target: Path) -> list[list[str]]:
        """The daemon's mountinfo lines of ``target`` (its octal escapes decoded)."""
        return [line.split() for line in self.daemon.mountinfo().splitlines()
                if re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)),
                          line.split()[4]) == str(target)]

    def goals(self) -> int:
        conn = WBEMConnection(self.daemon.http_url, (USER, PASSWORD),
                              default_namespace=NAMESPACE)
        return sum(":goal:" in s["InstanceID"]
                   for s in conn.EnumerateInstances("LMI_MountedFileSystemSetting"))


def _task(tmp_path: Path, *extra: str) -> Iterator[Task]:
    with sandbox.running(tmp_path / "host", *extra) as daemon:
        yield Task(daemon, tmp_path)


@pytest.fixture
def task(tmp_path: Path) -> Iterator[Task]:
    yield from _task(tmp_path)


TMPFS = {"src": "tmpfs", "fstype": "tmpfs"}


def test_a_path_spelled_otherwise_is_the_same_mount_point(task: Task) -> None:
    target = task.daemon.root / "mnt" / "a"
    assert task.run(path=str(target), state="mounted", **TMPFS)["changed"]
    again = task.run(path=f"{target}/", state="mounted", **TMPFS)
    assert again["changed"] is False and again["holders"] == ["ansible"]
    assert task.run(path=str(target).replace("/mnt/", "/mnt//"), state="absent")["changed"]
    assert task.live(target) == []
    link = task.daemon.root / "link"
    link.symlink_to(task.daemon.root / "mnt" / "b")
    refused = task.run(path=str(link), state="ephemeral", **TMPFS)
    assert refused["failed"] and f"use {task.daemon.root}/mnt/b" in refused["msg"]
    assert task.live(task.daemon.root / "mnt" / "b") == []


def test_another_source_is_refused_before_anything_changes(task: Task) -> None:
    target = task.daemon.root / "mnt" / "a"
    data = task.daemon.root / "data"
    assert task.run(path=str(target), state="present", **TMPFS)["changed"]
    fstab = task.daemon.fstab.read_text()
    refused = task.run(path=str(target), src=str(data), fstype="none", opts="bind",
                       state="mounted")
    assert refused["failed"] and "has an fstab line for 'tmpfs'" in refused["msg"]
    assert refused["plan"] == [] and task.live(target) == []
    assert task.daemon.fstab.read_text() == fstab
    assert task.run(path=str(target), state="ephemeral", **TMPFS)["changed"]
    other = task.run(path=str(target), src=str(data), fstype="none", opts="bind",
                     state="ephemeral")
    assert other["failed"] and "is mounted from 'tmpfs'" in other["msg"]
    assert len(task.live(target)) == 1


def test_a_shared_mount_keeps_its_options_for_the_other_holders(task: Task) -> None:
    target = task.daemon.root / "mnt" / "a"
    for holder in ("a", "b"):
        task.run(path=str(target), state="ephemeral", holder=holder, **TMPFS)
    refused = task.run(path=str(target), state="ephemeral", holder="b", opts="ro", **TMPFS)
    assert refused["failed"] and "held by a too" in refused["msg"]
    [live] = task.live(target)
    assert "rw" in live[5].split(",")
    everyone = task.run(path=str(target), state="remounted", holder="b", opts="ro")
    assert everyone["changed"] and "ro" in task.live(target)[0][5].split(",")


def test_user_in_the_options_settles(task: Task) -> None:
    target = task.daemon.root / "mnt" / "a"
    task.run(path=str(target), state="ephemeral", **TMPFS)
    first = task.run(path=str(target), state="ephemeral", opts="ro,user", **TMPFS)
    assert first["changed"]
    assert {"ro", "nosuid", "nodev", "noexec"} <= set(task.live(target)[0][5].split(","))
    assert task.run(path=str(target), state="ephemeral", opts="ro,user", **TMPFS)[
        "changed"] is False


def test_remounted_without_opts_changes_nothing_it_was_not_asked(task: Task) -> None:
    target = task.daemon.root / "mnt" / "a"
    task.run(path=str(target), state="ephemeral", opts="ro,noexec", **TMPFS)
    kept = task.run(path=str(target), state="remounted")
    assert kept["changed"] is False
    assert {"ro", "noexec"} <= set(task.live(target)[0][5].split(","))


BAD = [
    ({"passno": "99999"}, "passno must be a number from 0 to 65535"),
    ({"dump": "2"}, "dump must be 0 or 1"),
    ({"holder": ""}, "holder must name someone"),
    ({"url": "ftp://127.0.0.1/"}, "url must be http:// or https://"),
    ({"ca_certs": "/nonexistent.pem", "url": "https://127.0.0.1:1"}, "https://127.0.0.1:1:"),
    ({"url": "https://[::1"}, "is no URL"),
    ({"timeout": 0}, "timeout must be a number of seconds above 0"),
]


def test_bad_parameters_fail_cleanly_and_leave_nothing_behind(task: Task) -> None:
    # One playbook of every case: each task fails on its own, none crashes the
    # module, and no goal setting, mount or line is left behind.
    target = task.daemon.root / "mnt" / "a"
    results = task.play([{"path": str(target), "state": "mounted", **TMPFS, **args}
                         for args, _ in BAD])
    for (args, message), result in zip(BAD, results, strict=True):
        assert result["failed"] and message in result["msg"], (args, result.get("msg"))
        # A failure the module reports, not a crash (ansible-core notes that
        # fail_json gave no traceback).
        assert result.get("exception") in (None, "(traceback unavailable)"), args
        assert "module_stderr" not in result, args
    assert task.goals() == 0 and task.live(target) == []
    assert str(target) not in task.daemon.fstab.read_text()


def test_validate_certs_false_holds_when_the_environment_names_a_bundle(task: Task) -> None:
    target = task.daemon.root / "mnt" / "a"
    done = task.run(path=str(target), state="ephemeral", url=task.daemon.https_url,
                    validate_certs=False, env={"REQUESTS_CA_BUNDLE": certifi.where(),
                                               "CURL_CA_BUNDLE": certifi.where()}, **TMPFS)
    assert done["changed"], done.get("msg")


def test_removing_a_mount_point_with_two_lines_shows_both(task: Task) -> None:
    target = task.daemon.root / "mnt" / "a"
    with open(task.daemon.fstab, "a", encoding="utf-8") as fstab:
        fstab.write(f"tmpfs {target} tmpfs defaults 0 0\ntmpfs {target} tmpfs ro 0 0\n")
    gone = task.run(path=str(target), state="absent", diff=True)
    assert gone["changed"] and str(target) not in task.daemon.fstab.read_text()
    assert f"-tmpfs {target} tmpfs defaults 0 0" in gone["output"]
    assert f"-tmpfs {target} tmpfs ro 0 0" in gone["output"]


def test_jobs_and_the_hold_time_keep_second_runs_quiet(tmp_path: Path) -> None:
    config = tmp_path / "slow.conf"
    config.write_text("[cim]\nsynchronous_seconds = 0\n[engine]\nhold_seconds = 60\n")
    os.chmod(config, 0o600)
    for task in _task(tmp_path, "--config", str(config)):
        target = task.daemon.root / "mnt" / "a"
        assert task.run(path=str(target), state="mounted", **TMPFS)["changed"]
        again = task.run(path=str(target), state="mounted", **TMPFS)
        assert again["changed"] is False, again.get("msg")
        bad = task.run(path=str(task.daemon.root / "mnt" / "b"), state="mounted", src="tmpfs",
                       fstype="nosuchfs")
        assert bad["failed"] and "'nosuchfs' is unknown here" in bad["msg"]
        assert task.run(path=str(target), state="unmounted")["changed"]
        quiet = task.run(path=str(target), state="unmounted")
        assert quiet["changed"] is False and not quiet["failed"], quiet.get("msg")
        assert len(task.live(target)) == 1, "still in its hold time"


def test_a_network_share_is_written_as_given(task: Task) -> None:
    target = task.daemon.root / "mnt" / "a"
    done = task.run(path=str(target), src="//server/share", fstype="cifs",
                    opts="credentials=/root/.smb", state="present")
    assert done["changed"], done.get("msg")
    assert f"//server/share {target} cifs credentials=/root/.smb 0 0" in \
        task.daemon.fstab.read_text()


def test_a_mount_nobody_holds_takes_the_asked_options_and_goes_in_one_run(task: Task) -> None:
    target = task.daemon.root / "mnt" / "a"
    subprocess.run(["nsenter", "-t", str(task.daemon.process.pid), "-m", "mount", "-t",
                    "tmpfs", "-o", "size=1m", "tmpfs", str(target)], check=True)
    done = task.run(path=str(target), state="mounted", opts="size=1m,noatime", **TMPFS)
    assert done["changed"] and not done["failed"], done.get("msg")
    assert "noatime" in task.live(target)[0][5].split(",")
    assert task.run(path=str(target), state="mounted", opts="size=1m,noatime",
                    **TMPFS)["changed"] is False
    gone = task.run(path=str(target), state="unmounted")
    assert gone["changed"] and task.live(target) == [], gone.get("msg")


def test_a_line_the_service_refuses_leaves_the_mount_as_it_was(task: Task) -> None:
    target = task.daemon.root / "mnt" / "blank "
    target.mkdir()
    assert task.run(path=str(target), state="ephemeral", opts="size=1m", **TMPFS)["changed"]
    refused = task.run(path=str(target), state="mounted", opts="size=2m", **TMPFS)
    assert refused["failed"] and refused["plan"] == []
    assert "size=1024k" in " ".join(task.live(target)[0])


def test_an_rbind_comes_up_with_its_submounts_and_goes_with_them(task: Task) -> None:
    """``opts: rbind`` was refused ("cannot be asked of lmi-mountd") while the
    service mis-made one asked as an option; now it is an rbind end to end."""
    tree, target = task.daemon.root / "mnt" / "tree", task.daemon.root / "mnt" / "view"
    (tree / "sub").mkdir(parents=True)
    target.mkdir()
    assert task.run(path=f"{tree}/sub", state="mounted", **TMPFS)["changed"]
    args = {"path": str(target), "src": str(tree), "fstype": "none", "opts": "rbind,ro"}
    first = task.run(state="mounted", **args)
    assert first["changed"] and not first["failed"], first["output"]
    assert task.run(state="mounted", **args)["changed"] is False
    assert f"{tree} {target} none rbind,ro 0 0" in task.daemon.fstab.read_text()
    [sub] = task.live(target / "sub")
    assert sub[5].split(",")[0] == "ro"
    gone = task.run(path=str(target), state="absent")
    assert gone["changed"] and not gone["failed"], gone["output"]
    assert task.live(target) == [] and task.live(target / "sub") == []
