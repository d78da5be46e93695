"""The lmi.mount collection, judged by ansible-playbook against two real sandbox daemons.

Two ``lmi-mountd --sandbox`` processes are two hosts of one inventory; the
module runs on the controller (``connection: local``) and speaks CIM-XML over
HTTPS to each, as a fleet's playbook would. After every run the daemons'
own mount tables and fstabs say what happened, not the module's report.
"""

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

from tests.daemon import sandbox
from tests.daemon.sandbox import PASSWORD, USER
from tests.support.skips import requires_root

REPO = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    requires_root,
    pytest.mark.skipif(shutil.which("ansible-playbook") is None,
                       reason="ansible-playbook is not installed (the test extra has it)"),
]

PLAY = """
- hosts: all
  gather_facts: false
  tasks:
    - name: the scratch mount
      lmi.mount.mount:
        url: "{{ lmi_url }}"
        username: "{{ lmi_user }}"
        password: "{{ lmi_password }}"
        ca_certs: "{{ lmi_ca }}"
        path: "{{ mount_point }}"
        src: tmpfs
        fstype: tmpfs
        opts: "{{ options }}"
        state: "{{ wanted }}"
        holder: playbook
      register: result
      # The report below needs every host's result, the failed ones too.
      ignore_errors: true
    - name: the report
      check_mode: false
      diff: false
      copy:
        dest: "{{ report_dir }}/{{ inventory_hostname }}.json"
        content: "{{ result | to_json }}"
"""


@dataclass
class Fleet:
    hosts: dict[str, sandbox.Daemon]
    directory: Path
    #: What the last ansible-playbook printed (the default callback's report).
    output: str = ""

    def mount_point(self, name: str) -> str:
        return str(self.directory / name / "scratch")

    def play(self, *args: str, wanted: str = "mounted",
             options: dict[str, str] | None = None) -> dict[str, Any]:
        """Run the play; return each host's task result (written by the play itself)."""
        reports = self.directory / "results"
        shutil.rmtree(reports, ignore_errors=True)
        reports.mkdir()
        inventory = self.directory / "inventory.json"
        inventory.write_text(json.dumps({"all": {"hosts": {
            name: {
                "ansible_connection": "local",
                "ansible_python_interpreter": sys.executable,
                "lmi_url": daemon.https_url,
                "lmi_ca": str(daemon.cafile),
                "lmi_user": USER,
                "lmi_password": PASSWORD,
                "mount_point": self.mount_point(name),
                "options": (options or {}).get(name, "size=16m,noexec"),
                "wanted": wanted,
                "report_dir": str(reports),
            } for name, daemon in self.hosts.items()}}}))
        playbook = self.directory / "play.yml"
        playbook.write_text(PLAY)
        env = {**sandbox.client_env(),
               "ANSIBLE_COLLECTIONS_PATH": str(REPO),
               "ANSIBLE_LOCAL_TEMP": str(self.directory / "tmp"),
               "ANSIBLE_HOME": str(self.directory / "ansible-home"),
               "ANSIBLE_NOCOLOR": "1"}
        done = subprocess.run(
            ["ansible-playbook", "-i", str(inventory), str(playbook), *args],
            capture_output=True, text=True, timeout=300, env=env, stdin=subprocess.DEVNULL,
        )
        results = {name: json.loads((reports / f"{name}.json").read_text())
                   for name in self.hosts if (reports / f"{name}.json").exists()}
        assert results.keys() == self.hosts.keys(), done.stdout + done.stderr
        self.output = done.stdout
        return results

    def mounted(self, name: str) -> list[str]:
        """The mount table lines of the host's mount point (its daemon's namespace)."""
        target = self.mount_point(name)
        return [line for line in self.hosts[name].mountinfo().splitlines()
                if line.split()[4] == target]

    def fstab(self, name: str) -> str:
        return self.hosts[name].fstab.read_text()


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    with sandbox.running(tmp_path / "web1") as web1, sandbox.running(tmp_path / "web2") as web2:
        hosts = {"web1": web1, "web2": web2}
        for name in hosts:
            (tmp_path / name / "scratch").mkdir()
        yield Fleet(hosts, tmp_path)


def test_a_two_host_playbook_mounts_once_and_then_changes_nothing(fleet: Fleet) -> None:
    planned = fleet.play("--check", "--diff")
    for name, result in planned.items():
        assert result["changed"] is True, result
        assert any(step.startswith("mount tmpfs tmpfs on") for step in result["plan"])
        # Diff mode: the line the service would add, as ansible-playbook shows it.
        assert f"+tmpfs {fleet.mount_point(name)} tmpfs noexec,size=16m 0 0" in fleet.output
        assert fleet.mounted(name) == [] and fleet.mount_point(name) not in fleet.fstab(name)

    first = fleet.play("--diff")
    for name, result in first.items():
        assert result["changed"] is True, result
        assert result["holders"] == ["playbook"] and result["mounted"] and result["in_fstab"]
        # The service writes its canonical spelling: mount(8) flags, then the others.
        line = f"tmpfs {fleet.mount_point(name)} tmpfs noexec,size=16m 0 0"
        assert f"+{line}" in fleet.output
        # The kernel's word: mounted once, noexec, 16 MiB; the line in the host's fstab.
        [live] = fleet.mounted(name)
        assert "noexec" in live.split()[5].split(",") and "size=16384k" in live
        assert line in fleet.fstab(name).splitlines()

    again = fleet.play("--diff")
    for name, result in again.items():
        assert result["changed"] is False and result["plan"] == [], result
        assert len(fleet.mounted(name)) == 1 and result["holders"] == ["playbook"]

    changed = fleet.play("--diff", options={"web1": "size=16m", "web2": "size=16m,noexec"})
    assert changed["web2"]["changed"] is False
    web1 = changed["web1"]
    assert web1["changed"] is True and any(s.startswith("remount") for s in web1["plan"])
    web1_line = f"tmpfs {fleet.mount_point('web1')} tmpfs"
    assert f"-{web1_line} noexec,size=16m 0 0" in fleet.output
    assert f"+{web1_line} size=16m 0 0" in fleet.output
    [live] = fleet.mounted("web1")
    assert "noexec" not in live.split()[5].split(",")

    gone = fleet.play("--diff", wanted="absent")
    for name, result in gone.items():
        assert result["changed"] is True and not result["mounted"] and not result["in_fstab"]
        assert f"-tmpfs {fleet.mount_point(name)} tmpfs" in fleet.output
        assert fleet.mounted(name) == [] and fleet.mount_point(name) not in fleet.fstab(name)
    assert all(r["changed"] is False for r in fleet.play(wanted="absent").values())


def test_a_bad_option_fails_its_host_with_the_services_message(fleet: Fleet) -> None:
    results = fleet.play(options={"web1": "size=16m", "web2": "size=16m,bogusopt"})
    assert results["web1"]["changed"] is True and len(fleet.mounted("web1")) == 1
    failed = results["web2"]
    assert results["web2"]["failed"] is True and results["web1"].get("failed") is not True
    assert re.search(r"^web1 +: ok=2 +changed=2 .* ignored=0", fleet.output, re.M)
    assert re.search(r"^web2 +: ok=2 +changed=1 .* ignored=1", fleet.output, re.M)
    # The kernel's own words, carried by the CIM_Error of the call.
    assert "bogusopt" in failed["msg"] and "CreateMount returned 4 (Failed)" in failed["msg"]
    assert fleet.mounted("web2") == [] and fleet.mount_point("web2") not in fleet.fstab("web2")


def test_the_module_documentation_renders() -> None:
    env = {**os.environ, "ANSIBLE_COLLECTIONS_PATH": str(REPO)}
    shown = subprocess.run(["ansible-doc", "lmi.mount.mount"], capture_output=True, text=True,
                           timeout=120, env=env, stdin=subprocess.DEVNULL)
    assert shown.returncode == 0, shown.stderr
    for option in ("path", "src", "fstype", "opts", "dump", "passno", "state", "boot",
                   "holder", "url", "username", "password", "ca_certs", "validate_certs"):
        assert f"   {option}" in shown.stdout


STATES = """
- hosts: all
  gather_facts: false
  module_defaults:
    lmi.mount.mount:
      url: "{{ lmi_url }}"
      username: "{{ lmi_user }}"
      password: "{{ lmi_password }}"
      ca_certs: "{{ lmi_ca }}"
  tasks:
    - name: a line only, not mounted at boot
      lmi.mount.mount: {path: "{{ mount_point }}", src: tmpfs, fstype: tmpfs,
                        opts: size=8m, boot: false, state: present}
      register: present
    - slurp: {src: "/proc/{{ lmi_pid }}/mountinfo"}
      register: after_present
    - name: mounted from that line
      lmi.mount.mount: {path: "{{ mount_point }}", src: tmpfs, fstype: tmpfs,
                        opts: size=8m, boot: false, state: mounted}
      register: mounted
    - name: a second holder shares it
      lmi.mount.mount: {path: "{{ mount_point }}", src: tmpfs, fstype: tmpfs,
                        opts: size=8m, boot: false, state: mounted, holder: reports}
      register: shared
    - name: the first lets go; the mount stays for the second
      lmi.mount.mount: {path: "{{ mount_point }}", state: unmounted}
      register: released
    - slurp: {src: "/proc/{{ lmi_pid }}/mountinfo"}
      register: after_release
    - name: the second takes it away with its line
      lmi.mount.mount: {path: "{{ mount_point }}", state: absent, holder: reports}
      register: absent
    - name: a read-only bind until the next boot
      lmi.mount.mount: {path: "{{ mount_point }}", src: "{{ bind_source }}", fstype: none,
                        opts: "bind,ro,nosuid", state: ephemeral}
      register: ephemeral
    - slurp: {src: "/proc/{{ lmi_pid }}/mountinfo"}
      register: after_ephemeral
    - name: made writable
      lmi.mount.mount: {path: "{{ mount_point }}", opts: "rw,nosuid", state: remounted}
      register: remounted
    - slurp: {src: "/proc/{{ lmi_pid }}/mountinfo"}
      register: after_remount
    - name: gone
      lmi.mount.mount: {path: "{{ mount_point }}", state: unmounted}
      register: unmounted
    - copy:
        dest: "{{ report }}"
        content: "{{ {'present': present, 'mounted': mounted, 'shared': shared,
                      'released': released, 'absent': absent, 'ephemeral': ephemeral,
                      'remounted': remounted, 'unmounted': unmounted,
                      'after_present': after_present.content | b64decode,
                      'after_release': after_release.content | b64decode,
                      'after_ephemeral': after_ephemeral.content | b64decode,
                      'after_remount': after_remount.content | b64decode} | to_json }}"
"""


def _mounted_at(mountinfo: str, target: str) -> list[list[str]]:
    return [line.split() for line in mountinfo.splitlines() if line.split()[4] == target]


def test_every_state_against_the_kernel_and_the_fstab(tmp_path: Path) -> None:
    target = tmp_path / "mnt"
    target.mkdir()
    source = tmp_path / "data"
    source.mkdir()
    with sandbox.running(tmp_path / "host") as daemon:
        report = tmp_path / "report.json"
        inventory = tmp_path / "inventory.json"
        inventory.write_text(json.dumps({"all": {"hosts": {"host": {
            "ansible_connection": "local", "ansible_python_interpreter": sys.executable,
            "lmi_url": daemon.https_url, "lmi_ca": str(daemon.cafile), "lmi_user": USER,
            "lmi_password": PASSWORD, "lmi_pid": daemon.process.pid,
            "mount_point": str(target), "bind_source": str(source), "report": str(report),
        }}}}))
        playbook = tmp_path / "states.yml"
        playbook.write_text(STATES)
        env = {**sandbox.client_env(), "ANSIBLE_COLLECTIONS_PATH": str(REPO),
               # A controller that points requests at the system's CAs: ca_certs
               # must still be the one that verifies the service.
               "REQUESTS_CA_BUNDLE": certifi.where(), "CURL_CA_BUNDLE": certifi.where(),
               "ANSIBLE_LOCAL_TEMP": str(tmp_path / "tmp"),
               "ANSIBLE_HOME": str(tmp_path / "ansible-home"), "ANSIBLE_NOCOLOR": "1"}
        done = subprocess.run(["ansible-playbook", "-i", str(inventory), str(playbook)],
                              capture_output=True, text=True, timeout=300, env=env,
                              stdin=subprocess.DEVNULL)
        assert done.returncode == 0, done.stdout + done.stderr
        results = json.loads(report.read_text())
        fstab = daemon.fstab.read_text()
        final = daemon.mountinfo()

    line = f"tmpfs {target} tmpfs size=8m,noauto 0 0"
    assert results["present"]["changed"] and not results["present"]["mounted"]
    assert results["present"]["plan"] == [f"fstab: add line '{line}'"]
    assert _mounted_at(results["after_present"], str(target)) == []

    assert results["mounted"]["changed"] and results["mounted"]["holders"] == ["ansible"]
    assert results["shared"]["holders"] == ["ansible", "reports"]
    assert results["released"]["changed"] and results["released"]["holders"] == ["reports"]
    assert "stays mounted: reports hold it too" in done.stdout + done.stderr
    assert len(_mounted_at(results["after_release"], str(target))) == 1

    assert results["absent"]["changed"] and not results["absent"]["mounted"]
    assert line not in fstab and str(target) not in fstab

    # The kernel's word on the bind: read-only and nosuid, then writable.
    [bind] = _mounted_at(results["after_ephemeral"], str(target))
    assert {"ro", "nosuid"} <= set(bind[5].split(","))
    assert results["remounted"]["changed"]
    [bind] = _mounted_at(results["after_remount"], str(target))
    assert "rw" in bind[5].split(",") and "nosuid" in bind[5].split(",")
    assert results["unmounted"]["changed"] and _mounted_at(final, str(target)) == []
