"""The native transport server: length-prefixed frames over the worker's Unix
socket (docs/wire-format.md). Standard library only, so it runs on any
CPython >= 3.11, free-threaded builds included.

Threads:

* the main thread waits for the stop; ``snakepit-signals`` turns SIGTERM /
  SIGINT into a shutdown;
* ``snakepit-accept`` accepts connections;
* one ``snakepit-conn-N`` reader thread per connection reads frames, starts
  calls and answers HELLO / REQUEST / CANCEL itself (so health, stats and
  describe are answered even while every tool thread is busy);
* sync tools run on ``capacity`` ``snakepit-tool-N`` threads fed by one FIFO
  queue (ToolThreads: a ThreadPoolExecutor costs several microseconds more
  per call); async tools run as tasks on one event loop in
  ``snakepit-asyncio`` (not bounded by capacity, as with the gRPC server);
* a ``@tool(thread_safe=False)`` tool runs one call at a time: a sync call
  that finds it busy is parked in its SerialGate (holding no thread) and run
  next by the thread that ends the running call; an async one waits for its
  AsyncSerialGate on the loop;
* ``snakepit-shutdown`` drains and stops once a shutdown is requested.

Streams (``EXECUTE`` with ``stream``): a sync generator runs on a tool
thread for the whole stream (one capacity slot), an async one as a task;
each waits for credit before asking for its next item (snakepit.streams).
``CREDIT`` and ``CANCEL`` reach them from the reader thread; a cancel, the
deadline, the connection closing or the stop closes the generator on its own
thread or task, then the stream is answered.

Callbacks (``snakepit.call`` / ``acall``): a tool's thread or task sends
``CALLBACK`` on its call's connection and waits; the reader thread hands it
the ``CALLBACK_RESULT`` / ``CALLBACK_ERROR`` (NativeCallbacks).

Sessions (``EXECUTE`` with ``session``; ``REQUEST`` ``session_end``): the
start hook runs on the call's thread or task before the tool; the end hook
runs on a tool thread (or the loop, when ``async``) once the session's calls
are over, and the ``REPLY`` is sent from there (snakepit.sessions).

Frames from many threads go out through one lock per connection. A call's
RESULT / ERROR is sent by the thread (or task) that finished it; the call is
counted finished under that lock just before its answer is written, so once
no call is in flight and each connection's lock has been taken once, every
answer is out.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import os
import platform
import queue
import signal
import socket
import stat
import sys
import threading
import time
from typing import Any, Awaitable, Callable, Dict, List, Optional, Set, Tuple

from snakepit import cancellation, wire
from snakepit.adapter import LoadedAdapter, Tool, close_adapter
from snakepit.callbacks import (
    BAD_REPLY,
    CONNECTION_CLOSED,
    TOO_LARGE,
    CallbackError,
    CallbackTable,
    PendingCallback,
    wait_async,
    wait_sync,
)
from snakepit.codec import CallError, EncodedResult, ErrorKind, error_from_exception
from snakepit.execution import (
    Outcome,
    find_tool,
    prepare_decoded_call,
    run_async,
    run_sync,
    serial_gates,
    stream_only_error,
)
from snakepit.service import (
    DEFAULT_MAX_MESSAGE_BYTES,
    SIGNAL_GRACE_SECONDS,
    WorkerCore,
    check_socket_path,
    describe_payload,
    health_payload,
    stats_payload,
    token_matches,
)
from snakepit.sessions import Session, SessionRegistry
from snakepit.streams import StreamCredit, run_async_stream, run_sync_stream

logger = logging.getLogger(__name__)

#: Largest HELLO accepted: nothing bigger is read before the token is checked.
HELLO_MAX_BYTES = wire.META_ALLOWANCE
#: How long the stop waits for the replies of calls that already finished.
_STOP_GRACE_SECONDS = 0.5
#: Bodies up to this size are sent together with their header in one copy.
_SMALL_BODY = 32 * 1024
_LISTEN_BACKLOG = 128

_HEADER_PACK = wire.HEADER.pack
_VERSION = wire.VERSION
_RESULT = wire.RESULT
_FLAG_RAW = wire.FLAG_RAW
_ERROR = wire.ERROR
_EXECUTE = wire.EXECUTE
_CANCEL = wire.CANCEL
_REQUEST = wire.REQUEST
_CHUNK = wire.CHUNK
_CREDIT = wire.CREDIT
_CALLBACK_RESULT = wire.CALLBACK_RESULT
_CALLBACK_ERROR = wire.CALLBACK_ERROR

# CallContext states.
QUEUED = 0
RUNNING = 1
DONE = 2


class CallContext(cancellation.CallContext):
    """One EXECUTE between its arrival and its answer; the tool sees it as
    ``snakepit.current_call()``.

    ``cancelled`` turns True when a CANCEL arrives (or the connection
    closes) and once the call's deadline passes: a running sync tool is not
    interrupted, but ``snakepit.checkpoint()`` raises ``snakepit.Cancelled``
    in it from then on (and a stream's generator is closed).
    """

    __slots__ = ("conn", "stream", "lock", "state", "task", "started", "ran")

    def __init__(
        self, conn: "Connection", stream: int, request_id: str, tool: str, deadline_ns: int
    ) -> None:
        self.conn = conn
        self.stream = stream
        self.request_id = request_id
        self.tool = tool
        #: Absolute deadline in Unix nanoseconds; 0 means none.
        self.deadline_ns = deadline_ns
        self._cancelled = False
        self.session: Optional[Session] = None
        self.callbacks = conn.callbacks
        self.credit: Optional[StreamCredit] = None
        self._wakers = None
        self.lock = threading.Lock()
        self.state = QUEUED
        self.task: Optional["asyncio.Task[None]"] = None
        self.started = 0.0
        self.ran = False  # the tool was called (counted in max_in_flight)

    def __repr__(self) -> str:
        return (
            f"CallContext(stream={self.stream}, request_id={self.request_id!r}, "
            f"tool={self.tool!r}, state={self.state}, cancelled={self.cancelled})"
        )


class Connection:
    """One accepted connection: its socket, its calls, its callbacks, its write lock."""

    __slots__ = ("sock", "name", "calls", "callbacks", "_wlock", "_fd_lock", "_dead", "_closed")

    def __init__(self, sock: socket.socket, name: str, max_message_bytes: int) -> None:
        self.sock = sock
        self.name = name
        #: stream -> CallContext, for calls not answered yet.
        self.calls: Dict[int, CallContext] = {}
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


class NativeCallbacks:
    """The callbacks (snakepit.call / acall) of the tools whose calls came in
    on one connection: each is sent as a ``CALLBACK`` frame with an id of
    this connection's own (1, 2, ...) and waits for the ``CALLBACK_RESULT``
    or ``CALLBACK_ERROR`` the reader thread hands over (:meth:`answer`).
    When the connection closes, every waiting callback raises
    CallbackError(CONNECTION_CLOSED)."""

    __slots__ = ("_conn", "table", "_max_bytes")

    def __init__(self, conn: "Connection", max_message_bytes: int) -> None:
        self._conn = conn
        self.table = CallbackTable()
        self._max_bytes = max_message_bytes

    def call(self, ctx: cancellation.CallContext, name: str, args_json: bytes,
             binary: Dict[str, bytes]) -> Any:
        pending = PendingCallback(name)
        callback_id = self._send(ctx, name, args_json, binary, pending)
        return wait_sync(ctx, pending, functools.partial(self.table.pop, callback_id))

    async def acall(self, ctx: cancellation.CallContext, name: str, args_json: bytes,
                    binary: Dict[str, bytes]) -> Any:
        pending = PendingCallback(name, asyncio.get_running_loop())
        callback_id = self._send(ctx, name, args_json, binary, pending)
        return await wait_async(pending, functools.partial(self.table.pop, callback_id))

    def _send(self, ctx: cancellation.CallContext, name: str, args_json: bytes,
              binary: Dict[str, bytes], pending: PendingCallback) -> int:
        size = len(args_json) + sum(len(value) for value in binary.values())
        if size > self._max_bytes:
            raise CallbackError(
                TOO_LARGE, f"its arguments take {size} bytes; the message limit "
                f"(SNAKEPIT_MAX_MESSAGE_BYTES) is {self._max_bytes} bytes; nothing was sent", name)
        body = b"".join(wire.callback_body(name, ctx.request_id, args_json, binary))
        limit = wire.frame_limit(self._max_bytes)
        if len(body) > limit:
            raise CallbackError(
                TOO_LARGE, f"its CALLBACK frame would take {len(body)} bytes, over the "
                f"connection's limit of {limit}; nothing was sent", name)
        callback_id = self.table.add(pending)
        if not self._conn.send(wire.CALLBACK, callback_id, body):
            self.table.pop(callback_id)
            raise CallbackError(
                CONNECTION_CLOSED, "the connection to the runtime closed before it was sent", name)
        return callback_id

    def answer(self, frame_type: int, flags: int, callback_id: int, body: memoryview) -> None:
        """A ``CALLBACK_RESULT`` or ``CALLBACK_ERROR`` (reader thread). An
        answer to a callback nobody waits for any more (its call was
        cancelled) is dropped. Raises WireError for a body that is not
        UTF-8 JSON; a result that is well-formed JSON too deep (or too big)
        to decode fails that callback alone (CallbackError BAD_REPLY)."""
        pending = self.table.pop(callback_id)
        if pending is None:
            logger.debug("connection %s: dropped the answer to callback %d, which nobody "
                          "waits for any more", self._conn.name, callback_id)
            return
        if frame_type == _CALLBACK_ERROR:
            try:
                error = wire.parse_object(body, "CALLBACK_ERROR")
                kind, message = error.get("kind"), error.get("message", "")
                if type(kind) is not str or not kind or type(message) is not str:
                    raise wire.WireError(
                        "CALLBACK_ERROR body needs 'kind', a non-empty string, and 'message', "
                        "a string")
            except wire.WireError as exc:
                pending.resolve(error=CallbackError(
                    CONNECTION_CLOSED, f"the runtime sent a bad answer ({exc.message})",
                    pending.name))
                raise
            pending.resolve(error=CallbackError(kind, message, pending.name))
        elif flags & _FLAG_RAW:
            pending.resolve(bytes(body))
        else:
            try:
                value = wire.loads(body)
            except ValueError as exc:
                pending.resolve(error=CallbackError(
                    CONNECTION_CLOSED, "the runtime sent a bad answer", pending.name))
                raise wire.WireError(
                    f"CALLBACK_RESULT body is not valid UTF-8 JSON: {exc}") from None
            except wire.JSONLimitError as exc:  # this callback's result alone fails
                pending.resolve(error=CallbackError(
                    BAD_REPLY, f"the runtime's result cannot be decoded: its contents "
                    f"{exc.problem}", pending.name))
                return
            pending.resolve(value)


class ToolThreads:
    """``size`` daemon threads running ``handler(item)`` for each queued
    tuple, FIFO; a queued callable (a session's end hook) is called instead."""

    def __init__(self, size: int, handler: Callable[[Any], None], name: str = "snakepit-tool") -> None:
        self._queue: "queue.SimpleQueue[Any]" = queue.SimpleQueue()
        self.put = self._queue.put
        self._handler = handler
        #: True once stop() was called.
        self.stopping = False
        self.threads = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
            for i in range(size)
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def _work(self) -> None:
        get, handler = self._queue.get, self._handler
        while True:
            item = get()
            if item is None or self.stopping:
                return
            try:
                if type(item) is tuple:
                    handler(item)
                else:
                    item()
            except BaseException:  # the handler answers its call itself; this is a bug
                logger.exception("internal error in a tool thread")

    def stop(self) -> None:
        """Let every thread end once its current item is done; queued items are dropped."""
        self.stopping = True
        for _ in self.threads:
            self._queue.put(None)


class NativeServer(WorkerCore):
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
        self._serial, self._async_serial = serial_gates(adapter.tools)
        # Without thread_safe=False sync tools, skip the gate check per call.
        self._threads = ToolThreads(
            capacity, self._run_sync_call if self._serial else self._run_sync_item)
        self._hello_ok = wire.dumps({
            "version": wire.VERSION,
            "pid": os.getpid(),
            "python": platform.python_version(),
            "capacity": capacity,
        })
        self._describe = wire.dumps(describe_payload(adapter))
        self._sessions = SessionRegistry(adapter, self._run_blocking)
        self._streams_lock = threading.Lock()
        self._open_streams = 0  # streaming calls not answered yet
        self._has_async = any(t.is_async for t in adapter.tools.values())
        self._debug = logger.isEnabledFor(logging.DEBUG)
        self._listener: Optional[socket.socket] = None
        self._socket_path = ""
        self._socket_ino: Optional[Tuple[int, int]] = None
        self._accept_thread: Optional[threading.Thread] = None
        self._conn_lock = threading.Lock()
        self._connections: Set[Connection] = set()
        self._conn_seq = 0
        self._closing = False
        self._stopped = threading.Event()
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._loop_thread: Optional[threading.Thread] = None
        self._tasks: Set["asyncio.Task[None]"] = set()
        self._conn_threads: List[threading.Thread] = []
        self._signal_thread: Optional[threading.Thread] = None
        self._signal_write_fd = -1
        self._drain_thread: Optional[threading.Thread] = None

    # ------------------------------------------------------------ lifecycle

    def start(self, socket_path: str) -> None:
        """Bind the Unix socket (mode 0600), listen, and start accepting."""
        check_socket_path(socket_path)
        if os.path.lexists(socket_path):  # a stale socket (check_socket_path: nothing else)
            os.unlink(socket_path)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            old_umask = os.umask(0o177)
            try:
                listener.bind(socket_path)
            finally:
                os.umask(old_umask)
            try:
                os.chmod(socket_path, 0o600)
            except OSError:
                pass
            listener.listen(_LISTEN_BACKLOG)
            st = os.stat(socket_path)
            self._socket_ino = (st.st_dev, st.st_ino)
        except BaseException:
            listener.close()
            raise
        self._listener = listener
        self._socket_path = socket_path
        self._threads.start()
        if self._has_async:
            self._start_loop()
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name="snakepit-accept", daemon=True
        )
        self._accept_thread.start()

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
        """SIGTERM and SIGINT start a graceful shutdown (5 s grace). Main thread only.

        The work is not done in a Python signal handler: that runs in the
        main thread between two bytecodes, perhaps in the middle of a write
        to stderr (logging from it fails: "reentrant call") or holding a lock
        it would need. Instead the C-level handler writes the signal number
        to a pipe (signal.set_wakeup_fd) and the ``snakepit-signals`` thread
        reads it and shuts down. This also works when the kernel delivers the
        signal to another thread than the main one.
        """
        read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)
        try:
            signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        except ValueError:  # not the main thread
            os.close(read_fd)
            os.close(write_fd)
            logger.debug("not the main thread: SIGTERM / SIGINT keep their default action")
            return
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, _note_signal)
        self._signal_write_fd = write_fd
        self._signal_thread = threading.Thread(
            target=self._watch_signals, args=(read_fd,), name="snakepit-signals", daemon=True
        )
        self._signal_thread.start()

    def _watch_signals(self, read_fd: int) -> None:
        try:
            while True:
                data = os.read(read_fd, 64)
                if not data:
                    return  # close() closed the write end
                for signum in data:
                    if signum in (signal.SIGTERM, signal.SIGINT):
                        self.request_shutdown(SIGNAL_GRACE_SECONDS, signal.Signals(signum).name)
        except OSError as exc:
            logger.error("cannot read signals any more: %s", exc)
        finally:
            os.close(read_fd)

    def close(self, timeout: float = 2.0) -> None:
        """After the stop, in the main thread: stop watching signals (further
        SIGTERM / SIGINT are ignored) and wait up to ``timeout`` for the
        server's threads to end, so that the interpreter does not finalize
        while they start or end (a free-threaded 3.13 can hang at exit then).
        Tool threads are not waited for when calls are still running."""
        if self._signal_write_fd >= 0:
            try:
                signal.set_wakeup_fd(-1)
            except ValueError:
                pass
            os.close(self._signal_write_fd)
            self._signal_write_fd = -1
        deadline = time.monotonic() + timeout
        if self._open_streams and self._counters.in_flight:
            # The stop cancelled the streams: their generators are being
            # closed on their threads; let their finally blocks run.
            stream_deadline = min(deadline, time.monotonic() + _STOP_GRACE_SECONDS)
            self._counters.wait_idle(lambda: stream_deadline)
        threads = [self._signal_thread, self._drain_thread, self._accept_thread,
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

    def _begin_shutdown(self, grace_seconds: float, reason: str) -> Tuple[int, bool]:
        in_flight = self._counters.in_flight
        first = self._shutdown.request(grace_seconds)
        if first:
            logger.info(
                "shutting down (%s): %d call(s) in flight, grace %.3fs",
                reason, in_flight, max(0.0, grace_seconds),
            )
        else:
            self._counters.wake()  # the drain re-reads its (maybe shorter) deadline
        return in_flight, first

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
                self._close_adapter()
            except Exception:
                logger.exception("adapter close() failed")
            # Calls count as finished just before their answer is written,
            # under the connection's write lock: let those writes end.
            with self._conn_lock:
                connections = list(self._connections)
            for conn in connections:
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

    def _run_blocking(self, awaitable: Awaitable[Any]) -> Any:
        """Run a coroutine (an async session hook) from a thread that is not
        the loop's: on the loop when it runs, else with asyncio.run."""
        loop = self._loop
        if loop is not None and loop.is_running():
            return asyncio.run_coroutine_threadsafe(_await(awaitable), loop).result()
        return asyncio.run(_await(awaitable))

    def _close_adapter(self) -> None:
        loop = self._loop
        if loop is not None and loop.is_running():
            asyncio.run_coroutine_threadsafe(close_adapter(self.adapter), loop).result()
        else:
            asyncio.run(close_adapter(self.adapter))

    def _stop(self) -> None:
        self._closing = True
        listener = self._listener
        if listener is not None:
            try:
                listener.shutdown(socket.SHUT_RDWR)  # wakes accept(); that thread closes it
            except OSError:
                pass
        self._unlink_socket()
        with self._conn_lock:
            connections = list(self._connections)
        for conn in connections:
            conn.interrupt()
        self._threads.stop()
        loop = self._loop
        if loop is not None:
            try:
                loop.call_soon_threadsafe(loop.stop)
            except RuntimeError:
                pass
        self._stopped.set()

    def _unlink_socket(self) -> None:
        path = self._socket_path
        if not path:
            return
        try:
            st = os.lstat(path)
            if stat.S_ISSOCK(st.st_mode) and (st.st_dev, st.st_ino) == self._socket_ino:
                os.unlink(path)
        except OSError:
            pass

    # ---------------------------------------------------------- connections

    def _accept_loop(self) -> None:
        listener = self._listener
        assert listener is not None
        try:
            while True:
                try:
                    sock, _ = listener.accept()
                except OSError as exc:
                    if self._closing:
                        return
                    if exc.errno in (errno.ECONNABORTED, errno.EPROTO):
                        continue
                    if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                        logger.error("accept failed: %s; retrying", exc)
                        time.sleep(0.05)
                        continue
                    logger.error("accept failed: %s; no longer accepting connections", exc)
                    return
                if self._closing:
                    sock.close()
                    return
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
        finally:
            listener.close()

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
            frame_type, _flags, stream, body = frame
            if frame_type == _EXECUTE:
                on_execute(conn, stream, body)
            elif frame_type == _CREDIT:
                self._on_credit(conn, stream, body)
            elif frame_type == _CANCEL:
                self._on_cancel(conn, stream, body)
            elif frame_type == _REQUEST:
                self._on_request(conn, stream, body)
            elif frame_type == _CALLBACK_RESULT or frame_type == _CALLBACK_ERROR:
                conn.callbacks.answer(frame_type, _flags, stream, body)
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

    # ---------------------------------------------------------------- calls

    def _on_execute(self, conn: Connection, stream: int, body: memoryview) -> None:
        if stream in conn.calls:
            raise wire.WireError(f"EXECUTE on stream {stream}, which has a call in flight")
        try:
            call = wire.parse_execute(body)
        except wire.JSONLimitError as exc:  # the call's own bad arguments: answer it alone
            self._counters.count_served()
            self._send_outcome(conn, stream, "", CallError(
                ErrorKind.BAD_ARGUMENTS, f"the call's arguments {exc.problem}"))
            return
        ctx: Optional[CallContext] = None
        try:
            if self._shutdown.requested:
                self._send_outcome(conn, stream, call.tool, CallError(
                    ErrorKind.SHUTTING_DOWN, "the worker is shutting down and takes no new calls"))
                return
            deadline_ns = call.deadline_ns
            if deadline_ns:
                remaining = deadline_ns - time.time_ns()
                if remaining <= 0:
                    self._send_outcome(conn, stream, call.tool, CallError(
                        ErrorKind.DEADLINE_EXCEEDED,
                        f"the deadline passed {-remaining / 1e9:.3f}s before tool "
                        f"{call.tool!r} could start",
                    ))
                    return
            window = call.window
            try:
                tool = find_tool(self.adapter, call.tool)
                if window is None:
                    if tool.is_generator:
                        raise stream_only_error(tool)
                elif not 1 <= window <= wire.MAX_U32:
                    raise CallError(
                        ErrorKind.BAD_ARGUMENTS,
                        f"a streaming call's window ('stream') must be 1 to {wire.MAX_U32} "
                        f"chunks, got {window}",
                    )
                args, kwargs = prepare_decoded_call(tool, call.args, call.binary)
            except CallError as err:
                self._counters.count_served()
                self._send_outcome(conn, stream, call.tool, err)
                return
            ctx = CallContext(conn, stream, call.request_id, tool.name, deadline_ns)
            if window is not None:
                ctx.credit = StreamCredit(window)
                if tool.is_async:
                    ctx.credit.bind_loop(self._loop)  # type: ignore[arg-type]
                with self._streams_lock:
                    self._open_streams += 1
            if call.session:
                ctx.session = self._sessions.join(call.session)
            if self._debug:
                ctx.started = time.monotonic()
            conn.calls[stream] = ctx
            self._counters.start()
            if tool.is_async:
                self._loop.call_soon_threadsafe(  # type: ignore[union-attr]
                    self._start_task, ctx, tool, args, kwargs)
            else:
                self._threads.put((ctx, tool, args, kwargs))
        except Exception as exc:  # our own bug: answer the call, keep the connection
            logger.exception("internal error starting tool %r", call.tool)
            err = error_from_exception(exc, kind=ErrorKind.INTERNAL)
            err.message = f"internal worker error: {err.message}"
            if ctx is None:
                self._send_outcome(conn, stream, call.tool, err)
            else:
                self._finish_queued(ctx, err)

    def _run_sync_call(
        self, item: Tuple[CallContext, Tool, Tuple[Any, ...], Dict[str, Any]]
    ) -> None:
        if item[1].thread_safe:
            self._run_sync_item(item)
            return
        gate = self._serial[item[1].name]
        next_item: Optional[Tuple[CallContext, Tool, Tuple[Any, ...], Dict[str, Any]]] = item
        if not gate.enter(item):
            return  # parked: the thread ending the tool's running call runs it
        while next_item is not None:
            try:
                self._run_sync_item(next_item)
            except BaseException:  # the call answers itself; this is a bug
                logger.exception("internal error in a tool thread")
            next_item = gate.leave()
            if next_item is not None and self._threads.stopping:
                return  # stopped: queued calls are dropped

    def _run_sync_item(
        self, item: Tuple[CallContext, Tool, Tuple[Any, ...], Dict[str, Any]]
    ) -> None:
        ctx, tool, args, kwargs = item
        with ctx.lock:
            if ctx.state != QUEUED:
                return  # cancelled while queued; already answered
            ctx.state = RUNNING
        if ctx.deadline_ns and time.time_ns() >= ctx.deadline_ns:
            outcome: Outcome = CallError(
                ErrorKind.DEADLINE_EXCEEDED,
                f"the deadline passed while tool {tool.name!r} waited for a free thread"
                + ("" if tool.thread_safe else " or for its previous call to end "
                   "(thread_safe=False: one call at a time)"),
            )
        else:
            self._counters.begin_run()
            ctx.ran = True
            if ctx.credit is not None or ctx.session is not None:
                outcome = self._run_sync_extra(ctx, tool, args, kwargs)
            else:
                outcome = run_sync(tool, args, kwargs, ctx)
                if (
                    type(outcome) is EncodedResult
                    and len(outcome.data) <= self.max_message_bytes
                    and not self._debug
                ):  # the common case, in short: _complete() / _reply()
                    ctx.state = DONE
                    conn = ctx.conn
                    conn.calls.pop(ctx.stream, None)
                    conn.send(_RESULT, ctx.stream, outcome.data,
                              _FLAG_RAW if outcome.raw else 0, self._counters.finish_run)
                    return
        self._complete(ctx, outcome)

    def _run_sync_extra(
        self, ctx: CallContext, tool: Tool, args: Tuple[Any, ...], kwargs: Dict[str, Any]
    ) -> Outcome:
        """A sync call of a session (its start hook first) or a stream."""
        if ctx.session is not None:
            err = self._sessions.open_sync(ctx)
            if err is not None:
                return err
        if ctx.credit is not None:
            return run_sync_stream(tool, args, kwargs, ctx, self._chunk_sender(ctx),
                                   self.max_message_bytes)
        return run_sync(tool, args, kwargs, ctx)

    @staticmethod
    def _chunk_sender(ctx: CallContext) -> Callable[[EncodedResult], bool]:
        send, stream = ctx.conn.send, ctx.stream

        def send_chunk(chunk: EncodedResult) -> bool:
            return send(_CHUNK, stream, chunk.data, _FLAG_RAW if chunk.raw else 0)

        return send_chunk

    def _start_task(
        self, ctx: CallContext, tool: Tool, args: Tuple[Any, ...], kwargs: Dict[str, Any]
    ) -> None:
        try:
            task = asyncio.get_running_loop().create_task(
                self._run_async_call(ctx, tool, args, kwargs))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        except Exception as exc:
            logger.exception("internal error starting tool %r", tool.name)
            self._finish_queued(ctx, error_from_exception(exc, kind=ErrorKind.INTERNAL))

    async def _run_async_call(
        self, ctx: CallContext, tool: Tool, args: Tuple[Any, ...], kwargs: Dict[str, Any]
    ) -> None:
        with ctx.lock:
            if ctx.state != QUEUED:
                return
            ctx.state = RUNNING
            ctx.task = asyncio.current_task()
        outcome: Outcome
        try:
            if ctx.deadline_ns:
                remaining = (ctx.deadline_ns - time.time_ns()) / 1e9
                if remaining <= 0:
                    outcome = CallError(
                        ErrorKind.DEADLINE_EXCEEDED,
                        f"the deadline passed before tool {tool.name!r} could start",
                    )
                else:
                    self._counters.begin_run()
                    ctx.ran = True
                    try:
                        outcome = await asyncio.wait_for(
                            self._run_async_tool(ctx, tool, args, kwargs), remaining)
                    except asyncio.TimeoutError:
                        logger.warning("tool %r passed its deadline and was cancelled", tool.name)
                        outcome = CallError(
                            ErrorKind.DEADLINE_EXCEEDED,
                            f"tool {tool.name!r} did not finish within its deadline "
                            f"({remaining:.3f}s); it was cancelled",
                        )
            else:
                self._counters.begin_run()
                ctx.ran = True
                outcome = await self._run_async_tool(ctx, tool, args, kwargs)
        except asyncio.CancelledError:
            outcome = CallError(
                ErrorKind.CANCELLED,
                f"tool {tool.name!r} was cancelled: the caller gave up on the call",
            )
        except Exception as exc:  # run_async returns errors; this is our own bug
            logger.exception("internal error running tool %r", tool.name)
            outcome = error_from_exception(exc, kind=ErrorKind.INTERNAL)
        self._complete(ctx, outcome)

    async def _run_async_tool(
        self, ctx: CallContext, tool: Tool, args: Tuple[Any, ...], kwargs: Dict[str, Any]
    ) -> Outcome:
        """run_async, one call at a time for a ``thread_safe=False`` tool."""
        if tool.thread_safe:
            if ctx.credit is None and ctx.session is None:
                return await run_async(tool, args, kwargs, ctx)
            return await self._run_async_extra(ctx, tool, args, kwargs)
        gate = self._async_serial[tool.name]
        await gate.acquire()
        try:
            return await self._run_async_extra(ctx, tool, args, kwargs)
        finally:
            gate.release()

    async def _run_async_extra(
        self, ctx: CallContext, tool: Tool, args: Tuple[Any, ...], kwargs: Dict[str, Any]
    ) -> Outcome:
        """An async call, perhaps of a session (its start hook first) or a stream."""
        if ctx.session is not None:
            err = await self._sessions.open_async(ctx)
            if err is not None:
                return err
        if ctx.credit is not None:
            return await run_async_stream(tool, args, kwargs, ctx, self._chunk_sender(ctx),
                                          self.max_message_bytes)
        return await run_async(tool, args, kwargs, ctx)

    def _complete(self, ctx: CallContext, outcome: Outcome) -> None:
        """A started call is over: answer it (counted finished just before)."""
        ctx.state = DONE
        if self._debug:
            logger.debug(
                "request %s tool %r: %s in %.3fs", ctx.request_id, ctx.tool,
                "ok" if type(outcome) is EncodedResult else outcome.kind.name,  # type: ignore[union-attr]
                time.monotonic() - ctx.started,
            )
        self._reply(ctx, outcome)

    def _finish_queued(self, ctx: CallContext, err: CallError) -> bool:
        """Answer a call that has not started with ``err``; False if it had."""
        with ctx.lock:
            if ctx.state != QUEUED:
                return False
            ctx.state = DONE
        self._reply(ctx, err)
        return True

    def _reply(self, ctx: CallContext, outcome: Outcome) -> None:
        """Count a handed-off call finished and send its answer (once per call)."""
        conn = ctx.conn
        conn.calls.pop(ctx.stream, None)
        try:
            frame_type, body, flags = self._encode_outcome(ctx.tool, outcome)
        except Exception as exc:  # never leave a call unanswered
            logger.exception("internal error answering tool %r", ctx.tool)
            frame_type, body, flags = _ERROR, self._error_body(CallError(
                ErrorKind.INTERNAL, f"internal worker error: {type(exc).__name__}")), 0
        counters = self._counters
        conn.send(frame_type, ctx.stream, body, flags,
                  counters.finish_run if ctx.ran else counters.finish)
        if ctx.session is not None:
            self._sessions.leave(ctx.session)
        if ctx.credit is not None:
            with self._streams_lock:
                self._open_streams -= 1

    def _send_outcome(self, conn: Connection, stream: int, tool: str, outcome: Outcome) -> None:
        """Answer a call the reader thread refused or failed at once."""
        frame_type, body, flags = self._encode_outcome(tool, outcome)
        conn.send(frame_type, stream, body, flags)

    def _encode_outcome(self, tool: str, outcome: Outcome) -> Tuple[int, bytes, int]:
        """``(frame type, body, flags)`` of a call's answer."""
        if type(outcome) is EncodedResult:
            data = outcome.data
            if len(data) <= self.max_message_bytes:
                return _RESULT, data, (_FLAG_RAW if outcome.raw else 0)
            logger.warning(
                "tool %r returned a %d-byte result, over the %d-byte message limit",
                tool, len(data), self.max_message_bytes,
            )
            outcome = CallError(
                ErrorKind.TOO_LARGE,
                f"tool {tool!r} returned a result of {len(data)} bytes; the message limit "
                f"(SNAKEPIT_MAX_MESSAGE_BYTES) is {self.max_message_bytes} bytes",
            )
        return _ERROR, self._error_body(outcome), 0  # type: ignore[arg-type]

    def _error_body(self, err: CallError) -> bytes:
        body = wire.dumps({
            "kind": err.kind.name,
            "type": err.type_name,
            "message": err.message,
            "traceback": err.traceback_text,
        })
        # An enormous message or traceback: keep what fits, the traceback's end.
        budget = self.max_message_bytes // 4
        while len(body) > self.max_message_bytes and budget >= 16:
            message = err.message
            traceback_text = err.traceback_text
            if len(message) > budget:
                message = message[:budget] + f"... ({len(message) - budget} characters cut)"
            if len(traceback_text) > budget:
                traceback_text = (f"... ({len(traceback_text) - budget} characters cut) ...\n"
                                  + traceback_text[-budget:])
            body = wire.dumps({
                "kind": err.kind.name, "type": err.type_name[:budget],
                "message": message, "traceback": traceback_text,
            })
            budget //= 2
        return body

    def _on_cancel(self, conn: Connection, stream: int, body: memoryview) -> None:
        if len(body):
            raise wire.WireError(f"CANCEL frame with a {len(body)}-byte body; it must be empty")
        ctx = conn.calls.get(stream)
        if ctx is None:
            return  # already answered: nothing to do
        self._cancel(ctx, CallError(
            ErrorKind.CANCELLED, f"the call was cancelled before tool {ctx.tool!r} started"))

    def _cancel(self, ctx: CallContext, err: CallError) -> None:
        """The caller gave up: a queued call is answered with ``err`` and never
        runs; an async tool's task is cancelled (it answers CANCELLED); a
        running sync tool is only flagged (snakepit.checkpoint() raises
        snakepit.Cancelled in it from now on), and answers when it ends."""
        with ctx.lock:
            ctx._cancelled = True
            state = ctx.state
            if state == QUEUED:
                ctx.state = DONE
            task = ctx.task
        if state == QUEUED:
            self._reply(ctx, err)
        elif state == RUNNING:
            if task is not None and self._loop is not None:
                self._loop.call_soon_threadsafe(task.cancel)
            ctx.wake()  # a stream waiting for credit, snakepit.call waiting for its answer

    def _on_credit(self, conn: Connection, stream: int, body: memoryview) -> None:
        n = wire.parse_credit(body)
        ctx = conn.calls.get(stream)
        if ctx is None:
            return  # the stream already ended
        credit = ctx.credit
        if credit is None:
            raise wire.WireError(f"CREDIT on stream {stream}, which is not a streaming call")
        credit.add(n)

    # ------------------------------------------------------------- requests

    def _on_request(self, conn: Connection, stream: int, body: memoryview) -> None:
        request = wire.parse_object(body, "REQUEST")
        op = request.get("op")
        after_reply = None
        try:
            if op == "health":
                reply = wire.dumps(health_payload(not self._shutdown.requested))
            elif op == "stats":
                reply = wire.dumps(stats_payload(self._counters, self.capacity, self._started, self.profile))
            elif op == "describe":
                reply = self._describe
            elif op == "session_end":
                session_id = request.get("session")
                if type(session_id) is not str or not session_id:
                    reply = wire.dumps({
                        "error": f"session_end needs 'session', a non-empty string; got "
                                 f"{session_id!r}"})
                else:
                    # Replied once the session's calls are over and its end
                    # hook ran (_session_idle), never on this thread.
                    self._sessions.request_end(
                        session_id, functools.partial(self._session_idle, conn, stream))
                    return
            elif op == "shutdown":
                grace_ms = request.get("grace_ms", 0)
                if grace_ms is None:
                    grace_ms = 0
                if type(grace_ms) not in (int, float):
                    reply = wire.dumps({"error": f"grace_ms must be a number, got {grace_ms!r}"})
                else:
                    in_flight, first = self._begin_shutdown(grace_ms / 1000.0, "shutdown request")
                    reply = wire.dumps({"in_flight": in_flight})
                    if first:
                        after_reply = self._start_drain
            else:
                reply = wire.dumps({
                    "error": f"unknown op {op!r}; this worker knows {', '.join(wire.OPS)}"
                })
        except Exception as exc:
            logger.exception("internal error answering %r", op)
            reply = wire.dumps({"error": f"internal worker error: {exc}"})
        conn.send(wire.REPLY, stream, reply)
        if after_reply is not None:
            after_reply()  # only now: the drain may close this connection


    # ------------------------------------------------------------- sessions

    def _session_idle(self, conn: Connection, stream: int, session: Optional[Session]) -> None:
        """A session to end has no call left (any thread): run its end hook
        on a tool thread, or on the loop when async, and reply from there."""
        sessions = self._sessions
        if session is None or not session.open or sessions.end_hook is None:
            ended = session is not None and session.open
            if session is not None:
                session.state = {}
            conn.send(wire.REPLY, stream, wire.dumps({"ended": ended, "hook_error": ""}))
            return
        if sessions.end_hook_is_async and self._loop is not None:
            self._loop.call_soon_threadsafe(self._start_end_task, conn, stream, session)
        else:
            self._threads.put(functools.partial(self._end_session, conn, stream, session))

    def _end_session(self, conn: Connection, stream: int, session: Session) -> None:
        hook_error = self._sessions.end_sync(session)
        conn.send(wire.REPLY, stream, wire.dumps({"ended": True, "hook_error": hook_error}))

    def _start_end_task(self, conn: Connection, stream: int, session: Session) -> None:
        task = asyncio.get_running_loop().create_task(self._end_session_async(conn, stream, session))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _end_session_async(self, conn: Connection, stream: int, session: Session) -> None:
        hook_error = await self._sessions.end_async(session)
        conn.send(wire.REPLY, stream, wire.dumps({"ended": True, "hook_error": hook_error}))


async def _await(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


def _note_signal(signum: int, frame: Any) -> None:
    """The Python-level handler: nothing to do here (see install_signal_handlers)."""


def _peer_message(body: memoryview) -> str:
    try:
        return str(wire.parse_object(body, "PROTOCOL_ERROR").get("message", ""))
    except wire.WireError:
        return repr(bytes(body[:200]))
