"""Sessions: state that lives across the calls of one conversation on one
worker (standard library only).

A call that carries a session id belongs to that session. The first call of
a session on a worker runs the adapter's session-start hook, on the thread
(or task) that runs the call, before the tool; the tool then sees the
session as :func:`current_session`, whose ``state`` dict it may fill for the
session's later calls on this worker::

    import snakepit

    def on_session_start(session: snakepit.Session) -> None:
        session.state["history"] = []

    def on_session_end(session: snakepit.Session) -> None:
        save(session.id, session.state["history"])

    @snakepit.tool
    def chat(message: str) -> str:
        history = snakepit.current_session().state["history"]
        history.append(message)
        return reply_to(history)

The hooks are found by name: module-level functions of a module adapter,
or methods of a class adapter; plain or ``async``; both are optional. When
the start hook raises, the call fails (``TOOL_EXCEPTION``, naming the hook)
and the session is not started: its next call tries again.

The runtime ends a session (native ``REQUEST`` ``session_end``, gRPC
``EndSession``): once the session's calls accepted so far have ended, the end
hook runs on a tool thread (or the event loop, when ``async``), the state is
dropped, and the reply says whether the session had been started here.
Sessions still open at graceful shutdown are ended (their end hooks run)
before the adapter's ``close()``. A call for a session that is being ended
starts a new session of that id.

Calls of a session are otherwise ordinary calls: they run concurrently in
the thread profile (the state dict is shared by them: guard it as any
shared state), and may be cancelled or streams.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
import threading
import time
from typing import Any, Awaitable, Callable, Dict, List, Optional, Tuple

from snakepit.adapter import SESSION_END_HOOK, SESSION_START_HOOK, LoadedAdapter, adapter_hook
from snakepit.cancellation import _CURRENT, CallContext
from snakepit.codec import CallError, error_from_exception, format_traceback

logger = logging.getLogger(__name__)

__all__ = ["Session", "SessionRegistry", "current_session"]

#: Runs a coroutine to its end from a thread that is not the event loop's
#: (the server's loop when it has one, else asyncio.run) and returns its result.
RunBlocking = Callable[[Awaitable[Any]], Any]


class Session:
    """One session on this worker, as its calls and hooks see it.

    ``id``: the session id the runtime gave. ``state``: a dict that lives as
    long as the session on this worker (the hooks and tools fill it).
    ``started``: when the session was first seen here (``time.monotonic()``).
    ``calls``: how many of its calls have started their tool here.
    """

    __slots__ = ("id", "state", "started", "calls", "_open", "_starting", "_running",
                 "_on_idle")

    def __init__(self, session_id: str) -> None:
        self.id = session_id
        self.state: Dict[str, Any] = {}
        self.started = time.monotonic()
        self.calls = 0
        self._open = False  # the start hook ran (or there is none)
        self._starting: Optional["concurrent.futures.Future[bool]"] = None
        self._running = 0  # calls accepted and not over
        self._on_idle: List[Callable[[Optional["Session"]], None]] = []

    @property
    def open(self) -> bool:
        """True once the session started here (its start hook succeeded)."""
        return self._open

    def __repr__(self) -> str:
        return f"Session(id={self.id!r}, calls={self.calls}, open={self._open})"


def current_session() -> Optional[Session]:
    """The :class:`Session` of the tool call running in this thread or task;
    None outside a call, or in a call that belongs to no session."""
    call = _CURRENT.get()
    return None if call is None else call.session


def _hook_name(hook: Callable[..., Any]) -> str:
    return str(getattr(hook, "__qualname__", None) or getattr(hook, "__name__", repr(hook)))


class SessionRegistry:
    """The sessions of one worker, and its adapter's session hooks.

    The server calls :meth:`join` when it accepts a call of a session,
    :meth:`open_sync` / :meth:`open_async` on the thread or task running the
    call (before the tool), :meth:`leave` once the call is over (whether or
    not it ran), and :meth:`request_end` for an end request. Thread-safe.

    ``run_blocking``: how a sync caller runs an ``async`` hook.
    """

    def __init__(self, adapter: LoadedAdapter, run_blocking: RunBlocking) -> None:
        self.start_hook = adapter_hook(adapter, SESSION_START_HOOK)
        self.end_hook = adapter_hook(adapter, SESSION_END_HOOK)
        self._run_blocking = run_blocking
        self._lock = threading.Lock()
        self._sessions: Dict[str, Session] = {}

    @property
    def end_hook_is_async(self) -> bool:
        hook = self.end_hook
        return hook is not None and (
            inspect.iscoroutinefunction(hook)
            or inspect.iscoroutinefunction(getattr(hook, "__call__", None))
        )

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def get(self, session_id: str) -> Optional[Session]:
        with self._lock:
            return self._sessions.get(session_id)

    # ---------------------------------------------------------------- calls

    def join(self, session_id: str) -> Session:
        """A call of ``session_id`` was accepted: its Session (new if none)."""
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                session = self._sessions[session_id] = Session(session_id)
            session._running += 1
            return session

    def leave(self, session: Session) -> None:
        """A call that joined ``session`` is over (exactly once per join)."""
        with self._lock:
            session._running -= 1
            ready = session._on_idle if session._running == 0 else None
            if ready:
                session._on_idle = []
        if ready:
            for callback in ready:
                _fire(callback, session)

    def _claim(self, session: Session) -> "Optional[Tuple[concurrent.futures.Future[bool], bool]]":
        """None when the session is open (this call is counted in); else
        ``(starting, mine)``: its start is under way (``starting`` resolves
        when it ends) and ``mine`` says whether this call must run the hook."""
        with self._lock:
            if session._open:
                session.calls += 1
                return None
            waiting = session._starting
            if waiting is None:
                waiting = session._starting = concurrent.futures.Future()
                return waiting, True
            return waiting, False

    def open_sync(self, call: CallContext) -> Optional[CallError]:
        """Start ``call.session`` if this is its first call here: run the
        start hook on this thread (an ``async`` hook through run_blocking).
        None when the session is open; else the call's TOOL_EXCEPTION."""
        session = _session_of(call)
        while True:
            claim = self._claim(session)
            if claim is None:
                return None
            waiting, mine = claim
            if not mine:
                waiting.result()  # another call runs the hook; then look again
                continue
            try:
                self._start_sync(call)
            except BaseException as exc:  # noqa: B036 - a hook's SystemExit fails the call too
                return self._start_failed(session, waiting, exc, skip_frames=2)
            self._started(session, waiting)

    async def open_async(self, call: CallContext) -> Optional[CallError]:
        """:meth:`open_sync` for a call running on the event loop (a sync
        hook runs on the loop's thread, an ``async`` one is awaited)."""
        session = _session_of(call)
        while True:
            claim = self._claim(session)
            if claim is None:
                return None
            waiting, mine = claim
            if not mine:
                await asyncio.wrap_future(waiting)
                continue
            try:
                hook = self.start_hook
                if hook is not None:
                    token = _CURRENT.set(call)
                    try:
                        result = hook(session)
                        if inspect.isawaitable(result):
                            await result
                    finally:
                        _CURRENT.reset(token)
            except asyncio.CancelledError:
                self._start_abandoned(session, waiting)
                raise
            except BaseException as exc:  # noqa: B036
                return self._start_failed(session, waiting, exc, skip_frames=1)
            self._started(session, waiting)

    def _start_sync(self, call: CallContext) -> None:
        hook = self.start_hook
        if hook is None:
            return
        token = _CURRENT.set(call)
        try:
            result = hook(call.session)
            if inspect.isawaitable(result):
                self._run_blocking(result)
        finally:
            _CURRENT.reset(token)

    def _started(self, session: Session, waiting: "concurrent.futures.Future[bool]") -> None:
        with self._lock:
            session._open = True
            session._starting = None
        waiting.set_result(True)

    def _start_abandoned(self, session: Session, waiting: "concurrent.futures.Future[bool]") -> None:
        with self._lock:
            session._starting = None
        waiting.set_result(False)

    def _start_failed(
        self, session: Session, waiting: "concurrent.futures.Future[bool]", exc: BaseException,
        skip_frames: int,
    ) -> CallError:
        self._start_abandoned(session, waiting)
        name = _hook_name(self.start_hook) if self.start_hook is not None else SESSION_START_HOOK
        logger.warning("session %r: the start hook %s raised %s: %s",
                       session.id, name, type(exc).__name__, exc)
        err = error_from_exception(exc, skip_frames=skip_frames)
        err.message = (f"session {session.id!r}: the session-start hook {name} raised "
                       f"{err.type_name}: {err.message}; the session was not started")
        return err

    # ------------------------------------------------------------------ end

    def request_end(self, session_id: str, ready: Callable[[Optional[Session]], None]) -> None:
        """End ``session_id``: it is dropped from the registry now (a later
        call of that id starts a new session), and ``ready(session)`` is
        called once its accepted calls are over: at once (on this thread)
        when none is running, else on the thread that ends the last one.
        ``ready(None)`` when the session is unknown here. ``ready`` then runs
        the end hook (:meth:`end_sync` / :meth:`end_async`) if the session
        is ``open``."""
        with self._lock:
            session = self._sessions.pop(session_id, None)
            if session is not None and session._running > 0:
                session._on_idle.append(ready)
                return
        _fire(ready, session)

    def take_all(self) -> List[Session]:
        """Drop every session (graceful shutdown); those to end."""
        with self._lock:
            sessions = list(self._sessions.values())
            self._sessions.clear()
        return sessions

    def end_sync(self, session: Session) -> str:
        """Run the end hook for ``session`` on this thread (an ``async`` one
        through run_blocking) and drop its state. Returns the hook's
        formatted exception, "" when it ran cleanly or there is none."""
        hook = self.end_hook
        try:
            if hook is not None and session._open:
                result = hook(session)
                if inspect.isawaitable(result):
                    self._run_blocking(result)
            return ""
        except BaseException as exc:  # noqa: B036
            return self._end_failed(session, exc)
        finally:
            session.state = {}

    async def end_async(self, session: Session) -> str:
        """:meth:`end_sync` on the event loop."""
        hook = self.end_hook
        try:
            if hook is not None and session._open:
                result = hook(session)
                if inspect.isawaitable(result):
                    await result
            return ""
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: B036
            return self._end_failed(session, exc)
        finally:
            session.state = {}

    def _end_failed(self, session: Session, exc: BaseException) -> str:
        name = _hook_name(self.end_hook) if self.end_hook is not None else SESSION_END_HOOK
        logger.warning("session %r: the end hook %s raised %s: %s",
                       session.id, name, type(exc).__name__, exc)
        return format_traceback(exc, skip_frames=1)


def _session_of(call: CallContext) -> Session:
    session = call.session
    if session is None:
        raise ValueError(f"{call!r} belongs to no session")
    return session


def _fire(callback: Callable[[Optional[Session]], None], session: Optional[Session]) -> None:
    try:
        callback(session)
    except Exception:  # a bug in the server's callback: never lose the caller's thread
        logger.exception("internal error ending session %r",
                         None if session is None else session.id)
