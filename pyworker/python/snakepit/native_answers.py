"""The frames that answer a native call (standard library only): ``RESULT``
with the encoded result, or ``ERROR`` with a JSON body that always fits the
message limit (docs/wire-format.md)."""

from __future__ import annotations

import logging
from typing import Tuple

from snakepit import wire
from snakepit.codec import CallError, EncodedResult, ErrorKind
from snakepit.execution import Outcome

logger = logging.getLogger(__name__)


def encode_outcome(tool: str, outcome: Outcome, max_bytes: int) -> Tuple[int, bytes, int]:
    """``(frame type, body, flags)`` of a call's answer; a result over
    ``max_bytes`` is answered TOO_LARGE."""
    if isinstance(outcome, EncodedResult):
        data = outcome.data
        if len(data) <= max_bytes:
            return wire.RESULT, data, (wire.FLAG_RAW if outcome.raw else 0)
        logger.warning(
            "tool %r returned a %d-byte result, over the %d-byte message limit",
            tool, len(data), max_bytes,
        )
        outcome = CallError(
            ErrorKind.TOO_LARGE,
            f"tool {tool!r} returned a result of {len(data)} bytes; the message limit "
            f"(SNAKEPIT_MAX_MESSAGE_BYTES) is {max_bytes} bytes",
        )
    return wire.ERROR, error_body(outcome, max_bytes), 0


def error_body(err: CallError, max_bytes: int) -> bytes:
    """The ERROR frame's JSON body; an enormous message or traceback is cut
    to what fits in ``max_bytes``, the traceback's end kept."""
    body = wire.dumps({
        "kind": err.kind.name,
        "type": err.type_name,
        "message": err.message,
        "traceback": err.traceback_text,
    })
    budget = max_bytes // 4
    while len(body) > max_bytes and budget >= 16:
        message = err.message
        traceback_text = err.traceback_text
        if len(message) > budget:
            message = message[:budget] + f"... ({len(message) - budget} characters cut)"
        if len(traceback_text) > budget:
            traceback_text = (f"... ({len(traceback_text) - budget} characters cut) ...\n"
                              + traceback_text[-budget:])
        body = wire.dumps({
            "kind": err.kind.name, "type": err.type_name[:budget],
            "message": message, "traceback": traceback_text,
        })
        budget //= 2
    return body
