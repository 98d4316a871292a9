"""Test-only: thread_safe=False tools that block until the test releases them
(no timing guesses), each recording how many of its calls ran at once."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Dict

import snakepit
from thread_tools import meet  # noqa: F401 - a tool of this adapter too

__snakepit_thread_safe__ = True

_POLL = 0.002
_lock = threading.Lock()
#: tool -> {"now", "max", "runs"}
_seen: Dict[str, Dict[str, int]] = {
    "serial_block": {"now": 0, "max": 0, "runs": 0},
    "aserial_block": {"now": 0, "max": 0, "runs": 0},
}


def _enter(tool: str) -> None:
    with _lock:
        seen = _seen[tool]
        seen["now"] += 1
        seen["runs"] += 1
        seen["max"] = max(seen["max"], seen["now"])


def _leave(tool: str) -> None:
    with _lock:
        _seen[tool]["now"] -= 1


def _touch(path: str) -> None:
    if path:
        with open(path, "w"):
            pass


@snakepit.tool(thread_safe=False)
def serial_block(path: str, started: str = "", timeout: float = 20.0) -> bool:
    """Create ``started``, then block until ``path`` exists; False on timeout."""
    _enter("serial_block")
    try:
        _touch(started)
        deadline = time.monotonic() + timeout
        while not os.path.exists(path):
            if time.monotonic() > deadline:
                return False
            time.sleep(_POLL)
        return True
    finally:
        _leave("serial_block")


@snakepit.tool(thread_safe=False)
async def aserial_block(path: str, started: str = "", timeout: float = 20.0) -> bool:
    """Like serial_block, waiting on the event loop."""
    _enter("aserial_block")
    try:
        _touch(started)
        deadline = time.monotonic() + timeout
        while not os.path.exists(path):
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(_POLL)
        return True
    finally:
        _leave("aserial_block")


@snakepit.tool
def seen(tool: str) -> Dict[str, int]:
    """``{"now", "max", "runs"}`` of a serial tool."""
    with _lock:
        return dict(_seen[tool])
