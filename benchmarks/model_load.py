"""Benchmark: load the CIM model (and the interop classes) from the compiled MOF
cache vs compiling the MOF with pywbem's compiler into pywbem_mock.

Run: ``python benchmarks/model_load.py [--repeat R]``.

* baseline: what every process paid before the cache, ``model._compile`` and
  ``interop._compile`` of the repository's ``mof/``;
* ours: ``mof_cache.cached`` for both, hitting entries in a private
  temporary cache directory (key computation, trust checks, restricted
  unpickling and shape checks included).

Each is run R times and the median is reported, with the minimum; the ratio
is baseline / ours (above 1: ours is faster). Both results are compared: the
benchmark fails if the cache gives anything but what the compile gives.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "provider"))

from lmi_mount.cim import model, mof_cache
from lmi_mount.server import interop

T = TypeVar("T")
Both = tuple[mof_cache.Compiled, mof_cache.Compiled]


def timed(work: Callable[[], T], repeat: int) -> tuple[list[float], T]:
    """The seconds of each of ``repeat`` runs of ``work``, and its last result."""
    seconds = []
    for _ in range(repeat):
        started = time.perf_counter()
        result = work()
        seconds.append(time.perf_counter() - started)
    return seconds, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    mof_dir = model.find_mof_dir().resolve()
    model_inputs = lambda: model.compile_inputs(mof_dir, Path(model.__file__))  # noqa: E731
    interop_inputs = lambda: model.compile_inputs(  # noqa: E731
        mof_dir, Path(model.__file__), Path(interop.__file__))

    def compile_both() -> Both:
        return model._compile(mof_dir), interop._compile(mof_dir)

    with tempfile.TemporaryDirectory(prefix="lmi-mount-bench-cache-") as directory:
        cache = Path(directory)
        compiled, fresh = timed(compile_both, max(1, args.repeat))
        mof_cache.cached("model", model_inputs, lambda: fresh[0], cache)
        mof_cache.cached("interop", interop_inputs, lambda: fresh[1], cache)

        def load_both() -> Both:
            def refuse() -> mof_cache.Compiled:
                raise AssertionError("the cache missed")
            return (mof_cache.cached("model", model_inputs, refuse, cache),
                    mof_cache.cached("interop", interop_inputs, refuse, cache))

        loaded, cached = timed(load_both, max(1, args.repeat))
    if cached != fresh:
        print("FAILED: the cache gives another model than the compile", file=sys.stderr)
        return 1
    classes = len(fresh[0][1]) + len(fresh[1][1])
    print(f"model + interop classes ({classes} classes), {args.repeat} runs each")
    print(f"  compile (baseline): median {statistics.median(compiled) * 1000:8.1f} ms, "
          f"min {min(compiled) * 1000:8.1f} ms")
    print(f"  cache (ours):       median {statistics.median(loaded) * 1000:8.1f} ms, "
          f"min {min(loaded) * 1000:8.1f} ms")
    ratio = statistics.median(compiled) / statistics.median(loaded)
    print(f"  ratio baseline/ours: median {ratio:.1f}x, min {min(compiled) / min(loaded):.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
