"""The callbacks (``snakepit.call`` / ``acall``) of the native transport
(standard library only): ``CALLBACK`` frames out on the calling call's
connection, ``CALLBACK_RESULT`` / ``CALLBACK_ERROR`` back through its reader
thread (docs/wire-format.md)."""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import TYPE_CHECKING, Any, Dict

from snakepit import cancellation, wire
from snakepit.callbacks import (
    BAD_REPLY,
    CONNECTION_CLOSED,
    TOO_LARGE,
    CallbackError,
    CallbackTable,
    PendingCallback,
    wait_async,
    wait_sync,
)

if TYPE_CHECKING:
    from snakepit.native_conn import Connection

logger = logging.getLogger(__name__)

_FLAG_RAW = wire.FLAG_RAW
_CALLBACK_ERROR = wire.CALLBACK_ERROR


class NativeCallbacks:
    """The callbacks (snakepit.call / acall) of the tools whose calls came in
    on one connection: each is sent as a ``CALLBACK`` frame with an id of
    this connection's own (1, 2, ...) and waits for the ``CALLBACK_RESULT``
    or ``CALLBACK_ERROR`` the reader thread hands over (:meth:`answer`).
    When the connection closes, every waiting callback raises
    CallbackError(CONNECTION_CLOSED)."""

    __slots__ = ("_conn", "table", "_max_bytes")

    def __init__(self, conn: "Connection", max_message_bytes: int) -> None:
        self._conn = conn
        self.table = CallbackTable()
        self._max_bytes = max_message_bytes

    def call(self, ctx: cancellation.CallContext, name: str, args_json: bytes,
             binary: Dict[str, bytes]) -> Any:
        pending = PendingCallback(name)
        callback_id = self._send(ctx, name, args_json, binary, pending)
        return wait_sync(ctx, pending, functools.partial(self.table.pop, callback_id))

    async def acall(self, ctx: cancellation.CallContext, name: str, args_json: bytes,
                    binary: Dict[str, bytes]) -> Any:
        pending = PendingCallback(name, asyncio.get_running_loop())
        callback_id = self._send(ctx, name, args_json, binary, pending)
        return await wait_async(pending, functools.partial(self.table.pop, callback_id))

    def _send(self, ctx: cancellation.CallContext, name: str, args_json: bytes,
              binary: Dict[str, bytes], pending: PendingCallback) -> int:
        size = len(args_json) + sum(len(value) for value in binary.values())
        if size > self._max_bytes:
            raise CallbackError(
                TOO_LARGE, f"its arguments take {size} bytes; the message limit "
                f"(SNAKEPIT_MAX_MESSAGE_BYTES) is {self._max_bytes} bytes; nothing was sent", name)
        body = b"".join(wire.callback_body(name, ctx.request_id, args_json, binary))
        limit = wire.frame_limit(self._max_bytes)
        if len(body) > limit:
            raise CallbackError(
                TOO_LARGE, f"its CALLBACK frame would take {len(body)} bytes, over the "
                f"connection's limit of {limit}; nothing was sent", name)
        callback_id = self.table.add(pending)
        if not self._conn.send(wire.CALLBACK, callback_id, body):
            self.table.pop(callback_id)
            raise CallbackError(
                CONNECTION_CLOSED, "the connection to the runtime closed before it was sent", name)
        return callback_id

    def answer(self, frame_type: int, flags: int, callback_id: int, body: memoryview) -> None:
        """A ``CALLBACK_RESULT`` or ``CALLBACK_ERROR`` (reader thread). An
        answer to a callback nobody waits for any more (its call was
        cancelled) is dropped. Raises WireError for a body that is not
        UTF-8 JSON; a result that is well-formed JSON too deep (or too big)
        to decode fails that callback alone (CallbackError BAD_REPLY)."""
        pending = self.table.pop(callback_id)
        if pending is None:
            logger.debug("connection %s: dropped the answer to callback %d, which nobody "
                          "waits for any more", self._conn.name, callback_id)
            return
        if frame_type == _CALLBACK_ERROR:
            try:
                error = wire.parse_object(body, "CALLBACK_ERROR")
                kind, message = error.get("kind"), error.get("message", "")
                if type(kind) is not str or not kind or type(message) is not str:
                    raise wire.WireError(
                        "CALLBACK_ERROR body needs 'kind', a non-empty string, and 'message', "
                        "a string")
            except wire.WireError as exc:
                pending.resolve(error=CallbackError(
                    CONNECTION_CLOSED, f"the runtime sent a bad answer ({exc.message})",
                    pending.name))
                raise
            pending.resolve(error=CallbackError(kind, message, pending.name))
        elif flags & _FLAG_RAW:
            pending.resolve(bytes(body))
        else:
            try:
                value = wire.loads(body)
            except ValueError as exc:
                pending.resolve(error=CallbackError(
                    CONNECTION_CLOSED, "the runtime sent a bad answer", pending.name))
                raise wire.WireError(
                    f"CALLBACK_RESULT body is not valid UTF-8 JSON: {exc}") from None
            except wire.JSONLimitError as exc:  # this callback's result alone fails
                pending.resolve(error=CallbackError(
                    BAD_REPLY, f"the runtime's result cannot be decoded: its contents "
                    f"{exc.problem}", pending.name))
                return
            pending.resolve(value)
