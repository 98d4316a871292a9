"""Callbacks: a tool calls a function the Go program registered (standard
library only).

::

    import snakepit

    @snakepit.tool
    def enrich(user_id: int) -> dict:
        profile = snakepit.call("load_profile", id=user_id)   # runs in Go
        return {"name": profile["name"], "score": score(profile)}

    @snakepit.tool
    async def aenrich(user_id: int) -> dict:
        profile = await snakepit.acall("load_profile", id=user_id)
        return {"name": profile["name"]}

The callback goes out on the connection the current call came in on, tagged
with that call's request id (its *parent*): the Go handler runs with a
context derived from the parent call's, so the call's deadline and
cancellation reach it. Keyword arguments travel as one JSON object, except
``bytes`` (``bytearray``, ``memoryview``) values, which travel raw; the
result is the handler's JSON value decoded, or ``bytes`` for a raw result.
A failure in Go raises :class:`CallbackError` (``.kind``, ``.message``).

:func:`call` blocks its thread (a sync tool's); :func:`acall` is for
``async`` tools. Both give up with :class:`snakepit.Cancelled` once the
calling call is cancelled or its deadline passes (``deadline_exceeded``
says which), whichever side notices first: the worker, or the Go handler
whose context ended. A task the tool cancels itself (``asyncio.timeout``)
gets ``asyncio.CancelledError`` as usual. Both work only inside a tool call: in its thread or task
(and tasks it starts); threads a tool starts itself carry the call with
``contextvars.copy_context().run``. Many callbacks may be in flight at once,
from many threads of one call; each gets its own answer.

The transports provide the channel (``CallContext.callbacks``): an object
with ``call(ctx, name, args_json, binary)`` and ``async acall(...)`` that
sends the request and waits for its answer; :class:`CallbackTable` and
:class:`PendingCallback` are the parts they share.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any, Callable, Dict, Optional, Protocol, Tuple

from snakepit import wire
from snakepit.cancellation import _CURRENT, CallContext, Cancelled
from snakepit.codec import ALLOWED_RESULT_TYPES, _json_default, _short_type_name, _Unencodable

__all__ = ["CallbackError", "acall", "call"]

#: CallbackError kinds raised by the worker itself (the others come from the
#: runtime: UNKNOWN_CALLBACK, BAD_ARGUMENTS, HANDLER_ERROR, HANDLER_PANIC,
#: UNENCODABLE_RESULT, TOO_LARGE, CANCELLED, DEADLINE_EXCEEDED, DEADLOCK).
CONNECTION_CLOSED = "CONNECTION_CLOSED"  # the connection ended before the answer
UNAVAILABLE = "UNAVAILABLE"  # gRPC: the runtime has no Callbacks stream open
BAD_REPLY = "BAD_REPLY"  # the runtime's answer could not be decoded
TOO_LARGE = "TOO_LARGE"  # the arguments exceed the message limit (nothing was sent)


class CallbackError(Exception):
    """A callback failed in Go, or could not reach it.

    ``kind``: ``UNKNOWN_CALLBACK`` (the message lists the names the pool
    exposes), ``BAD_ARGUMENTS``, ``HANDLER_ERROR``, ``HANDLER_PANIC``,
    ``UNENCODABLE_RESULT``, ``TOO_LARGE``, ``DEADLOCK``
    (docs/wire-format.md), or from this side ``CONNECTION_CLOSED``,
    ``UNAVAILABLE`` (gRPC: no Callbacks stream open) and ``BAD_REPLY``.
    ``message``: what went wrong. ``name``: the callback's name. (The
    runtime's ``CANCELLED`` and ``DEADLINE_EXCEEDED`` answers mean the
    calling call ended: :func:`call` and :func:`acall` raise
    :class:`snakepit.Cancelled` for them.)
    """

    def __init__(self, kind: str, message: str, name: str = "") -> None:
        super().__init__(f"{kind}: {message}" if not name else
                         f"callback {name!r} failed: {kind}: {message}")
        self.kind = kind
        self.message = message
        self.name = name

    def __reduce__(self) -> Any:
        return (type(self), (self.kind, self.message, self.name))


class CallbackChannel(Protocol):
    """What a transport puts in ``CallContext.callbacks``: sends a callback
    of the call ``ctx`` and waits for its answer (decoded JSON or bytes),
    raising CallbackError or snakepit.Cancelled."""

    def call(self, ctx: CallContext, name: str, args_json: bytes,
             binary: Dict[str, bytes]) -> Any: ...

    async def acall(self, ctx: CallContext, name: str, args_json: bytes,
                    binary: Dict[str, bytes]) -> Any: ...


# ---------------------------------------------------------------- public API


def call(name: str, **kwargs: Any) -> Any:
    """Call the Go function registered as ``name`` with ``kwargs`` and return
    its result (decoded JSON, or ``bytes`` for a raw result). Blocks this
    thread until the answer comes. For sync tools (their thread, or threads
    they start with ``contextvars.copy_context().run``).

    Raises RuntimeError outside a tool call or on an event loop's thread
    (use :func:`acall` there), TypeError / ValueError when an argument cannot
    be encoded as JSON (nothing is sent), :class:`CallbackError` when the
    callback fails, and :class:`snakepit.Cancelled` once the calling call is
    cancelled or its deadline passes while it waits.
    """
    ctx = _calling_context("snakepit.call")
    if asyncio._get_running_loop() is not None:
        raise RuntimeError(
            f"snakepit.call({name!r}) would block the event loop running in this thread; "
            f"in an async tool use: await snakepit.acall({name!r}, ...)"
        )
    args_json, binary = encode_args(name, kwargs)
    _check_not_cancelled(ctx, name)
    try:
        return _channel(ctx, name).call(ctx, name, args_json, binary)
    except CallbackError as exc:  # the traceback ends here, not in the transport
        raise _call_ended(ctx, name, exc) from None


async def acall(name: str, **kwargs: Any) -> Any:
    """:func:`call` for ``async`` tools: awaits the answer without blocking
    the event loop. Cancelled with the tool's task."""
    ctx = _calling_context("snakepit.acall")
    args_json, binary = encode_args(name, kwargs)
    _check_not_cancelled(ctx, name)
    try:
        return await _channel(ctx, name).acall(ctx, name, args_json, binary)
    except CallbackError as exc:
        raise _call_ended(ctx, name, exc) from None
    except asyncio.CancelledError:
        if ctx.cancelled:  # the worker cancels the task of a call that ended
            raise _cancelled(ctx, name, "while waiting for its answer") from None
        raise  # the tool's own cancellation (asyncio.timeout, a TaskGroup)


def _calling_context(what: str) -> CallContext:
    ctx = _CURRENT.get()
    if ctx is None:
        raise RuntimeError(
            f"{what} can only be used inside a tool call: in the thread or task running the "
            "tool (in threads the tool starts itself, run the function with "
            "contextvars.copy_context().run)"
        )
    return ctx


def _channel(ctx: CallContext, name: str) -> CallbackChannel:
    channel = ctx.callbacks
    if channel is None:
        raise CallbackError(
            UNAVAILABLE, f"tool {ctx.tool!r} was not called over a connection that carries "
            "callbacks", name)
    return channel


def _check_not_cancelled(ctx: CallContext, name: str) -> None:
    if ctx.cancelled:
        raise _cancelled(ctx, name, "before it was sent")


#: The kinds of a callback answer that mean the calling call ended (the
#: runtime answers so when the call's context ends while the handler runs).
_CALL_ENDED_KINDS = ("CANCELLED", "DEADLINE_EXCEEDED")


def _call_ended(ctx: CallContext, name: str, exc: CallbackError) -> Exception:
    """What the waiting tool gets for a failed callback: the calling call's
    end is :class:`Cancelled` however it was learnt (the runtime's answer or
    the worker's own cancel, whichever came first); any other failure the
    CallbackError itself, its traceback ending here."""
    if exc.kind in _CALL_ENDED_KINDS:
        return _cancelled(ctx, name, "while waiting for its answer",
                          deadline=exc.kind == "DEADLINE_EXCEEDED")
    return exc.with_traceback(None)


def _cancelled(ctx: CallContext, name: str, when: str,
               deadline: Optional[bool] = None) -> Cancelled:
    """Cancelled for callback ``name``; ``deadline`` (default: whether the
    call's deadline has passed) says whether it was the deadline."""
    if deadline is None:
        deadline = ctx.deadline_passed()
    reason = "its deadline passed" if deadline else "the caller cancelled it"
    return Cancelled(
        f"callback {name!r} of tool {ctx.tool!r} gave up {when}: {reason}", ctx,
        deadline_exceeded=deadline)


# ------------------------------------------------------------------ encoding


def encode_args(name: str, kwargs: Dict[str, Any]) -> Tuple[bytes, Dict[str, bytes]]:
    """``(args JSON object, binary arguments)`` of a callback: ``bytes``,
    ``bytearray`` and ``memoryview`` values travel raw, everything else as
    JSON (the rules of tool results: dataclasses and ``.tolist()`` objects
    too). Raises TypeError / ValueError naming the argument that JSON cannot
    encode, and for a ``name`` that is not a non-empty string."""
    if not isinstance(name, str):
        raise TypeError(f"a callback name must be a str, not {type(name).__name__}")
    if not name:
        raise ValueError("a callback name must not be empty")
    binary: Dict[str, bytes] = {}
    plain: Dict[str, Any] = {}
    for key, value in kwargs.items():
        if isinstance(value, (bytes, bytearray)):
            binary[key] = bytes(value)
        elif isinstance(value, memoryview):
            binary[key] = value.tobytes()
        else:
            plain[key] = value
    try:
        text = _dumps(plain)
    except (_Unencodable, TypeError, ValueError, RecursionError):
        for key, value in plain.items():
            try:
                _dumps(value)
            except _Unencodable as exc:
                where = "" if exc.value_type is type(value) else " inside it"
                raise TypeError(
                    f"callback {name!r}: argument {key!r} holds a value of type "
                    f"{_short_type_name(exc.value_type)}{where}, which cannot be encoded as "
                    f"JSON; allowed: {ALLOWED_RESULT_TYPES}"
                ) from None
            except ValueError as exc:
                detail = ("a float NaN or infinity" if "Out of range float" in str(exc)
                          else f"a value JSON cannot encode ({exc})")
                raise ValueError(
                    f"callback {name!r}: argument {key!r} holds {detail}; "
                    f"allowed: {ALLOWED_RESULT_TYPES}"
                ) from None
            except (TypeError, RecursionError) as exc:
                raise TypeError(
                    f"callback {name!r}: argument {key!r} of type "
                    f"{_short_type_name(type(value))} cannot be encoded as JSON ({exc})"
                ) from None
        raise  # pragma: no cover - each value encodes alone but not together
    return text.encode("utf-8"), binary


def _dumps(value: Any) -> str:
    return json.dumps(value, allow_nan=False, separators=(",", ":"), default=_json_default)


def decode_result(name: str, data: bytes, raw: bool) -> Any:
    """A callback's result: ``bytes`` when raw, else the decoded JSON (an
    empty body is None). Raises CallbackError(BAD_REPLY)."""
    if raw:
        return data
    if not data:
        return None
    try:
        return wire.loads(data)
    except ValueError as exc:  # includes UnicodeDecodeError
        raise CallbackError(BAD_REPLY, f"the runtime's result is not valid UTF-8 JSON: {exc}",
                            name) from None
    except wire.JSONLimitError as exc:  # e.g. nested deeper than the decoder goes
        raise CallbackError(BAD_REPLY, f"the runtime's result cannot be decoded: its contents "
                            f"{exc.problem}", name) from None


# ------------------------------------------------------------ for transports


class PendingCallback:
    """One callback waiting for its answer: a sync waiter's event, or an
    async waiter's loop future. :meth:`resolve` from any thread, once."""

    __slots__ = ("name", "event", "loop", "future", "done", "value", "error")

    def __init__(self, name: str, loop: Optional[asyncio.AbstractEventLoop] = None) -> None:
        self.name = name
        self.loop = loop
        self.event: Optional[threading.Event] = None if loop is not None else threading.Event()
        self.future: Optional["asyncio.Future[Any]"] = (
            loop.create_future() if loop is not None else None)
        self.done = False
        self.value: Any = None
        self.error: Optional[BaseException] = None

    def resolve(self, value: Any = None, error: Optional[BaseException] = None) -> None:
        """Hand over the answer (``error``: raised in the waiter)."""
        if self.done:
            return
        self.value = value
        self.error = error
        self.done = True
        if self.event is not None:
            self.event.set()
            return
        try:
            self.loop.call_soon_threadsafe(_settle, self.future, value, error)  # type: ignore[union-attr]
        except RuntimeError:  # the loop is closed: nobody waits any more
            pass

    def outcome(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.value


def _settle(future: "asyncio.Future[Any]", value: Any, error: Optional[BaseException]) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)


def wait_sync(ctx: CallContext, pending: PendingCallback, forget: Callable[[], Any]) -> Any:
    """Block until ``pending`` is answered; its value (or raise its error).
    Raises :class:`Cancelled` (after ``forget()``: a late answer is dropped)
    once ``ctx`` is cancelled or past its deadline."""
    event = pending.event
    assert event is not None
    waker = event.set
    ctx.add_waker(waker)
    try:
        while True:
            if pending.done:
                return pending.outcome()
            if ctx.cancelled:
                forget()
                if pending.done:  # answered just now
                    return pending.outcome()
                raise _cancelled(ctx, pending.name, "while waiting for its answer")
            timeout = None
            if ctx.deadline_ns:
                timeout = max(0.0, (ctx.deadline_ns - time.time_ns()) / 1e9) + 0.001
            event.wait(timeout)
    finally:
        ctx.remove_waker(waker)


async def wait_async(pending: PendingCallback, forget: Callable[[], Any]) -> Any:
    """Await ``pending``'s answer; ``forget()`` if the task is cancelled."""
    try:
        return await pending.future  # type: ignore[misc]
    except asyncio.CancelledError:
        forget()
        raise


class CallbackTable:
    """The callbacks waiting for their answers on one connection, by id
    (1, 2, ...: unique on the connection). Thread-safe."""

    __slots__ = ("_lock", "_next", "_pending", "_closed")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next = 0
        self._pending: Dict[int, PendingCallback] = {}
        self._closed: Optional[str] = None

    def add(self, pending: PendingCallback) -> int:
        """Register ``pending``; its id. Raises CallbackError(CONNECTION_CLOSED)."""
        with self._lock:
            if self._closed is not None:
                raise CallbackError(CONNECTION_CLOSED, self._closed, pending.name)
            self._next += 1
            self._pending[self._next] = pending
            return self._next

    def pop(self, callback_id: int) -> Optional[PendingCallback]:
        with self._lock:
            return self._pending.pop(callback_id, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending)

    def close(self, reason: str) -> None:
        """No more answers will come: fail every waiting callback with
        CONNECTION_CLOSED, and refuse new ones."""
        with self._lock:
            if self._closed is None:
                self._closed = reason
            pending = list(self._pending.values())
            self._pending.clear()
        for item in pending:
            item.resolve(error=CallbackError(
                CONNECTION_CLOSED, f"{reason} before the callback was answered", item.name))
