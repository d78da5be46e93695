"""Benchmark: lmi-mountd serving EnumerateInstances and pull operations of 10k mounts over HTTP.

Measured in the same run, on loopback, on the same instances:

* server: a raw HTTP/1.1 client (keep-alive, reads the whole response and
  drops it) times EnumerateInstances from the request to the last byte: the
  server's own cost (broker, CIM-XML encoding, HTTP), without a client
  parser in the way;
* baseline 1: pywbem_mock (a plain ``FakedWBEMConnection`` with the model and
  the same instances in its repository) enumerating in-process;
* end to end: pywbem's ``WBEMConnection.EnumerateInstances`` against the
  server, and, as baseline 2, pywbem parsing the very same response bytes
  (``xml_to_tupletree_sax`` + ``TupleParser``) with no server at all;
* OpenEnumerateInstances with MaxObjectCount=1000, to the last byte;
* the encoder alone (``cimxml.named_instance_xml``), in instances per second;
* the server's memory while 10 raw clients page through the 10k at once
  (peak RSS of this process, which holds the server and the clients that
  drop what they read).

Goals (issue "lmi-mountd", Benchmarks): server time to the last byte <= 0.5 s
and >= 4x faster than pywbem_mock; end to end <= 1.25x pywbem's own parse;
Open with MaxObjectCount=1000 <= 60 ms; memory bounded while 10 clients page.

Instances, by default (root): the real broker and engine over ``--count``
live bind mounts in a private mount namespace (the script re-executes itself
under ``unshare --mount --propagation private``). ``--standin``: the server
tests' stand-in broker (tests/support/standin_broker.py) with ready-made instances,
to measure the server alone.

Run: ``python benchmarks/server_enumerate.py [--count N] [--rounds N] [--standin]``.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import os
import resource
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "provider"), str(ROOT)]

from _namespace import reexec_in_private_namespace  # noqa: E402
from pywbem import CIMInstance, Uint32, Uint64, WBEMConnection  # noqa: E402
from pywbem._tupleparse import TupleParser  # noqa: E402
from pywbem._tupletree import xml_to_tupletree_sax  # noqa: E402
from pywbem_mock import FakedWBEMConnection  # noqa: E402

from lmi_mount.cim import names  # noqa: E402
from lmi_mount.cim.model import install_model, load_model  # noqa: E402
from lmi_mount.server import cimxml  # noqa: E402
from lmi_mount.server.app import CimServer  # noqa: E402
from lmi_mount.server.config import ServerConfig  # noqa: E402
from lmi_mount.server.http import HttpLimits  # noqa: E402
from lmi_mount.server.pull import PullLimits  # noqa: E402

NS = names.NAMESPACE
CLASS = names.MOUNTED_FILE_SYSTEM
USER, PASSWORD = "bench", "bench-password"


def live_broker(count: int) -> Any:
    """The real broker over ``count`` live bind mounts (call inside a private namespace)."""
    from lmi_mount.cim.broker import Broker
    from lmi_mount.engine import MountManager
    from lmi_mount.linux.kernel import LinuxKernel
    from lmi_mount.mounts.flags import MS_BIND

    work = Path(tempfile.mkdtemp(prefix="lmi-bench-"))
    (work / "data").mkdir()
    kernel = LinuxKernel()
    for index in range(count):
        target = work / "mnt" / f"{index:05d}"
        target.mkdir(parents=True)
        kernel.mount(str(work / "data"), str(target), None, MS_BIND)
    (work / "fstab").write_text("")
    state = tempfile.mkdtemp(prefix="lmi-bench-state-", dir="/dev/shm")
    engine = MountManager(kernel, fstab_path=work / "fstab", state_dir=state).start()
    return Broker(engine, host="bench.example")


def standin_broker(count: int) -> Any:
    from tests.support.standin_broker import StandInBroker

    broker = StandInBroker(load_model(), share=True)
    for index in range(count):
        target = f"/srv/bench/{index:05d}"
        broker.add(CIMInstance(CLASS, properties={
            "FileSystemSpec": f"/srv/data/{index:05d}",
            "MountPointPath": target,
            "FileSystemType": "none",
            "ReferenceCount": Uint32(1),
            "Holders": ["cim", f"job-{index}"],
            "InstanceID": f"LMI:LMI_MountedFileSystem:{target}",
            "Caption": f"bind mount of /srv/data/{index:05d}",
            "Description": "A bind mount made by lmi-mount.",
            "ElementName": target,
            "Generation": Uint64(index),
        }))
    return broker


def request_body(method: str, params: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8" ?><CIM CIMVERSION="2.0" DTDVERSION="2.0">'
        f'<MESSAGE ID="1" PROTOCOLVERSION="1.0"><SIMPLEREQ><IMETHODCALL NAME="{method}">'
        '<LOCALNAMESPACEPATH><NAMESPACE NAME="root"/><NAMESPACE NAME="cimv2"/>'
        f"</LOCALNAMESPACEPATH>{params}</IMETHODCALL></SIMPLEREQ></MESSAGE></CIM>"
    ).encode()


ENUMERATE = request_body("EnumerateInstances", f'<IPARAMVALUE NAME="ClassName"><CLASSNAME '
                         f'NAME="{CLASS}"/></IPARAMVALUE>')


class RawClient:
    """A keep-alive HTTP client that reads whole responses (chunked or not)."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        self.auth = f"Basic {token}"

    def call(self, method: str, body: bytes) -> bytes:
        self.conn.request("POST", "/cimom", body, {
            "Content-Type": 'application/xml; charset="utf-8"', "CIMOperation": "MethodCall",
            "CIMMethod": method, "CIMObject": NS, "Authorization": self.auth,
            "User-Agent": "lmi-mount-benchmark"})
        response = self.conn.getresponse()
        data = response.read()
        if response.status != 200 or b"<ERROR" in data[:4096]:
            raise RuntimeError(f"{method}: HTTP {response.status}: {data[:300]!r}")
        return data


def median_time(run: Callable[[], Any], rounds: int) -> tuple[float, Any]:
    samples, result = [], None
    for _ in range(rounds):
        start = time.perf_counter()
        result = run()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples), result


def page_through(client: RawClient, chunk: int) -> int:
    """Open/Pull to the end with raw requests; returns the instances seen."""
    import re

    data = client.call("OpenEnumerateInstances", request_body(
        "OpenEnumerateInstances",
        f'<IPARAMVALUE NAME="ClassName"><CLASSNAME NAME="{CLASS}"/></IPARAMVALUE>'
        f'<IPARAMVALUE NAME="MaxObjectCount"><VALUE>{chunk}</VALUE></IPARAMVALUE>'))
    seen = data.count(b"<VALUE.INSTANCEWITHPATH>")
    while b"<VALUE>TRUE</VALUE></PARAMVALUE>" not in data[-400:]:
        context = re.search(rb'NAME="EnumerationContext" PARAMTYPE="string"><VALUE>([^<]+)<',
                            data[-600:])
        assert context is not None, data[-600:]
        data = client.call("PullInstancesWithPath", request_body(
            "PullInstancesWithPath",
            f'<IPARAMVALUE NAME="EnumerationContext"><VALUE>{context.group(1).decode()}'
            f'</VALUE></IPARAMVALUE><IPARAMVALUE NAME="MaxObjectCount"><VALUE>{chunk}'
            "</VALUE></IPARAMVALUE>"))
        seen += data.count(b"<VALUE.INSTANCEWITHPATH>")
    return seen


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--standin", action="store_true",
                        help="the tests' stand-in broker with ready instances, not live mounts")
    args = parser.parse_args()
    if not args.standin:
        if os.geteuid() != 0:
            print("live mounts need root; use --standin", file=sys.stderr)
            return 2
        code = reexec_in_private_namespace()
        if code is not None:
            return code

    start = time.perf_counter()
    broker = standin_broker(args.count) if args.standin else live_broker(args.count)
    instances = list(broker.enumerate_instances(NS, CLASS))
    if len(instances) < args.count:
        print(f"the broker has {len(instances)} instances of {CLASS}, not {args.count}")
        return 1
    # The live broker also shows the mounts the namespace inherited from the host.
    args.count = len(instances)
    config = ServerConfig(listen=("127.0.0.1",), http_port=0, https_port=None,
                          plain_http="loopback", users=((USER, "admin", PASSWORD),),
                          hostname="bench.example",
                          http=HttpLimits(threads=8, max_connections=64),
                          enumeration=PullLimits(max_contexts=64, max_contexts_per_user=64))
    server = CimServer(config, broker)
    server.start()
    port = server.addresses[0][1]
    print(f"set-up: {args.count} instances of {CLASS} ({'stand-in' if args.standin else 'live'}"
          f" broker) in {time.perf_counter() - start:.1f} s")
    try:
        client = RawClient(port)
        client.call("EnumerateInstances", ENUMERATE)  # warm: authentication cache, imports
        server_s, body = median_time(lambda: client.call("EnumerateInstances", ENUMERATE),
                                     args.rounds)
        count = body.count(b"<VALUE.NAMEDINSTANCE>")
        assert count == args.count, count

        plain = FakedWBEMConnection(default_namespace=NS)
        install_model(plain, NS, broker.model)
        plain.add_cimobjects(instances, namespace=NS)
        mock_s, got = median_time(lambda: plain.EnumerateInstances(CLASS, namespace=NS),
                                  max(1, args.rounds // 2))
        assert len(got) == args.count

        encode_s, _ = median_time(lambda: [cimxml.named_instance_xml(i) for i in instances],
                                  args.rounds)
        broker_s, _ = median_time(lambda: list(broker.enumerate_instances(NS, CLASS)),
                                  args.rounds)
        first_s, _ = median_time(lambda: next(iter(broker.enumerate_instances(NS, CLASS))),
                                 args.rounds)

        conn = WBEMConnection(f"http://127.0.0.1:{port}", (USER, PASSWORD),
                              default_namespace=NS, timeout=60)
        e2e_s, got = median_time(lambda: conn.EnumerateInstances(CLASS), max(1, args.rounds // 2))
        assert len(got) == args.count
        parse_s, _ = median_time(
            lambda: TupleParser().parse_cim(xml_to_tupletree_sax(body, "response")),
            max(1, args.rounds // 2))

        open_body = request_body(
            "OpenEnumerateInstances",
            f'<IPARAMVALUE NAME="ClassName"><CLASSNAME NAME="{CLASS}"/></IPARAMVALUE>'
            '<IPARAMVALUE NAME="MaxObjectCount"><VALUE>1000</VALUE></IPARAMVALUE>'
            '<IPARAMVALUE NAME="OperationTimeout"><VALUE>5</VALUE></IPARAMVALUE>')
        client = RawClient(port)  # the first one idled past the keep-alive timeout
        open_s, first = median_time(lambda: client.call("OpenEnumerateInstances", open_body),
                                    args.rounds)
        assert first.count(b"<VALUE.INSTANCEWITHPATH>") == min(1000, len(instances))
        page_s, seen = median_time(lambda: page_through(client, 1000), 1)
        assert seen == args.count, seen

        before = rss_mb()
        results: list[int] = []
        threads = [threading.Thread(target=lambda: results.append(
            page_through(RawClient(port), 1000))) for _ in range(10)]
        paged_start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        paged_s = time.perf_counter() - paged_start
        assert results == [args.count] * 10, results
        after = rss_mb()
    finally:
        server.shutdown()

    size_mb = len(body) / 1e6
    print(f"EnumerateInstances of {args.count} ({size_mb:.1f} MB of CIM-XML), "
          f"median of {args.rounds}:")
    print(f"  server, request to last byte (raw client): {server_s:.3f} s "
          f"({args.count / server_s:,.0f} instances/s)")
    print(f"  baseline 1, pywbem_mock in-process:          {mock_s:.3f} s")
    print(f"  ratio pywbem_mock/server: {mock_s / server_s:.1f}x")
    print(f"  of which the broker's enumeration: {broker_s:.3f} s "
          f"(first instance after {first_s * 1000:.1f} ms)")
    print(f"  encoder alone: {encode_s:.3f} s ({args.count / encode_s:,.0f} instances/s)")
    print(f"  end to end with pywbem:                      {e2e_s:.3f} s")
    print(f"  baseline 2, pywbem parsing the same bytes:   {parse_s:.3f} s")
    print(f"  ratio end-to-end/parse: {e2e_s / parse_s:.2f}x")
    print(f"OpenEnumerateInstances MaxObjectCount=1000 of {args.count}, to the last byte: "
          f"{open_s * 1000:.1f} ms; paging all by 1000: {page_s:.3f} s")
    print(f"10 raw clients paging through {args.count} each at once: {paged_s:.2f} s; "
          f"peak RSS of the process {before:.0f} MB before, {after:.0f} MB after "
          f"(+{after - before:.0f} MB)")
    goals = [
        ("server <= 0.5 s", server_s <= 0.5),
        ("server >= 4x faster than pywbem_mock", mock_s / server_s >= 4),
        ("end to end <= 1.25x pywbem's parse", e2e_s / parse_s <= 1.25),
        ("Open with MaxObjectCount=1000 <= 60 ms", open_s <= 0.060),
    ]
    for name, met in goals:
        print(f"goal: {name}: {'met' if met else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
