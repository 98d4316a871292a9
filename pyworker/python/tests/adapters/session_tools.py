"""Test-only adapters with session hooks.

The module adapter (``session_tools``) has sync hooks; the class adapter
(``session_tools:AsyncSessions``) has async ones and a close() that writes
the hook log to $SESSION_TOOLS_LOG. Session ids steer the hooks: a start
hook fails for ids starting with "bad"; an end hook sleeps 0.3 s for ids
starting with "slow" and fails for ids starting with "endfail"; a start
hook sleeps 0.1 s for ids starting with "conc".
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from typing import Any, Dict, Iterator, List

import snakepit
from gate_tools import block_until  # noqa: F401 - a tool of this adapter too

_lock = threading.Lock()
_log: List[Dict[str, Any]] = []


def _entry(event: str, session: snakepit.Session) -> None:
    task = None
    try:
        current = asyncio.current_task()
        task = current.get_name() if current is not None else None
    except RuntimeError:
        pass
    call = snakepit.current_call()
    with _lock:
        _log.append({"event": event, "id": session.id, "thread": threading.current_thread().name,
                     "task": task, "state": dict(session.state), "at": time.monotonic(),
                     "call": call.tool if call is not None else None})


def _start(session: snakepit.Session) -> None:
    if session.id.startswith("conc"):
        time.sleep(0.1)  # concurrent first calls of the session wait for it
    _entry("start", session)
    if session.id.startswith("bad"):
        raise RuntimeError(f"cannot start {session.id}")
    session.state["n"] = 0


def _end(session: snakepit.Session) -> None:
    if session.id.startswith("slow"):
        time.sleep(0.3)
    _entry("end", session)
    if session.id.startswith("endfail"):
        raise ValueError("end hook failed")


def on_session_start(session: snakepit.Session) -> None:
    _start(session)


def on_session_end(session: snakepit.Session) -> None:
    _end(session)


@snakepit.tool
def bump() -> Dict[str, Any]:
    """Count this call in the session's state; the session as the tool sees it."""
    session = snakepit.current_session()
    if session is None:
        return {"session": None}
    with _lock:
        session.state["n"] += 1
        n = session.state["n"]
    return {"session": session.id, "n": n, "calls": session.calls}


@snakepit.tool
async def abump() -> Dict[str, Any]:
    """bump, as an async tool."""
    return bump()


@snakepit.tool
def gen(n: int) -> Iterator[Dict[str, Any]]:
    """A stream in a session: n items naming it."""
    for i in range(n):
        session = snakepit.current_session()
        yield {"i": i, "session": session.id if session else None}


@snakepit.tool
def log() -> List[Dict[str, Any]]:
    """Every hook run so far, in order."""
    with _lock:
        return list(_log)


class AsyncSessions(snakepit.Adapter):
    """Async session hooks; close() writes the hook log to $SESSION_TOOLS_LOG."""

    async def on_session_start(self, session: snakepit.Session) -> None:
        await asyncio.sleep(0)
        _start(session)

    async def on_session_end(self, session: snakepit.Session) -> None:
        await asyncio.sleep(0)
        _end(session)

    def close(self) -> None:
        path = os.environ.get("SESSION_TOOLS_LOG")
        if path:
            with _lock:
                entries = list(_log)
            entries.append({"event": "close"})
            with open(path, "w") as f:
                json.dump(entries, f)

    @snakepit.tool
    def bump(self) -> Dict[str, Any]:
        return bump()

    @snakepit.tool
    async def abump(self) -> Dict[str, Any]:
        return bump()

    @snakepit.tool
    def log(self) -> List[Dict[str, Any]]:
        return log()
