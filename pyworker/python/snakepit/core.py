"""What every worker server holds and does, whatever its transport
(standard library only).

:class:`WorkerCore` is the base of the native server (snakepit.native_server)
and of the gRPC one (snakepit.grpc_server). It holds the adapter, the
capacity and profile, the token, the call counters, the shutdown state, the
sessions, the ``thread_safe=False`` gates and the event loop of async
tools, and runs the part of a call both transports share: the session's
start hook, the tool's turn at its gate, the tool itself (plain or as a
stream), and the bookkeeping once the call is over. The transports bring
the calls in, start them on a thread or task, and send the answers.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import threading
import time
from typing import Any, Awaitable, ClassVar, Dict, Optional, Tuple, Union

from snakepit.accounting import Counters, ShutdownState
from snakepit.adapter import LoadedAdapter, Tool
from snakepit.cancellation import CallContext
from snakepit.execution import AsyncSerialGate, Outcome, run_async, run_sync, serial_gates
from snakepit.sessions import SessionRegistry
from snakepit.streams import SendChunk, run_async_stream, run_sync_stream

logger = logging.getLogger(__name__)

#: A call's positional and keyword arguments, bound to its tool's signature.
Args = Tuple[Any, ...]
Kwargs = Dict[str, Any]


class WorkerCore:
    """The state and the call-running steps every server shares.

    ``chunk_limit``: the largest chunk a stream may send (the message limit
    here; a transport with per-message overhead lowers it).
    """

    #: Whether the calls of a ``thread_safe=False`` *sync* tool wait for
    #: their turn on the event loop (an AsyncSerialGate: gRPC, which starts
    #: every call from its loop) rather than parked in a SerialGate by the
    #: tool threads (native).
    sync_turns_on_loop: ClassVar[bool] = False

    def __init__(
        self,
        adapter: LoadedAdapter,
        token: str,
        capacity: int,
        max_message_bytes: int,
        started_monotonic: Optional[float],
        profile: Optional[str],
    ) -> None:
        if not token:
            raise ValueError("the worker token must not be empty")
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.adapter = adapter
        self.capacity = capacity
        self.profile = profile
        self.max_message_bytes = max_message_bytes
        self.chunk_limit = max_message_bytes
        self._token = token.encode("utf-8")
        self._started = time.monotonic() if started_monotonic is None else started_monotonic
        self._counters = Counters()
        self._shutdown = ShutdownState()
        #: The loop async tools (and async session hooks) run on, once started.
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._serial, self._async_serial = serial_gates(adapter.tools, self.sync_turns_on_loop)
        self._sessions = SessionRegistry(adapter, self._run_blocking)
        self._streams_lock = threading.Lock()
        self._open_streams = 0  # streaming calls not over

    @property
    def in_flight(self) -> int:
        """Calls running or queued now."""
        return self._counters.in_flight

    @property
    def shutting_down(self) -> bool:
        return self._shutdown.requested

    # ------------------------------------------------------------ shutdown

    def _begin_shutdown(self, grace_seconds: float, reason: str) -> Tuple[int, bool]:
        """Record a shutdown request: ``(calls in flight now, whether it is
        the first request)``; the caller starts the drain on the first."""
        in_flight = self._counters.in_flight
        first = self._shutdown.request(grace_seconds)
        if first:
            logger.info(
                "shutting down (%s): %d call(s) in flight, grace %.3fs",
                reason, in_flight, max(0.0, grace_seconds),
            )
        else:
            self._counters.wake()  # a drain waiting re-reads its (maybe shorter) deadline
        return in_flight, first

    def _run_blocking(self, awaitable: Awaitable[Any]) -> Any:
        """Run an awaitable (an async session hook, the adapter's close())
        to its end from a thread that is not the loop's, and return its
        result: on the loop while it runs, else with asyncio.run on this
        thread (no loop yet or any more: a worker without async tools, or a
        tool thread that outlived the stop)."""
        loop = self._loop
        if loop is not None and loop.is_running():
            return asyncio.run_coroutine_threadsafe(_await(awaitable), loop).result()
        return asyncio.run(_await(awaitable))

    # --------------------------------------------------------------- calls

    def run_sync_tool(
        self, ctx: CallContext, tool: Tool, args: Args, kwargs: Kwargs,
        send: Optional[SendChunk] = None,
    ) -> Outcome:
        """Run a sync call on this (tool) thread: the session's start hook
        first if this is the session's first call here, then the tool, as
        a stream sending its chunks through ``send`` when given."""
        if ctx.session is not None:
            err = self._sessions.open_sync(ctx)
            if err is not None:
                return err
        if send is not None:
            return run_sync_stream(tool, args, kwargs, ctx, send, self.chunk_limit)
        return run_sync(tool, args, kwargs, ctx)

    async def run_async_tool(
        self, ctx: CallContext, tool: Tool, args: Args, kwargs: Kwargs,
        send: Optional[SendChunk] = None,
    ) -> Outcome:
        """:meth:`run_sync_tool` for an async tool, on the loop; a
        ``thread_safe=False`` tool waits for its turn at its gate first."""
        if tool.thread_safe:
            if send is None and ctx.session is None:
                return await run_async(tool, args, kwargs, ctx)  # the common case, in short
            return await self._run_async_body(ctx, tool, args, kwargs, send)
        gate = self._async_serial[tool.name]
        await gate.acquire()
        try:
            return await self._run_async_body(ctx, tool, args, kwargs, send)
        finally:
            gate.release()

    async def _run_async_body(
        self, ctx: CallContext, tool: Tool, args: Args, kwargs: Kwargs,
        send: Optional[SendChunk],
    ) -> Outcome:
        if ctx.session is not None:
            err = await self._sessions.open_async(ctx)
            if err is not None:
                return err
        if send is not None:
            return await run_async_stream(tool, args, kwargs, ctx, send, self.chunk_limit)
        return await run_async(tool, args, kwargs, ctx)

    def _loop_gate(self, tool: Tool) -> Optional[AsyncSerialGate]:
        """The gate a ``thread_safe=False`` tool's calls wait at on the loop;
        None for a thread-safe tool."""
        return None if tool.thread_safe else self._async_serial[tool.name]

    def _stream_opened(self) -> None:
        with self._streams_lock:
            self._open_streams += 1

    def _call_over(self, ctx: CallContext) -> None:
        """A call is over (once per call, whether or not its tool ran): it
        leaves its session, and a stream no longer counts as open."""
        if ctx.session is not None:
            self._sessions.leave(ctx.session)
        if ctx.credit is not None:
            with self._streams_lock:
                self._open_streams -= 1


def token_matches(supplied: Union[str, bytes, None], expected: bytes) -> bool:
    """Constant-time comparison of a supplied token with the worker's."""
    if isinstance(supplied, str):
        try:
            supplied = supplied.encode("utf-8")
        except UnicodeEncodeError:
            return False
    if not isinstance(supplied, bytes):
        return False
    return hmac.compare_digest(supplied, expected)


async def _await(awaitable: Awaitable[Any]) -> Any:
    """A coroutine awaiting ``awaitable``: run_coroutine_threadsafe and
    asyncio.run take only coroutines, and a hook may return any awaitable."""
    return await awaitable
