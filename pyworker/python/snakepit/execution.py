"""Running one tool call: look up, bind, call, encode (standard library only).

``run_sync`` and ``run_async`` never raise for anything the tool does; they
return an Outcome, so a thread pool future or a task always yields a value.
"""

from __future__ import annotations

import asyncio
from typing import Any, Dict, Mapping, Optional, Tuple, Union

from snakepit.adapter import LoadedAdapter, Tool
from snakepit.codec import (
    CallError,
    EncodedResult,
    ErrorKind,
    bind_args,
    decode_args,
    encode_result,
    error_from_exception,
    merge_args,
)

Outcome = Union[EncodedResult, CallError]


def find_tool(adapter: LoadedAdapter, name: str) -> Tool:
    """The tool called ``name``. Raises CallError(UNKNOWN_TOOL)."""
    found = adapter.tools.get(name) if name else None
    if found is not None:
        return found
    available = ", ".join(adapter.tool_names()) or "(none)"
    if not name:
        raise CallError(
            ErrorKind.UNKNOWN_TOOL,
            f"no tool name given; available tools: {available}",
        )
    raise CallError(
        ErrorKind.UNKNOWN_TOOL,
        f"unknown tool {name!r}; available tools: {available}",
    )


def prepare_call(
    tool: Tool, args_json: bytes, binary_args: Optional[Mapping[str, bytes]] = None
) -> Tuple[Tuple[Any, ...], Dict[str, Any]]:
    """Decoded and bound ``(args, kwargs)``. Raises CallError(BAD_ARGUMENTS)."""
    return bind_args(tool, decode_args(tool.name, args_json, binary_args))


def prepare_decoded_call(
    tool: Tool,
    args: Any,
    binary_args: Optional[Mapping[str, bytes]] = None,
    json_field: str = "args",
    binary_field: str = "bin",
) -> Tuple[Tuple[Any, ...], Dict[str, Any]]:
    """Like prepare_call, for arguments already decoded from JSON (the native
    transport's ``args``). Raises CallError(BAD_ARGUMENTS)."""
    return bind_args(tool, merge_args(tool.name, args, binary_args, json_field, binary_field))


def _invoke(tool: Tool, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Any:
    return tool.func(*args, **kwargs)


def run_sync(tool: Tool, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Outcome:
    """Call a plain tool and encode its result (meant for a worker thread)."""
    try:
        value = _invoke(tool, args, kwargs)
    except BaseException as exc:  # noqa: B036 - SystemExit in a tool is a tool error too
        # Drop this frame and _invoke's so the traceback starts in the tool.
        return error_from_exception(exc, skip_frames=2)
    return _encode(tool, value)


async def run_async(tool: Tool, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Outcome:
    """Await an ``async def`` tool and encode its result. Only cancellation propagates."""
    try:
        value = await tool.func(*args, **kwargs)
    except asyncio.CancelledError:
        raise
    except BaseException as exc:  # noqa: B036 - SystemExit must not stop the event loop
        return error_from_exception(exc, skip_frames=1)
    return _encode(tool, value)


def _encode(tool: Tool, value: Any) -> Outcome:
    try:
        return encode_result(tool.name, value)
    except CallError as err:
        return err
