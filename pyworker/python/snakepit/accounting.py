"""Call accounting and shutdown bookkeeping shared by every worker server
(standard library only): how many calls are in flight and were served, the
most that ran at once, and the drain deadline of a requested shutdown."""

from __future__ import annotations

import threading
import time
from typing import Callable, Optional, Tuple


class Counters:
    """Thread-safe call accounting (finish() runs in tool threads).

    ``in_flight``: calls accepted and not finished, queued ones included (a
    sync tool whose thread still runs counts, even after its reply went
    out). ``requests_served``: calls finished, failed ones included.
    ``max_in_flight``: the most tools that ever *ran* at once (queued calls do
    not count: with capacity 1 it stays 1).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)  # only for wait_idle()
        self._in_flight = 0
        self._served = 0
        self._running = 0
        self._max_running = 0
        self._waiting = 0

    def start(self) -> None:
        with self._lock:
            self._in_flight += 1

    def begin_run(self) -> None:
        """A started call's tool begins to run."""
        with self._lock:
            self._running += 1
            if self._running > self._max_running:
                self._max_running = self._running

    def end_run(self) -> None:
        with self._lock:
            self._running -= 1

    def finish(self) -> None:
        """A call is over (its tool never ran, or end_run() was called)."""
        with self._lock:
            self._in_flight -= 1
            self._served += 1
            if self._waiting and self._in_flight == 0:
                self._idle.notify_all()

    def finish_run(self) -> None:
        """end_run() and finish() in one."""
        with self._lock:
            self._running -= 1
            self._in_flight -= 1
            self._served += 1
            if self._waiting and self._in_flight == 0:
                self._idle.notify_all()

    @property
    def max_in_flight(self) -> int:
        with self._lock:
            return self._max_running

    def count_served(self) -> None:
        """A call that was answered at once (start() and finish() in one)."""
        with self._lock:
            self._served += 1

    def snapshot(self) -> Tuple[int, int]:
        """``(in_flight, requests_served)``."""
        with self._lock:
            return self._in_flight, self._served

    @property
    def in_flight(self) -> int:
        return self.snapshot()[0]

    def wake(self) -> None:
        """Wake wait_idle() so it re-reads its deadline."""
        with self._lock:
            self._idle.notify_all()

    def wait_idle(self, deadline: Callable[[], float]) -> int:
        """Block until no call is in flight or ``time.monotonic()`` passes
        ``deadline()`` (re-read on every wake-up). Returns the calls still in
        flight."""
        with self._lock:
            self._waiting += 1
            try:
                while self._in_flight > 0:
                    remaining = deadline() - time.monotonic()
                    if remaining <= 0:
                        break
                    self._idle.wait(remaining)
                return self._in_flight
            finally:
                self._waiting -= 1


class ShutdownState:
    """Whether a shutdown was requested, and the drain deadline (monotonic).

    Requesting again only ever shortens the grace period.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requested = False
        self._deadline: Optional[float] = None

    @property
    def requested(self) -> bool:
        return self._requested

    def request(self, grace_seconds: float) -> bool:
        """Record a request. True for the first one (the caller starts draining)."""
        deadline = time.monotonic() + max(0.0, grace_seconds)
        with self._lock:
            if self._deadline is None or deadline < self._deadline:
                self._deadline = deadline
            first = not self._requested
            self._requested = True
        return first

    def deadline(self) -> float:
        """The drain deadline on the time.monotonic() clock (now if unset)."""
        value = self._deadline
        return time.monotonic() if value is None else value
