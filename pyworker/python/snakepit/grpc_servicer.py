"""The gRPC layer of the gRPC transport: the snakepit.v1.Worker servicer.
It authenticates every RPC (the ``x-snakepit-token`` metadata), hands it to
the GrpcServer (snakepit.grpc_server) and never lets an exception escape
as anything but an answer."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import TYPE_CHECKING, AsyncIterator

import grpc

from snakepit.codec import ErrorKind, error_from_exception
from snakepit.grpc_callbacks import CallbackStream, GrpcCallbacks
from snakepit.grpc_messages import execute_reply, stream_error
from snakepit.v1 import worker_pb2, worker_pb2_grpc

if TYPE_CHECKING:
    from snakepit.grpc_server import GrpcServer

logger = logging.getLogger(__name__)

TOKEN_METADATA_KEY = "x-snakepit-token"


def _rpc_deadline_ns(context: grpc.aio.ServicerContext) -> int:
    """The RPC's deadline in Unix nanoseconds; 0 for none."""
    try:
        left = context.time_remaining()
    except Exception:
        return 0
    if left is None or left != left or left > 10 * 365 * 86400:  # none, NaN, "infinite"
        return 0
    return time.time_ns() + int(max(0.0, left) * 1e9)


# The generated base class is Any to mypy (snakepit.v1 is not checked: see
# pyproject.toml), which disallow_subclassing_any refuses.
class WorkerServicer(worker_pb2_grpc.WorkerServicer):  # type: ignore[misc]
    """Thin gRPC layer: authenticate, delegate, never leak an exception."""

    def __init__(self, worker: GrpcServer) -> None:
        self._worker = worker

    async def _authorize(self, context: grpc.aio.ServicerContext, method: str) -> None:
        if not self._worker.authorized(context):
            logger.warning("rejected %s call: missing or wrong %s", method, TOKEN_METADATA_KEY)
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                f"missing or wrong {TOKEN_METADATA_KEY} metadata",
            )

    async def Execute(
        self, request: worker_pb2.ExecuteRequest, context: grpc.aio.ServicerContext
    ) -> worker_pb2.ExecuteReply:
        await self._authorize(context, "Execute")
        try:
            return await self._worker.execute(request, _rpc_deadline_ns(context))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.exception("internal error running tool %r", request.tool)
            err = error_from_exception(exc, kind=ErrorKind.INTERNAL)
            err.message = f"internal worker error: {err.message}"
            return execute_reply(request.request_id, err)

    async def ExecuteStream(
        self, request_iterator: AsyncIterator[worker_pb2.StreamControl],
        context: grpc.aio.ServicerContext,
    ) -> None:
        # A coroutine writing with context.write, not an async generator: a
        # cancelled RPC raises CancelledError at once where it waits, so the
        # stream is stopped deterministically (not when a generator is
        # garbage-collected).
        await self._authorize(context, "ExecuteStream")
        try:
            await self._worker.execute_stream(
                request_iterator, context.write, _rpc_deadline_ns(context))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if context.cancelled() or context.done():  # the RPC went away mid-write
                logger.debug("ExecuteStream ended early: %s", exc)
                return
            logger.exception("internal error in ExecuteStream")
            err = error_from_exception(exc, kind=ErrorKind.INTERNAL)
            err.message = f"internal worker error: {err.message}"
            try:
                await context.write(stream_error(err))
            except Exception:
                pass

    async def Callbacks(
        self, request_iterator: AsyncIterator[worker_pb2.CallbackReply],
        context: grpc.aio.ServicerContext,
    ) -> None:
        await self._authorize(context, "Callbacks")
        hub = self._worker.callbacks
        stream = hub.open()
        reader = asyncio.get_running_loop().create_task(
            self._read_callback_replies(request_iterator, stream))
        try:
            # Headers now: once the runtime has them, the stream carries callbacks.
            await context.send_initial_metadata(())
            while True:
                request = await stream.outgoing.get()
                if request is None:
                    return
                await context.write(request)
        finally:
            reader.cancel()
            hub.close(stream, "the runtime's Callbacks stream ended")

    @staticmethod
    async def _read_callback_replies(
        request_iterator: AsyncIterator[worker_pb2.CallbackReply], stream: CallbackStream
    ) -> None:
        try:
            async for reply in request_iterator:
                GrpcCallbacks.answer(stream, reply)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.debug("Callbacks stream: reading replies failed: %s", exc)
        # The runtime's side ended: it answers nothing more on this stream.
        stream.outgoing.put_nowait(None)

    async def EndSession(
        self, request: worker_pb2.EndSessionRequest, context: grpc.aio.ServicerContext
    ) -> worker_pb2.EndSessionReply:
        await self._authorize(context, "EndSession")
        return await self._worker.end_session(request.session_id)

    async def Describe(
        self, request: worker_pb2.DescribeRequest, context: grpc.aio.ServicerContext
    ) -> worker_pb2.DescribeReply:
        await self._authorize(context, "Describe")
        return self._worker.describe()

    async def Health(
        self, request: worker_pb2.HealthRequest, context: grpc.aio.ServicerContext
    ) -> worker_pb2.HealthReply:
        await self._authorize(context, "Health")
        return self._worker.health()

    async def Stats(
        self, request: worker_pb2.StatsRequest, context: grpc.aio.ServicerContext
    ) -> worker_pb2.StatsReply:
        await self._authorize(context, "Stats")
        try:
            return self._worker.stats()
        except Exception:
            logger.exception("internal error in Stats")
            return worker_pb2.StatsReply(pid=os.getpid())

    async def Shutdown(
        self, request: worker_pb2.ShutdownRequest, context: grpc.aio.ServicerContext
    ) -> worker_pb2.ShutdownReply:
        await self._authorize(context, "Shutdown")
        try:
            in_flight = self._worker.request_shutdown(request.grace_ms / 1000.0, "Shutdown RPC")
        except Exception:
            logger.exception("internal error in Shutdown")
            in_flight = 0
        return worker_pb2.ShutdownReply(in_flight=in_flight)
