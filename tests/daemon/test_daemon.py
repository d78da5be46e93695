"""``lmi-mountd`` as a real process: the sandbox a newcomer starts, its life cycle, its errors.

Each test runs the installed daemon as a subprocess on free 127.0.0.1 ports
and drives it with pywbemcli, as a user would. The sandbox enters a private
mount namespace of its own: the host (this test process) never sees its
mounts, and they end with it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pywbem import CIM_ERR_ACCESS_DENIED, CIMError, Uint16, WBEMConnection

from lmi_mount.server.auth import make_users_entry
from tests.contract.helpers import loop_device, mkfs_image
from tests.daemon import sandbox
from tests.daemon.sandbox import NAMESPACE, PASSWORD, USER, Daemon
from tests.support.skips import has_tool, requires_root, requires_tool

ROOT = (pytest.mark.root, requires_root)


def pywbemcli(daemon: Daemon, *args: str, https: bool = False) -> subprocess.Popen[str]:
    """Start a pywbemcli command against ``daemon`` (pywbemcli takes ~0.5 s to start:
    callers overlap the ones that do not depend on each other)."""
    tool = has_tool("pywbemcli")
    assert tool is not None
    server = ["-s", daemon.https_url, "--ca-certs", str(daemon.cafile)] if https else [
        "-s", daemon.http_url]
    return subprocess.Popen([tool, *server, "-u", USER, "-p", PASSWORD, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=sandbox.client_env())


def finish(command: subprocess.Popen[str]) -> str:
    """The output of a pywbemcli command, its long MOF strings joined again."""
    try:
        out, err = command.communicate(timeout=60)
    finally:
        if command.poll() is None:
            command.kill()
            command.communicate()
    assert command.returncode == 0, f"{command.args!r}:\n{out}{err}"
    return re.sub(r'"\n\s*"', "", out)


def mounted_file_systems(daemon: Daemon) -> dict[str, dict[str, str]]:
    """MountPointPath -> {property: MOF value} of ``pywbemcli instance enumerate``."""
    out = finish(pywbemcli(daemon, "instance", "enumerate", "LMI_MountedFileSystem", "--pl",
                           "MountPointPath,ReferenceCount,Holders,Caption"))
    instances = {}
    for block in out.split("instance of LMI_MountedFileSystem {")[1:]:
        # pywbemcli puts a long value on a line of its own.
        properties = dict(re.findall(r"^\s+(\w+) =\s+(.*?);$", block, re.MULTILINE | re.DOTALL))
        instances[properties["MountPointPath"].strip('"')] = properties
    return instances


def mount_points(mountinfo: str) -> set[str]:
    # proc(5): field 5 of /proc/PID/mountinfo is the mount point (octal-escaped).
    return {line.split()[4] for line in mountinfo.splitlines()}


@pytest.mark.root
@requires_root
@requires_tool("pywbemcli")
def test_sandbox_life_cycle(tmp_path: Path) -> None:
    root = tmp_path / "sandbox"
    target = f"{root}/mnt/a"
    fstab_line = f"tmpfs {target} tmpfs defaults 0 0"
    daemon = sandbox.start(root)
    try:
        assert os.readlink(f"/proc/{daemon.process.pid}/ns/mnt") != os.readlink(
            "/proc/self/ns/mnt"), "the sandbox shares the host's mount namespace"
        brand = pywbemcli(daemon, "server", "brand", https=True)
        try:
            created = finish(pywbemcli(
                daemon, "class", "invokemethod", "LMI_MountConfigurationService", "CreateMount",
                "-p", "Mode=1", "-p", f"MountPoint={target}", "-p", "FileSystemSpec=tmpfs",
                "-p", "FileSystemType=tmpfs"))
        finally:
            branded = finish(brand)
        assert branded.strip() == "lmi-mount"
        assert created.startswith("ReturnValue=0\n"), created
        assert f'MountPointPath=\\"{target}\\"' in created

        mount = mounted_file_systems(daemon)[target]
        assert (mount["ReferenceCount"], mount["Holders"]) == ("1", f'{{ "{USER}" }}')
        assert fstab_line in daemon.fstab.read_text().splitlines()
        assert target in mount_points(daemon.mountinfo())
        with open("/proc/self/mountinfo", encoding="utf-8") as host:
            assert target not in mount_points(host.read())

        stopping = time.monotonic()
        assert daemon.stop(timeout=10) == 0
        print(f"SIGTERM to exit: {time.monotonic() - stopping:.2f} s")
        assert "STOPPING=1" in daemon.notifications or daemon.receive("STOPPING=1", 0.5)
        assert "stopping: closing the listeners" in daemon.output()
    finally:
        daemon.kill()

    # Restart on the same directory. The mount ended with the old namespace;
    # the journal still lists its holder, and reconstruction drops it. Under
    # systemd (JOURNAL_STREAM set) each line carries its sd-daemon(3) priority.
    with sandbox.running(root, env={"JOURNAL_STREAM": "8:12345"}) as again:
        assert fstab_line in again.fstab.read_text().splitlines()
        mount = mounted_file_systems(again)[target]
        assert (mount["ReferenceCount"], mount["Holders"]) == ("0", "{ }")
        assert mount["Caption"] == '"in fstab"'
        assert target not in mount_points(again.mountinfo())
        assert f"<6>lmi_mount.engine: reconstruct: {target} vanished" in again.output()
        assert again.stop(timeout=10) == 0


@pytest.mark.parametrize(("config", "sandboxed", "message"), [
    pytest.param("[server]\nhttp_prot = 5988\n", False, "[server] has no setting 'http_prot'",
                 id="server-key"),
    pytest.param("[engine]\nhold_second = 1\n", True, "[engine] has no setting 'hold_second'",
                 id="engine-key-in-sandbox", marks=ROOT),
    # The sandbox did not read [server] and [auth] at all: the docs' own typo
    # started a sandbox.
    pytest.param("[server]\nhttp_prot = 5988\n", True, "[server] has no setting 'http_prot'",
                 id="server-key-in-sandbox", marks=ROOT),
    pytest.param("[cim]\nsynchronous_seconds = soon\n", True,
                 "[cim] synchronous_seconds = 'soon': expected a number", id="cim-value",
                 marks=ROOT),
    # A review: float() takes them, and an infinite hold time ended the hold
    # timer's thread (OverflowError), a NaN one made it spin.
    pytest.param("[engine]\nhold_seconds = inf\n", True,
                 "[engine] hold_seconds = 'inf': expected a finite number", id="hold-inf",
                 marks=ROOT),
    pytest.param("[engine]\nhold_seconds = nan\n", True,
                 "[engine] hold_seconds = 'nan': expected a finite number", id="hold-nan",
                 marks=ROOT),
    pytest.param("[http]\nrequest_timeout = 1e999\n", False,
                 "[http] request_timeout = '1e999': expected a finite number",
                 id="http-timeout-inf"),
    # A second review: finite but beyond what a wait, a timedelta or a uint32
    # takes, they stopped the daemon after its first method call, or every
    # read of root/interop.
    pytest.param("[cim]\nsynchronous_seconds = 1e10\n", True,
                 "[cim] synchronous_seconds = '1e10': expected at most 31536000 seconds "
                 "(a year)", id="window-huge", marks=ROOT),
    pytest.param("[indications]\nretry_interval = 5e9\n", False,
                 "[indications] retry_interval = '5e9': expected at most 31536000 seconds "
                 "(a year)", id="retry-huge"),
    # A review: a default holder no mount can have failed every call that
    # named none, at run time.
    pytest.param(f"[cim]\ndefault_holder = {'x' * 300}\n", True,
                 f"[cim]: default_holder '{'x' * 300}': a holder name is at most 256 "
                 "characters, not 300", id="default-holder-long", marks=ROOT),
])
def test_a_bad_configuration_exits_2_naming_it(tmp_path: Path, config: str, sandboxed: bool,
                                                message: str) -> None:
    path = tmp_path / "lmi-mountd.conf"
    path.write_text("[auth]\nusers_file = /etc/lmi-mount/users\n" + config)
    command = [*sandbox.lmi_mountd(), "--config", str(path)]
    if sandboxed:
        command += ["--sandbox", str(tmp_path / "sandbox"), "--http-port", "0"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=30,
                          env=sandbox.client_env())
    assert done.returncode == 2, done.stderr
    assert f"lmi-mountd: {path}: {message}" in done.stderr


def test_a_users_file_that_cannot_be_read_exits_2_before_anything_is_made(
        tmp_path: Path) -> None:
    # The reviewer's host: the example configuration before the users file was
    # written. Exit 1 made systemd restart it every 2 s, and the state
    # directory was made before the refusal.
    path = tmp_path / "lmi-mountd.conf"
    state = tmp_path / "state"
    path.write_text(f"[server]\nhttp_port = 0\nhttps_port = none\n"
                    f"[auth]\nusers_file = {tmp_path / 'users'}\n"
                    f"[engine]\nfstab = {tmp_path / 'fstab'}\nstate_dir = {state}\n")
    done = subprocess.run([*sandbox.lmi_mountd(), "--config", str(path)], capture_output=True,
                          text=True, timeout=30, env=sandbox.client_env())
    assert done.returncode == 2, done.stderr
    assert f"lmi-mountd: users file {tmp_path / 'users'}: " in done.stderr
    assert "No such file or directory" in done.stderr
    assert not state.exists(), "the state directory was made before the refusal"


def test_the_sandbox_needs_root(tmp_path: Path) -> None:
    # Simulated: the interpreter lives under /root here, out of an unprivileged
    # user's reach, so the daemon's own uid check is what is exercised.
    program = ("import os, sys; os.geteuid = lambda: 1000; from lmi_mount.daemon import main; "
               f"sys.exit(main(['--sandbox', {str(tmp_path / 'sandbox')!r}]))")
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 2
    assert "--sandbox needs root (a private mount namespace); try: sudo lmi-mountd --sandbox" in (
        done.stderr)
    assert not (tmp_path / "sandbox").exists()


@pytest.mark.root
@requires_root
def test_sigint_stops_like_sigterm(tmp_path: Path) -> None:
    with sandbox.running(tmp_path / "sandbox") as daemon:
        daemon.process.send_signal(signal.SIGINT)
        assert daemon.process.wait(10) == 0
        assert "stopping: closing the listeners" in daemon.output()


@pytest.mark.root
@requires_root
@requires_tool("pywbemcli")
@pytest.mark.private_namespace(timeout=120)
def test_the_daemon_starts_read_only_on_a_full_state_file_system(tmp_path: Path) -> None:
    # The sandbox's state directory on a tiny tmpfs filled to its last byte
    # (in this test's own namespace, which the sandbox's namespace copies).
    root = tmp_path / "sandbox"
    state = root / "state"
    state.mkdir(parents=True)
    # mode=0700: a state directory others may write is refused at start.
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "state", str(state)],
                   check=True)
    filler = os.open(state / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(filler, b"\0" * size)
    finally:
        os.close(filler)
    with sandbox.running(root) as daemon:
        deadline = time.monotonic() + 5
        while not any(n.startswith("STATUS=read-only: ") for n in daemon.notifications):
            assert time.monotonic() < deadline, (daemon.notifications, daemon.output())
            daemon.receive("STATUS=", 0.1)  # collects what arrives meanwhile
        assert "serving reads only" in daemon.output()
        listed = finish(pywbemcli(daemon, "instance", "count", "LMI_MountedFileSystem"))
        assert "LMI_MountedFileSystem" in listed
        created = finish(pywbemcli(
            daemon, "class", "invokemethod", "LMI_MountConfigurationService", "CreateMount",
            "-p", "Mode=32768", "-p", f"MountPoint={root}/mnt/a", "-p", "FileSystemSpec=tmpfs",
            "-p", "FileSystemType=tmpfs"))
        assert "read-only" in created, created
        assert f"{root}/mnt/a" not in mount_points(daemon.mountinfo())
        assert daemon.stop(timeout=10) == 0


@pytest.mark.root
@requires_root
def test_a_second_daemon_on_the_same_state_is_refused_in_one_line(tmp_path: Path) -> None:
    root = tmp_path / "sandbox"
    with sandbox.running(root) as first:
        http, https = sandbox.free_ports(2)
        second = subprocess.run(
            [*sandbox.lmi_mountd(), "--sandbox", str(root), "--http-port", str(http),
             "--https-port", str(https)],
            capture_output=True, text=True, timeout=60, env=sandbox.client_env(),
            stdin=subprocess.DEVNULL)
        assert second.returncode == 1
        [line] = [line for line in second.stderr.splitlines() if "lmi-mountd:" in line]
        assert line.startswith("lmi-mountd: cannot start:") and "Traceback" not in second.stderr
        assert first.stop(timeout=10) == 0


@pytest.mark.parametrize("journal", [False, True], ids=["terminal", "journal"])
def test_a_control_character_in_a_logged_value_forges_no_line(journal: bool) -> None:
    # Log lines carry what clients send (a key value, a user name): a newline
    # in one made a line of its own, which under systemd is a journal entry
    # with whatever priority prefix the client wrote.
    from lmi_mount import daemon as daemon_module

    formatter = (daemon_module._JournalFormatter("%(name)s: %(message)s") if journal
                 else daemon_module._LineFormatter("%(levelname)s %(name)s: %(message)s"))
    forged = "x\n<2>lmi_mount.engine: forged\x1b[2J"
    record = logging.LogRecord("lmi_mount.server", logging.INFO, __file__, 1,
                               "GetInstance %s: 6", (forged,), None)
    assert formatter.format(record).endswith(
        "lmi_mount.server: GetInstance x\\012<2>lmi_mount.engine: forged\\033[2J: 6")
    try:
        raise ValueError("boom")
    except ValueError:
        failed = logging.LogRecord("lmi_mount.server", logging.ERROR, __file__, 1,
                                   "it failed", (), sys.exc_info())
    lines = formatter.format(failed).splitlines()
    assert lines[1].endswith("Traceback (most recent call last):"), "tracebacks keep their lines"
    if journal:
        # A traceback's lines are the record's too: an exception's message (what
        # a client sent) cannot set a line's priority.
        try:
            raise ValueError(forged)
        except ValueError:
            failed = logging.LogRecord("lmi_mount.server", logging.ERROR, __file__, 1,
                                       "it failed", (), sys.exc_info())
        assert all(line.startswith("<3>") for line in formatter.format(failed).splitlines())


@pytest.mark.root
@requires_root
def test_a_sandbox_takes_the_users_of_its_configuration_beside_its_own(tmp_path: Path) -> None:
    # A newcomer could not try the reader role: the sandbox ignored [auth].
    users = tmp_path / "users"
    users.write_text(make_users_entry("rita", "reader", "rita-pw") + "\n")
    users.chmod(0o600)
    config = tmp_path / "lmi-mountd.conf"
    config.write_text(f"[auth]\nusers_file = {users}\n")
    with sandbox.running(tmp_path / "sandbox", "--config", str(config)) as daemon:
        reader = WBEMConnection(daemon.http_url, ("rita", "rita-pw"), default_namespace=NAMESPACE)
        [service] = reader.EnumerateInstanceNames("LMI_MountConfigurationService")
        with pytest.raises(CIMError) as caught:
            reader.InvokeMethod("CreateMount", service, Mode=Uint16(32768),
                                FileSystemSpec="tmpfs", FileSystemType="tmpfs",
                                MountPoint=str(tmp_path / "sandbox" / "mnt" / "a"))
        assert caught.value.status_code == CIM_ERR_ACCESS_DENIED
        admin = WBEMConnection(daemon.http_url, (USER, PASSWORD), default_namespace=NAMESPACE)
        assert admin.EnumerateInstanceNames("LMI_MountConfigurationService") == [service]


@pytest.mark.root
@requires_root
@requires_tool("pywbemcli")
def test_the_configuration_service_and_its_profile_lead_to_each_other(tmp_path: Path) -> None:
    # DSP1033 both ways, across namespaces: a console at the profile (in
    # root/interop) finds the service, and one at the service (in root/cimv2)
    # finds the profile, beside the service's own associations.
    with sandbox.running(tmp_path / "sandbox") as daemon:
        conn = WBEMConnection(daemon.http_url, (USER, PASSWORD), default_namespace=NAMESPACE)
        (service,) = conn.EnumerateInstanceNames("LMI_MountConfigurationService")
        found = {(p.classname, p.namespace) for p in conn.AssociatorNames(service)}
        assert ("CIM_RegisteredProfile", "root/interop") in found
        assert ("LMI_ComputerSystem", NAMESPACE) in found, "its own associations too"
        service.namespace = NAMESPACE
        listed = finish(pywbemcli(daemon, "instance", "associators", service.to_wbem_uri(),
                                  "--assoc-class", "CIM_ElementConformsToProfile"))
        assert 'RegisteredName = "OpenLMI-Mounting";' in listed, listed
        (profile,) = [p for p in conn.EnumerateInstanceNames("CIM_RegisteredProfile",
                                                             namespace="root/interop")
                      if "OpenLMI-Mounting" in p["InstanceID"]]
        (back,) = finish(pywbemcli(daemon, "instance", "associators", "--names-only",
                                   profile.to_wbem_uri(), "--assoc-class",
                                   "CIM_ElementConformsToProfile")).split()
        assert "LMI_MountConfigurationService" in back and "root/cimv2" in back
        # Naming a class of root/interop only still checks the rest of the
        # request (a second review: these answered nothing, without an error).
        wrong_key = service.copy()
        wrong_key["Name"] = "nobody"
        extra_key = service.copy()
        extra_key["Extra"] = "x"
        for path, namespace, filters, status in [
            (service, "root/nosuch", {"AssocClass": "CIM_ElementConformsToProfile"},
             "CIM_ERR_INVALID_NAMESPACE"),
            (extra_key, NAMESPACE, {"AssocClass": "CIM_ElementConformsToProfile"},
             "CIM_ERR_INVALID_PARAMETER"),
            (service, NAMESPACE, {"AssocClass": "CIM_NoSuchClass",
                                  "ResultClass": "CIM_RegisteredProfile"},
             "CIM_ERR_INVALID_CLASS"),
            (service, NAMESPACE, {"AssocClass": "CIM_ElementConformsToProfile",
                                  "ResultClass": "CIM_NoSuchClass"}, "CIM_ERR_INVALID_CLASS"),
        ]:
            target = path.copy()
            target.namespace = namespace
            with pytest.raises(CIMError) as caught:
                conn.AssociatorNames(target, **filters)
            assert caught.value.status_code_name == status, (filters, caught.value)
        target = extra_key.copy()
        with pytest.raises(CIMError) as caught:
            conn.ReferenceNames(target, ResultClass="CIM_ElementConformsToProfile")
        assert caught.value.status_code_name == "CIM_ERR_INVALID_PARAMETER"
        assert conn.AssociatorNames(wrong_key, AssocClass="CIM_ElementConformsToProfile") == []


@pytest.mark.root
@requires_root
@pytest.mark.private_namespace(timeout=120)
def test_the_sandbox_never_changes_the_options_of_a_host_file_system(tmp_path: Path) -> None:
    # The sandbox's namespace is a copy of this one: a tmpfs mounted here before
    # it starts is a host file system to it. A review's ModifyMount, with no
    # Force, grew such a tmpfs from 8 to 32 MiB here too (one superblock),
    # although the README says nothing the sandbox does reaches the host.
    host = tmp_path / "hostfs"
    host.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "hostfs", str(host)], check=True)

    def size() -> int:
        return os.statvfs(host).f_blocks * os.statvfs(host).f_frsize

    with sandbox.running(tmp_path / "sandbox") as daemon:
        conn = WBEMConnection(daemon.http_url, (USER, PASSWORD), default_namespace=NAMESPACE)
        [service] = conn.EnumerateInstanceNames("LMI_MountConfigurationService")
        [capabilities] = conn.EnumerateInstanceNames("LMI_MountedFileSystemCapabilities")
        [mount] = [path for path in conn.EnumerateInstanceNames("LMI_MountedFileSystem")
                   if path["MountPointPath"] == str(host)]
        _, made = conn.InvokeMethod("CreateSetting", capabilities, Options="size=32m")
        for force in (False, True):
            with pytest.raises(CIMError, match="mounted outside this mount namespace too"):
                conn.InvokeMethod("ModifyMount", service, Mode=Uint16(32768), Mount=mount,
                                  Goal=made["MountSetting"], Force=force)
        assert size() == 8 << 20
        # The mount's own flags are the sandbox's alone: they still change there.
        _, made = conn.InvokeMethod("CreateSetting", capabilities, Options="nosuid")
        rv, _ = conn.InvokeMethod("ModifyMount", service, Mode=Uint16(32768), Mount=mount,
                                  Goal=made["MountSetting"], Force=True)
        assert rv == 0
        inside = {line.split()[4]: line for line in daemon.mountinfo().splitlines()}
        assert "nosuid" in inside[str(host)].split()[5]
        assert daemon.stop() == 0
    assert size() == 8 << 20
    mine = [line for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if line.split()[4] == str(host)]
    assert "nosuid" not in mine[0].split()[5]


@pytest.mark.root
@requires_root
@requires_tool("mkfs.ext4")
@pytest.mark.private_namespace(timeout=120)
def test_the_sandbox_never_changes_a_device_the_host_mounts_after_it_started(
        tmp_path: Path) -> None:
    # The list of file systems taken at the start missed a device the host
    # mounted later: the sandbox mounted the same loop device (one
    # superblock) and its remount gave the host's mount commit=17 (a second
    # review). Where else a file system is mounted is asked of every mount
    # namespace at the remount.
    image = mkfs_image(tmp_path, "ext4")
    host = tmp_path / "hostmnt"
    host.mkdir()
    with sandbox.running(tmp_path / "sandbox") as daemon, loop_device(image) as loop:
        try:
            subprocess.run(["mount", "-t", "ext4", loop, str(host)], check=True)
            conn = WBEMConnection(daemon.http_url, (USER, PASSWORD),
                                  default_namespace=NAMESPACE)
            [service] = conn.EnumerateInstanceNames("LMI_MountConfigurationService")
            [capabilities] = conn.EnumerateInstanceNames("LMI_MountedFileSystemCapabilities")
            target = str(daemon.root / "mnt" / "a")
            rv, out = conn.InvokeMethod("CreateMount", service, Mode=Uint16(32768),
                                        FileSystemSpec=loop, FileSystemType="ext4",
                                        MountPoint=target)
            assert rv == 0, out
            _, made = conn.InvokeMethod("CreateSetting", capabilities, Options="commit=17")
            for force in (False, True):
                with pytest.raises(CIMError, match="mounted outside this mount namespace"):
                    conn.InvokeMethod("ModifyMount", service, Mode=Uint16(32768),
                                      Mount=out["Mount"], Goal=made["MountSetting"],
                                      Force=force)
            mine = [line for line in Path("/proc/self/mountinfo").read_text().splitlines()
                    if line.split()[4] == str(host)]
            assert "commit=17" not in mine[0]
            conn.InvokeMethod("DeleteMount", service, Mode=Uint16(32769), Mount=out["Mount"])
            assert daemon.stop() == 0
        finally:
            subprocess.run(["umount", str(host)], check=False)
