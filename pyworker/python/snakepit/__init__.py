"""Snakepit for Go: the Python side.

Adapter authors only need :func:`tool` and, optionally, :class:`Adapter`::

    import snakepit

    @snakepit.tool
    def word_count(text: str) -> int:
        return len(text.split())

For the thread profile (several calls at once in one process), declare the
adapter thread-safe (:class:`ThreadSafeAdapter`, or
``__snakepit_thread_safe__ = True`` in the module) and keep shared state
safe with :func:`frozen`, :class:`ThreadLocal` or :class:`Locked`
(``snakepit.threadsafe``; docs/thread-safety.md). ``snakepit.testing.hammer``
calls a function from many threads at once to check it.

A long sync tool cannot be interrupted; it can stop by itself once its caller
gives up: :func:`checkpoint` raises :class:`Cancelled` then (the call is
answered ``CANCELLED``), and :func:`current_call` returns the running call's
:class:`CallContext` (``.cancelled``, ``.deadline``, ``.remaining()``, ``.tool``,
``.request_id``), or None outside a tool call (``snakepit.cancellation``)::

    @snakepit.tool
    def crunch(n: int) -> int:
        for i in range(n):
            snakepit.checkpoint()
            step(i)
        return n

A generator tool (``def`` or ``async def`` with ``yield``) is a streaming
tool: each item goes to the caller as it comes, at the consumer's pace
(``snakepit.streams``)::

    @snakepit.tool
    def count(n: int):
        for i in range(n):
            yield i

A tool calls functions the Go program registered with :func:`call` (sync
tools) or ``await`` :func:`acall` (async tools); a failure there raises
:class:`CallbackError` (``snakepit.callbacks``). Calls that carry a session
id share :func:`current_session`'s ``state`` on the worker; the adapter's
``on_session_start(session)`` / ``on_session_end(session)`` hooks, if any,
run at its first call and at its end (``snakepit.sessions``).

Importing this package does not import grpc. The worker is
``python -m snakepit.worker`` (``snakepit.worker``); its default transport,
``snakepit.native_server`` (frames of ``snakepit.wire``), needs only the
standard library; the gRPC one is ``snakepit.grpc_server``. What both
servers share is ``snakepit.core``.
"""

from typing import TYPE_CHECKING, Any, List

from snakepit.adapter import Adapter, ThreadSafeAdapter
from snakepit.callbacks import CallbackError, acall, call
from snakepit.cancellation import CallContext, Cancelled, checkpoint, current_call
from snakepit.decorator import tool
from snakepit.sessions import Session, current_session

if TYPE_CHECKING:
    from snakepit.threadsafe import (
        Locked,
        ReadOnlyError,
        SharedReadOnly,
        ThreadLocal,
        frozen,
        single_threaded,
    )

__version__ = "0.1.0"

#: Version of the Go <-> Python wire protocol this package speaks.
PROTOCOL_VERSION = 2

#: Names served from snakepit.threadsafe, imported on first use (PEP 562) so
#: that workers whose adapters do not use them do not pay for the import.
_THREADSAFE_NAMES = frozenset({
    "Locked", "ReadOnlyError", "SharedReadOnly", "ThreadLocal", "frozen", "single_threaded",
})


def __getattr__(name: str) -> Any:
    if name in _THREADSAFE_NAMES:
        from snakepit import threadsafe

        value = getattr(threadsafe, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'snakepit' has no attribute {name!r}")


def __dir__() -> List[str]:
    return sorted(set(globals()) | _THREADSAFE_NAMES)


__all__ = [
    "Adapter",
    "CallContext",
    "CallbackError",
    "Cancelled",
    "Locked",
    "PROTOCOL_VERSION",
    "ReadOnlyError",
    "Session",
    "SharedReadOnly",
    "ThreadLocal",
    "ThreadSafeAdapter",
    "__version__",
    "acall",
    "call",
    "checkpoint",
    "current_call",
    "current_session",
    "frozen",
    "single_threaded",
    "tool",
]
