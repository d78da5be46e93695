"""Slow mount helpers hold up their own mount points only, through a real lmi-mountd.

A ``mount.slowfs`` helper (installed for this test alone: an overlay on /usr/sbin in
the test's private mount namespace, which the sandbox's namespace copies) waits for
its "server" until the test lets it go, as mount.nfs waits for an NFS server that
does not answer. While as many of them hang as the server has HTTP workers, another
client mounts and unmounts elsewhere and reads the model; a second call on a hanging
mount point waits its turn. Everything the other client does is done before any
helper is let go: that is the property, asserted without a clock. The latencies are
printed (``pytest -s``), never asserted.
"""

from __future__ import annotations

import contextlib
import statistics
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from pywbem import CIMInstanceName, Uint16, WBEMConnection

from lmi_mount.engine import SLOW_REQUEST_SECONDS
from tests.daemon import sandbox
from tests.daemon.sandbox import NAMESPACE, PASSWORD, USER
from tests.support.skips import requires_root

SERVICE = "LMI_MountConfigurationService"
MODE_MOUNT = Uint16(32768)
MODE_UNMOUNT = Uint16(32769)
JOB_DONE = (7, 10)  # CIM_ConcreteJob.JobState Completed, Exception
SLOW_CALLS = 8  # the server's HTTP workers: the first build stalled every one of them
FAST_PAIRS = 20
READS = 20

pytestmark = [pytest.mark.root, requires_root]


def connect(url: str) -> WBEMConnection:
    return WBEMConnection(url, (USER, PASSWORD), default_namespace=NAMESPACE, timeout=300)


def install_slowfs(scratch: Path) -> tuple[Path, Path]:
    """``/sbin/mount.slowfs`` in this namespace: it notes its mount point in the
    first directory returned, waits until the second path exists, then mounts a
    tmpfs named ``slowfs`` there. Returns (running directory, go file)."""
    layer = scratch / "sbin-layer"
    layer.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "sbin-layer", str(layer)],
                   check=True)
    (layer / "upper").mkdir()
    (layer / "work").mkdir()
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir=/usr/sbin,upperdir={layer}/upper,workdir={layer}/work",
                    "/usr/sbin"], check=True)
    running, go = scratch / "running", scratch / "go"
    running.mkdir()
    helper = Path("/usr/sbin/mount.slowfs")
    # mount(8) runs helpers as: mount.TYPE SPEC DIR [-sfnv] [-o OPTIONS] [-t TYPE]
    helper.write_text(
        "#!/bin/sh\n"
        f'touch "{running}/$(basename "$2")"\n'
        f"while [ ! -e {go} ]; do sleep 0.05; done\n"
        'exec mount -i -t tmpfs -o size=1m slowfs "$2"\n')
    helper.chmod(0o755)
    return running, go


def finished(conn: WBEMConnection, rv: int, out: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """The call's result; a job (4096) is waited for, as OpenLMI's clients do."""
    if rv != 4096:
        return rv, out
    job: CIMInstanceName = out["Job"]
    while True:
        instance = conn.GetInstance(job)
        if instance["JobState"] in JOB_DONE:
            [outcome] = conn.InvokeMethod("GetError", job)[1:] or [{}]
            return (0 if instance["JobState"] == 7 else 1), {"Job": instance, **outcome}
        time.sleep(0.1)


@pytest.mark.private_namespace(timeout=300)
def test_slow_helpers_hold_up_their_own_mount_points_only(tmp_path: Path) -> None:
    running, go = install_slowfs(tmp_path)
    with contextlib.ExitStack() as cleanup:
        # Whatever happens, the helpers are let go: killing the daemon leaves
        # them waiting (their session is the daemon's mount(8)'s, not ours).
        cleanup.callback(go.touch)
        daemon = cleanup.enter_context(sandbox.running(tmp_path / "sandbox"))
        _run(daemon, running, go)


def _run(daemon: sandbox.Daemon, running: Path, go: Path) -> None:
    """The test's body, with a daemon whose helpers wait for ``go``."""
    root = daemon.root
    slow = [root / "slow" / f"s{number}" for number in range(SLOW_CALLS)]
    fast = [root / "fast" / name for name in ("a", "b")]
    for path in slow + fast:
        path.mkdir(parents=True)
    results: dict[str, tuple[int, dict[str, Any]]] = {}

    def mount_slowly(target: Path, holder: str) -> None:
        with connect(daemon.http_url) as conn:
            [service] = conn.EnumerateInstanceNames(SERVICE)
            rv, out = conn.InvokeMethod(
                "CreateMount", service, Mode=MODE_MOUNT, FileSystemSpec="nfs-server:/export",
                FileSystemType="slowfs", MountPoint=str(target), Holder=holder)
            results[f"{target.name}/{holder}"] = finished(conn, rv, dict(out))

    began = time.monotonic()
    callers = [threading.Thread(target=mount_slowly, args=(target, "first"))
               for target in slow]
    for caller in callers:
        caller.start()
    deadline = time.monotonic() + 60
    while len(list(running.iterdir())) < SLOW_CALLS:
        assert time.monotonic() < deadline, daemon.output()
        time.sleep(0.05)
    second = threading.Thread(target=mount_slowly, args=(slow[0], "second"))
    second.start()

    pair_ms: list[float] = []
    read_ms: list[float] = []
    with connect(daemon.http_url) as conn:
        started = time.perf_counter()
        [service] = conn.EnumerateInstanceNames(SERVICE)
        read_ms.append((time.perf_counter() - started) * 1000)
        for number in range(FAST_PAIRS):
            started = time.perf_counter()
            rv, out = conn.InvokeMethod(
                "CreateMount", service, Mode=MODE_MOUNT, FileSystemSpec="tmpfs",
                FileSystemType="tmpfs", MountPoint=str(fast[number % 2]), Holder="fast")
            assert rv == 0, out
            rv, out = conn.InvokeMethod("DeleteMount", service, Mode=MODE_UNMOUNT,
                                        Mount=out["Mount"], Holder="fast")
            assert rv == 0, out
            pair_ms.append((time.perf_counter() - started) * 1000)
        for _ in range(READS):
            started = time.perf_counter()
            listed = conn.EnumerateInstances("LMI_MountedFileSystem")
            read_ms.append((time.perf_counter() - started) * 1000)
            assert all(i["MountPointPath"] not in map(str, slow) for i in listed)
    # All of that while every helper still waits for its server.
    assert not go.exists() and not results
    assert second.is_alive() and all(caller.is_alive() for caller in callers)
    assert len(list(running.iterdir())) == SLOW_CALLS, "the second call went ahead"

    # A mount point whose helper hangs takes two waiters; the next call is
    # refused at once instead of holding a thread for minutes (66 such
    # calls held every job thread of the first build with per-mount locks).
    time.sleep(max(0.0, SLOW_REQUEST_SECONDS + 0.5 - (time.monotonic() - began)))
    late = [threading.Thread(target=mount_slowly, args=(slow[0], name))
            for name in ("third", "fourth")]
    for caller in late:
        caller.start()
    deadline = time.monotonic() + 60
    while not any(key in results for key in ("s0/third", "s0/fourth")):
        assert time.monotonic() < deadline, "neither late call was refused"
        time.sleep(0.05)
    [(refused, (rv, out))] = [(key, results.pop(key)) for key in ("s0/third", "s0/fourth")
                              if key in results]
    # In Use (6) at once; on a loaded machine the refusal can come after the
    # call's synchronous window, as its job's error (JobState Exception): the
    # same In Use CIM_Error (LMIMNT0006) either way.
    message = out["Error"]["Message"] if "Error" in out else out
    assert (rv == 6 or (rv == 1 and "Job" in out)) and out["Error"]["MessageID"] == \
        "LMIMNT0006" and "2 requests already wait for" in message, (rv, message)
    waiter = "fourth" if refused == "s0/third" else "third"

    go.touch()
    for caller in [*callers, second, *late]:
        caller.join(120)
        assert not caller.is_alive()
    assert {key: rv for key, (rv, _) in results.items()} == {
        **{f"{target.name}/first": 0 for target in slow}, "s0/second": 0,
        f"s0/{waiter}": 0}, {
            key: out["Error"]["Message"] for key, (rv, out) in results.items() if rv}
    lines = [line.split() for line in daemon.mountinfo().splitlines()]
    mounted = {fields[4]: fields[fields.index("-") + 2] for fields in lines}
    assert all(mounted.get(str(target)) == "slowfs" for target in slow), mounted
    with connect(daemon.http_url) as conn:
        [instance] = [i for i in conn.EnumerateInstances("LMI_MountedFileSystem")
                      if i["MountPointPath"] == str(slow[0])]
        assert sorted(instance["Holders"]) == sorted(["first", "second", waiter])
    print(f"\nwith {SLOW_CALLS} mount helpers hanging: {FAST_PAIRS} tmpfs "
          f"CreateMount+DeleteMount pairs elsewhere, median "
          f"{statistics.median(pair_ms):.1f} ms, slowest {max(pair_ms):.1f} ms; "
          f"{READS + 1} enumerations, median {statistics.median(read_ms):.1f} ms, "
          f"slowest {max(read_ms):.1f} ms")
    assert daemon.stop(timeout=30) == 0


@pytest.mark.private_namespace(timeout=300)
def test_slow_calls_beyond_those_that_may_run_on_leave_the_workers_free(
        tmp_path: Path) -> None:
    # A call runs on the HTTP worker that read it and, when its window ends
    # first, runs on answered (4096) and no longer counted as a worker, up to
    # [http] detached_requests. Beyond that, such a call was refused that right
    # only when its window ended, and kept its worker for the helper's whole
    # time: 2 workers + 2 detached, 6 slow calls, and reads waited for the
    # helpers (review). Now the calls beyond run on the job threads, as they did
    # before calls ran on the workers, and every helper starts.
    running, go = install_slowfs(tmp_path)
    config = tmp_path / "lmi-mountd.conf"
    config.write_text("[http]\nthreads = 2\ndetached_requests = 2\n\n"
                      "[cim]\nsynchronous_seconds = 0.5\n")
    config.chmod(0o600)
    calls = 6
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(go.touch)
        daemon = cleanup.enter_context(
            sandbox.running(tmp_path / "sandbox", "--config", str(config)))
        targets = [daemon.root / "slow" / f"s{number}" for number in range(calls)]
        for target in targets:
            target.mkdir(parents=True)
        results: dict[str, tuple[int, dict[str, Any]]] = {}

        def mount_slowly(target: Path) -> None:
            with connect(daemon.http_url) as conn:
                [service] = conn.EnumerateInstanceNames(SERVICE)
                rv, out = conn.InvokeMethod(
                    "CreateMount", service, Mode=MODE_MOUNT, FileSystemSpec="srv:/export",
                    FileSystemType="slowfs", MountPoint=str(target))
                results[target.name] = finished(conn, rv, dict(out))

        callers = [threading.Thread(target=mount_slowly, args=(target,)) for target in targets]
        for caller in callers:
            caller.start()
        deadline = time.monotonic() + 60
        while len(list(running.iterdir())) < calls:
            assert time.monotonic() < deadline, (
                f"{len(list(running.iterdir()))} of {calls} helpers started")
            time.sleep(0.05)
        with connect(daemon.http_url) as conn:
            for _ in range(3):
                conn.EnumerateInstanceNames("LMI_MountedFileSystem")
        # All of that while every helper still waits for its server.
        assert not results and all(caller.is_alive() for caller in callers)
        go.touch()
        for caller in callers:
            caller.join(120)
        assert {name: rv for name, (rv, _) in results.items()} == {
            target.name: 0 for target in targets}
        assert daemon.stop(timeout=30) == 0
