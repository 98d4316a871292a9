"""Test-only tools that call back into the runtime (snakepit.call / acall)."""

from __future__ import annotations

import json
from typing import Any, Dict, Optional

import snakepit
from echo_tools import acallback, callback, callback_bytes, callback_many, echo  # noqa: F401

__snakepit_thread_safe__ = True


def _failure(exc: BaseException) -> Dict[str, Any]:
    out = {"raised": type(exc).__name__, "kind": getattr(exc, "kind", None),
           "message": getattr(exc, "message", str(exc))}
    if isinstance(exc, snakepit.Cancelled):
        out["deadline_exceeded"] = exc.deadline_exceeded
    return out


@snakepit.tool
def try_callback(name: str, args: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """snakepit.call(name, **args): {"value": ...} or what it raised."""
    try:
        return {"value": snakepit.call(name, **(args or {}))}
    except (snakepit.CallbackError, snakepit.Cancelled, TypeError, ValueError,
            RuntimeError) as exc:
        return _failure(exc)


@snakepit.tool
async def atry_callback(name: str, args: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """await snakepit.acall(name, **args): {"value": ...} or what it raised."""
    try:
        return {"value": await snakepit.acall(name, **(args or {}))}
    except (snakepit.CallbackError, snakepit.Cancelled, TypeError, ValueError,
            RuntimeError) as exc:
        return _failure(exc)


@snakepit.tool
def unencodable_argument(kind: str) -> Dict[str, Any]:
    """snakepit.call with an argument JSON cannot encode: what it raised."""
    value: Any = {"object": object(), "nan": float("nan"), "set": {1}}[kind]
    try:
        snakepit.call("anything", good=1, bad=[value])
    except (TypeError, ValueError) as exc:
        return _failure(exc)
    return {"raised": None}


@snakepit.tool
async def blocking_call_on_the_loop() -> Dict[str, Any]:
    """snakepit.call (the blocking one) from an async tool: what it raised."""
    try:
        snakepit.call("anything")
    except RuntimeError as exc:
        return _failure(exc)
    return {"raised": None}


@snakepit.tool
def call_and_record(name: str, marker: str) -> Any:
    """snakepit.call(name); whatever it raised is written to ``marker`` as JSON."""
    try:
        return snakepit.call(name)
    except BaseException as exc:
        with open(marker + ".tmp", "w") as f:
            json.dump(_failure(exc), f)
        import os

        os.replace(marker + ".tmp", marker)
        raise
