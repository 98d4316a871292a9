"""Tools that start child processes of their own, for the tests that no
descendant of a worker outlives it (``--adapter child_tools``)."""

from __future__ import annotations

import os
import subprocess
import time
from typing import Any, List

import snakepit

# The children this worker started: kept so that Python never reaps them.
_children: List[subprocess.Popen] = []


@snakepit.tool
def spawn_sleeper(new_session: bool = False) -> int:
    """Start ``sleep 300`` (in a session and process group of its own when
    ``new_session``) and return its pid."""
    child = subprocess.Popen(["sleep", "300"], start_new_session=new_session,
                             stdin=subprocess.DEVNULL)
    _children.append(child)
    return child.pid


@snakepit.tool
def pid() -> int:
    """Return the worker process's pid."""
    return os.getpid()


@snakepit.tool
def echo(value: Any = None) -> Any:
    """Return ``value`` unchanged."""
    return value


@snakepit.tool
def crash() -> None:
    """End the worker at once with exit code 3, as a crash does."""
    os._exit(3)


@snakepit.tool
def sleep(seconds: float) -> None:
    """Sleep ``seconds`` without ever checking for cancellation."""
    time.sleep(seconds)
