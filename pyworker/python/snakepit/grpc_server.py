"""The gRPC transport server (grpc.aio) that implements snakepit.v1.Worker
(pyworker/proto/snakepit/v1/worker.proto); needs grpcio and protobuf,
imported only when the worker is started with ``--transport grpc``.

``Execute`` runs a call (snakepit.grpc_calls), ``ExecuteStream`` a
streaming one (snakepit.grpc_streams). ``Callbacks`` is the runtime's
channel for the callbacks tools make (snakepit.call / acall): the most
recent open one is used (snakepit.grpc_callbacks). ``EndSession`` ends a
session (snakepit.sessions). The servicer (snakepit.grpc_servicer)
authenticates each RPC and hands it here; this module owns the grpc.aio
server, the Health / Stats / Describe answers and the shutdown sequence.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from typing import Any, List, Optional, Tuple

import grpc

from snakepit.adapter import LoadedAdapter, close_adapter
from snakepit.config import DEFAULT_MAX_MESSAGE_BYTES, SIGNAL_GRACE_SECONDS, check_socket_path
from snakepit.core import token_matches
from snakepit.grpc_messages import tool_info
from snakepit.grpc_servicer import TOKEN_METADATA_KEY, WorkerServicer
from snakepit.grpc_streams import GrpcStreams
from snakepit.payloads import describe_payload, health_payload, stats_payload
from snakepit.sessions import Session
from snakepit.v1 import worker_pb2, worker_pb2_grpc

logger = logging.getLogger(__name__)

#: How long server.stop() lets the last replies (e.g. Shutdown's) go out.
_STOP_GRACE_SECONDS = 0.5
_DRAIN_POLL_SECONDS = 0.01


class GrpcServer(GrpcStreams):
    """Owns the grpc.aio server, the tool thread pool and the shutdown sequence."""

    def __init__(
        self,
        adapter: LoadedAdapter,
        token: str,
        capacity: int = 1,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        started_monotonic: Optional[float] = None,
        profile: Optional[str] = None,
    ) -> None:
        super().__init__(adapter, token, capacity, max_message_bytes, started_monotonic, profile)
        self._tool_infos: List[worker_pb2.ToolInfo] = [
            tool_info(payload) for payload in describe_payload(adapter)["tools"]
        ]
        self._server: Optional[grpc.aio.Server] = None
        self._shutdown_task: Optional["asyncio.Task[None]"] = None
        self._stopped: Optional[asyncio.Event] = None

    # ------------------------------------------------------------ lifecycle

    async def start(self, socket_path: str) -> None:
        """Bind the Unix socket (mode 0600) and start serving."""
        check_socket_path(socket_path)
        self._stopped = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        options = [
            ("grpc.max_send_message_length", self.max_message_bytes),
            ("grpc.max_receive_message_length", self.max_message_bytes),
        ]
        server = grpc.aio.server(options=options)
        worker_pb2_grpc.add_WorkerServicer_to_server(WorkerServicer(self), server)
        old_umask = os.umask(0o177)
        try:
            server.add_insecure_port("unix:" + socket_path)
            await server.start()
        finally:
            os.umask(old_umask)
        try:
            os.chmod(socket_path, 0o600)
        except OSError:
            pass
        self._server = server

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT start a graceful shutdown (5 s grace)."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(
                    signum, self.request_shutdown, SIGNAL_GRACE_SECONDS, signal.Signals(signum).name
                )
            except (NotImplementedError, RuntimeError, ValueError):  # not on this platform
                logger.debug("cannot install a handler for %s", signum)

    def request_shutdown(self, grace_seconds: float, reason: str = "Shutdown") -> int:
        """Stop taking calls; drain in the background. Returns calls in flight now.
        On the loop.

        Calling again only ever shortens the grace period.
        """
        loop = asyncio.get_running_loop()
        in_flight, first = self._begin_shutdown(grace_seconds, reason)
        if first:
            self._shutdown_task = loop.create_task(self._drain_and_stop())
        return in_flight

    async def _drain_and_stop(self) -> None:
        try:
            while self._counters.in_flight > 0 and time.monotonic() < self._shutdown.deadline():
                await asyncio.sleep(_DRAIN_POLL_SECONDS)
            left = self._counters.in_flight
            if left:
                logger.warning("grace period over with %d call(s) still running", left)
            for session in self._sessions.take_all():
                if session.open:  # on the loop, as close() is
                    await self._sessions.end_async(session)
            try:
                await close_adapter(self.adapter)
            except Exception:
                logger.exception("adapter close() failed")
            if self._server is not None:
                await self._server.stop(_STOP_GRACE_SECONDS)
            # Stopping cancelled the streams still running: let their
            # generators be closed (their finally blocks run) before exiting.
            stream_deadline = time.monotonic() + _STOP_GRACE_SECONDS
            while (self._open_streams and self._counters.in_flight
                   and time.monotonic() < stream_deadline):
                await asyncio.sleep(_DRAIN_POLL_SECONDS)
        except Exception:
            logger.exception("error during shutdown")
        finally:
            self._executor.shutdown(wait=False, cancel_futures=True)
            if self._stopped is not None:
                self._stopped.set()

    async def wait_stopped(self) -> None:
        """Return once a requested shutdown has completed."""
        if self._stopped is None:
            raise RuntimeError("server not started")
        await self._stopped.wait()

    # -------------------------------------------------------------- answers

    def authorized(self, context: grpc.aio.ServicerContext) -> bool:
        supplied: Any = None
        for key, value in context.invocation_metadata() or ():
            if key == TOKEN_METADATA_KEY:
                supplied = value
        return token_matches(supplied, self._token)

    def describe(self) -> worker_pb2.DescribeReply:
        return worker_pb2.DescribeReply(tools=self._tool_infos, adapter=self.adapter.spec)

    def health(self) -> worker_pb2.HealthReply:
        return worker_pb2.HealthReply(**health_payload(not self._shutdown.requested))

    def stats(self) -> worker_pb2.StatsReply:
        return worker_pb2.StatsReply(
            **stats_payload(self._counters, self.capacity, self._started, self.profile))

    # ------------------------------------------------------------- sessions

    async def end_session(self, session_id: str) -> worker_pb2.EndSessionReply:
        """EndSession: once the session's calls are over, run its end hook
        (on a tool thread, or this loop when async) and drop its state. The
        end goes on even if the RPC is cancelled meanwhile."""
        task = asyncio.get_running_loop().create_task(self._end_session(session_id))
        self._session_tasks.add(task)
        task.add_done_callback(self._session_tasks.discard)
        ended, hook_error = await asyncio.shield(task)
        return worker_pb2.EndSessionReply(ended=ended, hook_error=hook_error)

    async def _end_session(self, session_id: str) -> Tuple[bool, str]:
        if not session_id:
            return False, ""
        loop = asyncio.get_running_loop()
        idle: "asyncio.Future[Optional[Session]]" = loop.create_future()

        def ready(session: Optional[Session]) -> None:  # any thread
            loop.call_soon_threadsafe(_set_result, idle, session)

        self._sessions.request_end(session_id, ready)
        session = await idle
        if session is None or not session.open:
            if session is not None:
                session.state = {}
            return False, ""
        if self._sessions.end_hook is None:
            session.state = {}
            return True, ""
        if self._sessions.end_hook_is_async:
            return True, await self._sessions.end_async(session)
        return True, await loop.run_in_executor(self._executor, self._sessions.end_sync, session)


def _set_result(future: "asyncio.Future[Any]", value: Any) -> None:
    if not future.done():
        future.set_result(value)
