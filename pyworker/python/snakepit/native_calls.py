"""The calls of the native transport, from ``EXECUTE`` to their answer
(standard library only).

The connection's reader thread hands each ``EXECUTE``, ``CANCEL`` and
``CREDIT`` to :class:`NativeCalls`. A sync tool's call is queued for the
tool threads (snakepit.native_threads); an async one becomes a task on the
worker's event loop. A ``@tool(thread_safe=False)`` tool runs one call at a
time: a sync call that finds it busy is parked in its SerialGate (holding no
thread) and run next by the thread that ends the running call; an async one
waits for its AsyncSerialGate on the loop.

A call's ``RESULT`` / ``ERROR`` is sent by the thread (or task) that
finished it; the call is counted finished under the connection's write lock
just before its answer is written, so once no call is in flight and each
connection's lock has been taken once, every answer is out.

A session's end (``REQUEST`` ``session_end``) is answered once its calls
are over: its end hook runs on a tool thread (or the loop, when ``async``),
and the ``REPLY`` is sent from there (snakepit.sessions).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from typing import Optional, Set, Tuple

from snakepit import wire
from snakepit.adapter import LoadedAdapter, Tool
from snakepit.codec import CallError, EncodedResult, ErrorKind, error_from_exception
from snakepit.core import Args, Kwargs, WorkerCore
from snakepit.execution import Outcome, find_tool, prepare_decoded_call, run_sync, stream_only_error
from snakepit.native_answers import encode_outcome, error_body
from snakepit.native_conn import DONE, QUEUED, RUNNING, Connection, NativeCall
from snakepit.native_threads import ToolThreads
from snakepit.sessions import Session
from snakepit.streams import SendChunk, StreamCredit

logger = logging.getLogger(__name__)

_RESULT = wire.RESULT
_FLAG_RAW = wire.FLAG_RAW
_CHUNK = wire.CHUNK

#: A sync call queued for the tool threads.
WorkItem = Tuple[NativeCall, Tool, Args, Kwargs]


class NativeCalls(WorkerCore):
    """Starts, runs, cancels and answers the native transport's calls; the
    base of NativeServer, which owns the sockets and the lifecycle."""

    def __init__(
        self,
        adapter: LoadedAdapter,
        token: str,
        capacity: int,
        max_message_bytes: int,
        started_monotonic: Optional[float],
        profile: Optional[str],
    ) -> None:
        super().__init__(adapter, token, capacity, max_message_bytes, started_monotonic, profile)
        # Without thread_safe=False sync tools, skip the gate check per call.
        self._threads = ToolThreads(
            capacity, self._run_sync_call if self._serial else self._run_sync_item)
        self._has_async = any(t.is_async for t in adapter.tools.values())
        self._debug = logger.isEnabledFor(logging.DEBUG)
        self._tasks: Set["asyncio.Task[None]"] = set()

    # ------------------------------------------------------------ arrival

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
        ctx: Optional[NativeCall] = None
        try:
            refusal = self._refusal(call)
            if refusal is not None:
                self._send_outcome(conn, stream, call.tool, refusal)
                return
            try:
                tool, args, kwargs = self._prepare(call)
            except CallError as err:
                self._counters.count_served()
                self._send_outcome(conn, stream, call.tool, err)
                return
            ctx = NativeCall(conn, stream, call.request_id, tool.name, call.deadline_ns)
            self._admit(ctx, call, tool)
            self._counters.start()
            if tool.is_async:
                self._event_loop().call_soon_threadsafe(
                    self._start_task, ctx, tool, args, kwargs)
            else:
                self._threads.put((ctx, tool, args, kwargs))
        except Exception as exc:  # our own bug: answer the call, keep the connection
            logger.exception("internal error starting tool %r", call.tool)
            internal = error_from_exception(exc, kind=ErrorKind.INTERNAL)
            internal.message = f"internal worker error: {internal.message}"
            if ctx is None:
                self._send_outcome(conn, stream, call.tool, internal)
            else:
                self._finish_queued(ctx, internal)

    def _refusal(self, call: wire.ExecuteCall) -> Optional[CallError]:
        """Why a call cannot start at all (shutting down, deadline passed), or None."""
        if self._shutdown.requested:
            return CallError(
                ErrorKind.SHUTTING_DOWN, "the worker is shutting down and takes no new calls")
        if call.deadline_ns:
            remaining = call.deadline_ns - time.time_ns()
            if remaining <= 0:
                return CallError(
                    ErrorKind.DEADLINE_EXCEEDED,
                    f"the deadline passed {-remaining / 1e9:.3f}s before tool "
                    f"{call.tool!r} could start",
                )
        return None

    def _prepare(self, call: wire.ExecuteCall) -> Tuple[Tool, Args, Kwargs]:
        """The call's tool and bound arguments. Raises CallError."""
        tool = find_tool(self.adapter, call.tool)
        window = call.window
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
        return tool, args, kwargs

    def _admit(self, ctx: NativeCall, call: wire.ExecuteCall, tool: Tool) -> None:
        """Register the call on its connection, with its stream's credit and
        its session joined."""
        if call.window is not None:
            ctx.credit = StreamCredit(call.window)
            if tool.is_async:
                ctx.credit.bind_loop(self._event_loop())
            self._stream_opened()
        if call.session:
            ctx.session = self._sessions.join(call.session)
        if self._debug:
            ctx.started = time.monotonic()
        ctx.conn.calls[ctx.stream] = ctx

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        """The loop of the async tools (started with the server when the
        adapter has any)."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("the worker's event loop is not running")
        return loop

    # ----------------------------------------------------------- sync tools

    def _run_sync_call(self, item: WorkItem) -> None:
        """A tool thread's handler when some sync tool is thread_safe=False."""
        if item[1].thread_safe:
            self._run_sync_item(item)
            return
        gate = self._serial[item[1].name]
        next_item: Optional[WorkItem] = item
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

    def _run_sync_item(self, item: WorkItem) -> None:
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
                outcome = self.run_sync_tool(ctx, tool, args, kwargs, self._chunk_sender(ctx))
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

    @staticmethod
    def _chunk_sender(ctx: NativeCall) -> Optional[SendChunk]:
        """How a streaming call sends its chunks; None for a plain call."""
        if ctx.credit is None:
            return None
        send, stream = ctx.conn.send, ctx.stream

        def send_chunk(chunk: EncodedResult) -> bool:
            return send(_CHUNK, stream, chunk.data, _FLAG_RAW if chunk.raw else 0)

        return send_chunk

    # ---------------------------------------------------------- async tools

    def _start_task(self, ctx: NativeCall, tool: Tool, args: Args, kwargs: Kwargs) -> None:
        """On the loop: start an async call's task."""
        try:
            task = asyncio.get_running_loop().create_task(
                self._run_async_call(ctx, tool, args, kwargs))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        except Exception as exc:
            logger.exception("internal error starting tool %r", tool.name)
            self._finish_queued(ctx, error_from_exception(exc, kind=ErrorKind.INTERNAL))

    async def _run_async_call(
        self, ctx: NativeCall, tool: Tool, args: Args, kwargs: Kwargs
    ) -> None:
        with ctx.lock:
            if ctx.state != QUEUED:
                return
            ctx.state = RUNNING
            ctx.task = asyncio.current_task()
        outcome: Outcome
        try:
            outcome = await self._run_async_timed(ctx, tool, args, kwargs)
        except asyncio.CancelledError:
            outcome = CallError(
                ErrorKind.CANCELLED,
                f"tool {tool.name!r} was cancelled: the caller gave up on the call",
            )
        except Exception as exc:  # run_async returns errors; this is our own bug
            logger.exception("internal error running tool %r", tool.name)
            outcome = error_from_exception(exc, kind=ErrorKind.INTERNAL)
        self._complete(ctx, outcome)

    async def _run_async_timed(
        self, ctx: NativeCall, tool: Tool, args: Args, kwargs: Kwargs
    ) -> Outcome:
        """The async tool, within the call's deadline (if any)."""
        send = self._chunk_sender(ctx)
        if not ctx.deadline_ns:
            self._counters.begin_run()
            ctx.ran = True
            return await self.run_async_tool(ctx, tool, args, kwargs, send)
        remaining = (ctx.deadline_ns - time.time_ns()) / 1e9
        if remaining <= 0:
            return CallError(
                ErrorKind.DEADLINE_EXCEEDED,
                f"the deadline passed before tool {tool.name!r} could start",
            )
        self._counters.begin_run()
        ctx.ran = True
        try:
            return await asyncio.wait_for(
                self.run_async_tool(ctx, tool, args, kwargs, send), remaining)
        except asyncio.TimeoutError:
            logger.warning("tool %r passed its deadline and was cancelled", tool.name)
            return CallError(
                ErrorKind.DEADLINE_EXCEEDED,
                f"tool {tool.name!r} did not finish within its deadline "
                f"({remaining:.3f}s); it was cancelled",
            )

    # ------------------------------------------------------------- answers

    def _complete(self, ctx: NativeCall, outcome: Outcome) -> None:
        """A started call is over: answer it (counted finished just before)."""
        ctx.state = DONE
        if self._debug:
            logger.debug(
                "request %s tool %r: %s in %.3fs", ctx.request_id, ctx.tool,
                "ok" if isinstance(outcome, EncodedResult) else outcome.kind.name,
                time.monotonic() - ctx.started,
            )
        self._reply(ctx, outcome)

    def _finish_queued(self, ctx: NativeCall, err: CallError) -> bool:
        """Answer a call that has not started with ``err``; False if it had."""
        with ctx.lock:
            if ctx.state != QUEUED:
                return False
            ctx.state = DONE
        self._reply(ctx, err)
        return True

    def _reply(self, ctx: NativeCall, outcome: Outcome) -> None:
        """Count a handed-off call finished and send its answer (once per call)."""
        conn = ctx.conn
        conn.calls.pop(ctx.stream, None)
        try:
            frame_type, body, flags = encode_outcome(ctx.tool, outcome, self.max_message_bytes)
        except Exception as exc:  # never leave a call unanswered
            logger.exception("internal error answering tool %r", ctx.tool)
            frame_type, body, flags = wire.ERROR, error_body(CallError(
                ErrorKind.INTERNAL, f"internal worker error: {type(exc).__name__}"),
                self.max_message_bytes), 0
        counters = self._counters
        conn.send(frame_type, ctx.stream, body, flags,
                  counters.finish_run if ctx.ran else counters.finish)
        self._call_over(ctx)

    def _send_outcome(self, conn: Connection, stream: int, tool: str, outcome: Outcome) -> None:
        """Answer a call the reader thread refused or failed at once."""
        frame_type, body, flags = encode_outcome(tool, outcome, self.max_message_bytes)
        conn.send(frame_type, stream, body, flags)

    # ------------------------------------------------------ cancel, credit

    def _on_cancel(self, conn: Connection, stream: int, body: memoryview) -> None:
        if len(body):
            raise wire.WireError(f"CANCEL frame with a {len(body)}-byte body; it must be empty")
        ctx = conn.calls.get(stream)
        if ctx is None:
            return  # already answered: nothing to do
        self._cancel(ctx, CallError(
            ErrorKind.CANCELLED, f"the call was cancelled before tool {ctx.tool!r} started"))

    def _cancel(self, ctx: NativeCall, err: CallError) -> None:
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

    # ------------------------------------------------------------- sessions

    def _end_session_request(self, conn: Connection, stream: int, session_id: str) -> None:
        """``REQUEST`` ``session_end``: replied once the session's calls are
        over and its end hook ran (:meth:`_session_idle`), never on the
        reader thread."""
        self._sessions.request_end(session_id, functools.partial(self._session_idle, conn, stream))

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
