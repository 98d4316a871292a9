"""snakepit.current_call() / checkpoint() / Cancelled, in process."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, Dict, List, Optional

import pytest

import snakepit
from snakepit.adapter import Tool, make_tool
from snakepit.cancellation import CallContext, Cancelled
from snakepit.codec import CallError, EncodedResult, ErrorKind
from snakepit.decorator import ToolOptions
from snakepit.execution import run_async, run_sync


def as_tool(func: Any) -> Tool:
    return make_tool(func.__name__, func, ToolOptions())


def test_public_names() -> None:
    for name in ("CallContext", "Cancelled", "checkpoint", "current_call"):
        assert name in snakepit.__all__
        assert getattr(snakepit, name) is not None
    assert issubclass(snakepit.Cancelled, Exception)
    assert not issubclass(snakepit.Cancelled, asyncio.CancelledError)


def test_outside_a_call() -> None:
    assert snakepit.current_call() is None
    snakepit.checkpoint()  # a no-op


def test_context_fields_and_deadline() -> None:
    call = CallContext("r1", "t", 0)
    assert (call.request_id, call.tool, call.deadline, call.remaining()) == ("r1", "t", None, None)
    assert call.cancelled is False
    call.checkpoint()
    call.cancel()
    assert call.cancelled is True and call.cancel_requested is True
    with pytest.raises(Cancelled) as info:
        call.checkpoint()
    assert info.value.call is call and info.value.deadline_exceeded is False

    soon = CallContext("r2", "t", time.time_ns() + 50_000_000)
    assert soon.deadline is not None and abs(soon.deadline - time.time() - 0.05) < 0.04
    remaining = soon.remaining()
    assert remaining is not None and 0 < remaining <= 0.05
    assert soon.cancelled is False
    time.sleep(0.06)
    assert soon.cancelled is True  # the deadline passed: no flag needed
    assert soon.cancel_requested is False
    assert soon.remaining() == 0.0
    with pytest.raises(Cancelled) as info:
        soon.checkpoint()
    assert info.value.deadline_exceeded is True
    assert "deadline" in str(info.value)


def _sees_call() -> Dict[str, Any]:
    call = snakepit.current_call()
    assert call is not None
    return {"tool": call.tool, "request_id": call.request_id}


def test_run_sync_sets_the_current_call_and_resets_it() -> None:
    tool = as_tool(_sees_call)
    call = CallContext("req-7", tool.name)
    outcome = run_sync(tool, (), {}, call)
    assert isinstance(outcome, EncodedResult)
    assert b'"req-7"' in outcome.data
    assert snakepit.current_call() is None


def test_current_call_is_per_thread() -> None:
    seen: List[Optional[CallContext]] = []
    started = threading.Event()
    release = threading.Event()

    def tool_body() -> None:
        started.set()
        release.wait(5)
        seen.append(snakepit.current_call())

    tool = as_tool(tool_body)
    call = CallContext("a", tool.name)
    thread = threading.Thread(target=run_sync, args=(tool, (), {}, call))
    thread.start()
    started.wait(5)
    assert snakepit.current_call() is None  # not this thread's call
    release.set()
    thread.join(5)
    assert seen == [call]


def _loops() -> int:
    for _ in range(1000):
        snakepit.checkpoint()
        time.sleep(0.001)
    return -1


def test_cancelled_escaping_a_sync_tool_is_a_cancelled_error() -> None:
    tool = as_tool(_loops)
    call = CallContext("r", tool.name)
    threading.Timer(0.02, call.cancel).start()
    started = time.monotonic()
    outcome = run_sync(tool, (), {}, call)
    assert time.monotonic() - started < 0.5
    assert isinstance(outcome, CallError)
    assert outcome.kind is ErrorKind.CANCELLED
    assert outcome.type_name == "snakepit.cancellation.Cancelled"
    assert "cancelled" in outcome.message
    assert "_loops" in outcome.traceback_text


def test_deadline_passing_stops_a_checkpointing_tool() -> None:
    tool = as_tool(_loops)
    call = CallContext("r", tool.name, time.time_ns() + 30_000_000)
    outcome = run_sync(tool, (), {}, call)
    assert isinstance(outcome, CallError)
    assert outcome.kind is ErrorKind.DEADLINE_EXCEEDED
    assert "deadline" in outcome.message


def test_cancelled_raised_outside_a_worker_call() -> None:
    def gives_up() -> None:
        raise snakepit.Cancelled("stopping")

    outcome = run_sync(as_tool(gives_up), (), {})
    assert isinstance(outcome, CallError) and outcome.kind is ErrorKind.CANCELLED
    assert outcome.message == "stopping"


async def _async_sees_call() -> Dict[str, Any]:
    async def child() -> Optional[str]:
        call = snakepit.current_call()
        return call.request_id if call else None

    mine = _sees_call()
    mine["child"] = await asyncio.create_task(child())
    return mine


async def _async_checkpoints() -> None:
    while True:
        snakepit.checkpoint()
        await asyncio.sleep(0.001)


def test_run_async_sets_the_current_call_for_the_tool_and_its_tasks() -> None:
    tool = as_tool(_async_sees_call)
    outcome = asyncio.run(run_async(tool, (), {}, CallContext("req-a", tool.name)))
    assert isinstance(outcome, EncodedResult)
    assert b'"child": "req-a"' in outcome.data or b'"child":"req-a"' in outcome.data
    assert snakepit.current_call() is None

    loops = as_tool(_async_checkpoints)
    call = CallContext("req-b", loops.name)

    async def main() -> Any:
        asyncio.get_running_loop().call_later(0.02, call.cancel)
        return await run_async(loops, (), {}, call)

    outcome = asyncio.run(main())
    assert isinstance(outcome, CallError) and outcome.kind is ErrorKind.CANCELLED
