"""Cooperative cancellation: what a running tool can know about its call
(standard library only).

A worker cannot stop a sync tool's thread; it can only tell the tool that
its caller gave up. A long tool asks, now and then::

    import snakepit

    @snakepit.tool
    def crunch(items: list) -> int:
        done = 0
        for item in items:
            snakepit.checkpoint()  # raises snakepit.Cancelled once the caller gave up
            work(item)
            done += 1
        return done

or looks at the call itself::

    call = snakepit.current_call()
    if call is not None and call.cancelled:
        return partial_result

A call is *cancelled* once its caller gave up on it (a ``CANCEL`` frame on
the native transport; the RPC cancelled, or its gRPC deadline passed, on the
gRPC transport) or once the deadline it carries has passed. A tool that lets
:class:`Cancelled` escape is answered ``CANCELLED`` (``DEADLINE_EXCEEDED``
when only the deadline had passed), not as a tool exception; nobody may be
waiting for that answer any more.

:func:`current_call` works in the tool's own thread (sync tools) or task
(async tools) and in tasks the async tool starts; threads a tool starts
itself do not inherit it (pass the object, or use
``contextvars.copy_context().run``). Async tools are also cancelled the
asyncio way (``CancelledError`` at their next ``await``); checkpoint() is
for the stretches between awaits.

In a streaming call, the caller giving up also closes the generator (on its
own thread or task, so its ``finally`` blocks run), and ``snakepit.call``
waiting for Go's answer raises :class:`Cancelled` (snakepit.streams,
snakepit.callbacks).
"""

from __future__ import annotations

import contextvars
import threading
import time
from typing import TYPE_CHECKING, Callable, List, Optional

if TYPE_CHECKING:
    from snakepit.callbacks import CallbackChannel
    from snakepit.sessions import Session
    from snakepit.streams import StreamCredit

__all__ = ["CallContext", "Cancelled", "checkpoint", "current_call"]


class Cancelled(Exception):
    """Raised by :func:`checkpoint` in a call whose caller gave up or whose
    deadline passed. Let it escape the tool (the call is then answered
    ``CANCELLED``, or ``DEADLINE_EXCEEDED`` if only the deadline passed), or
    catch it to clean up and re-raise.

    ``call``: the :class:`CallContext`; ``deadline_exceeded``: True when the
    deadline had passed and the caller had not cancelled.
    """

    def __init__(self, message: str, call: Optional["CallContext"] = None,
                 deadline_exceeded: bool = False) -> None:
        super().__init__(message)
        self.call = call
        self.deadline_exceeded = deadline_exceeded


class CallContext:
    """One tool call, as the tool running it sees it (:func:`current_call`).

    ``tool``: the tool's name. ``request_id``: the caller's request id.
    ``deadline``: the absolute deadline in seconds since the epoch (the
    ``time.time()`` clock), or None. ``cancelled``: True once the caller
    gave up on the call or its deadline passed (it never turns back).
    ``remaining()``: seconds left until the deadline (0 once past), or None.
    ``checkpoint()``: raise :class:`Cancelled` if cancelled.
    ``session``: the call's ``snakepit.Session`` (``snakepit.current_session()``),
    or None. ``stream_in_flight``: for a streaming call, the chunks sent and
    not yet taken by the consumer; None for a plain call.

    The worker makes these; tools only read them. Any thread.
    """

    __slots__ = ("request_id", "tool", "deadline_ns", "_cancelled", "session", "callbacks",
                 "credit", "_wakers")

    def __init__(self, request_id: str, tool: str, deadline_ns: int = 0) -> None:
        self.request_id = request_id
        self.tool = tool
        #: Absolute deadline in Unix nanoseconds; 0 means none.
        self.deadline_ns = deadline_ns
        self._cancelled = False
        #: The call's session (snakepit.sessions.Session), or None.
        self.session: Optional["Session"] = None
        #: Where snakepit.call / acall send this call's callbacks (the
        #: connection it came in on; snakepit.callbacks), or None.
        self.callbacks: Optional["CallbackChannel"] = None
        #: A streaming call's credit (snakepit.streams.StreamCredit), or None.
        self.credit: Optional["StreamCredit"] = None
        self._wakers: Optional[List[Callable[[], None]]] = None

    @property
    def stream_in_flight(self) -> Optional[int]:
        """For a streaming call: the chunks sent that the consumer has not
        taken yet (sent minus the credit returned since the start), at most
        the window; read while the generator computes its next item, it is
        the count before that item is sent. None for a plain call."""
        credit = self.credit
        return None if credit is None else credit.in_flight

    @property
    def cancelled(self) -> bool:
        """True once the caller gave up on the call or its deadline passed."""
        if self._cancelled:
            return True
        deadline_ns = self.deadline_ns
        return bool(deadline_ns) and time.time_ns() >= deadline_ns

    @property
    def cancel_requested(self) -> bool:
        """True once the caller gave up (whatever the deadline)."""
        return self._cancelled

    def cancel(self) -> None:
        """Mark the call cancelled and wake what waits on its behalf (the
        worker does this; tools have no need)."""
        self._cancelled = True
        self.wake()

    def wake(self) -> None:
        """Wake every wait registered for this call (a stream waiting for
        credit, snakepit.call waiting for its answer), so it sees the call
        cancelled. Any thread."""
        credit = self.credit
        if credit is not None:
            credit.wake()
        with _WAKER_LOCK:
            wakers = list(self._wakers) if self._wakers else ()
        for waker in wakers:
            waker()

    def add_waker(self, waker: Callable[[], None]) -> None:
        """Call ``waker()`` (from any thread) when the call is cancelled."""
        with _WAKER_LOCK:
            if self._wakers is None:
                self._wakers = []
            self._wakers.append(waker)

    def remove_waker(self, waker: Callable[[], None]) -> None:
        with _WAKER_LOCK:
            if self._wakers is not None:
                try:
                    self._wakers.remove(waker)
                except ValueError:
                    pass

    @property
    def deadline(self) -> Optional[float]:
        """The deadline in seconds since the epoch, or None."""
        return self.deadline_ns / 1e9 if self.deadline_ns else None

    def remaining(self) -> Optional[float]:
        """Seconds until the deadline (0.0 once it passed), or None without one."""
        if not self.deadline_ns:
            return None
        return max(0.0, (self.deadline_ns - time.time_ns()) / 1e9)

    def deadline_passed(self) -> bool:
        """True once the call's deadline has passed (False without one)."""
        deadline_ns = self.deadline_ns
        return bool(deadline_ns) and time.time_ns() >= deadline_ns

    def checkpoint(self) -> None:
        """Raise :class:`Cancelled` if the call is cancelled; else do nothing.
        Past the deadline it is the deadline (``deadline_exceeded``), even
        when the runtime's cancel, sent as the deadline passed, came first."""
        if self.deadline_passed():
            raise Cancelled(
                f"tool {self.tool!r} stopped: the call's deadline passed", self,
                deadline_exceeded=True)
        if self._cancelled:
            raise Cancelled(
                f"tool {self.tool!r} stopped: the caller cancelled the call", self)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(request_id={self.request_id!r}, tool={self.tool!r}, "
            f"deadline={self.deadline!r}, cancelled={self.cancelled})"
        )


#: Guards every CallContext's list of wakers (short, rare critical sections).
_WAKER_LOCK = threading.Lock()

#: The call whose tool runs in this thread / task (None outside a call).
_CURRENT: "contextvars.ContextVar[Optional[CallContext]]" = contextvars.ContextVar(
    "snakepit_current_call", default=None)

_get_current = _CURRENT.get


def current_call() -> Optional[CallContext]:
    """The :class:`CallContext` of the tool call running in this thread or
    task; None outside a tool call (at import time, in threads the tool
    started itself, in tests calling the function directly)."""
    return _get_current()


def checkpoint() -> None:
    """Raise :class:`Cancelled` if the current tool call was cancelled (its
    caller gave up, or its deadline passed). Does nothing otherwise, and
    nothing outside a tool call, so tools stay callable as plain functions.
    Cheap (a context-variable read and a clock read): call it often."""
    call = _get_current()
    if call is not None:
        call.checkpoint()
