"""Tools for the Go integration tests (``--adapter echo_tools``).

Besides plain tools: streaming tools (generators), tools that call back
into Go (snakepit.call / acall), and session hooks that record which
sessions started and ended in this worker.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, AsyncIterator, Dict, Iterator, List, Optional

import snakepit

logger = logging.getLogger("echo_tools")


@snakepit.tool
def echo(value: Any = None) -> Any:
    """Return ``value`` unchanged."""
    return value


@snakepit.tool
def echo_bytes(data: bytes) -> bytes:
    """Return ``data`` unchanged (raw bytes both ways)."""
    return data


@snakepit.tool
def raise_error(message: str) -> None:
    """Raise ``RuntimeError(message)``."""
    raise RuntimeError(message)


@snakepit.tool
def sleep(seconds: float) -> float:
    """Block a worker thread for ``seconds``; return ``seconds``."""
    time.sleep(seconds)
    return seconds


@snakepit.tool
async def asleep(seconds: float) -> float:
    """Wait ``seconds`` on the event loop; return ``seconds``."""
    await asyncio.sleep(seconds)
    return seconds


@snakepit.tool
def crash(code: int = 3) -> None:
    """Kill the worker process at once with exit status ``code``."""
    os._exit(code)


@snakepit.tool
def pid() -> int:
    """The worker's process id."""
    return os.getpid()


@snakepit.tool
def unencodable() -> object:
    """Return something JSON cannot encode."""
    return object()


@snakepit.tool
def nan() -> float:
    """Return NaN, which strict JSON cannot encode."""
    return float("nan")


@snakepit.tool
def big(n: int) -> bytes:
    """Return ``n`` bytes (all 0x78, 'x')."""
    return b"x" * n


@snakepit.tool
def log(message: str, level: str = "warning") -> None:
    """Log ``message`` on the "echo_tools" logger at ``level``."""
    logger.log(logging.getLevelName(level.upper()), message)


@snakepit.tool
def print_stdout(message: str) -> None:
    """print() ``message`` to stdout."""
    print(message)


@snakepit.tool
def cooperative_loop(seconds: float = 60) -> int:
    """Loop for up to ``seconds``, calling snakepit.checkpoint() every 5 ms;
    return the iterations done. Stops with snakepit.Cancelled (answered
    CANCELLED) as soon as the caller gives up or the deadline passes."""
    iterations = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        snakepit.checkpoint()
        iterations += 1
        time.sleep(0.005)
    return iterations


@snakepit.tool
def uncooperative_sleep(seconds: float = 60, started: str = "") -> float:
    """Block in time.sleep(``seconds``) without ever checking for
    cancellation; return ``seconds``. ``started``: a file created first, so
    that a test knows the tool is running."""
    if started:
        open(started, "w").close()
    time.sleep(seconds)
    return seconds


# ------------------------------------------------------------------ streams


@snakepit.tool
def count(n: int, start: int = 0) -> Iterator[int]:
    """Yield ``start`` .. ``start + n - 1``."""
    for i in range(start, start + n):
        yield i


@snakepit.tool
def count_window(n: int) -> Iterator[Dict[str, Any]]:
    """Yield ``{"i": i, "in_flight": ...}`` for i in 0 .. n-1, ``in_flight``
    being snakepit.current_call().stream_in_flight while item i is made: the
    chunks sent that the consumer has not taken yet (always below the window)."""
    for i in range(n):
        call = snakepit.current_call()
        yield {"i": i, "in_flight": call.stream_in_flight if call is not None else None}


def _append_line(path: str, line: str) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")


@snakepit.tool
def guarded(n: int, marker: str, delay: float = 0.0) -> Iterator[int]:
    """Yield 0 .. n-1 (``delay`` seconds apart, checkpointing); however the
    generator ends (finished, failed, closed), its ``finally`` appends
    ``finally thread=<name> yielded=<items yielded>`` to the file ``marker``."""
    yielded = 0
    try:
        for i in range(n):
            snakepit.checkpoint()
            if delay:
                time.sleep(delay)
            yielded += 1
            yield i
    finally:
        _append_line(marker, f"finally thread={threading.current_thread().name} "
                             f"yielded={yielded}")


@snakepit.tool
async def aguarded(n: int, marker: str, delay: float = 0.0) -> AsyncIterator[int]:
    """The async generator version of ``guarded``: the line is
    ``finally task=<name> yielded=<count>``."""
    yielded = 0
    try:
        for i in range(n):
            await asyncio.sleep(delay)
            yielded += 1
            yield i
    finally:
        task = asyncio.current_task()
        _append_line(marker, f"finally task={task.get_name() if task else '-'} "
                             f"yielded={yielded}")


@snakepit.tool
def fail_after(n: int) -> Iterator[int]:
    """Yield 0 .. n-1, then raise ``ValueError("boom after n")``."""
    for i in range(n):
        yield i
    raise ValueError(f"boom after {n}")


# ---------------------------------------------------------------- callbacks


@snakepit.tool
def callback(name: str, args: Optional[Dict[str, Any]] = None) -> Any:
    """``snakepit.call(name, **args)``: call the Go function ``name``."""
    return snakepit.call(name, **(args or {}))


@snakepit.tool
async def acallback(name: str, args: Optional[Dict[str, Any]] = None) -> Any:
    """``await snakepit.acall(name, **args)``."""
    return await snakepit.acall(name, **(args or {}))


def _record_caught(path: str, exc: BaseException) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"type": type(exc).__name__, "kind": getattr(exc, "kind", None),
                   "deadline_exceeded": getattr(exc, "deadline_exceeded", None),
                   "message": str(exc)}, f)


@snakepit.tool
def callback_caught(name: str, path: str) -> Any:
    """``snakepit.call(name)``; what it raised is written to path as JSON
    (the caller may be gone by then), and raised again."""
    try:
        return snakepit.call(name)
    except BaseException as exc:
        _record_caught(path, exc)
        raise


@snakepit.tool
async def acallback_caught(name: str, path: str) -> Any:
    """``await snakepit.acall(name)``, recording what it raised as
    callback_caught does."""
    try:
        return await snakepit.acall(name)
    except BaseException as exc:
        _record_caught(path, exc)
        raise


@snakepit.tool
def callback_bytes(name: str, data: bytes) -> Any:
    """``snakepit.call(name, data=data)``: the bytes travel raw."""
    return snakepit.call(name, data=data)


@snakepit.tool
def callback_many(name: str, n: int) -> List[Any]:
    """``snakepit.call(name, i=i)`` for i in 0 .. n-1, all at once from n
    threads of this call; the results in order of i."""
    if n <= 0:
        return []
    with ThreadPoolExecutor(max_workers=n) as pool:
        futures = [pool.submit(contextvars.copy_context().run, snakepit.call, name, i=i)
                   for i in range(n)]
        return [future.result() for future in futures]


# ----------------------------------------------------------------- sessions

_sessions_lock = threading.Lock()
_started_sessions: List[str] = []
_ended_sessions: List[str] = []


def on_session_start(session: snakepit.Session) -> None:
    """Session-start hook: record the session and start its call count."""
    with _sessions_lock:
        _started_sessions.append(session.id)
    session.state["calls"] = 0


def on_session_end(session: snakepit.Session) -> None:
    """Session-end hook: record the session."""
    with _sessions_lock:
        _ended_sessions.append(session.id)


@snakepit.tool
def session_info() -> Optional[Dict[str, Any]]:
    """``{"id", "pid", "calls"}`` of the current session (None outside one),
    ``calls`` counting this session's session_info calls in this worker."""
    session = snakepit.current_session()
    if session is None:
        return None
    with _sessions_lock:
        session.state["calls"] = session.state.get("calls", 0) + 1
        calls = session.state["calls"]
    return {"id": session.id, "pid": os.getpid(), "calls": calls}


@snakepit.tool
def started_sessions() -> List[str]:
    """The ids whose session-start hook ran in this worker, in order."""
    with _sessions_lock:
        return list(_started_sessions)


@snakepit.tool
def ended_sessions() -> List[str]:
    """The ids whose session-end hook ran in this worker, in order."""
    with _sessions_lock:
        return list(_ended_sessions)
