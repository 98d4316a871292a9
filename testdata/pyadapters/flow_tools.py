"""Tools for the Go tests of streams, callbacks and sessions that need a
thread-safe adapter (the thread profile) or a look at the worker's threads.

* ``relay(name, i)``: returns ``snakepit.call(name, i=i)``: one callback per
  call, so that many calls at once on a thread-profile worker make many
  callbacks at once.
* ``threads()``: the worker's live threads (``threading.active_count()``).
* ``ticks(n, marker)``: a generator of ``0 .. n-1`` whose ``finally`` writes
  ``marker`` with the name of the thread it ran on, then that of the thread
  that ran the generator's first item.
* ``session_calls()``: counts the calls of the current session in its state.
"""

from __future__ import annotations

import threading
from typing import Any, Iterator

import snakepit

__snakepit_thread_safe__ = True


@snakepit.tool
def relay(name: str, i: int) -> Any:
    """Call the Go function ``name`` with ``i`` and return what it returns."""
    return snakepit.call(name, i=i)


@snakepit.tool
def threads() -> int:
    """How many threads the worker process has now."""
    return threading.active_count()


@snakepit.tool
def ticks(n: int, marker: str) -> Iterator[int]:
    """Yield ``0 .. n-1``; on the way out, record in ``marker`` the thread
    that ran the first item and the one that ran ``finally``."""
    first = threading.current_thread().name
    try:
        for i in range(n):
            yield i
    finally:
        with open(marker, "w", encoding="utf-8") as f:
            f.write(first + "\n" + threading.current_thread().name + "\n")


@snakepit.tool
def session_calls() -> int:
    """Count this call in the session's state and return the count."""
    state = snakepit.current_session().state
    with _lock:
        state["calls"] = state.get("calls", 0) + 1
        return state["calls"]


_lock = threading.Lock()
