"""Streaming calls: a generator tool's items flow to the caller, one chunk
each, under a credit window (standard library only).

A streaming call starts with a credit of ``window`` chunks; the consumer
returns credit as it takes chunks. The producer never sends more chunks than
the credit it was given, and a sync generator is not even asked for its next
item while the credit is spent, so a slow consumer slows the producer and
nothing piles up on either side::

    @snakepit.tool
    def rows(path: str):
        with open(path) as f:
            for line in f:
                yield parse(line)        # one chunk per item

A plain tool called as a stream sends its return value as the one chunk.

When the consumer leaves (a cancel), the call's deadline passes or the
connection closes, the generator is closed on the thread (or task) that
runs it, so its ``finally`` blocks run there, and the stream is answered
``CANCELLED`` (``DEADLINE_EXCEEDED`` when only the deadline passed). A
generator busy computing its next item sees
``snakepit.current_call().cancelled`` turn true, and ``snakepit.checkpoint()``
raises ``snakepit.Cancelled`` in it, as in any call.

``run_sync_stream`` (a tool thread) and ``run_async_stream`` (the event
loop) never raise for anything the tool does: they send the chunks through
the transport's ``send`` and return the stream's final Outcome,
:data:`STREAM_END` when the generator finished.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any, Callable, Dict, Optional, Tuple

from snakepit import gil
from snakepit.adapter import Tool
from snakepit.cancellation import _CURRENT, CallContext, Cancelled
from snakepit.codec import CallError, EncodedResult, ErrorKind, encode_result, error_from_exception
from snakepit.execution import Outcome, cancelled_error

logger = logging.getLogger(__name__)

#: The final Outcome of a stream whose generator finished (an empty result).
STREAM_END = EncodedResult(data=b"", raw=False)

#: Sends one chunk; False when it cannot be sent any more (the connection or
#: the RPC is gone). Called from the thread or task running the generator.
SendChunk = Callable[[EncodedResult], bool]

_set_current = _CURRENT.set
_reset_current = _CURRENT.reset


class StreamCredit:
    """How many more chunks a stream may send: the initial ``window`` plus
    every credit returned (:meth:`add`), less the chunks sent (:meth:`take`).

    A sync producer blocks in :meth:`wait` (woken by :meth:`add` and by
    :meth:`wake`, which ``CallContext.cancel()`` calls); an async one awaits
    :meth:`wait_async` on the loop given to :meth:`bind_loop`, before the
    stream starts. :meth:`add` and :meth:`wake` may be called from any thread.
    """

    __slots__ = ("window", "_granted", "_sent", "_cond", "_loop", "_event")

    def __init__(self, window: int) -> None:
        if window < 1:
            raise ValueError(f"a stream's window must be at least 1, got {window}")
        self.window = window
        self._granted = window
        self._sent = 0
        self._cond = threading.Condition(threading.Lock())
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._event: Optional[asyncio.Event] = None

    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Let an async producer on ``loop`` wait for credit."""
        self._event = asyncio.Event()
        self._loop = loop

    @property
    def sent(self) -> int:
        """Chunks sent so far."""
        return self._sent

    @property
    def granted(self) -> int:
        """Credit given so far: the window plus every credit returned."""
        return self._granted

    @property
    def in_flight(self) -> int:
        """Chunks sent that the consumer has not taken yet:
        ``sent - (granted - window)``."""
        with self._cond:
            return self._sent - (self._granted - self.window)

    def add(self, n: int) -> None:
        """The consumer took ``n`` chunks: ``n`` more may be sent."""
        with self._cond:
            self._granted += n
            self._cond.notify_all()
        self._wake_loop()

    def wake(self) -> None:
        """Wake a waiting producer (it then looks at its call's state)."""
        with self._cond:
            self._cond.notify_all()
        self._wake_loop()

    def _wake_loop(self) -> None:
        loop, event = self._loop, self._event
        if loop is not None and event is not None:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # the loop is closed: the worker is exiting
                pass

    def take(self) -> None:
        """Count one chunk sent (just before it is sent)."""
        with self._cond:
            self._sent += 1

    def wait(self, call: CallContext) -> bool:
        """Block until a chunk may be sent (True) or ``call`` is cancelled or
        past its deadline (False)."""
        with self._cond:
            while True:
                if call.cancelled:
                    return False
                if self._granted > self._sent:
                    return True
                timeout = None
                if call.deadline_ns:
                    timeout = max(0.0, (call.deadline_ns - time.time_ns()) / 1e9) + 0.001
                self._cond.wait(timeout)

    async def wait_async(self) -> None:
        """Wait on the bound loop until a chunk may be sent. Cancelled the
        asyncio way (the stream's task is cancelled)."""
        event = self._event
        if event is None:
            raise RuntimeError("StreamCredit.wait_async() needs bind_loop() first")
        while True:
            with self._cond:
                if self._granted > self._sent:
                    return
                # Cleared under the lock: an add() from now on sets it again.
                event.clear()
            await event.wait()


def _credit_of(call: CallContext) -> StreamCredit:
    credit = call.credit
    if credit is None:
        raise ValueError(f"{call!r} is not a streaming call: it has no credit")
    return credit


def _stopped(tool: Tool, call: CallContext) -> CallError:
    """The final answer of a stream stopped because its call was cancelled."""
    if call.cancel_requested:
        return CallError(
            ErrorKind.CANCELLED,
            f"the stream of tool {tool.name!r} was cancelled: the consumer left; "
            "the generator was closed",
        )
    return CallError(
        ErrorKind.DEADLINE_EXCEEDED,
        f"the deadline of the stream of tool {tool.name!r} passed; the generator was closed",
    )


def _gone(tool: Tool) -> CallError:
    return CallError(
        ErrorKind.CANCELLED,
        f"the stream of tool {tool.name!r} stopped: its connection closed; the generator "
        "was closed",
    )


def _chunk(tool: Tool, item: Any, max_bytes: int) -> EncodedResult:
    """Encode one item. Raises CallError (UNENCODABLE_RESULT, TOO_LARGE)."""
    chunk = encode_result(tool.name, item, "yielded")
    if len(chunk.data) > max_bytes:
        logger.warning(
            "tool %r yielded a %d-byte item, over the %d-byte message limit",
            tool.name, len(chunk.data), max_bytes,
        )
        raise CallError(
            ErrorKind.TOO_LARGE,
            f"tool {tool.name!r} yielded an item of {len(chunk.data)} bytes; the message "
            f"limit (SNAKEPIT_MAX_MESSAGE_BYTES) is {max_bytes} bytes",
        )
    return chunk


# -------------------------------------------------------------------- sync


def run_sync_stream(
    tool: Tool, args: Tuple[Any, ...], kwargs: Dict[str, Any], call: CallContext,
    send: SendChunk, max_bytes: int,
) -> Outcome:
    """Run a sync streaming call on this thread: a generator tool's items,
    or a plain tool's one result, sent as chunks within ``call.credit``.
    Returns the final Outcome (STREAM_END or a CallError). ``call``: what
    snakepit.current_call() returns meanwhile."""
    credit = _credit_of(call)
    token = _set_current(call)
    try:
        gen = None
        try:
            if tool.is_generator:
                gen = tool.func(*args, **kwargs)
                outcome = _pump_sync(tool, gen, call, credit, send, max_bytes)
            else:
                outcome = _plain_sync(tool, args, kwargs, call, credit, send, max_bytes)
        except Cancelled as exc:
            outcome = cancelled_error(tool, exc, skip_frames=2)
        except BaseException as exc:  # noqa: B036 - SystemExit in a tool is a tool error too
            # Drop this frame and the pump's: the traceback starts in the tool.
            outcome = error_from_exception(exc, skip_frames=2)
        if gen is not None:
            _close_sync(tool, gen)
        return outcome
    finally:
        _reset_current(token)
        if gil.watching():
            gil.after_first_call(tool.name)


def _pump_sync(
    tool: Tool, gen: Any, call: CallContext, credit: StreamCredit, send: SendChunk,
    max_bytes: int,
) -> Outcome:
    while True:
        if not credit.wait(call):
            return _stopped(tool, call)
        try:
            item = next(gen)
        except StopIteration:
            return STREAM_END
        final = _deliver(tool, item, call, credit, send, max_bytes)
        if final is not None:
            return final


def _deliver(
    tool: Tool, item: Any, call: CallContext, credit: StreamCredit, send: SendChunk,
    max_bytes: int,
) -> Optional[Outcome]:
    """Send one yielded item as a chunk (the credit was there): None when it
    went, else the stream's final Outcome."""
    if call.cancelled:  # the consumer left while the item was computed
        return _stopped(tool, call)
    try:
        chunk = _chunk(tool, item, max_bytes)
    except CallError as err:
        return err
    credit.take()
    return None if send(chunk) else _gone(tool)


def _plain_sync(
    tool: Tool, args: Tuple[Any, ...], kwargs: Dict[str, Any], call: CallContext,
    credit: StreamCredit, send: SendChunk, max_bytes: int,
) -> Outcome:
    value = tool.func(*args, **kwargs)
    try:
        chunk = _chunk(tool, value, max_bytes)
    except CallError as err:
        return err
    if not credit.wait(call):
        return _stopped(tool, call)
    credit.take()
    return STREAM_END if send(chunk) else _gone(tool)


def _close_sync(tool: Tool, gen: Any) -> None:
    """Close a generator on this thread (its ``finally`` runs here); a
    failure to close is logged: the stream's answer is already decided."""
    try:
        gen.close()
    except BaseException:  # noqa: B036 - whatever the finally raised
        logger.exception("closing the generator of tool %r raised", tool.name)


# ------------------------------------------------------------------- async


async def run_async_stream(
    tool: Tool, args: Tuple[Any, ...], kwargs: Dict[str, Any], call: CallContext,
    send: SendChunk, max_bytes: int,
) -> Outcome:
    """Run an async streaming call in this task: an async generator tool's
    items, or an ``async def`` tool's one result, sent as chunks within
    ``call.credit`` (bound to this loop). Returns the final Outcome; only
    cancellation propagates, after the generator was closed in this task."""
    credit = _credit_of(call)
    token = _set_current(call)
    agen = None
    try:
        try:
            if tool.is_generator:
                agen = tool.func(*args, **kwargs)
                return await _pump_async(tool, agen, call, credit, send, max_bytes)
            return await _plain_async(tool, args, kwargs, credit, send, max_bytes)
        except asyncio.CancelledError:
            raise
        except Cancelled as exc:
            return cancelled_error(tool, exc, skip_frames=2)
        except BaseException as exc:  # noqa: B036 - SystemExit must not stop the event loop
            return error_from_exception(exc, skip_frames=2)
    finally:
        if agen is not None:
            await _close_async(tool, agen)
        _reset_current(token)
        if gil.watching():
            gil.after_first_call(tool.name)


async def _pump_async(
    tool: Tool, agen: Any, call: CallContext, credit: StreamCredit, send: SendChunk,
    max_bytes: int,
) -> Outcome:
    while True:
        await credit.wait_async()
        if call.cancelled:
            return _stopped(tool, call)
        try:
            item = await agen.__anext__()
        except StopAsyncIteration:
            return STREAM_END
        final = _deliver(tool, item, call, credit, send, max_bytes)
        if final is not None:
            return final


async def _plain_async(
    tool: Tool, args: Tuple[Any, ...], kwargs: Dict[str, Any], credit: StreamCredit,
    send: SendChunk, max_bytes: int,
) -> Outcome:
    value = await tool.func(*args, **kwargs)
    try:
        chunk = _chunk(tool, value, max_bytes)
    except CallError as err:
        return err
    await credit.wait_async()
    credit.take()
    return STREAM_END if send(chunk) else _gone(tool)


async def _close_async(tool: Tool, agen: Any) -> None:
    """Close an async generator in this task (its ``finally`` runs here)."""
    try:
        await agen.aclose()
    except asyncio.CancelledError:
        raise
    except BaseException:  # noqa: B036
        logger.exception("closing the async generator of tool %r raised", tool.name)
