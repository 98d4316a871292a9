"""Round-trip latency of the native transport from a Python client (sanity check).

Not collected by pytest. Run from pyworker/python:

    python3 tests/bench_native.py [--calls 10000] [--python /path/to/python] [--capacity 1] [--spin 1]

Starts ``python -m snakepit.worker --transport native`` with the echo tools,
then, from one client thread, sends one EXECUTE at a time and waits for its
answer: a 100-byte binary argument echoed raw (``echo_bytes``) and a
100-character string echoed as JSON (``echo``). Prints p50 / p90 / p99.

On a virtual machine an idle vCPU halts, and waking it costs tens of
microseconds per hop, which then dominates the numbers; ``--spin N`` keeps N
busy-looping processes running meanwhile so that the vCPUs stay awake (and
shows what the transport itself costs).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers import WorkerProcess  # noqa: E402
from native_client import HEADER, EXECUTE, RESULT, VERSION, NativeClient, execute_body  # noqa: E402


def measure(client: NativeClient, body: bytes, calls: int, warmup: int) -> List[int]:
    sock = client.sock
    sock.settimeout(None)
    pack = HEADER.pack
    unpack_from = HEADER.unpack_from
    buf = bytearray(1 << 16)
    view = memoryview(buf)
    recv_into = sock.recv_into
    sendall = sock.sendall
    perf = time.perf_counter_ns
    samples: List[int] = []
    stream = 1_000_000
    for i in range(warmup + calls):
        stream += 1
        frame = pack(len(body), VERSION, EXECUTE, 0, stream) + body
        t0 = perf()
        sendall(frame)
        have = 0
        while have < 16:
            have += recv_into(view[have:])
        length, _v, ftype, _f, got_stream = unpack_from(buf, 0)
        while have < 16 + length:
            have += recv_into(view[have:])
        t1 = perf()
        if ftype != RESULT or got_stream != stream:
            raise SystemExit(f"unexpected answer: type {ftype} stream {got_stream}: {bytes(buf[16:16+length])!r}")
        if i >= warmup:
            samples.append(t1 - t0)
    return samples


def report(name: str, samples: List[int]) -> Dict[str, float]:
    samples = sorted(samples)
    n = len(samples)
    pick = lambda q: samples[min(n - 1, int(q * n))] / 1000.0  # noqa: E731
    out = {"p50": pick(0.50), "p90": pick(0.90), "p99": pick(0.99),
           "mean": statistics.fmean(samples) / 1000.0}
    print(f"{name:<28} p50 {out['p50']:7.1f} µs   p90 {out['p90']:7.1f} µs   "
          f"p99 {out['p99']:7.1f} µs   mean {out['mean']:7.1f} µs   ({n} calls)")
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--warmup", type=int, default=1_000)
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--capacity", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--spin", type=int, default=0,
                        help="busy-looping processes that keep vCPUs awake meanwhile")
    ns = parser.parse_args()
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                for _ in range(ns.spin)]

    worker = WorkerProcess("native_tools", transport="native", python=ns.python,
                           capacity=ns.capacity)
    try:
        ready = worker.wait_ready()
        print(f"worker: Python {ready['python']} ({ns.python}), capacity {ns.capacity}, "
              f"client: Python {sys.version.split()[0]}")
        client = worker.connect()
        payload = os.urandom(100)
        bodies = {
            "echo_bytes (100 B raw)": execute_body("echo_bytes", binary={"data": payload}),
            "echo (100-char JSON str)": execute_body("echo", {"value": "x" * 100}),
        }
        for _ in range(ns.rounds):
            for name, body in bodies.items():
                report(name, measure(client, body, ns.calls, ns.warmup))
    finally:
        worker.close()
        for spinner in spinners:
            spinner.kill()
            spinner.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
