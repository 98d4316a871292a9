"""Tools for the recycling tests (``--adapter lifecycle_tools``)."""

from __future__ import annotations

import os
import time
from typing import Any

import snakepit

# Memory a test asked this worker to keep: it stays until the worker goes.
_kept: list[bytes] = []


@snakepit.tool
def echo(value: Any = None) -> Any:
    """Return ``value`` unchanged."""
    return value


@snakepit.tool
def pid() -> int:
    """Return the worker process's pid."""
    return os.getpid()


@snakepit.tool
def hog(mib: int) -> int:
    """Allocate ``mib`` MiB, touch every page, keep it; return the pid."""
    _kept.append(b"\x01" * (mib << 20))
    return os.getpid()


@snakepit.tool
def slow(seconds: float) -> int:
    """Sleep ``seconds``, then return the pid."""
    time.sleep(seconds)
    return os.getpid()
