"""Test-only adapter for --thread-checks: a @single_threaded helper that two
calls can be made to meet in, and sqlite3 imported (a library of the
compatibility table)."""

from __future__ import annotations

import sqlite3  # noqa: F401 - imported for the library warning
import threading
from typing import Dict

import snakepit
from snakepit import threadsafe

__snakepit_thread_safe__ = True

_lock = threading.Lock()
_barriers: Dict[int, threading.Barrier] = {}


@snakepit.single_threaded
def _inside(barrier: threading.Barrier, timeout: float) -> None:
    barrier.wait(timeout)


@snakepit.tool
def meet_inside(parties: int = 2, timeout: float = 20.0) -> bool:
    """``parties`` calls meet inside a @single_threaded function; returns
    whether the checks are on."""
    with _lock:
        barrier = _barriers.get(parties)
        if barrier is None or barrier.broken:
            barrier = _barriers[parties] = threading.Barrier(parties)
    _inside(barrier, timeout)
    return threadsafe.checks_enabled()
