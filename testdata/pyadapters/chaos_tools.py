"""Tools that break the worker's side of the protocol, for the Go tests."""
import gc
import os
import socket

from snakepit import tool


def _connections():
    """The worker's accepted Unix stream sockets (not its listening one)."""
    for obj in gc.get_objects():
        if isinstance(obj, socket.socket) and obj.family == socket.AF_UNIX and obj.fileno() >= 0:
            try:
                obj.getpeername()
            except OSError:
                continue
            if obj.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 0:
                yield obj


@tool
def write_garbage() -> int:
    """Write bytes that are no valid frame onto every connection to the
    runtime; returns how many connections were hit."""
    hit = 0
    for conn in _connections():
        os.write(conn.fileno(), b"\xde\xad\xbe\xef this is not a frame" * 4)
        hit += 1
    return hit


@tool
def ping() -> str:
    return "pong"


@tool
def crash_until(path: str, crashes: int) -> int:
    """Count this attempt in the file at ``path``; the first ``crashes``
    attempts kill the worker (exit code 3), later ones return the count."""
    with open(path, "a") as f:
        f.write("attempt\n")
    with open(path) as f:
        attempts = sum(1 for _ in f)
    if attempts <= crashes:
        os._exit(3)
    return attempts


@tool
def segfault() -> None:
    """Dereference a null pointer: the worker dies by SIGSEGV."""
    import ctypes

    ctypes.string_at(0)
