"""The native transport server: length-prefixed frames over the worker's Unix
socket (docs/wire-format.md). Standard library only, so it runs on any
CPython >= 3.11, free-threaded builds included.

Threads:

* the main thread waits for the stop; ``snakepit-signals`` turns SIGTERM /
  SIGINT into a shutdown (snakepit.native_signals);
* ``snakepit-accept`` accepts connections (snakepit.native_listener);
* one ``snakepit-conn-N`` reader thread per connection reads frames, starts
  calls and answers HELLO / REQUEST / CANCEL itself (so health, stats and
  describe are answered even while every tool thread is busy);
* sync tools run on ``capacity`` ``snakepit-tool-N`` threads fed by one FIFO
  queue (snakepit.native_threads); async tools run as tasks on one event
  loop in ``snakepit-asyncio`` (not bounded by capacity, as with the gRPC
  server); a ``@tool(thread_safe=False)`` tool runs one call at a time
  (snakepit.native_calls);
* ``snakepit-shutdown`` drains and stops once a shutdown is requested.

Streams (``EXECUTE`` with ``stream``): a sync generator runs on a tool
thread for the whole stream (one capacity slot), an async one as a task;
each waits for credit before asking for its next item (snakepit.streams).
``CREDIT`` and ``CANCEL`` reach them from the reader thread; a cancel, the
deadline, the connection closing or the stop closes the generator on its own
thread or task, then the stream is answered.

Callbacks (``snakepit.call`` / ``acall``): a tool's thread or task sends
``CALLBACK`` on its call's connection and waits; the reader thread hands it
the ``CALLBACK_RESULT`` / ``CALLBACK_ERROR`` (snakepit.native_callbacks).

Sessions (``EXECUTE`` with ``session``; ``REQUEST`` ``session_end``): the
start hook runs on the call's thread or task before the tool; the end hook
runs on a tool thread (or the loop, when ``async``) once the session's calls
are over, and the ``REPLY`` is sent from there (snakepit.sessions).

Frames from many threads go out through one lock per connection
(snakepit.native_conn); how that makes the drain see every answer out is
told in snakepit.native_calls.
"""

from __future__ import annotations

import asyncio
import logging
import os
import platform
import signal
import socket
import threading
import time
from typing import Any, Dict, List, Optional, Set, Tuple

from snakepit import wire
from snakepit.adapter import LoadedAdapter, close_adapter
from snakepit.codec import CallError, ErrorKind
from snakepit.config import DEFAULT_MAX_MESSAGE_BYTES, SIGNAL_GRACE_SECONDS
from snakepit.core import token_matches
from snakepit.native_calls import NativeCalls
from snakepit.native_conn import Connection
from snakepit.native_listener import UnixListener
from snakepit.native_signals import SignalWatcher
from snakepit.payloads import describe_payload, health_payload, stats_payload

logger = logging.getLogger(__name__)

#: Largest HELLO accepted: nothing bigger is read before the token is checked.
HELLO_MAX_BYTES = wire.META_ALLOWANCE
#: How long the stop waits for the replies of calls that already finished.
_STOP_GRACE_SECONDS = 0.5

_EXECUTE = wire.EXECUTE
_CANCEL = wire.CANCEL
_REQUEST = wire.REQUEST
_CREDIT = wire.CREDIT
_CALLBACK_RESULT = wire.CALLBACK_RESULT
_CALLBACK_ERROR = wire.CALLBACK_ERROR


class NativeServer(NativeCalls):
    """Owns the listening socket, the connections, the tool threads and the
    shutdown sequence of the native transport."""

    def __init__(
        self,
        adapter: LoadedAdapter,
        token: str,
        capacity: int = 1,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        started_monotonic: Optional[float] = None,
        profile: Optional[str] = None,
    ) -> None:
        super().__init__(adapter, token, capacity, max_message_bytes, started_monotonic, profile)
        self._frame_limit = wire.frame_limit(max_message_bytes)
        self._hello_ok = wire.dumps({
            "version": wire.VERSION,
            "pid": os.getpid(),
            "python": platform.python_version(),
            "capacity": capacity,
        })
        self._describe = wire.dumps(describe_payload(adapter))
        self._listener: Optional[UnixListener] = None
        self._conn_lock = threading.Lock()
        self._connections: Set[Connection] = set()
        self._conn_seq = 0
        self._conn_threads: List[threading.Thread] = []
        self._closing = False
        self._stopped = threading.Event()
        self._loop_thread: Optional[threading.Thread] = None
        self._signals = SignalWatcher(self._on_signal)
        self._drain_thread: Optional[threading.Thread] = None

    # ------------------------------------------------------------ lifecycle

    def start(self, socket_path: str) -> None:
        """Bind the Unix socket (mode 0600), listen, and start accepting."""
        self._listener = UnixListener(socket_path)
        self._threads.start()
        if self._has_async:
            self._start_loop()
        self._listener.start(self._accepted)

    def _start_loop(self) -> None:
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            try:
                loop.run_forever()
            finally:
                # Close the loop here, on its own thread, once it has stopped:
                # left to the garbage collector at interpreter exit, its
                # __del__ meets an already-closed self-pipe and logs a
                # traceback on every graceful stop.
                pending = asyncio.all_tasks(loop)
                for task in pending:
                    task.cancel()
                if pending:
                    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.close()

        thread = threading.Thread(target=run, name="snakepit-asyncio", daemon=True)
        thread.start()
        ready.wait()
        self._loop = loop
        self._loop_thread = thread

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT start a graceful shutdown (5 s grace). Main
        thread only (snakepit.native_signals says how)."""
        self._signals.install()

    def _on_signal(self, signum: signal.Signals) -> None:
        self.request_shutdown(SIGNAL_GRACE_SECONDS, signum.name)

    def close(self, timeout: float = 2.0) -> None:
        """After the stop, in the main thread: stop watching signals (further
        SIGTERM / SIGINT are ignored) and wait up to ``timeout`` for the
        server's threads to end, so that the interpreter does not finalize
        while they start or end (a free-threaded 3.13 can hang at exit then).
        Tool threads are not waited for when calls are still running."""
        self._signals.close()
        deadline = time.monotonic() + timeout
        if self._open_streams and self._counters.in_flight:
            # The stop cancelled the streams: their generators are being
            # closed on their threads; let their finally blocks run.
            stream_deadline = min(deadline, time.monotonic() + _STOP_GRACE_SECONDS)
            self._counters.wait_idle(lambda: stream_deadline)
        listener = self._listener
        threads = [self._signals.thread, self._drain_thread,
                   listener.thread if listener is not None else None,
                   self._loop_thread, *self._conn_threads]
        if self._counters.in_flight == 0:
            threads.extend(self._threads.threads)
        current = threading.current_thread()
        for thread in threads:
            if thread is not None and thread is not current and thread.ident is not None:
                thread.join(max(0.0, deadline - time.monotonic()))

    def wait_stopped(self, timeout: Optional[float] = None) -> bool:
        """Block until a requested shutdown has completed (True) or ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        # Short waits: signal handlers run in the main thread between them.
        while not self._stopped.wait(1.0):
            if deadline is not None and time.monotonic() >= deadline:
                return False
        return True

    def request_shutdown(self, grace_seconds: float, reason: str = "shutdown request") -> int:
        """Stop taking calls; drain in the background. Returns calls in flight now.

        Calling again only ever shortens the grace period.
        """
        in_flight, first = self._begin_shutdown(grace_seconds, reason)
        if first:
            self._start_drain()
        return in_flight

    def _start_drain(self) -> None:
        self._drain_thread = threading.Thread(
            target=self._drain_and_stop, name="snakepit-shutdown", daemon=True)
        self._drain_thread.start()

    def _drain_and_stop(self) -> None:
        try:
            left = self._counters.wait_idle(self._shutdown.deadline)
            if left:
                logger.warning("grace period over with %d call(s) still running", left)
            self._end_open_sessions()
            try:
                self._run_blocking(close_adapter(self.adapter))
            except Exception:
                logger.exception("adapter close() failed")
            # Calls count as finished just before their answer is written,
            # under the connection's write lock: let those writes end.
            for conn in self._connection_list():
                conn.barrier(_STOP_GRACE_SECONDS)
        except Exception:
            logger.exception("error during shutdown")
        finally:
            self._stop()

    def _end_open_sessions(self) -> None:
        """Graceful shutdown: run the end hook of every session still open
        (on this thread; an async hook on the loop), before close()."""
        for session in self._sessions.take_all():
            if session.open:
                self._sessions.end_sync(session)

    def _stop(self) -> None:
        self._closing = True
        if self._listener is not None:
            self._listener.stop()
        for conn in self._connection_list():
            conn.interrupt()
        self._threads.stop()
        loop = self._loop
        if loop is not None:
            try:
                loop.call_soon_threadsafe(loop.stop)
            except RuntimeError:
                pass
        self._stopped.set()

    # ---------------------------------------------------------- connections

    def _connection_list(self) -> List[Connection]:
        with self._conn_lock:
            return list(self._connections)

    def _accepted(self, sock: socket.socket) -> None:
        """A new connection (accept thread): its reader thread starts."""
        self._conn_seq += 1
        conn = Connection(sock, str(self._conn_seq), self.max_message_bytes)
        with self._conn_lock:
            self._connections.add(conn)
        thread = threading.Thread(
            target=self._serve_connection, args=(conn,),
            name=f"snakepit-conn-{conn.name}", daemon=True,
        )
        thread.start()
        self._conn_threads = [t for t in self._conn_threads if t.is_alive()]
        self._conn_threads.append(thread)

    def _serve_connection(self, conn: Connection) -> None:
        reader = wire.FrameReader(conn.sock.recv_into, HELLO_MAX_BYTES)
        try:
            if self._hello(conn, reader):
                reader.max_length = self._frame_limit
                self._read_frames(conn, reader)
        except wire.TruncatedFrame as exc:
            if not self._closing:
                logger.error("connection %s: bad frame: %s; closing the connection",
                             conn.name, exc.message)
        except wire.WireError as exc:
            self._protocol_error(conn, exc.message)
        except OSError as exc:
            if not self._closing:
                logger.debug("connection %s: %s", conn.name, exc)
        except Exception as exc:  # a bug here must not go unnoticed
            logger.exception("connection %s: internal error; closing the connection", conn.name)
            self._send_protocol_error(conn, f"internal worker error: {exc}")
        finally:
            self._drop_connection(conn)

    def _protocol_error(self, conn: Connection, message: str) -> None:
        logger.error("connection %s: protocol error: %s; sending PROTOCOL_ERROR and closing "
                     "the connection", conn.name, message)
        self._send_protocol_error(conn, message)

    @staticmethod
    def _send_protocol_error(conn: Connection, message: str) -> None:
        conn.send(wire.PROTOCOL_ERROR, 0, wire.dumps({"message": message}))

    def _hello(self, conn: Connection, reader: wire.FrameReader) -> bool:
        frame = reader.read()
        if frame is None:
            logger.debug("connection %s closed before HELLO", conn.name)
            return False
        frame_type, _flags, stream, body = frame
        if frame_type != wire.HELLO:
            raise wire.WireError(
                f"expected HELLO as the first frame, got {wire.type_name(frame_type)}"
            )
        if stream != 0:
            raise wire.WireError(f"HELLO on stream {stream}; connection frames use stream 0")
        hello = wire.parse_object(body, "HELLO")
        version = hello.get("version")
        if type(version) is not int:
            raise wire.WireError(f"HELLO carries no wire version (got {version!r})")
        if version != wire.VERSION:
            raise wire.VersionMismatch(version)
        if not token_matches(hello.get("token"), self._token):
            raise wire.WireError("HELLO carries a missing or wrong token")
        conn.send(wire.HELLO_OK, 0, self._hello_ok)
        logger.debug("connection %s: authenticated", conn.name)
        return True

    def _read_frames(self, conn: Connection, reader: wire.FrameReader) -> None:
        read = reader.read
        on_execute = self._on_execute
        while True:
            frame = read()
            if frame is None:
                logger.debug("connection %s closed by the runtime", conn.name)
                return
            frame_type, flags, stream, body = frame
            if frame_type == _EXECUTE:
                on_execute(conn, stream, body)
            elif frame_type == _CREDIT:
                self._on_credit(conn, stream, body)
            elif frame_type == _CANCEL:
                self._on_cancel(conn, stream, body)
            elif frame_type == _REQUEST:
                self._on_request(conn, stream, body)
            elif frame_type == _CALLBACK_RESULT or frame_type == _CALLBACK_ERROR:
                conn.callbacks.answer(frame_type, flags, stream, body)
            elif frame_type == wire.PROTOCOL_ERROR:
                logger.error("connection %s: the runtime reported a protocol error: %s; "
                             "closing the connection", conn.name, _peer_message(body))
                return
            else:
                raise wire.WireError(
                    f"unexpected {wire.type_name(frame_type)} frame from the runtime"
                )

    def _drop_connection(self, conn: Connection) -> None:
        conn.close()
        with self._conn_lock:
            self._connections.discard(conn)
        conn.callbacks.table.close("the connection to the runtime closed")
        # Nobody is left to answer: queued calls never run, async tasks stop,
        # streams close their generators; a running sync tool finishes and
        # its reply is dropped.
        for ctx in list(conn.calls.values()):
            self._cancel(ctx, CallError(ErrorKind.CANCELLED, "the connection closed"))

    # ------------------------------------------------------------- requests

    def _on_request(self, conn: Connection, stream: int, body: memoryview) -> None:
        request = wire.parse_object(body, "REQUEST")
        op = request.get("op")
        drain = False
        try:
            if op == "health":
                reply = wire.dumps(health_payload(not self._shutdown.requested))
            elif op == "stats":
                reply = wire.dumps(stats_payload(
                    self._counters, self.capacity, self._started, self.profile))
            elif op == "describe":
                reply = self._describe
            elif op == "session_end":
                session_id = request.get("session")
                if type(session_id) is not str or not session_id:
                    reply = wire.dumps({
                        "error": f"session_end needs 'session', a non-empty string; got "
                                 f"{session_id!r}"})
                else:
                    self._end_session_request(conn, stream, session_id)
                    return
            elif op == "shutdown":
                reply, drain = self._shutdown_request(request)
            else:
                reply = wire.dumps({
                    "error": f"unknown op {op!r}; this worker knows {', '.join(wire.OPS)}"
                })
        except Exception as exc:
            logger.exception("internal error answering %r", op)
            reply = wire.dumps({"error": f"internal worker error: {exc}"})
        conn.send(wire.REPLY, stream, reply)
        if drain:
            self._start_drain()  # only now: the drain may close this connection

    def _shutdown_request(self, request: Dict[str, Any]) -> Tuple[bytes, bool]:
        """``REQUEST`` ``shutdown``: ``(reply, whether to start the drain)``."""
        grace_ms = request.get("grace_ms", 0)
        if grace_ms is None:
            grace_ms = 0
        if type(grace_ms) not in (int, float):
            return wire.dumps({"error": f"grace_ms must be a number, got {grace_ms!r}"}), False
        in_flight, first = self._begin_shutdown(grace_ms / 1000.0, "shutdown request")
        return wire.dumps({"in_flight": in_flight}), first


def _peer_message(body: memoryview) -> str:
    try:
        return str(wire.parse_object(body, "PROTOCOL_ERROR").get("message", ""))
    except wire.WireError:
        return repr(bytes(body[:200]))
