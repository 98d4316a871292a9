"""Tools for bench/profilebench: the process and the thread profile compared
on an I/O-bound, a CPU-bound and a GIL-releasing tool.

Every tool keeps its state in locals, so any number of threads may run them
at once; the module says so for the thread profile.
"""

from __future__ import annotations

import hashlib
import statistics
import sys
import time

from snakepit import tool

__snakepit_thread_safe__ = True  # no tool touches shared state


@tool
def io(seconds: float = 0.01) -> float:
    """Block for ``seconds`` (time.sleep releases the GIL); return ``seconds``."""
    time.sleep(seconds)
    return seconds


def _spin(n: int) -> int:
    # Pure Python arithmetic on locals: holds the GIL the whole time on a
    # GIL build. Its only constants are small ints, which are immortal, so on
    # a free-threaded build the threads running it share no reference count.
    acc = 0
    for i in range(n):
        acc = (acc + i * i) % 251
    return acc


def _spin_shared(n: int) -> int:
    # The same loop with a constant outside the small-int range: one int
    # object that every thread running the loop loads, and whose reference
    # count a free-threaded 3.13 may then update from all of them at once.
    acc = 0
    for i in range(n):
        acc = (acc + i * i) % 1000003
    return acc


@tool
def cpu(n: int) -> int:
    """Spin a pure-Python loop of ``n`` steps; return its checksum."""
    return _spin(n)


@tool
def cpu_shared(n: int) -> int:
    """cpu with a shared (non-small) int constant in the loop."""
    return _spin_shared(n)


@tool
def gil_free(data: bytes) -> str:
    """SHA-256 of ``data`` (hashlib releases the GIL for large buffers)."""
    return hashlib.sha256(data).hexdigest()


def _time_spin(n: int) -> float:
    t0 = time.perf_counter()
    _spin(n)
    return time.perf_counter() - t0


@tool
def time_cpu(n: int, repeat: int = 7) -> float:
    """Median seconds of ``repeat`` runs of cpu(n) on this thread, after one
    unmeasured run."""
    _time_spin(n)
    return statistics.median(_time_spin(n) for _ in range(max(1, repeat)))


@tool
def calibrate(target_seconds: float = 0.005, repeat: int = 7) -> dict:
    """The n for which cpu(n) takes about ``target_seconds`` on one thread
    here: scaled from a first guess twice, each time from the median of
    ``repeat`` timings. Returns n, the median seconds of cpu(n) and whether
    the GIL is on."""
    n = 20000
    for _ in range(3):
        took = time_cpu(n, repeat)
        n = max(1000, int(n * target_seconds / took))
    gil = getattr(sys, "_is_gil_enabled", lambda: True)()
    return {"n": n, "seconds": time_cpu(n, repeat), "gil": bool(gil)}
