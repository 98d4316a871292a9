"""The gRPC (grpc.aio) server that implements snakepit.v1.Worker.

Unary calls (``Execute``) run sync tools on a thread pool of ``capacity``
threads and async tools on the server's event loop. ``ExecuteStream`` runs a
streaming call the same way (a sync generator holds its thread for the whole
stream) and relays its chunks through an asyncio queue; ``StreamControl``
credits and cancel reach the producer from a task reading the RPC's input
(snakepit.streams). ``Callbacks`` is the runtime's channel for the
callbacks tools make (snakepit.call / acall): the most recent open one is
used (GrpcCallbacks). ``EndSession`` ends a session (snakepit.sessions).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import os
import signal
import threading
import time
from typing import Any, AsyncIterator, Awaitable, Callable, Dict, List, Optional, Tuple

import grpc

from snakepit.adapter import LoadedAdapter, Tool, close_adapter
from snakepit.callbacks import (
    CONNECTION_CLOSED,
    TOO_LARGE,
    UNAVAILABLE,
    CallbackError,
    CallbackTable,
    PendingCallback,
    decode_result,
    wait_async,
    wait_sync,
)
from snakepit.cancellation import CallContext
from snakepit.codec import CallError, EncodedResult, ErrorKind, error_from_exception
from snakepit.execution import (
    AsyncSerialGate,
    Outcome,
    find_tool,
    prepare_call,
    run_async,
    run_sync,
    serial_gates,
    stream_only_error,
)
from snakepit.service import (  # noqa: F401 - re-exported for callers of this module
    DEFAULT_MAX_MESSAGE_BYTES,
    MAX_SOCKET_PATH_BYTES,
    SIGNAL_GRACE_SECONDS,
    Counters,
    ShutdownState,
    WorkerCore,
    check_socket_path,
    describe_payload,
    free_threaded_build,
    gil_enabled,
    health_payload,
    max_message_bytes_from_env,
    rss_bytes,
    stats_payload,
    token_matches,
)
from snakepit.sessions import Session, SessionRegistry
from snakepit.streams import StreamCredit, run_async_stream, run_sync_stream
from snakepit.v1 import worker_pb2, worker_pb2_grpc

logger = logging.getLogger(__name__)

TOKEN_METADATA_KEY = "x-snakepit-token"
#: How long server.stop() lets the last replies (e.g. Shutdown's) go out.
_STOP_GRACE_SECONDS = 0.5
_DRAIN_POLL_SECONDS = 0.01
#: Room a chunk leaves in a StreamMessage for the field's tag and length.
_CHUNK_OVERHEAD = 16
#: How long a callback waits for the runtime's Callbacks stream to open (it
#: opens one right after connecting; a call may arrive first).
_CALLBACKS_OPEN_GRACE = 2.0


def _error_info(err: CallError) -> worker_pb2.ErrorInfo:
    return worker_pb2.ErrorInfo(
        kind=worker_pb2.ErrorInfo.Kind.Value(err.kind.value),
        type=_sendable(err.type_name),
        message=_sendable(err.message),
        traceback=_sendable(err.traceback_text),
    )


def _sendable(text: str) -> str:
    """``text`` as a protobuf string field can carry it: a lone surrogate
    (JSON's ``"\\ud800"`` decodes to one, and may reach an error message as
    an argument's name or value) is written as its escape, ``\\ud800``."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def execute_reply(request_id: str, outcome: Outcome) -> worker_pb2.ExecuteReply:
    if isinstance(outcome, EncodedResult):
        if outcome.raw:
            return worker_pb2.ExecuteReply(request_id=request_id, result_raw=outcome.data)
        return worker_pb2.ExecuteReply(request_id=request_id, result_json=outcome.data)
    return worker_pb2.ExecuteReply(request_id=request_id, error=_error_info(outcome))


def stream_error(err: CallError) -> worker_pb2.StreamMessage:
    return worker_pb2.StreamMessage(error=_error_info(err))


_STREAM_END = worker_pb2.StreamMessage(end=True)


def tool_info(payload: Dict[str, Any]) -> worker_pb2.ToolInfo:
    """A ToolInfo from service.tool_payload()'s dict."""
    return worker_pb2.ToolInfo(
        name=payload["name"],
        doc=payload["doc"],
        is_async=payload["is_async"],
        params=[worker_pb2.ParamInfo(**p) for p in payload["params"]],
    )


class _CallbackStream:
    """One open ``Callbacks`` RPC: the requests to send, the callbacks
    waiting for their replies."""

    __slots__ = ("table", "outgoing")

    def __init__(self) -> None:
        self.table = CallbackTable()
        #: CallbackRequest messages to send; None ends the RPC.
        self.outgoing: "asyncio.Queue[Optional[worker_pb2.CallbackRequest]]" = asyncio.Queue()


class GrpcCallbacks:
    """The callback channel of a gRPC worker (``CallContext.callbacks``).

    The runtime opens a ``Callbacks`` RPC once per connection; the most
    recent one still open carries new callbacks (a callback already sent is
    answered on its own). Without one, a callback waits up to
    ``_CALLBACKS_OPEN_GRACE`` for one to open (the runtime opens it right
    after connecting, but a call may come first), then raises
    CallbackError(UNAVAILABLE). ``call`` from a tool thread hands the request
    to the event loop and blocks; ``acall`` awaits on the loop.
    """

    def __init__(self, max_message_bytes: int) -> None:
        self._lock = threading.Lock()
        self._opened = threading.Condition(self._lock)
        self._streams: List[_CallbackStream] = []
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._max_bytes = max_message_bytes

    def open(self) -> _CallbackStream:
        """A Callbacks RPC started (on the loop)."""
        stream = _CallbackStream()
        with self._lock:
            self._loop = asyncio.get_running_loop()
            self._streams.append(stream)
            self._opened.notify_all()
        return stream

    def close(self, stream: _CallbackStream, reason: str) -> None:
        """A Callbacks RPC ended: its waiting callbacks fail (CONNECTION_CLOSED)."""
        with self._lock:
            try:
                self._streams.remove(stream)
            except ValueError:
                pass
        stream.table.close(reason)

    @property
    def open_streams(self) -> int:
        with self._lock:
            return len(self._streams)

    def _wait_open(self, ctx: CallContext) -> None:
        """From a tool thread: wait (a little) for a Callbacks stream."""
        end = time.monotonic() + _CALLBACKS_OPEN_GRACE
        with self._lock:
            while not self._streams and not ctx.cancelled:
                left = end - time.monotonic()
                if left <= 0:
                    return
                self._opened.wait(min(left, 0.05))

    async def _wait_open_async(self, ctx: CallContext) -> None:
        end = time.monotonic() + _CALLBACKS_OPEN_GRACE
        while time.monotonic() < end and not ctx.cancelled:
            with self._lock:
                if self._streams:
                    return
            await asyncio.sleep(0.01)

    def _prepare(
        self, ctx: CallContext, name: str, args_json: bytes, binary: Dict[str, bytes],
        pending: PendingCallback,
    ) -> Tuple[asyncio.AbstractEventLoop, _CallbackStream, worker_pb2.CallbackRequest]:
        with self._lock:
            stream = self._streams[-1] if self._streams else None
            loop = self._loop
        if stream is None or loop is None:
            raise CallbackError(
                UNAVAILABLE, "the runtime has no Callbacks stream open to this worker (it opens "
                f"one per connection; none opened within {_CALLBACKS_OPEN_GRACE:g}s)", name)
        request = worker_pb2.CallbackRequest(
            name=name, parent_request_id=ctx.request_id, args_json=args_json,
            binary_args=binary)
        size = request.ByteSize() + 16  # the id, still to come
        if size > self._max_bytes:
            raise CallbackError(
                TOO_LARGE, f"its request takes {size} bytes; the message limit "
                f"(SNAKEPIT_MAX_MESSAGE_BYTES) is {self._max_bytes} bytes; nothing was sent", name)
        request.id = stream.table.add(pending)
        return loop, stream, request

    def call(self, ctx: CallContext, name: str, args_json: bytes,
             binary: Dict[str, bytes]) -> Any:
        pending = PendingCallback(name)
        self._wait_open(ctx)
        loop, stream, request = self._prepare(ctx, name, args_json, binary, pending)
        forget = functools.partial(stream.table.pop, request.id)
        try:
            loop.call_soon_threadsafe(stream.outgoing.put_nowait, request)
        except RuntimeError:  # the loop is closed: the worker is exiting
            forget()
            raise CallbackError(CONNECTION_CLOSED, "the worker is stopping", name) from None
        return wait_sync(ctx, pending, forget)

    async def acall(self, ctx: CallContext, name: str, args_json: bytes,
                    binary: Dict[str, bytes]) -> Any:
        pending = PendingCallback(name, asyncio.get_running_loop())
        await self._wait_open_async(ctx)
        _loop, stream, request = self._prepare(ctx, name, args_json, binary, pending)
        stream.outgoing.put_nowait(request)
        return await wait_async(pending, functools.partial(stream.table.pop, request.id))

    @staticmethod
    def answer(stream: _CallbackStream, reply: worker_pb2.CallbackReply) -> None:
        """A CallbackReply arrived (on the loop): hand it to its waiter. A
        reply nobody waits for any more (its call was cancelled) is dropped.
        A reply without an outcome is a None result."""
        pending = stream.table.pop(reply.id)
        if pending is None:
            logger.debug("dropped the reply to callback %d, which nobody waits for any more",
                         reply.id)
            return
        which = reply.WhichOneof("outcome")
        if which == "error":
            pending.resolve(error=CallbackError(
                reply.error.kind or "HANDLER_ERROR", reply.error.message, pending.name))
        elif which == "result_raw":
            pending.resolve(bytes(reply.result_raw))
        else:
            try:
                pending.resolve(decode_result(pending.name, reply.result_json, False))
            except CallbackError as err:
                pending.resolve(error=err)


class WorkerServer(WorkerCore):
    """Owns the grpc.aio server, the tool thread pool and the shutdown sequence."""

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
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=capacity, thread_name_prefix="snakepit-tool"
        )
        # thread_safe=False tools: one call at a time, waiting on the event
        # loop (sync and async alike), so a waiting call holds no thread.
        sync_gates, async_gates = serial_gates(adapter.tools)
        self._serial: Dict[str, AsyncSerialGate] = {**async_gates}
        self._serial.update((name, AsyncSerialGate()) for name in sync_gates)
        self._tool_infos: List[worker_pb2.ToolInfo] = [
            tool_info(payload) for payload in describe_payload(adapter)["tools"]
        ]
        self._server: Optional[grpc.aio.Server] = None
        self._shutdown_task: Optional["asyncio.Task[None]"] = None
        self._stopped: Optional[asyncio.Event] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        #: Where the tools' callbacks go.
        self.callbacks = GrpcCallbacks(max_message_bytes)
        self._sessions = SessionRegistry(adapter, self._run_blocking)
        self._session_tasks: "set[asyncio.Task[Any]]" = set()
        self._streams_lock = threading.Lock()
        self._open_streams = 0  # streaming calls not over

    # ------------------------------------------------------------ lifecycle

    async def start(self, socket_path: str) -> None:
        """Bind the Unix socket (mode 0600) and start serving."""
        check_socket_path(socket_path)
        self._stopped = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        options = [
            ("grpc.max_send_message_length", self.max_message_bytes),
            ("grpc.max_receive_message_length", self.max_message_bytes),
        ]
        server = grpc.aio.server(options=options)
        worker_pb2_grpc.add_WorkerServicer_to_server(WorkerServicer(self), server)
        old_umask = os.umask(0o177)
        try:
            server.add_insecure_port("unix:" + socket_path)
            await server.start()
        finally:
            os.umask(old_umask)
        try:
            os.chmod(socket_path, 0o600)
        except OSError:
            pass
        self._server = server

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT start a graceful shutdown (5 s grace)."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(
                    signum, self.request_shutdown, SIGNAL_GRACE_SECONDS, signal.Signals(signum).name
                )
            except (NotImplementedError, RuntimeError, ValueError):  # not on this platform
                logger.debug("cannot install a handler for %s", signum)

    def request_shutdown(self, grace_seconds: float, reason: str = "Shutdown") -> int:
        """Stop taking calls; drain in the background. Returns calls in flight now.

        Calling again only ever shortens the grace period.
        """
        in_flight = self._counters.in_flight
        loop = asyncio.get_running_loop()
        if self._shutdown.request(grace_seconds):
            logger.info(
                "shutting down (%s): %d call(s) in flight, grace %.3fs",
                reason, in_flight, max(0.0, grace_seconds),
            )
            self._shutdown_task = loop.create_task(self._drain_and_stop())
        return in_flight

    async def _drain_and_stop(self) -> None:
        try:
            while self._counters.in_flight > 0 and time.monotonic() < self._shutdown.deadline():
                await asyncio.sleep(_DRAIN_POLL_SECONDS)
            left = self._counters.in_flight
            if left:
                logger.warning("grace period over with %d call(s) still running", left)
            for session in self._sessions.take_all():
                if session.open:  # on the loop, as close() is
                    await self._sessions.end_async(session)
            try:
                await close_adapter(self.adapter)
            except Exception:
                logger.exception("adapter close() failed")
            if self._server is not None:
                await self._server.stop(_STOP_GRACE_SECONDS)
            # Stopping cancelled the streams still running: let their
            # generators be closed (their finally blocks run) before exiting.
            stream_deadline = time.monotonic() + _STOP_GRACE_SECONDS
            while (self._open_streams and self._counters.in_flight
                   and time.monotonic() < stream_deadline):
                await asyncio.sleep(_DRAIN_POLL_SECONDS)
        except Exception:
            logger.exception("error during shutdown")
        finally:
            self._executor.shutdown(wait=False, cancel_futures=True)
            if self._stopped is not None:
                self._stopped.set()

    async def wait_stopped(self) -> None:
        """Return once a requested shutdown has completed."""
        if self._stopped is None:
            raise RuntimeError("server not started")
        await self._stopped.wait()

    # ---------------------------------------------------------------- calls

    def authorized(self, context: grpc.aio.ServicerContext) -> bool:
        supplied: Any = None
        for key, value in context.invocation_metadata() or ():
            if key == TOKEN_METADATA_KEY:
                supplied = value
        return token_matches(supplied, self._token)

    async def execute(
        self, request: worker_pb2.ExecuteRequest, rpc_deadline_ns: int = 0
    ) -> worker_pb2.ExecuteReply:
        """Run one call. ``rpc_deadline_ns``: the RPC's own deadline (Unix
        nanoseconds, 0 for none); with the request's, it bounds the call's
        snakepit.current_call().deadline."""
        request_id = request.request_id
        if self._shutdown.requested:
            return execute_reply(
                request_id,
                CallError(ErrorKind.SHUTTING_DOWN, "the worker is shutting down and takes no new calls"),
            )
        remaining: Optional[float] = None
        if request.deadline_unix_nano:
            remaining = (request.deadline_unix_nano - time.time_ns()) / 1e9
            if remaining <= 0:
                return execute_reply(
                    request_id,
                    CallError(
                        ErrorKind.DEADLINE_EXCEEDED,
                        f"the deadline passed {-remaining:.3f}s before tool "
                        f"{request.tool!r} could start",
                    ),
                )
        started = time.monotonic()
        deadline_ns = request.deadline_unix_nano
        if rpc_deadline_ns and (not deadline_ns or rpc_deadline_ns < deadline_ns):
            deadline_ns = rpc_deadline_ns
        call = CallContext(request_id, request.tool, deadline_ns)
        call.callbacks = self.callbacks
        try:
            outcome = await self._run(request, remaining, call)
        except asyncio.CancelledError:
            call.cancel()  # the RPC was cancelled, or its deadline passed
            raise
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "request %s tool %r: %s in %.3fs",
                request_id, request.tool,
                "ok" if isinstance(outcome, EncodedResult) else outcome.kind.name,
                time.monotonic() - started,
            )
        return execute_reply(request_id, outcome)

    async def _run(
        self, request: worker_pb2.ExecuteRequest, remaining: Optional[float], call: CallContext
    ) -> Outcome:
        self._counters.start()
        handed_off = False
        try:
            try:
                tool = find_tool(self.adapter, request.tool)
                if tool.is_generator:
                    raise stream_only_error(tool)
                args, kwargs = prepare_call(tool, request.args_json, request.binary_args)
            except CallError as err:
                return err
            if request.session_id:
                call.session = self._sessions.join(request.session_id)
            if tool.is_async:
                return await self._run_async(call, tool, args, kwargs, remaining)
            gate = None if tool.thread_safe else self._serial[tool.name]
            if gate is not None:
                waited = time.monotonic()
                if not await gate.acquire(remaining):
                    return CallError(
                        ErrorKind.DEADLINE_EXCEEDED,
                        f"the deadline passed while tool {tool.name!r} waited for its previous "
                        "call to end (thread_safe=False: one call at a time)",
                    )
                if remaining is not None:
                    remaining -= time.monotonic() - waited
                    if remaining <= 0:
                        gate.release()
                        return CallError(
                            ErrorKind.DEADLINE_EXCEEDED,
                            f"the deadline passed before tool {tool.name!r} could start",
                        )
            try:
                future = self._executor.submit(self._run_sync, call, tool, args, kwargs)
            except BaseException:
                if gate is not None:
                    gate.release()
                raise
            if gate is not None:
                # The gate opens when the thread ends the call, not when this
                # coroutine stops waiting for it (deadline, cancellation).
                future.add_done_callback(self._releaser(gate))
            # From here the thread, not this coroutine, ends the call's accounting:
            # a timed-out or cancelled wait must not free a slot still in use.
            future.add_done_callback(lambda _f: self._finish(call))
            handed_off = True
            return await self._wait_sync(call, tool, future, remaining)
        finally:
            if not handed_off:
                self._finish(call)

    def _finish(self, call: CallContext) -> None:
        """A call (or stream) is over: count it, and leave its session."""
        self._counters.finish()
        if call.session is not None:
            self._sessions.leave(call.session)
        if call.credit is not None:
            with self._streams_lock:
                self._open_streams -= 1

    def _run_blocking(self, awaitable: Awaitable[Any]) -> Any:
        """Run a coroutine (an async session hook) on the server's loop from
        a tool thread, and wait for it."""
        loop = self._loop
        if loop is None:
            return asyncio.run(_await(awaitable))
        return asyncio.run_coroutine_threadsafe(_await(awaitable), loop).result()

    @staticmethod
    def _releaser(gate: AsyncSerialGate) -> Any:
        loop = asyncio.get_running_loop()

        def release(_future: Any) -> None:
            try:
                loop.call_soon_threadsafe(gate.release)
            except RuntimeError:  # the loop is closed: the worker is exiting
                pass

        return release

    def _run_sync(
        self, call: CallContext, tool: Tool, args: Tuple[Any, ...], kwargs: Dict[str, Any]
    ) -> Outcome:
        self._counters.begin_run()
        try:
            if call.session is not None:
                err = self._sessions.open_sync(call)
                if err is not None:
                    return err
            return run_sync(tool, args, kwargs, call)
        finally:
            self._counters.end_run()

    async def _run_async(
        self, call: CallContext, tool: Tool, args: Tuple[Any, ...], kwargs: Dict[str, Any],
        remaining: Optional[float],
    ) -> Outcome:
        self._counters.begin_run()
        try:
            return await self._run_async_timed(call, tool, args, kwargs, remaining)
        finally:
            self._counters.end_run()

    async def _run_async_tool(
        self, call: CallContext, tool: Tool, args: Tuple[Any, ...], kwargs: Dict[str, Any]
    ) -> Outcome:
        """run_async, one call at a time for a ``thread_safe=False`` tool."""
        if tool.thread_safe:
            return await self._run_async_body(call, tool, args, kwargs)
        gate = self._serial[tool.name]
        await gate.acquire()
        try:
            return await self._run_async_body(call, tool, args, kwargs)
        finally:
            gate.release()

    async def _run_async_body(
        self, call: CallContext, tool: Tool, args: Tuple[Any, ...], kwargs: Dict[str, Any]
    ) -> Outcome:
        """run_async, the session's start hook first."""
        if call.session is not None:
            err = await self._sessions.open_async(call)
            if err is not None:
                return err
        return await run_async(tool, args, kwargs, call)

    async def _run_async_timed(
        self, call: CallContext, tool: Tool, args: Tuple[Any, ...], kwargs: Dict[str, Any],
        remaining: Optional[float],
    ) -> Outcome:
        if remaining is None:
            return await self._run_async_tool(call, tool, args, kwargs)
        try:
            return await asyncio.wait_for(
                self._run_async_tool(call, tool, args, kwargs), remaining)
        except asyncio.TimeoutError:
            call.cancel()
            logger.warning("tool %r passed its deadline and was cancelled", tool.name)
            return CallError(
                ErrorKind.DEADLINE_EXCEEDED,
                f"tool {tool.name!r} did not finish within its deadline ({remaining:.3f}s); "
                "it was cancelled",
            )

    async def _wait_sync(
        self, call: CallContext, tool: Tool, future: "concurrent.futures.Future[Outcome]",
        remaining: Optional[float],
    ) -> Outcome:
        """Wait for a sync tool's thread. The thread cannot be stopped: when
        the RPC is cancelled or the deadline passes, the call is flagged
        cancelled (snakepit.checkpoint() raises in the tool) and its thread
        runs on until the tool returns."""
        wrapped = asyncio.wrap_future(future)
        if remaining is None:
            try:
                return await wrapped
            except asyncio.CancelledError:
                call.cancel()
                raise
        try:
            done, _ = await asyncio.wait({wrapped}, timeout=remaining)
        except asyncio.CancelledError:
            call.cancel()
            wrapped.cancel()
            raise
        if wrapped in done:
            return wrapped.result()
        call.cancel()
        wrapped.cancel()  # drops it if still queued; a running thread cannot be stopped
        logger.warning(
            "tool %r passed its deadline; replying DEADLINE_EXCEEDED while its thread runs on",
            tool.name,
        )
        return CallError(
            ErrorKind.DEADLINE_EXCEEDED,
            f"tool {tool.name!r} did not finish within its deadline ({remaining:.3f}s); "
            "its thread keeps running until the tool returns",
        )

    # -------------------------------------------------------------- streams

    async def execute_stream(
        self, controls: AsyncIterator[worker_pb2.StreamControl],
        write: Callable[[worker_pb2.StreamMessage], Awaitable[None]], rpc_deadline_ns: int = 0,
    ) -> None:
        """Run one ExecuteStream: read its StreamStart, start the producer
        (a tool thread, or a task on this loop), ``write`` its chunks, end
        with exactly one final message (end or error). A cancel, the RPC
        ending (this coroutine is cancelled) and the deadline close the
        generator where it runs; the final message acknowledges a cancel."""
        try:
            first = await controls.__anext__()
        except StopAsyncIteration:
            await write(stream_error(CallError(
                ErrorKind.BAD_ARGUMENTS, "ExecuteStream ended before its StreamStart")))
            return
        if first.WhichOneof("msg") != "start":
            await write(stream_error(CallError(
                ErrorKind.BAD_ARGUMENTS,
                f"the first StreamControl of ExecuteStream must be start, got "
                f"{first.WhichOneof('msg') or 'nothing'}")))
            return
        request, window = first.start.execute, first.start.window
        refusal = self._refusal(request)
        if refusal is not None:
            await write(stream_error(refusal))
            return
        try:
            if window < 1:
                raise CallError(
                    ErrorKind.BAD_ARGUMENTS,
                    f"a streaming call's window must be at least 1 chunk, got {window}")
            tool = find_tool(self.adapter, request.tool)
            args, kwargs = prepare_call(tool, request.args_json, request.binary_args)
        except CallError as err:
            self._counters.count_served()
            await write(stream_error(err))
            return
        deadline_ns = request.deadline_unix_nano
        if rpc_deadline_ns and (not deadline_ns or rpc_deadline_ns < deadline_ns):
            deadline_ns = rpc_deadline_ns
        remaining = (deadline_ns - time.time_ns()) / 1e9 if deadline_ns else None
        call = CallContext(request.request_id, tool.name, deadline_ns)
        call.callbacks = self.callbacks
        call.credit = credit = StreamCredit(window)
        loop = asyncio.get_running_loop()
        out: "asyncio.Queue[Tuple[bool, worker_pb2.StreamMessage]]" = asyncio.Queue()
        send = self._chunk_sender(loop, out)
        if request.session_id:
            call.session = self._sessions.join(request.session_id)
        self._counters.start()
        with self._streams_lock:
            self._open_streams += 1
        task: Optional["asyncio.Task[None]"] = None
        if tool.is_async:
            credit.bind_loop(loop)
            task = loop.create_task(
                self._stream_async(call, tool, args, kwargs, remaining, send, out))
        else:
            self._start_sync_stream(call, tool, args, kwargs, remaining, send, out)
        reader = loop.create_task(self._read_controls(controls, call, task))
        finished = False
        try:
            while True:
                final, message = await out.get()
                if final:
                    finished = True
                elif call.cancelled:
                    continue  # the consumer left: its queued chunks would only be read and dropped
                await write(message)
                if final:
                    return
        finally:
            reader.cancel()
            if not finished:  # the RPC was cancelled or its connection closed
                self._cancel_stream(call, task)

    @staticmethod
    def _chunk_sender(
        loop: asyncio.AbstractEventLoop,
        out: "asyncio.Queue[Tuple[bool, worker_pb2.StreamMessage]]",
    ) -> Callable[[EncodedResult], bool]:
        def send(chunk: EncodedResult) -> bool:
            message = (worker_pb2.StreamMessage(chunk_raw=chunk.data) if chunk.raw
                       else worker_pb2.StreamMessage(chunk_json=chunk.data))
            try:
                loop.call_soon_threadsafe(out.put_nowait, (False, message))
            except RuntimeError:  # the loop is closed: the worker is exiting
                return False
            return True

        return send

    @staticmethod
    def _send_final(
        loop: asyncio.AbstractEventLoop,
        out: "asyncio.Queue[Tuple[bool, worker_pb2.StreamMessage]]", outcome: Outcome,
    ) -> None:
        message = _STREAM_END if type(outcome) is EncodedResult else stream_error(outcome)  # type: ignore[arg-type]
        try:
            loop.call_soon_threadsafe(out.put_nowait, (True, message))
        except RuntimeError:
            pass

    @property
    def _chunk_limit(self) -> int:
        return max(1, self.max_message_bytes - _CHUNK_OVERHEAD)

    def _start_sync_stream(
        self, call: CallContext, tool: Tool, args: Tuple[Any, ...], kwargs: Dict[str, Any],
        remaining: Optional[float], send: Callable[[EncodedResult], bool],
        out: "asyncio.Queue[Tuple[bool, worker_pb2.StreamMessage]]",
    ) -> None:
        loop = asyncio.get_running_loop()
        gate = None if tool.thread_safe else self._serial[tool.name]

        def run() -> None:
            self._counters.begin_run()
            outcome: Outcome
            try:
                if call.cancelled:
                    outcome = CallError(
                        ErrorKind.DEADLINE_EXCEEDED if not call.cancel_requested
                        else ErrorKind.CANCELLED,
                        f"the stream of tool {tool.name!r} was over before it could start")
                elif call.session is not None and (err := self._sessions.open_sync(call)):
                    outcome = err
                else:
                    outcome = run_sync_stream(tool, args, kwargs, call, send, self._chunk_limit)
            except Exception as exc:  # run_sync_stream returns errors; this is our own bug
                logger.exception("internal error running the stream of tool %r", tool.name)
                outcome = error_from_exception(exc, kind=ErrorKind.INTERNAL)
            finally:
                self._counters.end_run()
            self._send_final(loop, out, outcome)

        def done(_future: Any) -> None:
            if gate is not None:
                try:
                    loop.call_soon_threadsafe(gate.release)
                except RuntimeError:
                    pass
            self._finish(call)

        async def submit() -> None:
            # A thread_safe=False tool: wait for its previous call first.
            if gate is not None and not await gate.acquire(remaining):
                self._finish(call)
                self._send_final(loop, out, CallError(
                    ErrorKind.DEADLINE_EXCEEDED,
                    f"the deadline passed while tool {tool.name!r} waited for its previous "
                    "call to end (thread_safe=False: one call at a time)"))
                return
            try:
                future = self._executor.submit(run)
            except BaseException:
                if gate is not None:
                    gate.release()
                self._finish(call)
                raise
            future.add_done_callback(done)

        if gate is None:
            self._executor.submit(run).add_done_callback(done)
        else:
            task = loop.create_task(submit())
            self._session_tasks.add(task)
            task.add_done_callback(self._session_tasks.discard)

    async def _stream_async(
        self, call: CallContext, tool: Tool, args: Tuple[Any, ...], kwargs: Dict[str, Any],
        remaining: Optional[float], send: Callable[[EncodedResult], bool],
        out: "asyncio.Queue[Tuple[bool, worker_pb2.StreamMessage]]",
    ) -> None:
        loop = asyncio.get_running_loop()
        self._counters.begin_run()
        outcome: Outcome
        try:
            body = self._stream_async_body(call, tool, args, kwargs, send)
            if remaining is None:
                outcome = await body
            else:
                try:
                    outcome = await asyncio.wait_for(body, remaining)
                except asyncio.TimeoutError:
                    call.cancel()
                    outcome = CallError(
                        ErrorKind.DEADLINE_EXCEEDED,
                        f"the deadline of the stream of tool {tool.name!r} passed "
                        f"({remaining:.3f}s); the generator was closed")
        except asyncio.CancelledError:
            outcome = CallError(
                ErrorKind.CANCELLED if call.cancel_requested else ErrorKind.DEADLINE_EXCEEDED,
                f"the stream of tool {tool.name!r} was cancelled: the consumer left; the "
                "generator was closed")
        except Exception as exc:  # run_async_stream returns errors; this is our own bug
            logger.exception("internal error running the stream of tool %r", tool.name)
            outcome = error_from_exception(exc, kind=ErrorKind.INTERNAL)
        finally:
            self._counters.end_run()
            self._finish(call)
        self._send_final(loop, out, outcome)

    async def _stream_async_body(
        self, call: CallContext, tool: Tool, args: Tuple[Any, ...], kwargs: Dict[str, Any],
        send: Callable[[EncodedResult], bool],
    ) -> Outcome:
        gate = None if tool.thread_safe else self._serial[tool.name]
        if gate is not None:
            await gate.acquire()
        try:
            if call.session is not None:
                err = await self._sessions.open_async(call)
                if err is not None:
                    return err
            return await run_async_stream(tool, args, kwargs, call, send, self._chunk_limit)
        finally:
            if gate is not None:
                gate.release()

    async def _read_controls(
        self, controls: AsyncIterator[worker_pb2.StreamControl], call: CallContext,
        task: Optional["asyncio.Task[None]"],
    ) -> None:
        """Credits and cancel from the runtime, until its side of the RPC ends."""
        credit: StreamCredit = call.credit
        try:
            async for control in controls:
                which = control.WhichOneof("msg")
                if which == "credit":
                    if control.credit >= 1:
                        credit.add(control.credit)
                    else:
                        logger.warning("ExecuteStream of tool %r: a credit of 0 chunks; ignored",
                                       call.tool)
                elif which == "cancel":
                    if control.cancel:
                        self._cancel_stream(call, task)
                else:
                    logger.warning("ExecuteStream of tool %r: unexpected %s after start; ignored",
                                   call.tool, which or "empty StreamControl")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the RPC broke: nobody consumes the stream any more
            logger.debug("ExecuteStream of tool %r: reading its controls failed: %s",
                         call.tool, exc)
            self._cancel_stream(call, task)

    @staticmethod
    def _cancel_stream(call: CallContext, task: Optional["asyncio.Task[None]"]) -> None:
        """The consumer left: flag the call (a sync generator waiting for
        credit wakes and is closed on its thread) and cancel an async one's task."""
        call.cancel()
        if task is not None and not task.done():
            task.cancel()

    def _refusal(self, request: worker_pb2.ExecuteRequest) -> Optional[CallError]:
        """Why a call cannot start at all (shutting down, deadline passed), or None."""
        if self._shutdown.requested:
            return CallError(ErrorKind.SHUTTING_DOWN,
                             "the worker is shutting down and takes no new calls")
        if request.deadline_unix_nano:
            remaining = (request.deadline_unix_nano - time.time_ns()) / 1e9
            if remaining <= 0:
                return CallError(
                    ErrorKind.DEADLINE_EXCEEDED,
                    f"the deadline passed {-remaining:.3f}s before tool {request.tool!r} "
                    "could start")
        return None

    # ------------------------------------------------------------- sessions

    async def end_session(self, session_id: str) -> worker_pb2.EndSessionReply:
        """EndSession: once the session's calls are over, run its end hook
        (on a tool thread, or this loop when async) and drop its state. The
        end goes on even if the RPC is cancelled meanwhile."""
        task = asyncio.get_running_loop().create_task(self._end_session(session_id))
        self._session_tasks.add(task)
        task.add_done_callback(self._session_tasks.discard)
        ended, hook_error = await asyncio.shield(task)
        return worker_pb2.EndSessionReply(ended=ended, hook_error=hook_error)

    async def _end_session(self, session_id: str) -> Tuple[bool, str]:
        if not session_id:
            return False, ""
        loop = asyncio.get_running_loop()
        idle: "asyncio.Future[Optional[Session]]" = loop.create_future()

        def ready(session: Optional[Session]) -> None:  # any thread
            loop.call_soon_threadsafe(_set_result, idle, session)

        self._sessions.request_end(session_id, ready)
        session = await idle
        if session is None or not session.open:
            if session is not None:
                session.state = {}
            return False, ""
        if self._sessions.end_hook is None:
            session.state = {}
            return True, ""
        if self._sessions.end_hook_is_async:
            return True, await self._sessions.end_async(session)
        return True, await loop.run_in_executor(self._executor, self._sessions.end_sync, session)

    def describe(self) -> worker_pb2.DescribeReply:
        return worker_pb2.DescribeReply(tools=self._tool_infos, adapter=self.adapter.spec)

    def health(self) -> worker_pb2.HealthReply:
        return worker_pb2.HealthReply(**health_payload(not self._shutdown.requested))

    def stats(self) -> worker_pb2.StatsReply:
        return worker_pb2.StatsReply(
            **stats_payload(self._counters, self.capacity, self._started, self.profile))


def _set_result(future: "asyncio.Future[Any]", value: Any) -> None:
    if not future.done():
        future.set_result(value)


async def _await(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


def _rpc_deadline_ns(context: grpc.aio.ServicerContext) -> int:
    """The RPC's deadline in Unix nanoseconds; 0 for none."""
    try:
        left = context.time_remaining()
    except Exception:
        return 0
    if left is None or left != left or left > 10 * 365 * 86400:  # none, NaN, "infinite"
        return 0
    return time.time_ns() + int(max(0.0, left) * 1e9)


class WorkerServicer(worker_pb2_grpc.WorkerServicer):
    """Thin gRPC layer: authenticate, delegate, never leak an exception."""

    def __init__(self, worker: WorkerServer) -> None:
        self._worker = worker

    async def _authorize(self, context: grpc.aio.ServicerContext, method: str) -> None:
        if not self._worker.authorized(context):
            logger.warning("rejected %s call: missing or wrong %s", method, TOKEN_METADATA_KEY)
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                f"missing or wrong {TOKEN_METADATA_KEY} metadata",
            )

    async def Execute(
        self, request: worker_pb2.ExecuteRequest, context: grpc.aio.ServicerContext
    ) -> worker_pb2.ExecuteReply:
        await self._authorize(context, "Execute")
        try:
            return await self._worker.execute(request, _rpc_deadline_ns(context))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.exception("internal error running tool %r", request.tool)
            err = error_from_exception(exc, kind=ErrorKind.INTERNAL)
            err.message = f"internal worker error: {err.message}"
            return execute_reply(request.request_id, err)

    async def ExecuteStream(
        self, request_iterator: AsyncIterator[worker_pb2.StreamControl],
        context: grpc.aio.ServicerContext,
    ) -> None:
        # A coroutine writing with context.write, not an async generator: a
        # cancelled RPC raises CancelledError at once where it waits, so the
        # stream is stopped deterministically (not when a generator is
        # garbage-collected).
        await self._authorize(context, "ExecuteStream")
        try:
            await self._worker.execute_stream(
                request_iterator, context.write, _rpc_deadline_ns(context))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if context.cancelled() or context.done():  # the RPC went away mid-write
                logger.debug("ExecuteStream ended early: %s", exc)
                return
            logger.exception("internal error in ExecuteStream")
            err = error_from_exception(exc, kind=ErrorKind.INTERNAL)
            err.message = f"internal worker error: {err.message}"
            try:
                await context.write(stream_error(err))
            except Exception:
                pass

    async def Callbacks(
        self, request_iterator: AsyncIterator[worker_pb2.CallbackReply],
        context: grpc.aio.ServicerContext,
    ) -> None:
        await self._authorize(context, "Callbacks")
        hub = self._worker.callbacks
        stream = hub.open()
        reader = asyncio.get_running_loop().create_task(
            self._read_callback_replies(request_iterator, stream))
        try:
            # Headers now: once the runtime has them, the stream carries callbacks.
            await context.send_initial_metadata(())
            while True:
                request = await stream.outgoing.get()
                if request is None:
                    return
                await context.write(request)
        finally:
            reader.cancel()
            hub.close(stream, "the runtime's Callbacks stream ended")

    @staticmethod
    async def _read_callback_replies(
        request_iterator: AsyncIterator[worker_pb2.CallbackReply], stream: _CallbackStream
    ) -> None:
        try:
            async for reply in request_iterator:
                GrpcCallbacks.answer(stream, reply)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.debug("Callbacks stream: reading replies failed: %s", exc)
        # The runtime's side ended: it answers nothing more on this stream.
        stream.outgoing.put_nowait(None)

    async def EndSession(
        self, request: worker_pb2.EndSessionRequest, context: grpc.aio.ServicerContext
    ) -> worker_pb2.EndSessionReply:
        await self._authorize(context, "EndSession")
        return await self._worker.end_session(request.session_id)

    async def Describe(
        self, request: worker_pb2.DescribeRequest, context: grpc.aio.ServicerContext
    ) -> worker_pb2.DescribeReply:
        await self._authorize(context, "Describe")
        return self._worker.describe()

    async def Health(
        self, request: worker_pb2.HealthRequest, context: grpc.aio.ServicerContext
    ) -> worker_pb2.HealthReply:
        await self._authorize(context, "Health")
        return self._worker.health()

    async def Stats(
        self, request: worker_pb2.StatsRequest, context: grpc.aio.ServicerContext
    ) -> worker_pb2.StatsReply:
        await self._authorize(context, "Stats")
        try:
            return self._worker.stats()
        except Exception:
            logger.exception("internal error in Stats")
            return worker_pb2.StatsReply(pid=os.getpid())

    async def Shutdown(
        self, request: worker_pb2.ShutdownRequest, context: grpc.aio.ServicerContext
    ) -> worker_pb2.ShutdownReply:
        await self._authorize(context, "Shutdown")
        try:
            in_flight = self._worker.request_shutdown(request.grace_ms / 1000.0, "Shutdown RPC")
        except Exception:
            logger.exception("internal error in Shutdown")
            in_flight = 0
        return worker_pb2.ShutdownReply(in_flight=in_flight)
