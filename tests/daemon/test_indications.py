"""Indications from a real ``lmi-mountd --sandbox`` to pywbem's own listener.

The judges are pywbem's ``WBEMSubscriptionManager`` (it creates the
subscriptions, unchanged, as a console would) and ``WBEMListener`` (it parses
the export requests); the changes are made through the service and, by hand,
with mount(8) in the daemon's namespace and an editor's write of its fstab.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pywbem import (
    CIMError,
    CIMInstance,
    Uint16,
    WBEMConnection,
    WBEMListener,
    WBEMServer,
    WBEMSubscriptionManager,
)

from tests.daemon import sandbox
from tests.daemon.sandbox import NAMESPACE, PASSWORD, USER
from tests.support.skips import requires_root

pytestmark = [pytest.mark.root, requires_root]

EVERYTHING = "SELECT * FROM CIM_Indication"


@dataclass
class Inbox:
    """What a listener received, in order of arrival."""

    received: list[CIMInstance] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)

    def receive(self, indication: CIMInstance, host: str) -> None:
        with self.cond:
            self.received.append(indication)
            self.cond.notify_all()

    def wait_for(self, wanted: Callable[[CIMInstance], bool], timeout: float = 5.0,
                 ) -> CIMInstance:
        with self.cond:
            found: list[CIMInstance] = []
            assert self.cond.wait_for(
                lambda: found.extend(i for i in self.received if wanted(i)) or found, timeout
            ), f"nothing matching within {timeout} s; got {[describe(i) for i in self.received]}"
            return found[0]

    def clear(self) -> None:
        with self.cond:
            self.received.clear()


def describe(indication: CIMInstance) -> str:
    return (f"{indication.classname} {indication.get('SourceInstanceModelPath')} "
            f"{indication.get('Message') or ''}")


def source(indication: CIMInstance) -> CIMInstance | None:
    value = indication.get("SourceInstance")
    return value if isinstance(value, CIMInstance) else None


def about(classname: str, kind: str, **values: Any) -> Callable[[CIMInstance], bool]:
    """A lifecycle indication ``kind`` of an instance of ``classname`` with ``values``."""
    def wanted(indication: CIMInstance) -> bool:
        instance = source(indication)
        return (indication.classname == kind and instance is not None
                and instance.classname == classname
                and all(instance.get(k) == v for k, v in values.items()))
    return wanted


@dataclass
class Console:
    """A console subscribed to everything one sandbox daemon says."""

    daemon: sandbox.Daemon
    conn: WBEMConnection
    inbox: Inbox
    listener_url: str

    @property
    def root(self) -> Path:
        return self.daemon.root

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        [service] = self.conn.EnumerateInstanceNames("LMI_MountConfigurationService")
        rv, out = self.conn.InvokeMethod(method, service, **params)
        assert rv == 0, out
        return dict(out)

    def by_hand(self, *command: str) -> None:
        """A command in the daemon's mount namespace, as an administrator would run it."""
        subprocess.run(["nsenter", "-t", str(self.daemon.process.pid), "-m", *command],
                       check=True, stdin=subprocess.DEVNULL, timeout=30)


def listen(inbox: Inbox, port: int | None = None) -> tuple[WBEMListener, str]:
    """A pywbem listener on ``port`` (default: a free one) that hands what it gets to ``inbox``."""
    if port is None:
        [port] = sandbox.free_ports(1)
    listener = WBEMListener("127.0.0.1", http_port=port, https_port=None)
    # Its callback thread polls its queue this often, and stop() waits for that
    # thread: the default of 2 s made every stop take 2 s.
    listener.queue_get_timeout = 0.05
    listener.add_callback(inbox.receive)
    listener.start()
    return listener, f"http://127.0.0.1:{port}"


def subscribe(conn: WBEMConnection, url: str, query: str = EVERYTHING,
              manager_id: str = "console", suffix: str = "") -> WBEMSubscriptionManager:
    manager = WBEMSubscriptionManager(manager_id)
    server_id = manager.add_server(WBEMServer(conn))
    destination = manager.add_destination(server_id, url, owned=False, name=f"inbox{suffix}")
    found = manager.add_filter(server_id, NAMESPACE, query, owned=False, name=f"all{suffix}")
    manager.add_subscriptions(server_id, found.path, [destination.path], owned=False)
    return manager


@pytest.fixture
def console(tmp_path: Path) -> Iterator[Console]:
    inbox = Inbox()
    listener, url = listen(inbox)
    try:
        with sandbox.running(tmp_path / "host") as daemon:
            conn = WBEMConnection(daemon.http_url, (USER, PASSWORD), default_namespace=NAMESPACE)
            subscribe(conn, url)
            yield Console(daemon, conn, inbox, url)
    finally:
        listener.stop()


MOUNT = "LMI_MountedFileSystem"
SETTING = "LMI_MountedFileSystemSetting"


def test_the_service_s_own_changes_arrive_with_their_source_instance(console: Console) -> None:
    target = str(console.root / "mnt" / "a")
    out = console.call("CreateMount", Mode=Uint16(1), MountPoint=target,
                       FileSystemSpec="tmpfs", FileSystemType="tmpfs")
    created = console.inbox.wait_for(about(MOUNT, "CIM_InstCreation", MountPointPath=target))
    assert source(created)["ReferenceCount"] == 1 and source(created)["Holders"] == [USER]
    assert created["SourceInstanceModelPath"] == (
        f'root/cimv2:{MOUNT}.FileSystemSpec="tmpfs",MountPointPath="{target}"')
    console.inbox.wait_for(about(SETTING, "CIM_InstCreation", ElementName=target))

    [capabilities] = console.conn.EnumerateInstanceNames("LMI_MountedFileSystemCapabilities")
    _, made = console.conn.InvokeMethod("CreateSetting", capabilities, Options="ro")
    console.call("ModifyMount", Mode=Uint16(32768), Mount=out["Mount"], Goal=made["MountSetting"])
    # Remounted ro alone, the mount now differs from its "defaults" line (the
    # next boot gives rw): a current and a next setting, and the mount drifted.
    current = console.inbox.wait_for(
        lambda i: about(SETTING, "CIM_InstCreation")(i)
        and ":current:" in source(i)["InstanceID"])
    assert source(current)["AllowWrite"] is False
    changed = console.inbox.wait_for(about(MOUNT, "CIM_InstModification", MountPointPath=target))
    assert changed["PreviousInstance"]["Caption"] == "mounted, in fstab"
    assert "drifted: allow_write" in source(changed)["Caption"]
    assert "Caption" in changed["ChangedPropertyNames"]

    console.call("DeleteMount", Mode=Uint16(4), Mount=out["Mount"])
    console.inbox.wait_for(about(MOUNT, "CIM_InstDeletion", MountPointPath=target))
    # One ordered stream: one context, numbers counting up from 0 without a gap.
    received = console.inbox.received
    assert len({i["SequenceContext"] for i in received}) == 1
    assert [i["SequenceNumber"] for i in received] == list(range(len(received)))


def test_a_mount_by_hand_and_an_fstab_line_by_hand_are_seen(console: Console) -> None:
    target = str(console.root / "mnt" / "b")
    console.by_hand("mount", "-t", "tmpfs", "-o", "size=1m", "byhand", target)
    created = console.inbox.wait_for(about(MOUNT, "CIM_InstCreation", MountPointPath=target))
    assert source(created)["FileSystemSpec"] == "byhand"
    console.by_hand("umount", target)
    console.inbox.wait_for(about(MOUNT, "CIM_InstDeletion", MountPointPath=target))

    line_target = str(console.root / "mnt" / "c")
    with open(console.daemon.fstab, "a", encoding="utf-8") as fstab:
        fstab.write(f"LABEL=data {line_target} ext4 noatime 0 2\n")
    line = console.inbox.wait_for(about(MOUNT, "CIM_InstCreation", MountPointPath=line_target))
    assert source(line)["FileSystemSpec"] == "LABEL=data"
    assert source(line)["Caption"] == "in fstab"


def test_a_mount_the_model_leaves_out_costs_no_loss_alert(console: Console) -> None:
    # A mount point whose name holds a control character is left out of every
    # enumeration (CIM-XML cannot carry it); its mount and unmount still took
    # indications that failed to encode, and each told every listener of a
    # loss its client could never see (four LMI0003 alerts in the review).
    odd = console.root / "mnt" / "a" / "ctl\x01x"
    odd.mkdir()
    console.by_hand("mount", "-t", "tmpfs", "odd", str(odd))
    console.by_hand("umount", str(odd))
    target = str(console.root / "mnt" / "b")
    console.by_hand("mount", "-t", "tmpfs", "plain", target)
    console.inbox.wait_for(about(MOUNT, "CIM_InstCreation", MountPointPath=target))
    received = console.inbox.received
    assert not [i for i in received if i.classname == "CIM_AlertIndication"
                and i["MessageID"] == "LMI0003"], [describe(i) for i in received]
    assert [i["SequenceNumber"] for i in received] == list(range(len(received)))


def test_a_filter_s_select_list_names_the_properties_its_listener_gets(
        console: Console) -> None:
    # The select list was accepted and ignored: every property was delivered
    # (a review). DSP1054's own properties come with each indication anyway.
    selected = Inbox()
    listener, url = listen(selected)
    try:
        subscribe(console.conn, url, "SELECT IndicationIdentifier, SourceInstanceModelPath "
                  "FROM CIM_InstCreation", manager_id="narrow", suffix="-narrow")
        target = str(console.root / "mnt" / "b")
        console.by_hand("mount", "-t", "tmpfs", "narrow", target)
        full = console.inbox.wait_for(about(MOUNT, "CIM_InstCreation", MountPointPath=target))
        narrow = selected.wait_for(lambda i: i.classname == "CIM_InstCreation")
    finally:
        listener.stop()
    assert "SourceInstance" in full
    assert {name.lower() for name in narrow.properties} == {
        "indicationidentifier", "sourceinstancemodelpath", "sequencecontext", "sequencenumber",
        "indicationfiltername"}
    assert target in narrow["SourceInstanceModelPath"]
    assert narrow["IndicationIdentifier"] == full["IndicationIdentifier"]


def test_a_goal_setting_s_creation_change_and_deletion_are_told(console: Console) -> None:
    # Goal settings are instances of LMI_MountedFileSystemSetting while they
    # exist, and subscribing.rst promises a setting's lifecycle: the model's
    # reads covered mounts and fstab lines only (a review).
    [capabilities] = console.conn.EnumerateInstanceNames("LMI_MountedFileSystemCapabilities")
    _, made = console.conn.InvokeMethod("CreateSetting", capabilities, Options="noexec")
    path = made["MountSetting"]
    created = console.inbox.wait_for(
        lambda i: i.classname == "CIM_InstCreation"
        and source(i)["InstanceID"] == path["InstanceID"])
    assert source(created)["AllowExecution"] is False
    goal = console.conn.GetInstance(path)
    goal["AllowExecution"] = True
    console.conn.ModifyInstance(goal, PropertyList=["AllowExecution"])
    changed = console.inbox.wait_for(
        lambda i: i.classname == "CIM_InstModification"
        and source(i)["InstanceID"] == path["InstanceID"])
    assert (changed["PreviousInstance"]["AllowExecution"], source(changed)["AllowExecution"]) \
        == (False, True)
    console.conn.DeleteInstance(path)
    console.inbox.wait_for(lambda i: i.classname == "CIM_InstDeletion"
                           and source(i)["InstanceID"] == path["InstanceID"])


def test_an_fstab_that_cannot_be_read_for_a_while_deletes_no_line(console: Console) -> None:
    # An unreadable fstab degrades reads to the mounts alone; the indications
    # took that for every line deleted, and every line made again once it
    # could be read (a review).
    target = str(console.root / "mnt" / "c")
    fstab = Path(console.daemon.fstab)
    with open(fstab, "a", encoding="utf-8") as stream:
        stream.write(f"keep {target} tmpfs size=1m 0 0\n")
    console.inbox.wait_for(about(MOUNT, "CIM_InstCreation", MountPointPath=target))
    text = fstab.read_text()
    swap = fstab.with_name("fstab.fifo")
    os.mkfifo(swap)
    os.rename(swap, fstab)
    # Until the watcher has seen it (a fixed pause was too short on a loaded machine).
    deadline = time.monotonic() + 60
    while "indications wait for fstab" not in console.daemon.output():
        assert time.monotonic() < deadline, "the watcher never saw the unreadable fstab"
        time.sleep(0.1)
    back = fstab.with_name("fstab.back")
    back.write_text(text)
    os.rename(back, fstab)
    later = str(console.root / "mnt" / "b")
    console.by_hand("mount", "-t", "tmpfs", "later", later)
    console.inbox.wait_for(about(MOUNT, "CIM_InstCreation", MountPointPath=later))
    about_line = [i for i in console.inbox.received
                  if source(i) is not None and source(i).get("MountPointPath") == target]
    assert [i.classname for i in about_line] == ["CIM_InstCreation"], \
        [describe(i) for i in about_line]
    assert "indications wait for fstab" in console.daemon.output()


def test_drift_from_the_fstab_line_raises_an_alert_and_its_end_another(
        console: Console) -> None:
    target = str(console.root / "mnt" / "a")
    # A line that says noexec (a line that says nothing of exec has no exec to drift from).
    [capabilities] = console.conn.EnumerateInstanceNames("LMI_MountedFileSystemCapabilities")
    _, made = console.conn.InvokeMethod("CreateSetting", capabilities, Options="noexec")
    console.call("CreateMount", Mode=Uint16(1), MountPoint=target, FileSystemSpec="tmpfs",
                 FileSystemType="tmpfs", Goal=made["MountSetting"])
    console.by_hand("mount", "-o", "remount,exec", target)
    alert = console.inbox.wait_for(lambda i: i.classname == "CIM_AlertIndication"
                                   and i["MessageID"] == "LMI0001")
    assert target in alert["Message"] and "exec" in alert["Message"]
    assert alert["PerceivedSeverity"] == 3
    console.by_hand("mount", "-o", "remount,noexec", target)
    back = console.inbox.wait_for(lambda i: i.classname == "CIM_AlertIndication"
                                  and i["MessageID"] == "LMI0002")
    assert target in back["Message"] and "agrees with its fstab line again" in back["Message"]
    # Drifted again, then unmounted: the drift ends, but nothing agrees with
    # the line (it said "agrees with its fstab line again" of a mount that was
    # gone, a review).
    console.by_hand("mount", "-o", "remount,exec", target)
    console.inbox.wait_for(lambda i: i.classname == "CIM_AlertIndication"
                           and i["MessageID"] == "LMI0001" and i is not alert)
    console.by_hand("umount", target)
    gone = console.inbox.wait_for(lambda i: i.classname == "CIM_AlertIndication"
                                  and i["MessageID"] == "LMI0002" and i is not back)
    assert f"{target} is no longer mounted" in gone["Message"], gone["Message"]
    assert "agrees" not in gone["Message"]


def test_a_job_s_changes_arrive_in_order(tmp_path: Path) -> None:
    config = tmp_path / "jobs.conf"
    config.write_text("[cim]\nsynchronous_seconds = 0\n")
    inbox = Inbox()
    listener, url = listen(inbox)
    try:
        with sandbox.running(tmp_path / "host", "--config", str(config)) as daemon:
            conn = WBEMConnection(daemon.http_url, (USER, PASSWORD),
                                  default_namespace=NAMESPACE)
            subscribe(conn, url, "SELECT * FROM CIM_InstModification "
                                 "WHERE SourceInstance ISA LMI_MountJob")
            [service] = conn.EnumerateInstanceNames("LMI_MountConfigurationService")
            rv, out = conn.InvokeMethod(
                "CreateMount", service, Mode=Uint16(32768),
                MountPoint=str(daemon.root / "mnt" / "a"), FileSystemSpec="tmpfs",
                FileSystemType="tmpfs")
            assert rv == 4096
            job_id = out["Job"]["InstanceID"]
            done = inbox.wait_for(lambda i: source(i)["InstanceID"] == job_id
                                  and source(i)["JobState"] == 7)
    finally:
        listener.stop()
    states = [source(i)["JobState"] for i in inbox.received
              if source(i)["InstanceID"] == job_id]
    assert states[-1] == 7 and states == sorted(states), states
    # The instance it was: running, not yet ended (the first build sent the
    # ended job with only its JobState put back).
    before = done["PreviousInstance"]
    assert before["JobState"] == 4 and before["JobOutParameters"] is None
    assert before["TimeOfLastStateChange"] != source(done)["TimeOfLastStateChange"]
    assert {"JobOutParameters", "TimeOfLastStateChange"} <= set(done["ChangedPropertyNames"])


def test_a_subscription_survives_a_restart(
        tmp_path: Path) -> None:
    inbox = Inbox()
    listener, url = listen(inbox)
    root = tmp_path / "host"
    try:
        with sandbox.running(root) as daemon:
            conn = WBEMConnection(daemon.http_url, (USER, PASSWORD),
                                  default_namespace=NAMESPACE)
            subscribe(conn, url)
            assert daemon.stop() == 0
        with sandbox.running(root) as daemon:
            conn = WBEMConnection(daemon.http_url, (USER, PASSWORD),
                                  default_namespace=NAMESPACE)
            [kept] = conn.EnumerateInstances("CIM_IndicationSubscription",
                                             namespace="root/interop")
            assert kept["Handler"]["Name"] == "inbox"
            target = str(daemon.root / "mnt" / "a")
            [service] = conn.EnumerateInstanceNames("LMI_MountConfigurationService")
            conn.InvokeMethod("CreateMount", service, Mode=Uint16(32768), MountPoint=target,
                              FileSystemSpec="tmpfs", FileSystemType="tmpfs")
            inbox.wait_for(about(MOUNT, "CIM_InstCreation", MountPointPath=target))
    finally:
        listener.stop()


def test_a_listener_down_then_up_gets_everything_in_order(tmp_path: Path) -> None:
    config = tmp_path / "retry.conf"
    config.write_text("[indications]\nretry_attempts = 100\nretry_interval = 0.2\n")
    [port] = sandbox.free_ports(1)
    url = f"http://127.0.0.1:{port}"
    with sandbox.running(tmp_path / "host", "--config", str(config)) as daemon:
        conn = WBEMConnection(daemon.http_url, (USER, PASSWORD), default_namespace=NAMESPACE)
        subscribe(conn, url, f"SELECT * FROM CIM_InstCreation WHERE SourceInstance ISA {MOUNT}")
        [service] = conn.EnumerateInstanceNames("LMI_MountConfigurationService")
        targets = []
        for name in ("a", "b", "c"):
            targets.append(str(daemon.root / "mnt" / name))
            conn.InvokeMethod("CreateMount", service, Mode=Uint16(32768),
                              MountPoint=targets[-1], FileSystemSpec="tmpfs",
                              FileSystemType="tmpfs")
            time.sleep(0.1)  # three separate changes
        time.sleep(0.5)  # the first delivery fails meanwhile
        inbox = Inbox()
        listener, _ = listen(inbox, port)
        try:
            inbox.wait_for(about(MOUNT, "CIM_InstCreation", MountPointPath=targets[-1]))
        finally:
            listener.stop()
    got = [source(i)["MountPointPath"] for i in inbox.received]
    assert got == targets
    assert [i["SequenceNumber"] for i in inbox.received] == [0, 1, 2]


def test_a_listener_that_never_comes_keeps_the_queue_bounded(tmp_path: Path) -> None:
    config = tmp_path / "small.conf"
    config.write_text("[indications]\nmax_queue = 1\nretry_attempts = 1000\n"
                      "retry_interval = 0.05\n")
    [port] = sandbox.free_ports(1)
    with sandbox.running(tmp_path / "host", "--config", str(config)) as daemon:
        conn = WBEMConnection(daemon.http_url, (USER, PASSWORD), default_namespace=NAMESPACE)
        subscribe(conn, f"http://127.0.0.1:{port}", "SELECT * FROM CIM_InstCreation "
                  f"WHERE SourceInstance ISA {MOUNT}")
        [service] = conn.EnumerateInstanceNames("LMI_MountConfigurationService")
        for name in ("a", "b", "c"):
            conn.InvokeMethod("CreateMount", service, Mode=Uint16(32768),
                              MountPoint=str(daemon.root / "mnt" / name),
                              FileSystemSpec="tmpfs", FileSystemType="tmpfs")
            time.sleep(0.1)
        inbox = Inbox()
        listener, _ = listen(inbox, port)
        try:
            lost = inbox.wait_for(lambda i: i.classname == "CIM_AlertIndication", timeout=10)
        finally:
            listener.stop()
        output = daemon.output()
    # One of the three was in flight, two waited with room for one: one dropped, said.
    assert lost["Message"] == f"1 indications of filter all to http://127.0.0.1:{port} were lost"
    assert lost["IndicationFilterName"] == "all"  # the subscription whose stream has the hole
    assert "lost: its queue is full" in output


def test_a_subscription_that_names_nothing_or_a_bad_query_is_refused(console: Console) -> None:
    filters = console.conn.EnumerateInstanceNames("CIM_IndicationFilter",
                                                  namespace="root/interop")
    bad = CIMInstance("CIM_IndicationFilter", properties={
        "Name": "bad", "SystemName": "x", "Query": "SELECT * FROM LMI_MountedFileSystem",
        "QueryLanguage": "WQL"})
    with pytest.raises(CIMError) as refused:
        console.conn.CreateInstance(bad, namespace="root/interop")
    assert "LMI_MountedFileSystem is no indication class" in refused.value.status_description
    assert len(console.conn.EnumerateInstanceNames(
        "CIM_IndicationFilter", namespace="root/interop")) == len(filters)


@pytest.mark.slow
def test_four_listeners_get_a_thousand_changes_each_in_order(tmp_path: Path) -> None:
    inboxes = [Inbox() for _ in range(4)]
    started = [listen(inbox) for inbox in inboxes]
    count = 500  # mounts, then as many unmounts: 1,000 changes
    try:
        with sandbox.running(tmp_path / "host") as daemon:
            conn = WBEMConnection(daemon.http_url, (USER, PASSWORD),
                                  default_namespace=NAMESPACE)
            manager = WBEMSubscriptionManager("four")
            server_id = manager.add_server(WBEMServer(conn))
            found = manager.add_filter(server_id, NAMESPACE, "SELECT * FROM CIM_InstIndication "
                                       f"WHERE SourceInstance ISA {MOUNT}", owned=True,
                                       filter_id="mounts")
            for number, (_, url) in enumerate(started):
                destination = manager.add_destination(server_id, url, owned=True,
                                                      destination_id=f"d{number}")
                manager.add_subscriptions(server_id, found.path, [destination.path])
            base = daemon.root / "many"
            targets = [str(base / f"{i:04d}") for i in range(count)]
            for target in targets:
                Path(target).mkdir(parents=True)
            script = (f'for d in {base}/*; do mount -t tmpfs many "$d" || exit 1; done; '
                      f'for d in {base}/*; do umount "$d" || exit 1; done')
            subprocess.run(["nsenter", "-t", str(daemon.process.pid), "-m", "sh", "-c", script],
                           check=True, timeout=120)
            for inbox in inboxes:
                inbox.wait_for(about(MOUNT, "CIM_InstDeletion", MountPointPath=targets[-1]),
                               timeout=60)
    finally:
        for listener, _ in started:
            listener.stop()
    streams = [[(i.classname, source(i)["MountPointPath"]) for i in inbox.received]
               for inbox in inboxes]
    # Every listener has the same stream, in the same order, numbered without a gap.
    assert all(stream == streams[0] for stream in streams)
    for inbox in inboxes:
        assert [i["SequenceNumber"] for i in inbox.received] == list(range(2 * count))
    # None lost, none twice, and each mount created before it is deleted. (Changes
    # that one read of the model finds together come in the order of the read.)
    stream = streams[0]
    assert sorted(stream) == sorted([("CIM_InstCreation", t) for t in targets]
                                    + [("CIM_InstDeletion", t) for t in targets])
    assert all(stream.index(("CIM_InstCreation", t)) < stream.index(("CIM_InstDeletion", t))
               for t in targets)


def test_a_name_xml_cannot_carry_costs_one_indication_not_the_service(
        console: Console) -> None:
    # The first build's delivery threads died on it, and then the daemon.
    odd = console.root / "mnt" / "ctl\x01x"
    odd.mkdir()
    console.by_hand("mount", "-t", "tmpfs", "odd", str(odd))
    target = str(console.root / "mnt" / "a")
    console.by_hand("mount", "-t", "tmpfs", "after", target)
    console.inbox.wait_for(about(MOUNT, "CIM_InstCreation", MountPointPath=target))
    assert console.daemon.process.poll() is None
    assert "an indication is left out: " in console.daemon.output()
    # Nor does it fail every enumeration: it is left out of them (logged).
    paths = [m["MountPointPath"] for m in console.conn.EnumerateInstances(MOUNT)]
    assert target in paths and str(odd) not in paths
    assert "EnumerateInstances of root/cimv2: an element is left out" in console.daemon.output()


def test_a_listener_that_trickles_holds_up_nothing(tmp_path: Path) -> None:
    # It answers 200 and then a byte a second: the first build's DeleteInstance
    # of its subscription, every interop request after it, and SIGTERM hung.
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    stop = threading.Event()

    def trickle() -> None:
        while not stop.is_set():
            server.settimeout(0.2)
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
            while not stop.wait(1.0):
                try:
                    conn.sendall(b"x")
                except OSError:
                    break
            conn.close()

    worker = threading.Thread(target=trickle, daemon=True)
    worker.start()
    config = tmp_path / "slow.conf"
    config.write_text("[indications]\ntimeout = 60\n")
    try:
        with sandbox.running(tmp_path / "host", "--config", str(config)) as daemon:
            conn = WBEMConnection(daemon.http_url, (USER, PASSWORD),
                                  default_namespace=NAMESPACE, timeout=20)
            subscribe(conn, f"http://127.0.0.1:{port}")
            [service] = conn.EnumerateInstanceNames("LMI_MountConfigurationService")
            conn.InvokeMethod("CreateMount", service, Mode=Uint16(32768),
                              MountPoint=str(daemon.root / "mnt" / "a"),
                              FileSystemSpec="tmpfs", FileSystemType="tmpfs")
            time.sleep(2)  # the delivery is in the trickle now
            [subscription] = conn.EnumerateInstanceNames("CIM_IndicationSubscription",
                                                         namespace="root/interop")
            start = time.monotonic()
            conn.DeleteInstance(subscription)
            conn.EnumerateInstances("CIM_IndicationFilter", namespace="root/interop")
            assert time.monotonic() - start < 2
            subscribe(conn, f"http://127.0.0.1:{port}", manager_id="again", suffix="2")
            conn.InvokeMethod("CreateMount", service, Mode=Uint16(32768),
                              MountPoint=str(daemon.root / "mnt" / "b"),
                              FileSystemSpec="tmpfs", FileSystemType="tmpfs")
            time.sleep(2)
            start = time.monotonic()
            assert daemon.stop(timeout=20) == 0
            assert time.monotonic() - start < 10
    finally:
        stop.set()
        server.close()


def test_each_subscription_delivers_with_its_filter_s_name(console: Console) -> None:
    manager = WBEMSubscriptionManager("second")
    server_id = manager.add_server(WBEMServer(console.conn))
    [destination] = console.conn.EnumerateInstanceNames("CIM_ListenerDestinationCIMXML",
                                                        namespace="root/interop")
    creations = manager.add_filter(server_id, NAMESPACE, "SELECT * FROM CIM_InstCreation",
                                   owned=False, name="creations")
    manager.add_subscriptions(server_id, creations.path, [destination], owned=False)
    target = str(console.root / "mnt" / "a")
    console.by_hand("mount", "-t", "tmpfs", "twice", target)
    console.inbox.wait_for(lambda i: about(MOUNT, "CIM_InstCreation", MountPointPath=target)(i)
                           and i["IndicationFilterName"] == "creations")
    console.inbox.wait_for(lambda i: about(MOUNT, "CIM_InstCreation", MountPointPath=target)(i)
                           and i["IndicationFilterName"] == "all")


def test_destinations_of_one_name_on_two_systems_both_get_theirs(tmp_path: Path) -> None:
    inboxes = [Inbox(), Inbox()]
    started = [listen(inbox) for inbox in inboxes]
    try:
        with sandbox.running(tmp_path / "host") as daemon:
            conn = WBEMConnection(daemon.http_url, (USER, PASSWORD),
                                  default_namespace=NAMESPACE)
            found = conn.CreateInstance(CIMInstance("CIM_IndicationFilter", properties={
                "Name": "all", "Query": EVERYTHING}), namespace="root/interop")
            for (_, url), system in zip(started, ("one.example", "two.example"), strict=True):
                handler = conn.CreateInstance(CIMInstance(
                    "CIM_ListenerDestinationCIMXML", properties={
                        "Name": "same", "SystemName": system, "Destination": url}),
                    namespace="root/interop")
                conn.CreateInstance(CIMInstance("CIM_IndicationSubscription", properties={
                    "Filter": found, "Handler": handler}), namespace="root/interop")
            target = str(daemon.root / "mnt" / "a")
            [service] = conn.EnumerateInstanceNames("LMI_MountConfigurationService")
            conn.InvokeMethod("CreateMount", service, Mode=Uint16(32768), MountPoint=target,
                              FileSystemSpec="tmpfs", FileSystemType="tmpfs")
            for inbox in inboxes:
                inbox.wait_for(about(MOUNT, "CIM_InstCreation", MountPointPath=target))
    finally:
        for listener, _ in started:
            listener.stop()


def test_the_indications_profile_leads_to_the_indication_service(console: Console) -> None:
    done = subprocess.run(
        ["pywbemcli", "-s", console.daemon.http_url, "-u", USER, "-p", PASSWORD,
         "profile", "centralinsts", "--organization", "DMTF", "--profile", "Indications"],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
        env=sandbox.client_env())
    assert done.returncode == 0, done.stderr
    assert "CIM_IndicationService" in done.stdout, done.stdout
