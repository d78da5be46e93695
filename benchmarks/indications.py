"""Benchmark: from a kernel mount change to pywbem listeners' callbacks.

Measured in the same run, in a private mount namespace, against the real
engine, broker and CIM-XML server (plain HTTP on loopback) with four pywbem
``WBEMListener`` processes
subscribed through ``WBEMSubscriptionManager``, each listener a process of
its own (arrival times on CLOCK_MONOTONIC, which every process shares):

* latency: mount(2) or umount(2) of a tmpfs by hand (the kernel change),
  then the time until each listener's callback has the indication of that
  mount point; ``--changes`` changes one after another, p50 and p99;
* rate: ``--burst`` changes as fast as the kernel takes them, then the
  indications delivered to the four listeners per second until all arrived
  (mounts made and unmade between two reads of the model are not seen: the
  burst changes distinct mount points, each once);
* baseline 1: what a console does without indications, one
  ``EnumerateInstances`` of LMI_MountedFileSystem per poll: the best case
  of polling is one enumeration right after the change;
* baseline 2: what four pywbem listener processes take at all, each fed
  the same export request back to back by a raw HTTP client, all at once:
  the ceiling of the rate on this machine (the listeners' own CPU);
* the service's own rate: the same burst delivered to four minimal listener
  processes (``--sink``: read the request, count it, answer the fixed
  EXPMETHODRESPONSE, no XML parse), so what the service can send is
  measured apart from what pywbem's listener can take.

Goals (issue "Indications"): p99 <= 50 ms; >= 2,000 indications/s in all; 0 lost.

Run: ``python benchmarks/indications.py [--changes N] [--burst N] [--mounts N]``
(root); ``--mounts`` makes that many tmpfs mounts first, as on a host with
many mounts (each change is read against the whole model).
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "provider"), str(ROOT)]

from _namespace import mount_tmpfs, reexec_in_private_namespace, unmount  # noqa: E402
from pywbem import (  # noqa: E402
    WBEMConnection,
    WBEMListener,
    WBEMServer,
    WBEMSubscriptionManager,
)
from server_pairs import cpu_seconds  # noqa: E402

from lmi_mount.cim.broker import Broker  # noqa: E402
from lmi_mount.daemon import tune_gc  # noqa: E402
from lmi_mount.engine import MountManager  # noqa: E402
from lmi_mount.linux.kernel import LinuxKernel  # noqa: E402
from lmi_mount.server.app import CimServer  # noqa: E402
from lmi_mount.server.cimxml import export_indication_request  # noqa: E402
from lmi_mount.server.config import ServerConfig  # noqa: E402

USER, PASSWORD = "bench", "bench-password"
LISTENERS = 4
QUERY = ("SELECT * FROM CIM_InstIndication WHERE SourceInstance ISA LMI_MountedFileSystem")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Arrivals:
    """When each listener got the indication of each (kind, mount point)."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.times: dict[tuple[str, str], list[float]] = {}
        self.count = 0

    def record(self, batch: list[tuple[str, str, float, int]]) -> None:
        """Arrivals (kind, mount point, time, count), all of one report line."""
        with self.cond:
            for kind, target, at, count in batch:
                self.times.setdefault((kind, target), []).append(at)
                self.count += count
            self.cond.notify_all()

    def wait(self, key: tuple[str, str], listeners: int, timeout: float = 10.0) -> list[float]:
        with self.cond:
            if not self.cond.wait_for(lambda: len(self.times.get(key, ())) >= listeners,
                                      timeout):
                raise TimeoutError(f"{key} reached {len(self.times.get(key, ()))} listeners")
            return self.times[key]

    def wait_count(self, count: int, timeout: float) -> None:
        with self.cond:
            if not self.cond.wait_for(lambda: self.count >= count, timeout):
                raise TimeoutError(f"{self.count} of {count} indications arrived")


#: How long a listener process gathers arrivals after the first of a batch
#: before it reports them in one line: the arrival times are taken in the
#: callback, so this delays only the report; a line (a write, and a wake of the
#: benchmark's reader thread in the service's process) per indication would
#: charge the instrument to the service and the listeners.
REPORT_SECONDS = 0.002
#: Separates the arrivals (kind TAB mount point TAB time TAB count) of a report line.
ARRIVAL_SEPARATOR = "\x1e"


class ArrivalReport:
    """Arrival lines, printed REPORT_SECONDS after the first of each batch, all
    in one line; an idle listener's reporter sleeps (a review: one that woke
    every 2 ms took 1% of a CPU, beside the processes being measured)."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.arrived: list[str] = []
        threading.Thread(target=self._run, daemon=True).start()

    def add(self, line: str) -> None:
        with self.cond:
            self.arrived.append(line)
            self.cond.notify()

    def _run(self) -> None:
        while True:
            with self.cond:
                self.cond.wait_for(lambda: self.arrived)
            time.sleep(REPORT_SECONDS)
            with self.cond:
                batch = self.arrived[:]
                self.arrived.clear()
            print(ARRIVAL_SEPARATOR.join(batch), flush=True)


def listener_process(port: int) -> int:
    """``--listener PORT``: a WBEMListener that reports each arrival (class, mount
    point, CLOCK_MONOTONIC time, the same clock in every process)."""
    report = ArrivalReport()

    def receive(indication: Any, host: str) -> None:
        at = time.monotonic()
        source = indication.get("SourceInstance")
        report.add(f"{indication.classname}\t{source['MountPointPath'] if source else ''}"
                   f"\t{at}\t1")

    listener = WBEMListener("127.0.0.1", http_port=port, https_port=None)
    listener.add_callback(receive)
    listener.start()
    print("ready", flush=True)
    sys.stdin.read()  # until the benchmark closes our stdin
    listener.stop()
    return 0


_MESSAGE_ID = re.compile(rb'<MESSAGE ID="([^"]*)"')
_INDICATION_CLASS = re.compile(rb'<EXPPARAMVALUE NAME="NewIndication"><INSTANCE CLASSNAME="(\w+)"')


def sink_process(port: int) -> int:
    """``--sink PORT``: a listener that answers each export request with the fixed
    DSP0201 EXPMETHODRESPONSE without parsing the XML, and reports arrivals as
    ``--listener`` does (class, no mount point): a ceiling far above pywbem's
    listener, so the rate measured with it is the service's."""
    server = socket.create_server(("127.0.0.1", port))
    report = ArrivalReport()

    def serve(conn: socket.socket) -> None:
        buffer = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buffer += data
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                length = int(re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)[1])
                while len(buffer) < length:
                    buffer += conn.recv(65536)
                body, buffer = buffer[:length], buffer[length:]
                message = _MESSAGE_ID.search(body)[1].decode()
                kind = _INDICATION_CLASS.search(body)[1].decode()
                reply = (f'<?xml version="1.0" encoding="utf-8" ?><CIM CIMVERSION="2.0" '
                         f'DTDVERSION="2.0"><MESSAGE ID="{message}" PROTOCOLVERSION="1.0">'
                         '<SIMPLEEXPRSP><EXPMETHODRESPONSE NAME="ExportIndication"/>'
                         "</SIMPLEEXPRSP></MESSAGE></CIM>").encode()
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/xml; "
                             b'charset="utf-8"\r\nCIMExport: MethodResponse\r\n'
                             b"Content-Length: %d\r\n\r\n%b" % (len(reply), reply))
                report.add(f"{kind}\t\t{time.monotonic()}\t1")

    def accept() -> None:
        while True:
            conn, _ = server.accept()
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    print("ready", flush=True)
    sys.stdin.read()  # until the benchmark closes our stdin
    return 0


def start_listener(arrivals: Arrivals, kind: str = "--listener") -> tuple[subprocess.Popen[str],
                                                                           int]:
    port = free_port()
    process = subprocess.Popen([sys.executable, __file__, kind, str(port)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    if process.stdout.readline().strip() != "ready":
        raise RuntimeError("a listener did not start")

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            batch = []
            for arrival in line.rstrip("\n").split(ARRIVAL_SEPARATOR):
                kind, target, at, count = arrival.split("\t")
                batch.append((kind, target, float(at), int(count)))
            arrivals.record(batch)

    threading.Thread(target=read, daemon=True).start()
    return process, port


def listener_capacity(indication: Any, count: int, listeners: int) -> tuple[float, float]:
    """Indications per second ``listeners`` pywbem listener processes take in all,
    each fed the same export request back to back by a raw client thread of its
    own, all at once (the raw clients' CPU is spent beside theirs); and the
    listeners' CPU seconds per indication. pywbem's listener speaks HTTP/1.0:
    each request comes on a connection (and a listener thread) of its own."""
    started = [start_listener(Arrivals()) for _ in range(listeners)]
    body = export_indication_request("1", indication)
    headers = {"Content-Type": 'application/xml; charset="utf-8"',
               "CIMExport": "MethodRequest", "CIMExportMethod": "ExportIndication"}

    def feed(port: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for _ in range(count):
            conn.request("POST", "/", body, headers)
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"the listener answered {response.status}")
        conn.close()

    try:
        threads = [threading.Thread(target=feed, args=(port,)) for _, port in started]
        cpu = sum(cpu_seconds(process.pid) for process, _ in started)
        start = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - start
        cpu = sum(cpu_seconds(process.pid) for process, _ in started) - cpu
        return listeners * count / elapsed, cpu / (listeners * count)
    finally:
        for process, _ in started:
            process.communicate(timeout=10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=1000)
    parser.add_argument("--burst", type=int, default=500)
    parser.add_argument("--mounts", type=int, default=0,
                        help="tmpfs mounts made first, for a host with many mounts")
    parser.add_argument("--listener", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--sink", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.listener is not None:
        return listener_process(args.listener)
    if args.sink is not None:
        return sink_process(args.sink)
    if os.geteuid() != 0:
        print("indications.py: needs root (mounts in a private namespace)", file=sys.stderr)
        return 2
    code = reexec_in_private_namespace()
    if code is not None:
        return code

    work = Path(tempfile.mkdtemp(prefix="lmi-bench-indications-"))
    (work / "fstab").write_text("")
    for number in range(args.mounts):
        background = work / "background" / str(number)
        background.mkdir(parents=True)
        mount_tmpfs(str(background))
    engine = MountManager(LinuxKernel(), fstab_path=work / "fstab",
                          state_dir=work / "state").start()
    broker = Broker(engine, host="bench.example")
    port = free_port()
    server = CimServer(ServerConfig(listen=("127.0.0.1",), http_port=port, https_port=None,
                                    plain_http="allow", users=((USER, "admin", PASSWORD),)),
                       broker)
    server.start()
    tune_gc()  # as lmi-mountd does once it serves
    arrivals = Arrivals()
    listeners = []
    try:
        conn = WBEMConnection(f"http://127.0.0.1:{port}", (USER, PASSWORD),
                              default_namespace="root/cimv2")
        manager = WBEMSubscriptionManager("bench")
        server_id = manager.add_server(WBEMServer(conn))
        found = manager.add_filter(server_id, "root/cimv2", QUERY, owned=True, filter_id="f")
        subscriptions: list[Any] = []
        for number in range(LISTENERS):
            listener, listener_port = start_listener(arrivals)
            listeners.append(listener)
            destination = manager.add_destination(
                server_id, f"http://127.0.0.1:{listener_port}", owned=True,
                destination_id=f"d{number}")
            subscriptions.extend(
                manager.add_subscriptions(server_id, found.path, [destination.path]))

        captured: list[Any] = []
        if server.indications is not None:
            publish = server.indications.publish

            def keep(indications: Any, namespace: str | None = None) -> None:
                indications = list(indications)
                captured.extend(indications[:1] if not captured else [])
                publish(indications, namespace)
            server.indications.publish = keep  # type: ignore[method-assign]

        # Latency: one change at a time, all four listeners served before the next.
        targets = []
        for number in range(args.changes // 2 + 1):
            target = work / "mnt" / str(number)
            target.mkdir(parents=True)
            targets.append(str(target))
        latencies = []
        changes = 0
        for target in targets:
            for kind, change in (("CIM_InstCreation", mount_tmpfs),
                                 ("CIM_InstDeletion", unmount)):
                if changes == args.changes:
                    break
                start = time.monotonic()
                change(target)
                got = arrivals.wait((kind, target), LISTENERS)
                latencies.extend(t - start for t in got[:LISTENERS])
                changes += 1
        latencies.sort()
        p50 = statistics.median(latencies)
        p99 = latencies[int(0.99 * (len(latencies) - 1))]

        # Baseline: a console's poll, one enumeration right after a change.
        polls = []
        for _ in range(50):
            start = time.perf_counter()
            conn.EnumerateInstances("LMI_MountedFileSystem")
            polls.append(time.perf_counter() - start)
        poll = statistics.median(polls)

        # Rate: a burst of changes on distinct mount points, then wait for all.
        burst = []
        for number in range(args.burst):
            target = work / "burst" / str(number)
            target.mkdir(parents=True)
            burst.append(str(target))
        before = arrivals.count
        start, cpu = time.monotonic(), time.process_time()
        for target in burst:
            mount_tmpfs(target)
        arrivals.wait_count(before + LISTENERS * len(burst), timeout=120)
        elapsed = time.monotonic() - start
        # This process is the service, plus the mount(2) loop above (a few us
        # each) and the threads that read the listeners' arrival lines (a little).
        service_cpu = (time.process_time() - cpu) / (LISTENERS * len(burst))
        rate = LISTENERS * len(burst) / elapsed
        # Baseline 2: what one pywbem listener takes at all, from a raw client.
        [sample] = [i for i in captured if i.classname == "CIM_InstCreation"][:1] or [None]
        capacity, listener_cpu = (listener_capacity(sample, 300, LISTENERS)
                                  if sample is not None else (float("nan"), float("nan")))
        lost = sum(server.indications.destination(f"pywbemdestination:bench:d{n}").lost
                   for n in range(LISTENERS)) if server.indications else 0
        manager.remove_subscriptions(server_id, [s.path for s in subscriptions])
        for target in burst:
            unmount(target)

        # The service's own rate: the same burst, to four minimal listeners.
        sink_arrivals = Arrivals()
        for number in range(LISTENERS):
            sink, sink_port = start_listener(sink_arrivals, "--sink")
            listeners.append(sink)
            destination = manager.add_destination(
                server_id, f"http://127.0.0.1:{sink_port}", owned=True,
                destination_id=f"s{number}")
            manager.add_subscriptions(server_id, found.path, [destination.path])
        for target in burst:
            Path(target + "-sink").mkdir()
        start, cpu = time.monotonic(), time.process_time()
        for target in burst:
            mount_tmpfs(target + "-sink")
        sink_arrivals.wait_count(LISTENERS * len(burst), timeout=120)
        sink_elapsed = time.monotonic() - start
        sink_cpu = (time.process_time() - cpu) / (LISTENERS * len(burst))
        sink_rate = LISTENERS * len(burst) / sink_elapsed
        sink_lost = sum(server.indications.destination(f"pywbemdestination:bench:s{n}").lost
                        for n in range(LISTENERS)) if server.indications else 0
        for target in burst:
            unmount(target + "-sink")
        manager.remove_server(server_id)
    finally:
        for listener in listeners:
            listener.communicate(timeout=10)
        server.shutdown()
        broker.close()
        engine.close()

    extra = f", beside {args.mounts} other mounts" if args.mounts else ""
    print(f"indications to {LISTENERS} listeners, {args.changes} kernel changes one by one"
          f"{extra}:")
    print(f"  latency from the change to each listener's callback: "
          f"p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms (goal: p99 <= 50 ms)")
    print(f"  baseline, one EnumerateInstances of LMI_MountedFileSystem (a console's poll): "
          f"{poll * 1000:.1f} ms; p50 latency / poll = {p50 / poll:.2f}")
    print(f"burst of {args.burst} mounts: {rate:,.0f} indications/s delivered in all "
          f"(goal: >= 2,000), {lost} lost (goal: 0); the service's CPU "
          f"{service_cpu * 1000:.2f} ms per indication delivered")
    print(f"  baseline, {LISTENERS} pywbem WBEMListener processes fed back to back by raw "
          f"clients at once: {capacity:,.0f}/s in all; delivered / that = "
          f"{rate / capacity:.2f}")
    # Each listener is one process under one interpreter lock: at most one CPU each.
    cpus = min(len(os.sched_getaffinity(0)), LISTENERS)
    print(f"  pywbem's listener takes {listener_cpu * 1000:.2f} ms of CPU per indication "
          f"(HTTP/1.0: a connection and a thread each); {cpus} CPUs / that = "
          f"{cpus / listener_cpu:,.0f}/s with a sender that costs nothing, "
          f"{cpus / (listener_cpu + service_cpu):,.0f}/s with this service's CPU per "
          "indication above")
    print(f"  the same burst to {LISTENERS} minimal listeners (the service's own rate): "
          f"{sink_rate:,.0f} indications/s in all (goal: >= 2,000), {sink_lost} lost; "
          f"the service's CPU {sink_cpu * 1000:.2f} ms per indication delivered")
    return 0


if __name__ == "__main__":
    sys.exit(main())
