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
        "char_count, fail, reverse_bytes, slow_word_count, top_words, word_count"
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
