"""The callbacks (``snakepit.call`` / ``acall``) of the gRPC transport: the
runtime opens a ``Callbacks`` RPC per connection, and the worker sends each
callback's CallbackRequest on the most recent one still open (needs
protobuf; the RPC itself is served by snakepit.grpc_servicer)."""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

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
from snakepit.v1 import worker_pb2

logger = logging.getLogger(__name__)

#: How long a callback waits for the runtime's Callbacks stream to open (it
#: opens one right after connecting; a call may arrive first).
_CALLBACKS_OPEN_GRACE = 2.0


class CallbackStream:
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
        self._streams: List[CallbackStream] = []
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._max_bytes = max_message_bytes

    def open(self) -> CallbackStream:
        """A Callbacks RPC started (on the loop)."""
        stream = CallbackStream()
        with self._lock:
            self._loop = asyncio.get_running_loop()
            self._streams.append(stream)
            self._opened.notify_all()
        return stream

    def close(self, stream: CallbackStream, reason: str) -> None:
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
    ) -> Tuple[asyncio.AbstractEventLoop, CallbackStream, worker_pb2.CallbackRequest]:
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
    def answer(stream: CallbackStream, reply: worker_pb2.CallbackReply) -> None:
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
