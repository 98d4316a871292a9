"""Test-only tools that block until the test releases them (no timing guesses)."""

from __future__ import annotations

import asyncio
import os
import time
import uuid

import snakepit

_POLL = 0.002


@snakepit.tool
def block_until(path: str, timeout: float = 20.0) -> bool:
    """Block a worker thread until ``path`` exists; False on timeout."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            return False
        time.sleep(_POLL)
    return True


@snakepit.tool
async def ablock_until(path: str, timeout: float = 20.0) -> bool:
    """Like block_until, waiting on the event loop."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(_POLL)
    return True


@snakepit.tool
def gather(directory: str, n: int, timeout: float = 20.0) -> int:
    """Check in under ``directory`` and wait until ``n`` calls have checked in:
    succeeds only if ``n`` calls run at the same time. Returns how many arrived."""
    with open(os.path.join(directory, uuid.uuid4().hex), "w"):
        pass
    deadline = time.monotonic() + timeout
    while len(os.listdir(directory)) < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(os.listdir(directory))} of {n} calls ran at once")
        time.sleep(_POLL)
    return len(os.listdir(directory))
