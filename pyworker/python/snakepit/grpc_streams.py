"""The streaming calls (``ExecuteStream``) of the gRPC transport (needs grpcio).

A sync generator holds its tool thread for the whole stream, an async one
runs as a task on the loop; either sends its chunks through an asyncio
queue this coroutine relays to the RPC. ``StreamControl`` credits and
cancel reach the producer from a task reading the RPC's input
(snakepit.streams). A cancel, the RPC ending and the deadline close the
generator where it runs; exactly one final message (end or error) ends the
stream.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, AsyncIterator, Awaitable, Callable, Optional, Tuple

from snakepit.adapter import Tool
from snakepit.cancellation import CallContext
from snakepit.codec import CallError, EncodedResult, ErrorKind, error_from_exception
from snakepit.core import Args, Kwargs
from snakepit.execution import Outcome, find_tool, prepare_call
from snakepit.grpc_calls import GrpcCalls, call_deadline_ns
from snakepit.grpc_messages import STREAM_END, stream_error
from snakepit.streams import SendChunk, StreamCredit
from snakepit.v1 import worker_pb2

logger = logging.getLogger(__name__)

#: A stream's messages on their way to the RPC: ``(final, message)``.
StreamOut = asyncio.Queue[Tuple[bool, worker_pb2.StreamMessage]]
#: Writes one message to the RPC.
Write = Callable[[worker_pb2.StreamMessage], Awaitable[None]]


class GrpcStreams(GrpcCalls):
    """Runs the gRPC transport's streaming calls; the base of GrpcServer."""

    async def execute_stream(
        self, controls: AsyncIterator[worker_pb2.StreamControl], write: Write,
        rpc_deadline_ns: int = 0,
    ) -> None:
        """Run one ExecuteStream: read its StreamStart, start the producer
        (a tool thread, or a task on this loop), ``write`` its chunks, end
        with exactly one final message (end or error). A cancel, the RPC
        ending (this coroutine is cancelled) and the deadline close the
        generator where it runs; the final message acknowledges a cancel."""
        start = await _read_start(controls, write)
        if start is None:
            return
        request, window = start.execute, start.window
        refusal = self._refusal(request)
        if refusal is not None:
            await write(stream_error(refusal))
            return
        try:
            tool, args, kwargs = self._prepare_stream(request, window)
        except CallError as err:
            self._counters.count_served()
            await write(stream_error(err))
            return
        deadline_ns = call_deadline_ns(request.deadline_unix_nano, rpc_deadline_ns)
        call = CallContext(request.request_id, tool.name, deadline_ns)
        call.callbacks = self.callbacks
        call.credit = credit = StreamCredit(window)
        loop = asyncio.get_running_loop()
        if tool.is_async:
            credit.bind_loop(loop)
        out: StreamOut = asyncio.Queue()
        if request.session_id:
            call.session = self._sessions.join(request.session_id)
        self._counters.start()
        self._stream_opened()
        task = self._start_producer(call, tool, args, kwargs, _chunk_sender(loop, out), out)
        await self._relay(controls, call, task, out, write)

    def _prepare_stream(
        self, request: worker_pb2.ExecuteRequest, window: int
    ) -> Tuple[Tool, Args, Kwargs]:
        """The stream's tool and bound arguments. Raises CallError."""
        if window < 1:
            raise CallError(
                ErrorKind.BAD_ARGUMENTS,
                f"a streaming call's window must be at least 1 chunk, got {window}")
        tool = find_tool(self.adapter, request.tool)
        args, kwargs = prepare_call(tool, request.args_json, request.binary_args)
        return tool, args, kwargs

    def _start_producer(
        self, call: CallContext, tool: Tool, args: Args, kwargs: Kwargs, send: SendChunk,
        out: StreamOut,
    ) -> Optional["asyncio.Task[None]"]:
        """Start the generator: a task for an async tool (returned), a tool
        thread for a sync one (None)."""
        deadline_ns = call.deadline_ns
        remaining = (deadline_ns - time.time_ns()) / 1e9 if deadline_ns else None
        if tool.is_async:
            return asyncio.get_running_loop().create_task(
                self._stream_async(call, tool, args, kwargs, remaining, send, out))
        self._start_sync_stream(call, tool, args, kwargs, remaining, send, out)
        return None

    async def _relay(
        self, controls: AsyncIterator[worker_pb2.StreamControl], call: CallContext,
        task: Optional["asyncio.Task[None]"], out: StreamOut, write: Write,
    ) -> None:
        """Write the producer's messages to the RPC until the final one,
        reading the runtime's controls meanwhile."""
        reader = asyncio.get_running_loop().create_task(self._read_controls(controls, call, task))
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
                _cancel_stream(call, task)

    def _start_sync_stream(
        self, call: CallContext, tool: Tool, args: Args, kwargs: Kwargs,
        remaining: Optional[float], send: SendChunk, out: StreamOut,
    ) -> None:
        loop = asyncio.get_running_loop()
        gate = self._loop_gate(tool)

        def run() -> None:
            self._counters.begin_run()
            outcome: Outcome
            try:
                if call.cancelled:
                    outcome = CallError(
                        ErrorKind.DEADLINE_EXCEEDED if not call.cancel_requested
                        else ErrorKind.CANCELLED,
                        f"the stream of tool {tool.name!r} was over before it could start")
                else:
                    outcome = self.run_sync_tool(call, tool, args, kwargs, send)
            except Exception as exc:  # run_sync_stream returns errors; this is our own bug
                logger.exception("internal error running the stream of tool %r", tool.name)
                outcome = error_from_exception(exc, kind=ErrorKind.INTERNAL)
            finally:
                self._counters.end_run()
            _send_final(loop, out, outcome)

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
                _send_final(loop, out, CallError(
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
        self, call: CallContext, tool: Tool, args: Args, kwargs: Kwargs,
        remaining: Optional[float], send: SendChunk, out: StreamOut,
    ) -> None:
        loop = asyncio.get_running_loop()
        self._counters.begin_run()
        outcome: Outcome
        try:
            body = self.run_async_tool(call, tool, args, kwargs, send)
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
        _send_final(loop, out, outcome)

    async def _read_controls(
        self, controls: AsyncIterator[worker_pb2.StreamControl], call: CallContext,
        task: Optional["asyncio.Task[None]"],
    ) -> None:
        """Credits and cancel from the runtime, until its side of the RPC ends."""
        credit = call.credit
        assert credit is not None
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
                        _cancel_stream(call, task)
                else:
                    logger.warning("ExecuteStream of tool %r: unexpected %s after start; ignored",
                                   call.tool, which or "empty StreamControl")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the RPC broke: nobody consumes the stream any more
            logger.debug("ExecuteStream of tool %r: reading its controls failed: %s",
                         call.tool, exc)
            _cancel_stream(call, task)


async def _read_start(
    controls: AsyncIterator[worker_pb2.StreamControl], write: Write
) -> Optional[worker_pb2.StreamStart]:
    """The RPC's first StreamControl, which must be its start; None (and the
    stream answered) when it is not."""
    try:
        first = await controls.__anext__()
    except StopAsyncIteration:
        await write(stream_error(CallError(
            ErrorKind.BAD_ARGUMENTS, "ExecuteStream ended before its StreamStart")))
        return None
    if first.WhichOneof("msg") != "start":
        await write(stream_error(CallError(
            ErrorKind.BAD_ARGUMENTS,
            f"the first StreamControl of ExecuteStream must be start, got "
            f"{first.WhichOneof('msg') or 'nothing'}")))
        return None
    return first.start


def _chunk_sender(loop: asyncio.AbstractEventLoop, out: StreamOut) -> SendChunk:
    """How the producer sends a chunk (from its thread or task)."""

    def send(chunk: EncodedResult) -> bool:
        message = (worker_pb2.StreamMessage(chunk_raw=chunk.data) if chunk.raw
                   else worker_pb2.StreamMessage(chunk_json=chunk.data))
        try:
            loop.call_soon_threadsafe(out.put_nowait, (False, message))
        except RuntimeError:  # the loop is closed: the worker is exiting
            return False
        return True

    return send


def _send_final(loop: asyncio.AbstractEventLoop, out: StreamOut, outcome: Outcome) -> None:
    message = STREAM_END if isinstance(outcome, EncodedResult) else stream_error(outcome)
    try:
        loop.call_soon_threadsafe(out.put_nowait, (True, message))
    except RuntimeError:
        pass


def _cancel_stream(call: CallContext, task: Optional["asyncio.Task[None]"]) -> None:
    """The consumer left: flag the call (a sync generator waiting for
    credit wakes and is closed on its thread) and cancel an async one's task."""
    call.cancel()
    if task is not None and not task.done():
        task.cancel()
