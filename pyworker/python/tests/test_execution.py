from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import pytest

from snakepit.adapter import Tool, load_adapter, make_tool
from snakepit.codec import CallError, EncodedResult, ErrorKind
from snakepit.decorator import ToolOptions
from snakepit.execution import find_tool, prepare_call, run_async, run_sync


def as_tool(func: Any) -> Tool:
    return make_tool(func.__name__, func, ToolOptions())


def test_find_tool_unknown_lists_available_sorted() -> None:
    loaded = load_adapter("examples.textstats")
    with pytest.raises(CallError) as info:
        find_tool(loaded, "nope")
    assert info.value.kind is ErrorKind.UNKNOWN_TOOL
    assert "'nope'" in info.value.message
    assert info.value.message.endswith(
        "char_count, fail, note, reverse_bytes, shout_words, slow_word_count, top_words, word_count, words"
    )
    with pytest.raises(CallError) as info:
        find_tool(loaded, "")
    assert info.value.kind is ErrorKind.UNKNOWN_TOOL
    assert "no tool name given" in info.value.message
    assert find_tool(loaded, "word_count").name == "word_count"


def test_run_sync_success() -> None:
    loaded = load_adapter("examples.textstats")
    tool = find_tool(loaded, "top_words")
    args, kwargs = prepare_call(tool, b'{"text": "a b a c a b", "n": 2}')
    outcome = run_sync(tool, args, kwargs)
    assert outcome == EncodedResult(data=b'[["a",3],["b",2]]', raw=False)


def test_type_error_inside_tool_is_tool_exception_not_bad_arguments() -> None:
    def adds(x: int) -> int:
        return x + "oops"  # type: ignore[operator]

    tool = as_tool(adds)
    args, kwargs = prepare_call(tool, b'{"x": 1}')  # binding succeeds
    outcome = run_sync(tool, args, kwargs)
    assert isinstance(outcome, CallError)
    assert outcome.kind is ErrorKind.TOOL_EXCEPTION
    assert outcome.type_name == "builtins.TypeError"
    # The traceback starts in the tool, not in our calling code.
    lines = outcome.traceback_text.splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    assert "in adds" in lines[1]
    assert "run_sync" not in outcome.traceback_text


def test_exception_from_example_tool() -> None:
    loaded = load_adapter("examples.textstats")
    tool = find_tool(loaded, "fail")
    outcome = run_sync(tool, *prepare_call(tool, b'{"message": "kaput"}'))
    assert isinstance(outcome, CallError)
    assert (outcome.kind, outcome.type_name, outcome.message) == (
        ErrorKind.TOOL_EXCEPTION, "builtins.ValueError", "kaput",
    )
    assert "textstats.py" in outcome.traceback_text


def test_system_exit_in_tool_is_captured() -> None:
    def quits() -> None:
        sys.exit(4)

    outcome = run_sync(as_tool(quits), (), {})
    assert isinstance(outcome, CallError)
    assert outcome.type_name == "builtins.SystemExit"


def test_run_sync_unencodable_result() -> None:
    def returns_object() -> object:
        return object()

    outcome = run_sync(as_tool(returns_object), (), {})
    assert isinstance(outcome, CallError)
    assert outcome.kind is ErrorKind.UNENCODABLE_RESULT


def test_run_async_success_and_error() -> None:
    loaded = load_adapter("examples.textstats")
    tool = find_tool(loaded, "slow_word_count")
    outcome = asyncio.run(run_async(tool, *prepare_call(tool, b'{"text": "x y z", "delay": 0}')))
    assert outcome == EncodedResult(data=b"3", raw=False)

    async def broken(x: int) -> int:
        raise KeyError(x)

    outcome = asyncio.run(run_async(as_tool(broken), (), {"x": 1}))
    assert isinstance(outcome, CallError)
    assert outcome.type_name == "builtins.KeyError"
    assert "in broken" in outcome.traceback_text.splitlines()[1]


def test_run_async_propagates_cancellation() -> None:
    async def forever() -> None:
        await asyncio.Event().wait()

    async def scenario() -> None:
        task = asyncio.ensure_future(run_async(as_tool(forever), (), {}))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())


def test_bytes_round_trip() -> None:
    loaded = load_adapter("examples.textstats")
    tool = find_tool(loaded, "reverse_bytes")
    outcome = run_sync(tool, *prepare_call(tool, b"", {"data": b"\x01\x02\x03"}))
    assert outcome == EncodedResult(data=b"\x03\x02\x01", raw=True)
    assert json.loads(b"3") == 3


# ------------------------------------------------------------- serial gates


def test_serial_gate_parks_and_hands_over_in_order() -> None:
    from snakepit.execution import SerialGate

    gate: "SerialGate[str]" = SerialGate()
    assert gate.enter("a") is True
    assert gate.enter("b") is False and gate.enter("c") is False
    assert gate.waiting == 2
    assert gate.leave() == "b"  # handed over: still busy
    assert gate.enter("d") is False
    assert [gate.leave(), gate.leave(), gate.leave()] == ["c", "d", None]
    assert gate.enter("e") is True  # free again


def test_serial_gates_only_for_thread_unsafe_tools() -> None:
    from snakepit.adapter import collect_tools
    from snakepit.decorator import ToolOptions
    from snakepit.execution import AsyncSerialGate, SerialGate, serial_gates

    def a() -> None: ...

    def b() -> None: ...

    async def c() -> None: ...

    tools = collect_tools({
        "a": (a, ToolOptions()),
        "b": (b, ToolOptions(thread_safe=False)),
        "c": (c, ToolOptions(thread_safe=False)),
    }, owner="test")
    sync, async_ = serial_gates(tools)
    assert list(sync) == ["b"] and isinstance(sync["b"], SerialGate)
    assert list(async_) == ["c"] and isinstance(async_["c"], AsyncSerialGate)


def test_async_serial_gate_one_holder_fifo_timeouts_and_cancellation() -> None:
    import asyncio

    from snakepit.execution import AsyncSerialGate

    async def main() -> None:
        gate = AsyncSerialGate()
        order = []
        assert await gate.acquire() is True and gate.busy

        async def take(name: str, timeout=None) -> bool:
            got = await gate.acquire(timeout)
            order.append((name, got))
            return got

        first = asyncio.ensure_future(take("first"))
        second = asyncio.ensure_future(take("second"))
        cancelled = asyncio.ensure_future(take("cancelled"))
        await asyncio.sleep(0)
        # A waiter whose time runs out leaves without the gate.
        assert await take("late", timeout=0.01) is False
        cancelled.cancel()
        await asyncio.sleep(0)
        gate.release()  # -> first
        assert await first is True
        gate.release()  # -> second (the cancelled waiter is skipped)
        assert await second is True
        assert cancelled.cancelled()
        gate.release()
        assert not gate.busy
        assert order == [("late", False), ("first", True), ("second", True)]

        # A turn handed to a waiter that is cancelled before it runs goes on.
        assert await gate.acquire() is True
        doomed = asyncio.ensure_future(gate.acquire())
        heir = asyncio.ensure_future(gate.acquire())
        await asyncio.sleep(0)
        gate.release()  # hands the gate to doomed ...
        doomed.cancel()  # ... which is cancelled before it resumes
        assert await heir is True
        gate.release()
        assert not gate.busy

    asyncio.run(main())
