"""Tools for the Go tests of the thread profile. Declared thread-safe: every
piece of shared state below is behind a lock.

* ``meet(parties, timeout)``: waits until ``parties`` calls are inside it at
  once in this process. It passes on a thread-profile worker with that many
  threads, and fails with threading.BrokenBarrierError where calls cannot run
  together (a process-profile worker runs one at a time).
* ``track`` / ``max_seen``: the most ``track`` calls seen running at once.
* ``serial_track`` / ``serial_max_seen``: the same for a tool marked
  ``thread_safe=False``, which the worker runs one call at a time: 1.
* ``reset()``: forget the counts and any barrier.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Optional

import snakepit

__snakepit_thread_safe__ = True

_lock = threading.Lock()
_barrier: Optional[threading.Barrier] = None


class _Gauge:
    """How many calls are inside now, and the most ever (under a lock)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.max = 0

    def enter(self) -> None:
        with self.lock:
            self.now += 1
            self.max = max(self.max, self.now)

    def leave(self) -> None:
        with self.lock:
            self.now -= 1

    def highest(self) -> int:
        with self.lock:
            return self.max

    def clear(self) -> None:
        with self.lock:
            self.now = self.max = 0


_tracked = _Gauge()
_serial = _Gauge()


def _barrier_for(parties: int) -> threading.Barrier:
    """The barrier for ``parties`` callers: a new one if there is none yet,
    it was made for another number, or an earlier meeting broke it."""
    global _barrier
    with _lock:
        if _barrier is None or _barrier.parties != parties or _barrier.broken:
            _barrier = threading.Barrier(parties)
        return _barrier


@snakepit.tool
def meet(parties: int, timeout: float = 10.0) -> str:
    """Wait until ``parties`` calls are inside meet at once in this process."""
    if parties < 1:
        raise ValueError(f"parties must be at least 1, got {parties}")
    barrier = _barrier_for(parties)
    try:
        barrier.wait(timeout)
    except threading.BrokenBarrierError:
        raise threading.BrokenBarrierError(
            f"fewer than {parties} calls of meet were running at once in process "
            f"{os.getpid()} within {timeout}s: this worker does not run that many calls "
            "at the same time"
        ) from None
    return f"pid {os.getpid()}: {parties} calls met"


@snakepit.tool
def track(seconds: float = 0.0) -> int:
    """Count this call as running for ``seconds``; returns this process's pid."""
    _tracked.enter()
    try:
        time.sleep(seconds)
    finally:
        _tracked.leave()
    return os.getpid()


@snakepit.tool
def max_seen() -> int:
    """The most ``track`` calls seen running at once in this process."""
    return _tracked.highest()


@snakepit.tool(thread_safe=False)
def serial_track(seconds: float = 0.0) -> int:
    """Like track, for a tool the worker runs one call at a time."""
    _serial.enter()
    try:
        time.sleep(seconds)
    finally:
        _serial.leave()
    return os.getpid()


@snakepit.tool
def serial_max_seen() -> int:
    """The most ``serial_track`` calls seen running at once (1 when serialised)."""
    return _serial.highest()


@snakepit.tool
def reset() -> None:
    """Forget the counts and the barrier."""
    global _barrier
    _tracked.clear()
    _serial.clear()
    with _lock:
        old, _barrier = _barrier, None
    if old is not None:
        old.abort()  # wake anyone still waiting on it
