"""Test-only tools for the native transport tests (concurrency, cancel, imports)."""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import List

import snakepit
from gate_tools import ablock_until, block_until  # noqa: F401 - tools of this adapter too

#: Four calls must be inside barrier_wait at once for any of them to pass.
_BARRIER = threading.Barrier(4)
_lock = threading.Lock()
_active = 0
_max_active = 0


@snakepit.tool
def barrier_wait(timeout: float = 20.0) -> int:
    """Wait until 4 calls are waiting here at the same time."""
    return _BARRIER.wait(timeout)


@snakepit.tool
def probe(hold: float = 0.02) -> int:
    """Record how many probe calls run at once; returns the count seen on entry."""
    global _active, _max_active
    with _lock:
        _active += 1
        _max_active = max(_max_active, _active)
        seen = _active
    try:
        time.sleep(hold)  # gives overlapping calls the chance to show up
    finally:
        with _lock:
            _active -= 1
    return seen


@snakepit.tool
def max_concurrency() -> int:
    """The most probe calls ever seen running at once."""
    with _lock:
        return _max_active


@snakepit.tool
def touch(path: str) -> bool:
    """Create ``path`` (proves the call ran)."""
    with open(path, "w"):
        pass
    return True


@snakepit.tool
def loaded_modules() -> List[str]:
    """Names of all modules imported in the worker process."""
    return sorted(sys.modules)


@snakepit.tool
def echo_bytes(data: bytes) -> bytes:
    return data


@snakepit.tool
def echo(value: object = None) -> object:
    return value


@snakepit.tool
def pid() -> int:
    return os.getpid()
