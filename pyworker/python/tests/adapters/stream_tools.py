"""Test-only streaming tools: generators that report how far they were
driven, where they ran and where their ``finally`` ran."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, AsyncIterator, Dict, Iterator

import snakepit
from echo_tools import (  # noqa: F401 - tools of this adapter too
    aguarded,
    asleep,
    count,
    count_window,
    echo,
    echo_bytes,
    fail_after,
    guarded,
)

_lock = threading.Lock()
#: key -> {"produced": items asked for, "thread": where the generator runs,
#: "finally": {"thread", "task", "at"} once its finally ran}
_records: Dict[str, Dict[str, Any]] = {}


def _record(key: str, **fields: Any) -> None:
    with _lock:
        _records.setdefault(key, {"produced": 0}).update(fields)


def _finally(key: str) -> None:
    task = None
    try:
        current = asyncio.current_task()
        task = current.get_name() if current is not None else None
    except RuntimeError:  # no running loop: a sync generator
        pass
    _record(key, **{"finally": {"thread": threading.current_thread().name, "task": task,
                                "at": time.monotonic()}})


@snakepit.tool
def produce(key: str, n: int = 1_000_000) -> Iterator[int]:
    """Yield 0 .. n-1, recording under ``key`` how many items were asked for."""
    _record(key, thread=threading.current_thread().name)
    try:
        for i in range(n):
            _record(key, produced=i + 1)
            yield i
    finally:
        _finally(key)


@snakepit.tool
async def aproduce(key: str, n: int = 1_000_000) -> AsyncIterator[int]:
    """The async generator version of produce."""
    current = asyncio.current_task()
    _record(key, thread=threading.current_thread().name,
            task=current.get_name() if current is not None else None)
    try:
        for i in range(n):
            _record(key, produced=i + 1)
            await asyncio.sleep(0)
            yield i
    finally:
        _finally(key)


@snakepit.tool
def spin(key: str) -> Iterator[str]:
    """Yield once, then compute forever, checkpointing, until cancelled
    (``snakepit.Cancelled`` escapes)."""
    _record(key, thread=threading.current_thread().name)
    try:
        yield "started"
        while True:
            snakepit.checkpoint()
            time.sleep(0.002)
    finally:
        _finally(key)


@snakepit.tool
def record(key: str) -> Dict[str, Any]:
    """What produce / aproduce / spin recorded under ``key``."""
    with _lock:
        return dict(_records.get(key, {"produced": 0}))


@snakepit.tool
def threads() -> Dict[str, Any]:
    """The worker's live threads."""
    return {"active": threading.active_count(),
            "names": sorted(t.name for t in threading.enumerate())}


@snakepit.tool
def raw_chunks(n: int, size: int = 3) -> Iterator[bytes]:
    """Yield n byte strings (item i is ``size`` bytes of value i)."""
    for i in range(n):
        yield bytes([i % 256]) * size


@snakepit.tool
def unencodable_after(n: int) -> Iterator[Any]:
    """Yield n ints, then an object JSON cannot encode."""
    yield from range(n)
    yield object()


@snakepit.tool
def big_after(n: int, size: int) -> Iterator[Any]:
    """Yield n ints, then ``size`` bytes."""
    yield from range(n)
    yield b"x" * size


@snakepit.tool
def session_stream(n: int) -> Iterator[Dict[str, Any]]:
    """Yield n items naming the current session (a stream in a session)."""
    for i in range(n):
        session = snakepit.current_session()
        yield {"i": i, "session": session.id if session is not None else None}
