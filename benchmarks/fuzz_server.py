"""Benchmark and long fuzz run: random request heads against lmi-mountd's HTTP layer.

Each case opens a connection to a live ``HttpServer`` (the server of
lmi-mountd, with a small echo application), sends a mutation of a real
CIM-XML request head (bytes cut, repeated, replaced by random or
troublesome ones: NUL, 0xB2, CR, non-ASCII digits), reads the answer and
checks it is a well-formed HTTP response or a close; every 100 cases a real
request must still be answered. The baseline is the same server answering
well-formed requests in the same run; the ratio says how much a hostile case
costs against a real one. Seeded: ``--seed`` repeats a run.

Run: ``python3 benchmarks/fuzz_server.py [--cases N] [--seed S]`` (no root needed).
"""

from __future__ import annotations

import argparse
import random
import re
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "provider"))

from lmi_mount.server.http import HttpLimits, HttpServer, Listener, Request, RequestHead, Response

REAL = (b"POST /cimom HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/xml; "
        b"charset=utf-8\r\nCIMOperation: MethodCall\r\nCIMMethod: EnumerateInstances\r\n"
        b"CIMObject: root%2Fcimv2\r\nAuthorization: Basic c2FuZGJveDpwdw==\r\n"
        b"Content-Length: 4\r\n\r\nbody")
TROUBLE = [b"\x00", b"\xb2", b"\r", b"\n", b"\r\n", b" ", b"\t", b":", b"\xd9\xa3", b"-1",
           b"99999999999999999999", b"Transfer-Encoding: chunked\r\n", b"HTTP/2.0", b"\xff"]
RESPONSE = re.compile(rb"HTTP/1\.1 [1-5][0-9][0-9] ")


class Echo:
    def early(self, head: RequestHead) -> Response | None:
        return None

    def handle(self, request: Request) -> Response:
        return Response(200, [], request.body)


def mutate(rng: random.Random) -> bytes:
    data = bytearray(REAL)
    for _ in range(rng.randint(1, 6)):
        at = rng.randrange(len(data))
        choice = rng.random()
        if choice < 0.3:
            del data[at:at + rng.randint(1, 8)]
        elif choice < 0.6:
            data[at:at] = rng.choice(TROUBLE)
        elif choice < 0.8:
            data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 6)))
        else:
            data[at:at] = data[at:at + rng.randint(1, 40)] * rng.randint(2, 50)
    return bytes(data)


def exchange(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        return b"".join(iter(lambda: sock.recv(65536), b""))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    limits = HttpLimits(request_timeout=2.0, first_byte_timeout=2.0, keepalive_timeout=1.0)
    with HttpServer([Listener("127.0.0.1", 0)], Echo(), limits) as server:
        port = server.addresses[0][1]
        start = time.perf_counter()
        for _ in range(2_000):
            assert exchange(port, REAL).endswith(b"body")
        real_rate = 2_000 / (time.perf_counter() - start)
        start = time.perf_counter()
        statuses: dict[bytes, int] = {}
        for case in range(1, args.cases + 1):
            data = mutate(rng)
            answer = exchange(port, data)
            if answer and not RESPONSE.match(answer):
                print(f"case {case}: not an HTTP response to {data[:80]!r}: {answer[:80]!r}")
                return 1
            key = answer[9:12] if answer else b"closed"
            statuses[key] = statuses.get(key, 0) + 1
            if case % 100 == 0 and not exchange(port, REAL).endswith(b"body"):
                print(f"case {case}: the server stopped answering real requests")
                return 1
        fuzz_rate = args.cases / (time.perf_counter() - start)
    print(f"fuzzed request heads, seed {args.seed}: {args.cases} cases, all answered or closed")
    print(f"  hostile cases          {fuzz_rate:10.0f} cases/s")
    print(f"  real requests          {real_rate:10.0f} requests/s  (baseline)")
    print(f"  ratio                  {fuzz_rate / real_rate:10.2f}x")
    print("  answers: " + ", ".join(f"{k.decode()}: {n}" for k, n in sorted(statuses.items())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
