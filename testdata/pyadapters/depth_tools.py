"""Tools for the bad-input depth tests and the worker fuzz target
(``--adapter depth_tools``): values nested deeper than a JSON decoder goes,
both ways, and the plain tools a fuzzed call may reach.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Dict, Iterator, Optional

import snakepit


@snakepit.tool
def echo(value: Any = None) -> Any:
    """Return ``value`` unchanged."""
    return value


@snakepit.tool
def echo_bytes(data: bytes) -> bytes:
    """Return ``data`` unchanged (raw bytes both ways)."""
    return data


@snakepit.tool
def pid() -> int:
    """The worker's process id."""
    return os.getpid()


@snakepit.tool
def count(n: int) -> Iterator[int]:
    """Yield 0 .. n-1 (at most 100)."""
    yield from range(min(int(n), 100))


@snakepit.tool
def session_id() -> Optional[str]:
    """The current session's id, None outside one."""
    session = snakepit.current_session()
    return None if session is None else session.id


def _nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


class _RecursionLimit:
    """Raise sys.setrecursionlimit for a block (the worker runs one call at
    a time: capacity 1), so that json.dumps can nest ``depth`` levels."""

    def __init__(self, depth: int) -> None:
        self._want = depth + 1000
        self._old = sys.getrecursionlimit()

    def __enter__(self) -> None:
        sys.setrecursionlimit(max(self._old, self._want))

    def __exit__(self, *exc: Any) -> None:
        sys.setrecursionlimit(self._old)


@snakepit.tool
def deep_result(depth: int) -> Any:
    """A list nested ``depth`` levels deep. The recursion limit is raised
    for good (the worker encodes the result after the tool returned), so
    that CPython 3.11 encodes it; 3.13 stops near 10,000 levels whatever
    the limit (answered UNENCODABLE_RESULT)."""
    if sys.getrecursionlimit() < depth + 1000:
        sys.setrecursionlimit(depth + 1000)
    return _nested(depth)


@snakepit.tool
def deep_callback(name: str, depth: int) -> Dict[str, str]:
    """``snakepit.call(name, value=<a list nested depth levels>)``, sent
    with a raised recursion limit; ``{"kind", "message"}`` of the
    CallbackError it raises (kind "UNENCODABLE" when this Python cannot
    encode that deep), or ``{"kind": "OK"}``."""
    with _RecursionLimit(depth):
        try:
            snakepit.call(name, value=_nested(depth))
        except snakepit.CallbackError as exc:
            return {"kind": exc.kind, "message": exc.message}
        except (TypeError, ValueError) as exc:
            return {"kind": "UNENCODABLE", "message": str(exc)}
    return {"kind": "OK", "message": ""}


@snakepit.tool
def callback_result(name: str) -> Dict[str, Any]:
    """``snakepit.call(name)``: ``{"kind": "OK", "type": <type of the
    result>}``, or the ``{"kind", "message"}`` of the CallbackError."""
    try:
        value = snakepit.call(name)
    except snakepit.CallbackError as exc:
        return {"kind": exc.kind, "message": exc.message}
    return {"kind": "OK", "type": type(value).__name__}


@snakepit.tool
def raise_message(message: Any = None) -> None:
    """Raise ``ValueError(message)``."""
    raise ValueError(message)
