"""Tools for the cooperative-cancellation and stack-dump tests."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, Dict, Optional

import snakepit


def _describe(call: Optional[snakepit.CallContext]) -> Optional[Dict[str, Any]]:
    if call is None:
        return None
    return {
        "tool": call.tool,
        "request_id": call.request_id,
        "deadline": call.deadline,
        "remaining": call.remaining(),
        "cancelled": call.cancelled,
    }


@snakepit.tool
def loop_until_cancelled(marker: str = "") -> int:
    """checkpoint() every 5 ms until the call is cancelled; then write
    {"at": time.monotonic(), "cancelled": ..., "iterations": ...} to ``marker``."""
    call = snakepit.current_call()
    iterations = 0
    try:
        while True:
            snakepit.checkpoint()
            iterations += 1
            time.sleep(0.005)
    except snakepit.Cancelled:
        if marker:
            record = {"at": time.monotonic(), "cancelled": call.cancelled if call else None,
                      "iterations": iterations}
            with open(marker + ".tmp", "w") as f:
                json.dump(record, f)
            import os

            os.replace(marker + ".tmp", marker)
        raise


@snakepit.tool
def watch_flag(marker: str) -> str:
    """Poll current_call().cancelled (no checkpoint) until it flips; write the
    time to ``marker`` and return normally."""
    call = snakepit.current_call()
    assert call is not None
    while not call.cancelled:
        time.sleep(0.005)
    with open(marker, "w") as f:
        json.dump({"at": time.monotonic(), "cancelled": call.cancelled}, f)
    return "saw it"


@snakepit.tool
def describe_call() -> Optional[Dict[str, Any]]:
    """The current call, as the tool sees it."""
    return _describe(snakepit.current_call())


@snakepit.tool
async def adescribe_call() -> Optional[Dict[str, Any]]:
    """The current call, as an async tool (and a task it starts) sees it."""
    async def child() -> Optional[Dict[str, Any]]:
        return _describe(snakepit.current_call())

    mine = _describe(snakepit.current_call())
    theirs = await asyncio.create_task(child())
    assert mine == theirs or (mine and theirs and mine["tool"] == theirs["tool"])
    return mine


@snakepit.tool
def sleep_then_checkpoint(seconds: float) -> str:
    """Sleep (not cooperatively), then checkpoint()."""
    time.sleep(seconds)
    snakepit.checkpoint()
    return "finished"


@snakepit.tool
def stuck_in_sleep_for_dump(seconds: float = 60) -> float:
    """Block in time.sleep (a C call) for ``seconds``."""
    time.sleep(seconds)
    return seconds


@snakepit.tool
def echo(value: Any = None) -> Any:
    return value
