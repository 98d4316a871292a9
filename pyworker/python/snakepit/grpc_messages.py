"""The snakepit.v1 protobuf messages the gRPC server answers with, built
from the transport-neutral outcomes and payloads (needs protobuf)."""

from __future__ import annotations

from typing import Any, Dict

from snakepit.codec import CallError, EncodedResult
from snakepit.execution import Outcome
from snakepit.v1 import worker_pb2


def _error_info(err: CallError) -> worker_pb2.ErrorInfo:
    return worker_pb2.ErrorInfo(
        kind=worker_pb2.ErrorInfo.Kind.Value(err.kind.value),
        type=_sendable(err.type_name),
        message=_sendable(err.message),
        traceback=_sendable(err.traceback_text),
    )


def _sendable(text: str) -> str:
    """``text`` as a protobuf string field can carry it: a lone surrogate
    (JSON's ``"\\ud800"`` decodes to one, and may reach an error message as
    an argument's name or value) is written as its escape, ``\\ud800``."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def execute_reply(request_id: str, outcome: Outcome) -> worker_pb2.ExecuteReply:
    if isinstance(outcome, EncodedResult):
        if outcome.raw:
            return worker_pb2.ExecuteReply(request_id=request_id, result_raw=outcome.data)
        return worker_pb2.ExecuteReply(request_id=request_id, result_json=outcome.data)
    return worker_pb2.ExecuteReply(request_id=request_id, error=_error_info(outcome))


def stream_error(err: CallError) -> worker_pb2.StreamMessage:
    return worker_pb2.StreamMessage(error=_error_info(err))


STREAM_END = worker_pb2.StreamMessage(end=True)


def tool_info(payload: Dict[str, Any]) -> worker_pb2.ToolInfo:
    """A ToolInfo from payloads.tool_payload()'s dict."""
    return worker_pb2.ToolInfo(
        name=payload["name"],
        doc=payload["doc"],
        is_async=payload["is_async"],
        params=[worker_pb2.ParamInfo(**p) for p in payload["params"]],
    )
