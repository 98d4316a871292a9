"""Tools for the Go integration tests (``--adapter echo_tools``)."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

import snakepit

logger = logging.getLogger("echo_tools")


@snakepit.tool
def echo(value: Any = None) -> Any:
    """Return ``value`` unchanged."""
    return value


@snakepit.tool
def echo_bytes(data: bytes) -> bytes:
    """Return ``data`` unchanged (raw bytes both ways)."""
    return data


@snakepit.tool
def raise_error(message: str) -> None:
    """Raise ``RuntimeError(message)``."""
    raise RuntimeError(message)


@snakepit.tool
def sleep(seconds: float) -> float:
    """Block a worker thread for ``seconds``; return ``seconds``."""
    time.sleep(seconds)
    return seconds


@snakepit.tool
async def asleep(seconds: float) -> float:
    """Wait ``seconds`` on the event loop; return ``seconds``."""
    await asyncio.sleep(seconds)
    return seconds


@snakepit.tool
def crash(code: int = 3) -> None:
    """Kill the worker process at once with exit status ``code``."""
    os._exit(code)


@snakepit.tool
def pid() -> int:
    """The worker's process id."""
    return os.getpid()


@snakepit.tool
def unencodable() -> object:
    """Return something JSON cannot encode."""
    return object()


@snakepit.tool
def nan() -> float:
    """Return NaN, which strict JSON cannot encode."""
    return float("nan")


@snakepit.tool
def big(n: int) -> bytes:
    """Return ``n`` bytes (all 0x78, 'x')."""
    return b"x" * n


@snakepit.tool
def log(message: str, level: str = "warning") -> None:
    """Log ``message`` on the "echo_tools" logger at ``level``."""
    logger.log(logging.getLevelName(level.upper()), message)


@snakepit.tool
def print_stdout(message: str) -> None:
    """print() ``message`` to stdout."""
    print(message)


@snakepit.tool
def cooperative_loop(seconds: float = 60) -> int:
    """Loop for up to ``seconds``, calling snakepit.checkpoint() every 5 ms;
    return the iterations done. Stops with snakepit.Cancelled (answered
    CANCELLED) as soon as the caller gives up or the deadline passes."""
    iterations = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        snakepit.checkpoint()
        iterations += 1
        time.sleep(0.005)
    return iterations


@snakepit.tool
def uncooperative_sleep(seconds: float = 60) -> float:
    """Block in time.sleep(``seconds``) without ever checking for
    cancellation; return ``seconds``."""
    time.sleep(seconds)
    return seconds
