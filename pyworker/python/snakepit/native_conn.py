"""One connection of the native transport and the calls that came in on it
(standard library only).

:class:`Connection` owns an accepted socket and its write lock: frames from
many threads go out through :meth:`Connection.send` one at a time.
:class:`NativeCall` is one ``EXECUTE`` between its arrival and its answer
(what ``snakepit.current_call()`` returns to its tool).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from typing import Callable, Dict, Optional

from snakepit import cancellation, wire
from snakepit.native_callbacks import NativeCallbacks

logger = logging.getLogger(__name__)

#: Bodies up to this size are sent together with their header in one copy.
_SMALL_BODY = 32 * 1024
_HEADER_PACK = wire.HEADER.pack
_VERSION = wire.VERSION

# NativeCall states.
QUEUED = 0
RUNNING = 1
DONE = 2


class NativeCall(cancellation.CallContext):
    """One EXECUTE between its arrival and its answer; the tool sees it as
    ``snakepit.current_call()``.

    ``cancelled`` turns True when a CANCEL arrives (or the connection
    closes) and once the call's deadline passes: a running sync tool is not
    interrupted, but ``snakepit.checkpoint()`` raises ``snakepit.Cancelled``
    in it from then on (and a stream's generator is closed).

    ``state`` (QUEUED, RUNNING, DONE) changes under ``lock``; ``task`` is an
    async tool's task once it runs; ``ran``: the tool was called (counted in
    max_in_flight); ``started``: when it arrived (``time.monotonic()``,
    only with debug logging).
    """

    __slots__ = ("conn", "stream", "lock", "state", "task", "started", "ran")

    def __init__(
        self, conn: "Connection", stream: int, request_id: str, tool: str, deadline_ns: int
    ) -> None:
        # The base's fields, set here without calling its __init__ (per call).
        self.request_id = request_id
        self.tool = tool
        self.deadline_ns = deadline_ns
        self._cancelled = False
        self.session = None
        self.callbacks = conn.callbacks
        self.credit = None
        self._wakers = None
        self.conn = conn
        self.stream = stream
        self.lock = threading.Lock()
        self.state = QUEUED
        self.task: Optional["asyncio.Task[None]"] = None
        self.started = 0.0
        self.ran = False

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(stream={self.stream}, request_id={self.request_id!r}, "
            f"tool={self.tool!r}, state={self.state}, cancelled={self.cancelled})"
        )


class Connection:
    """One accepted connection: its socket, its calls, its callbacks, its write lock."""

    __slots__ = ("sock", "name", "calls", "callbacks", "_wlock", "_fd_lock", "_dead", "_closed")

    def __init__(self, sock: socket.socket, name: str, max_message_bytes: int) -> None:
        self.sock = sock
        self.name = name
        #: stream -> NativeCall, for calls not answered yet.
        self.calls: Dict[int, NativeCall] = {}
        #: The callbacks its calls' tools make.
        self.callbacks = NativeCallbacks(self, max_message_bytes)
        self._wlock = threading.Lock()  # one frame at a time
        self._fd_lock = threading.Lock()  # shutdown() never races close()
        self._dead = False  # no more writes
        self._closed = False

    def send(
        self, frame_type: int, stream: int, body: bytes, flags: int = 0,
        before: Optional[Callable[[], None]] = None,
    ) -> bool:
        """Send one frame; False (and the connection is dead) if it fails.

        ``before`` runs under the write lock first, whether or not the
        connection is still alive.
        """
        size = len(body)
        header = _HEADER_PACK(size, _VERSION, frame_type, flags, stream)
        with self._wlock:
            if before is not None:
                before()
            if self._dead:
                return False
            try:
                if size <= _SMALL_BODY:
                    self.sock.sendall(header + body)
                else:
                    self._send_large(header, body)
                return True
            except OSError as exc:
                self._dead = True
                logger.debug("connection %s: send failed: %s", self.name, exc)
        self.interrupt()
        return False

    def _send_large(self, header: bytes, body: bytes) -> None:
        # One vectored write for header and body: the body is not copied.
        sent = self.sock.sendmsg([header, body])
        if sent < wire.HEADER_SIZE:
            self.sock.sendall(header[sent:])
            sent = wire.HEADER_SIZE
        if sent < wire.HEADER_SIZE + len(body):
            self.sock.sendall(memoryview(body)[sent - wire.HEADER_SIZE :])

    def barrier(self, timeout: float) -> None:
        """Wait (up to ``timeout``) for a send under way to end."""
        if self._wlock.acquire(timeout=timeout):
            self._wlock.release()

    def interrupt(self) -> None:
        """Wake the reader thread (it then closes the connection) and any
        blocked sender. Any thread."""
        with self._fd_lock:
            if not self._closed:
                try:
                    self.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        """Close the socket (reader thread only): never while a send is under way."""
        with self._wlock:
            self._dead = True
            with self._fd_lock:
                if not self._closed:
                    self._closed = True
                    self.sock.close()
