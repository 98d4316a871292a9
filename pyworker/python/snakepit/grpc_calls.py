"""The unary calls (``Execute``) of the gRPC transport (needs grpcio).

Sync tools run on a thread pool of ``capacity`` threads, async tools on the
server's event loop. A ``@tool(thread_safe=False)`` tool runs one call at a
time: its calls, sync and async alike, wait for their turn on the loop (an
AsyncSerialGate), so a waiting call holds no thread. A sync tool's thread
cannot be stopped: when the RPC is cancelled or its deadline passes, the
call is flagged cancelled and answered, and the thread runs on until the
tool returns (it still counts as in flight until then).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from typing import Any, Callable, Optional, Set

from snakepit.adapter import LoadedAdapter, Tool
from snakepit.cancellation import CallContext
from snakepit.codec import CallError, EncodedResult, ErrorKind
from snakepit.core import Args, Kwargs, WorkerCore
from snakepit.execution import AsyncSerialGate, Outcome, find_tool, prepare_call, stream_only_error
from snakepit.grpc_callbacks import GrpcCallbacks
from snakepit.grpc_messages import execute_reply
from snakepit.v1 import worker_pb2

logger = logging.getLogger(__name__)

#: Room a chunk leaves in a StreamMessage for the field's tag and length.
_CHUNK_OVERHEAD = 16


class GrpcCalls(WorkerCore):
    """Runs the gRPC transport's unary calls; the base of GrpcStreams and
    of GrpcServer, which owns the grpc.aio server and the lifecycle."""

    #: Every call starts from the loop: a thread_safe=False sync tool's
    #: calls wait for their turn there too.
    sync_turns_on_loop = True

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
        self.chunk_limit = max(1, max_message_bytes - _CHUNK_OVERHEAD)
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=capacity, thread_name_prefix="snakepit-tool"
        )
        #: Where the tools' callbacks go.
        self.callbacks = GrpcCallbacks(max_message_bytes)
        #: Tasks the server started on its own (gate waits, session ends).
        self._session_tasks: Set["asyncio.Task[Any]"] = set()

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
            left: float = (request.deadline_unix_nano - time.time_ns()) / 1e9
            if left <= 0:
                return execute_reply(
                    request_id,
                    CallError(
                        ErrorKind.DEADLINE_EXCEEDED,
                        f"the deadline passed {-left:.3f}s before tool "
                        f"{request.tool!r} could start",
                    ),
                )
            remaining = left
        started = time.monotonic()
        call = CallContext(request_id, request.tool,
                           call_deadline_ns(request.deadline_unix_nano, rpc_deadline_ns))
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
            gate = self._loop_gate(tool)
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
        self._call_over(call)

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

    @staticmethod
    def _releaser(gate: AsyncSerialGate) -> Callable[[Any], None]:
        """A done callback that opens ``gate`` on this loop (from any thread)."""
        loop = asyncio.get_running_loop()

        def release(_future: Any) -> None:
            try:
                loop.call_soon_threadsafe(gate.release)
            except RuntimeError:  # the loop is closed: the worker is exiting
                pass

        return release

    def _run_sync(
        self, call: CallContext, tool: Tool, args: Args, kwargs: Kwargs
    ) -> Outcome:
        self._counters.begin_run()
        try:
            return self.run_sync_tool(call, tool, args, kwargs)
        finally:
            self._counters.end_run()

    async def _run_async(
        self, call: CallContext, tool: Tool, args: Args, kwargs: Kwargs,
        remaining: Optional[float],
    ) -> Outcome:
        self._counters.begin_run()
        try:
            return await self._run_async_timed(call, tool, args, kwargs, remaining)
        finally:
            self._counters.end_run()

    async def _run_async_timed(
        self, call: CallContext, tool: Tool, args: Args, kwargs: Kwargs,
        remaining: Optional[float],
    ) -> Outcome:
        if remaining is None:
            return await self.run_async_tool(call, tool, args, kwargs)
        try:
            return await asyncio.wait_for(
                self.run_async_tool(call, tool, args, kwargs), remaining)
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


def call_deadline_ns(request_deadline_ns: int, rpc_deadline_ns: int) -> int:
    """A call's deadline (Unix nanoseconds, 0 for none): the request's or
    the RPC's own, whichever comes first."""
    if rpc_deadline_ns and (not request_deadline_ns or rpc_deadline_ns < request_deadline_ns):
        return rpc_deadline_ns
    return request_deadline_ns
