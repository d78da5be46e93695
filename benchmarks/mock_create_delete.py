"""Benchmark: CreateMount + DeleteMount (Modes 32768 / 32769, bind) through pywbem on
``mock_connection`` vs the ``mount --bind`` + ``umount`` binaries.

Measured in the same private mount namespace, same directories, same run:

* lmi-mount: ``InvokeMethod("CreateMount", Mode=32768, ...)`` then
  ``InvokeMethod("DeleteMount", Mode=32769, ...)`` through a pywbem
  ``FakedWBEMConnection`` wired live to the broker (``lmi_mount.cim.mock``):
  pywbem's client-side argument handling, the mock's dispatch, the broker,
  the service provider, the engine (plan, journal, mount(2), umount2(2)).
* baseline: ``mount --bind SRC DST`` then ``umount DST``.

Goal (issue "CIM providers"): lmi-mount faster than the binaries.

Then the same pair again with ``--other-mounts`` (2,000) more tmpfs mounts
in the namespace, as on a container host: a method on one mount must not
pay for every mount (the mount table is read whole only by enumerations).
Printed as the ratio to the first measurement; goal <= 1.25x.

Run as root: ``python benchmarks/mock_create_delete.py [--rounds N]``; it
re-executes itself under ``unshare --mount --propagation private``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "provider"))

from _namespace import enter_as_root, mount_tmpfs, scratch_dirs
from pywbem import Uint16

from lmi_mount.cim.mock import mock_connection


def median_seconds(run: Callable[[], None], rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        run()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--other-mounts", type=int, default=2000)
    args = parser.parse_args()
    code = enter_as_root()
    if code is not None:
        return code

    with scratch_dirs() as (work, state):
        source, target = work / "src", work / "dst"
        source.mkdir()
        target.mkdir()
        fstab = work / "fstab"
        fstab.write_text("")
        conn = mock_connection(fstab, state, host="bench.example", after_fstab_edit=lambda: None)
        [service] = conn.EnumerateInstanceNames("LMI_MountConfigurationService")

        def cim_pair() -> None:
            rv, out = conn.InvokeMethod(
                "CreateMount",
                service,
                Mode=Uint16(32768),
                MountPoint=str(target),
                FileSystemSpec=str(source),
            )
            assert rv == 0, out
            rv, out = conn.InvokeMethod(
                "DeleteMount", service, Mode=Uint16(32769), Mount=out["Mount"]
            )
            assert rv == 0, out

        def binary_pair() -> None:
            subprocess.run(["mount", "--bind", str(source), str(target)], check=True)
            subprocess.run(["umount", str(target)], check=True)

        for _ in range(10):
            cim_pair()
            binary_pair()
        cim = median_seconds(cim_pair, args.rounds)
        binaries = median_seconds(binary_pair, args.rounds)
        others = work / "others"
        others.mkdir()
        for n in range(args.other_mounts):
            (others / str(n)).mkdir()
            mount_tmpfs(others / str(n), f"other{n}", "size=64k")
        for _ in range(10):
            cim_pair()
        crowded = median_seconds(cim_pair, args.rounds)
        conn.close()
        print(f"CreateMount+DeleteMount (bind), median of {args.rounds} pairs")
        print(f"  pywbem -> mock_connection -> engine {cim * 1e6:10.1f} us/pair")
        print(f"  mount --bind + umount (baseline)    {binaries * 1e6:10.1f} us/pair")
        print(f"  ratio                               {binaries / cim:10.2f}x faster (goal > 1x)")
        print(f"  the same with {args.other_mounts} other mounts   {crowded * 1e6:10.1f} us/pair")
        print(f"  ratio to the first                  {crowded / cim:10.2f}x (goal <= 1.25x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
