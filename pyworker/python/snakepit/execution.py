"""Running one tool call: look up, bind, call, encode (standard library only).

``run_sync`` and ``run_async`` never raise for anything the tool does; they
return an Outcome, so a thread pool future or a task always yields a value.

``SerialGate`` and ``AsyncSerialGate`` run a ``@tool(thread_safe=False)``
tool one call at a time; a call waiting for its turn holds no thread.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from typing import Any, Deque, Dict, Generic, Mapping, Optional, Tuple, TypeVar, Union

from snakepit import gil
from snakepit.adapter import LoadedAdapter, Tool
from snakepit.cancellation import _CURRENT, CallContext, Cancelled
from snakepit.codec import (
    CallError,
    EncodedResult,
    ErrorKind,
    bind_args,
    decode_args,
    encode_result,
    error_from_exception,
    merge_args,
)

Outcome = Union[EncodedResult, CallError]

_set_current = _CURRENT.set
_reset_current = _CURRENT.reset


def find_tool(adapter: LoadedAdapter, name: str) -> Tool:
    """The tool called ``name``. Raises CallError(UNKNOWN_TOOL)."""
    found = adapter.tools.get(name) if name else None
    if found is not None:
        return found
    available = ", ".join(adapter.tool_names()) or "(none)"
    if not name:
        raise CallError(
            ErrorKind.UNKNOWN_TOOL,
            f"no tool name given; available tools: {available}",
        )
    raise CallError(
        ErrorKind.UNKNOWN_TOOL,
        f"unknown tool {name!r}; available tools: {available}",
    )


def stream_only_error(tool: Tool) -> CallError:
    """The answer to a plain (not streaming) call of a generator tool."""
    return CallError(
        ErrorKind.BAD_ARGUMENTS,
        f"tool {tool.name!r} is a generator function (a streaming tool): call it as a "
        "stream (the native EXECUTE meta 'stream', gRPC ExecuteStream)",
    )


def prepare_call(
    tool: Tool, args_json: bytes, binary_args: Optional[Mapping[str, bytes]] = None
) -> Tuple[Tuple[Any, ...], Dict[str, Any]]:
    """Decoded and bound ``(args, kwargs)``. Raises CallError(BAD_ARGUMENTS)."""
    return bind_args(tool, decode_args(tool.name, args_json, binary_args))


def prepare_decoded_call(
    tool: Tool,
    args: Any,
    binary_args: Optional[Mapping[str, bytes]] = None,
    json_field: str = "args",
    binary_field: str = "bin",
) -> Tuple[Tuple[Any, ...], Dict[str, Any]]:
    """Like prepare_call, for arguments already decoded from JSON (the native
    transport's ``args``). Raises CallError(BAD_ARGUMENTS)."""
    return bind_args(tool, merge_args(tool.name, args, binary_args, json_field, binary_field))


def _invoke(tool: Tool, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Any:
    return tool.func(*args, **kwargs)


def cancelled_error(tool: Tool, exc: Cancelled, skip_frames: int = 0) -> CallError:
    """The answer of a call whose tool let snakepit.Cancelled escape:
    CANCELLED, or DEADLINE_EXCEEDED when only the deadline had passed."""
    kind = ErrorKind.DEADLINE_EXCEEDED if exc.deadline_exceeded else ErrorKind.CANCELLED
    err = error_from_exception(exc, kind=kind, skip_frames=skip_frames)
    err.message = str(exc) or f"tool {tool.name!r} stopped: the call was cancelled"
    return err


def run_sync(
    tool: Tool, args: Tuple[Any, ...], kwargs: Dict[str, Any], call: Optional[CallContext] = None
) -> Outcome:
    """Call a plain tool and encode its result (meant for a worker thread).

    ``call``: what snakepit.current_call() returns to the tool meanwhile.
    """
    token = _set_current(call)
    try:
        value = _invoke(tool, args, kwargs)
    except Cancelled as exc:
        return cancelled_error(tool, exc, skip_frames=2)
    except BaseException as exc:  # noqa: B036 - SystemExit in a tool is a tool error too
        # Drop this frame and _invoke's so the traceback starts in the tool.
        return error_from_exception(exc, skip_frames=2)
    finally:
        _reset_current(token)
        if gil.watching():
            gil.after_first_call(tool.name)
    return _encode(tool, value)


async def run_async(
    tool: Tool, args: Tuple[Any, ...], kwargs: Dict[str, Any], call: Optional[CallContext] = None
) -> Outcome:
    """Await an ``async def`` tool and encode its result. Only cancellation propagates.

    ``call``: what snakepit.current_call() returns in the tool's task meanwhile.
    """
    token = _set_current(call)
    try:
        value = await tool.func(*args, **kwargs)
    except asyncio.CancelledError:
        raise
    except Cancelled as exc:
        return cancelled_error(tool, exc, skip_frames=1)
    except BaseException as exc:  # noqa: B036 - SystemExit must not stop the event loop
        return error_from_exception(exc, skip_frames=1)
    finally:
        _reset_current(token)
        if gil.watching():
            gil.after_first_call(tool.name)
    return _encode(tool, value)


def _encode(tool: Tool, value: Any) -> Outcome:
    try:
        return encode_result(tool.name, value)
    except CallError as err:
        return err


Item = TypeVar("Item")


class SerialGate(Generic[Item]):
    """One call at a time of one ``thread_safe=False`` sync tool, without
    holding a thread while a call waits: a call that finds the tool busy is
    parked here, and the thread that ends the running call runs it next.

    ``enter(item)``: True if the caller may run ``item`` now, else it was
    parked. After running, the caller calls ``leave()`` and runs the item it
    returns (its turn is handed over), until ``leave()`` returns None (the
    tool is free). Any thread.
    """

    __slots__ = ("_lock", "_busy", "_waiting")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._busy = False
        self._waiting: Deque[Item] = collections.deque()

    def enter(self, item: Item) -> bool:
        with self._lock:
            if self._busy:
                self._waiting.append(item)
                return False
            self._busy = True
            return True

    def leave(self) -> Optional[Item]:
        with self._lock:
            if self._waiting:
                return self._waiting.popleft()
            self._busy = False
            return None

    @property
    def waiting(self) -> int:
        with self._lock:
            return len(self._waiting)


class AsyncSerialGate:
    """One holder at a time, first come first served, for the event loop.

    Every method runs on the loop's thread (from another thread, release
    with ``loop.call_soon_threadsafe(gate.release)``). Unlike
    ``asyncio.wait_for(lock.acquire(), t)``, a timed-out or cancelled wait
    can never leave the gate taken.
    """

    __slots__ = ("_busy", "_waiters")

    def __init__(self) -> None:
        self._busy = False
        self._waiters: Deque["asyncio.Future[None]"] = collections.deque()

    async def acquire(self, timeout: Optional[float] = None) -> bool:
        """Wait for the gate; False if ``timeout`` (seconds) passed first."""
        if not self._busy and not self._waiters:
            self._busy = True
            return True
        waiter: "asyncio.Future[None]" = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await asyncio.wait((waiter,), timeout=timeout)
        except BaseException:  # cancelled: give back a turn handed to us meanwhile
            self._abandon(waiter)
            raise
        if waiter.done():  # handed over (perhaps just as the timeout ended)
            return True
        self._abandon(waiter)
        return False

    def _abandon(self, waiter: "asyncio.Future[None]") -> None:
        if waiter.done() and not waiter.cancelled():
            self.release()
            return
        waiter.cancel()
        try:
            self._waiters.remove(waiter)
        except ValueError:
            pass

    def release(self) -> None:
        """End the holder's turn: hand it to the next waiter, or free the gate."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # still busy: the waiter holds it now
                return
        self._busy = False

    @property
    def busy(self) -> bool:
        return self._busy


def serial_gates(
    tools: Mapping[str, Tool], sync_on_loop: bool = False
) -> Tuple[Dict[str, SerialGate[Any]], Dict[str, AsyncSerialGate]]:
    """``(sync gates, async gates)`` by tool name, for the tools marked
    ``thread_safe=False``. ``sync_on_loop``: a sync tool's calls wait for
    their turn on the event loop too (an AsyncSerialGate, not a SerialGate)."""
    sync: Dict[str, SerialGate[Any]] = {}
    async_: Dict[str, AsyncSerialGate] = {}
    for name, tool in tools.items():
        if not tool.thread_safe:
            if tool.is_async or sync_on_loop:
                async_[name] = AsyncSerialGate()
            else:
                sync[name] = SerialGate()
    return sync, async_
