"""Tools for the routing tests: a worker whose connection breaks while its
process lives on, and a worker that takes its time to exit."""

from __future__ import annotations

import atexit
import os
import socket
import time

import snakepit


@snakepit.tool
def pid() -> int:
    return os.getpid()


@snakepit.tool
def break_connection(marker: str) -> int:
    """Wait until the file marker exists, then shut down every connected
    socket of this process (the worker's connection to the runtime): the
    process lives on, its connection is gone."""
    deadline = time.monotonic() + 30
    while not os.path.exists(marker) and time.monotonic() < deadline:
        time.sleep(0.005)
    broken = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            sock = socket.socket(fileno=int(name))
        except (OSError, ValueError):
            continue  # not a socket
        try:
            sock.getpeername()  # a listener raises: only connections are cut
            sock.shutdown(socket.SHUT_RDWR)
            broken += 1
        except OSError:
            pass
        finally:
            sock.detach()
    return broken


def _slow_exit() -> None:
    # A graceful stop that takes a while: what a recycle must wait for.
    time.sleep(0.3)


if os.environ.get("ROUTE_TOOLS_SLOW_EXIT"):
    atexit.register(_slow_exit)
