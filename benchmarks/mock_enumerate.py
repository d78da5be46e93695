"""Benchmark: EnumerateInstances of 10k instances through the live pywbem_mock front end.

Measured in the same run, on the same instances:

* live: ``lmi_mount.cim.mock.connect(broker)``, whose reads ask the broker at
  call time and hand its fresh instances to the client without copying;
* baseline: a plain pywbem_mock ``FakedWBEMConnection`` with the model
  installed and the same instances added to its repository (it deep-copies
  the namespace's instances twice per EnumerateInstances).

Also measured: the same enumeration as OpenEnumerateInstances and
PullInstancesWithPath in chunks of ``--chunk``, on both connections.

Goal (issue "CIM providers", Benchmarks): live >= 2x faster than the plain
repository.

The instances come from one function, ``instance_source()``. By default
(root) it is the product: the real broker and engine over ``--count`` live
bind mounts made in a private mount namespace (the script re-executes itself
under ``unshare --mount --propagation private``), so "live" includes reading
and parsing mountinfo and projecting every mount. ``--standin`` uses a
stand-in broker (tests/support/standin_broker.py) holding ready-made
instances instead, to measure the front end alone.

Run: ``python benchmarks/mock_enumerate.py [--count N] [--rounds N] [--chunk N] [--standin]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "provider"), str(ROOT)]

from _namespace import reexec_in_private_namespace  # noqa: E402
from pywbem import CIMInstance, Uint32, Uint64  # noqa: E402
from pywbem_mock import FakedWBEMConnection  # noqa: E402
from tests.support.standin_broker import StandInBroker  # noqa: E402

from lmi_mount.cim import names  # noqa: E402
from lmi_mount.cim.mock import BrokerProtocol, connect  # noqa: E402
from lmi_mount.cim.model import install_model, load_model  # noqa: E402

NS = names.NAMESPACE


def live_source(count: int) -> tuple[BrokerProtocol, str]:
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
    return Broker(engine, host="bench.example"), names.MOUNTED_FILE_SYSTEM


def instance_source(count: int, standin: bool = False) -> tuple[BrokerProtocol, str]:
    """The broker the live connection reads, and the class of its ``count`` instances."""
    if not standin:
        return live_source(count)
    broker = StandInBroker(load_model())
    for index in range(count):
        target = f"/srv/bench/{index:05d}"
        broker.add(
            CIMInstance(
                names.MOUNTED_FILE_SYSTEM,
                properties={
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
                },
            )
        )
    return broker, names.MOUNTED_FILE_SYSTEM


def _keys(path: Any) -> tuple[Any, ...]:
    return tuple(sorted((k.lower(), v) for k, v in path.keybindings.items()))


def _timed(run: Callable[[Any], list[Any]], conn: Any, rounds: int) -> tuple[float, list[Any]]:
    """The median time of ``rounds`` calls, and what the last call returned."""
    samples = []
    result: list[Any] = []
    for _ in range(rounds):
        start = time.perf_counter()
        result = run(conn)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples), result


def _pulled(conn: Any, classname: str, chunk: int) -> list[CIMInstance]:
    result = conn.OpenEnumerateInstances(classname, namespace=NS, MaxObjectCount=chunk)
    instances = list(result.instances)
    while not result.eos:
        result = conn.PullInstancesWithPath(result.context, chunk)
        instances.extend(result.instances)
    return instances


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--chunk", type=int, default=1000)
    parser.add_argument("--standin", action="store_true",
                        help="a stand-in broker with ready instances instead of live mounts")
    args = parser.parse_args()
    if not args.standin:
        if os.geteuid() != 0:
            print("live mounts need root; use --standin", file=sys.stderr)
            return 2
        code = reexec_in_private_namespace()
        if code is not None:
            return code

    start = time.perf_counter()
    broker, classname = instance_source(args.count, args.standin)
    live = connect(broker)
    plain = FakedWBEMConnection(default_namespace=NS)
    install_model(plain, NS, broker.model)
    plain.add_cimobjects(list(broker.enumerate_instances(NS, classname)), namespace=NS)
    print(f"set-up: {args.count} instances of {classname} in {time.perf_counter() - start:.1f} s")

    # Compare by keys: the live connection sets its host on returned paths.
    expected = {_keys(i.path) for i in broker.enumerate_instances(NS, classname)}
    figures = []
    for how, run in (
        ("EnumerateInstances", lambda conn: conn.EnumerateInstances(classname, namespace=NS)),
        (f"Open/Pull by {args.chunk}", lambda conn: _pulled(conn, classname, args.chunk)),
    ):
        live_s, live_got = _timed(run, live, args.rounds)
        plain_s, plain_got = _timed(run, plain, args.rounds)
        # Both connections return the same instances, each exactly once.
        for name, got in (("live", live_got), ("plain", plain_got)):
            paths = [_keys(i.path) for i in got]
            if len(paths) != len(expected) or set(paths) != expected:
                print(f"{name} {how}: {len(paths)} instances, not the {len(expected)} expected")
                return 1
        figures.append((how, live_s, plain_s))
        print(f"{how} of {args.count}, median of {args.rounds}:")
        print(f"  live front end (broker at call time): {live_s:.3f} s")
        print(f"  plain pywbem_mock repository:         {plain_s:.3f} s")
        print(f"  ratio plain/live: {plain_s / live_s:.1f}x")
    ratio = figures[0][2] / figures[0][1]
    print(f"goal: EnumerateInstances live >= 2x faster: {'met' if ratio >= 2 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
