"""The gRPC (grpc.aio) server that implements snakepit.v1.Worker."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import signal
import time
from typing import Any, Dict, List, Optional, Tuple

import grpc

from snakepit.adapter import LoadedAdapter, Tool, close_adapter
from snakepit.cancellation import CallContext
from snakepit.codec import CallError, EncodedResult, ErrorKind, error_from_exception
from snakepit.execution import (
    AsyncSerialGate,
    Outcome,
    find_tool,
    prepare_call,
    run_async,
    run_sync,
    serial_gates,
)
from snakepit.service import (  # noqa: F401 - re-exported for callers of this module
    DEFAULT_MAX_MESSAGE_BYTES,
    MAX_SOCKET_PATH_BYTES,
    SIGNAL_GRACE_SECONDS,
    Counters,
    ShutdownState,
    WorkerCore,
    check_socket_path,
    describe_payload,
    free_threaded_build,
    gil_enabled,
    health_payload,
    max_message_bytes_from_env,
    rss_bytes,
    stats_payload,
    token_matches,
)
from snakepit.v1 import worker_pb2, worker_pb2_grpc

logger = logging.getLogger(__name__)

TOKEN_METADATA_KEY = "x-snakepit-token"
#: How long server.stop() lets the last replies (e.g. Shutdown's) go out.
_STOP_GRACE_SECONDS = 0.5
_DRAIN_POLL_SECONDS = 0.01


def _error_info(err: CallError) -> worker_pb2.ErrorInfo:
    return worker_pb2.ErrorInfo(
        kind=worker_pb2.ErrorInfo.Kind.Value(err.kind.value),
        type=err.type_name,
        message=err.message,
        traceback=err.traceback_text,
    )


def execute_reply(request_id: str, outcome: Outcome) -> worker_pb2.ExecuteReply:
    if isinstance(outcome, EncodedResult):
        if outcome.raw:
            return worker_pb2.ExecuteReply(request_id=request_id, result_raw=outcome.data)
        return worker_pb2.ExecuteReply(request_id=request_id, result_json=outcome.data)
    return worker_pb2.ExecuteReply(request_id=request_id, error=_error_info(outcome))


def tool_info(payload: Dict[str, Any]) -> worker_pb2.ToolInfo:
    """A ToolInfo from service.tool_payload()'s dict."""
    return worker_pb2.ToolInfo(
        name=payload["name"],
        doc=payload["doc"],
        is_async=payload["is_async"],
        params=[worker_pb2.ParamInfo(**p) for p in payload["params"]],
    )


class WorkerServer(WorkerCore):
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
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=capacity, thread_name_prefix="snakepit-tool"
        )
        # thread_safe=False tools: one call at a time, waiting on the event
        # loop (sync and async alike), so a waiting call holds no thread.
        sync_gates, async_gates = serial_gates(adapter.tools)
        self._serial: Dict[str, AsyncSerialGate] = {**async_gates}
        self._serial.update((name, AsyncSerialGate()) for name in sync_gates)
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

        Calling again only ever shortens the grace period.
        """
        in_flight = self._counters.in_flight
        loop = asyncio.get_running_loop()
        if self._shutdown.request(grace_seconds):
            logger.info(
                "shutting down (%s): %d call(s) in flight, grace %.3fs",
                reason, in_flight, max(0.0, grace_seconds),
            )
            self._shutdown_task = loop.create_task(self._drain_and_stop())
        return in_flight

    async def _drain_and_stop(self) -> None:
        try:
            while self._counters.in_flight > 0 and time.monotonic() < self._shutdown.deadline():
                await asyncio.sleep(_DRAIN_POLL_SECONDS)
            left = self._counters.in_flight
            if left:
                logger.warning("grace period over with %d call(s) still running", left)
            try:
                await close_adapter(self.adapter)
            except Exception:
                logger.exception("adapter close() failed")
            if self._server is not None:
                await self._server.stop(_STOP_GRACE_SECONDS)
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

    # ---------------------------------------------------------------- calls

    def authorized(self, context: grpc.aio.ServicerContext) -> bool:
        supplied: Any = None
        for key, value in context.invocation_metadata() or ():
            if key == TOKEN_METADATA_KEY:
                supplied = value
        return token_matches(supplied, self._token)

    async def execute(
        self, request: worker_pb2.ExecuteRequest, rpc_deadline_ns: int = 0
    ) -> worker_pb2.ExecuteReply:
        """Run one call. ``rpc_deadline_ns``: the RPC's own deadline (Unix
        nanoseconds, 0 for none); with the request's, it bounds the call's
        snakepit.current_call().deadline."""
        request_id = request.request_id
        if self._shutdown.requested:
            return execute_reply(
                request_id,
                CallError(ErrorKind.SHUTTING_DOWN, "the worker is shutting down and takes no new calls"),
            )
        remaining: Optional[float] = None
        if request.deadline_unix_nano:
            remaining = (request.deadline_unix_nano - time.time_ns()) / 1e9
            if remaining <= 0:
                return execute_reply(
                    request_id,
                    CallError(
                        ErrorKind.DEADLINE_EXCEEDED,
                        f"the deadline passed {-remaining:.3f}s before tool "
                        f"{request.tool!r} could start",
                    ),
                )
        started = time.monotonic()
        deadline_ns = request.deadline_unix_nano
        if rpc_deadline_ns and (not deadline_ns or rpc_deadline_ns < deadline_ns):
            deadline_ns = rpc_deadline_ns
        call = CallContext(request_id, request.tool, deadline_ns)
        try:
            outcome = await self._run(request, remaining, call)
        except asyncio.CancelledError:
            call.cancel()  # the RPC was cancelled, or its deadline passed
            raise
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "request %s tool %r: %s in %.3fs",
                request_id, request.tool,
                "ok" if isinstance(outcome, EncodedResult) else outcome.kind.name,
                time.monotonic() - started,
            )
        return execute_reply(request_id, outcome)

    async def _run(
        self, request: worker_pb2.ExecuteRequest, remaining: Optional[float], call: CallContext
    ) -> Outcome:
        self._counters.start()
        handed_off = False
        try:
            try:
                tool = find_tool(self.adapter, request.tool)
                args, kwargs = prepare_call(tool, request.args_json, request.binary_args)
            except CallError as err:
                return err
            if tool.is_async:
                return await self._run_async(call, tool, args, kwargs, remaining)
            gate = None if tool.thread_safe else self._serial[tool.name]
            if gate is not None:
                waited = time.monotonic()
                if not await gate.acquire(remaining):
                    return CallError(
                        ErrorKind.DEADLINE_EXCEEDED,
                        f"the deadline passed while tool {tool.name!r} waited for its previous "
                        "call to end (thread_safe=False: one call at a time)",
                    )
                if remaining is not None:
                    remaining -= time.monotonic() - waited
                    if remaining <= 0:
                        gate.release()
                        return CallError(
                            ErrorKind.DEADLINE_EXCEEDED,
                            f"the deadline passed before tool {tool.name!r} could start",
                        )
            try:
                future = self._executor.submit(self._run_sync, call, tool, args, kwargs)
            except BaseException:
                if gate is not None:
                    gate.release()
                raise
            if gate is not None:
                # The gate opens when the thread ends the call, not when this
                # coroutine stops waiting for it (deadline, cancellation).
                future.add_done_callback(self._releaser(gate))
            # From here the thread, not this coroutine, ends the call's accounting:
            # a timed-out or cancelled wait must not free a slot still in use.
            future.add_done_callback(lambda _f: self._counters.finish())
            handed_off = True
            return await self._wait_sync(call, tool, future, remaining)
        finally:
            if not handed_off:
                self._counters.finish()

    @staticmethod
    def _releaser(gate: AsyncSerialGate) -> Any:
        loop = asyncio.get_running_loop()

        def release(_future: Any) -> None:
            try:
                loop.call_soon_threadsafe(gate.release)
            except RuntimeError:  # the loop is closed: the worker is exiting
                pass

        return release

    def _run_sync(
        self, call: CallContext, tool: Tool, args: Tuple[Any, ...], kwargs: Dict[str, Any]
    ) -> Outcome:
        self._counters.begin_run()
        try:
            return run_sync(tool, args, kwargs, call)
        finally:
            self._counters.end_run()

    async def _run_async(
        self, call: CallContext, tool: Tool, args: Tuple[Any, ...], kwargs: Dict[str, Any],
        remaining: Optional[float],
    ) -> Outcome:
        self._counters.begin_run()
        try:
            return await self._run_async_timed(call, tool, args, kwargs, remaining)
        finally:
            self._counters.end_run()

    async def _run_async_tool(
        self, call: CallContext, tool: Tool, args: Tuple[Any, ...], kwargs: Dict[str, Any]
    ) -> Outcome:
        """run_async, one call at a time for a ``thread_safe=False`` tool."""
        if tool.thread_safe:
            return await run_async(tool, args, kwargs, call)
        gate = self._serial[tool.name]
        await gate.acquire()
        try:
            return await run_async(tool, args, kwargs, call)
        finally:
            gate.release()

    async def _run_async_timed(
        self, call: CallContext, tool: Tool, args: Tuple[Any, ...], kwargs: Dict[str, Any],
        remaining: Optional[float],
    ) -> Outcome:
        if remaining is None:
            return await self._run_async_tool(call, tool, args, kwargs)
        try:
            return await asyncio.wait_for(
                self._run_async_tool(call, tool, args, kwargs), remaining)
        except asyncio.TimeoutError:
            call.cancel()
            logger.warning("tool %r passed its deadline and was cancelled", tool.name)
            return CallError(
                ErrorKind.DEADLINE_EXCEEDED,
                f"tool {tool.name!r} did not finish within its deadline ({remaining:.3f}s); "
                "it was cancelled",
            )

    async def _wait_sync(
        self, call: CallContext, tool: Tool, future: "concurrent.futures.Future[Outcome]",
        remaining: Optional[float],
    ) -> Outcome:
        """Wait for a sync tool's thread. The thread cannot be stopped: when
        the RPC is cancelled or the deadline passes, the call is flagged
        cancelled (snakepit.checkpoint() raises in the tool) and its thread
        runs on until the tool returns."""
        wrapped = asyncio.wrap_future(future)
        if remaining is None:
            try:
                return await wrapped
            except asyncio.CancelledError:
                call.cancel()
                raise
        try:
            done, _ = await asyncio.wait({wrapped}, timeout=remaining)
        except asyncio.CancelledError:
            call.cancel()
            wrapped.cancel()
            raise
        if wrapped in done:
            return wrapped.result()
        call.cancel()
        wrapped.cancel()  # drops it if still queued; a running thread cannot be stopped
        logger.warning(
            "tool %r passed its deadline; replying DEADLINE_EXCEEDED while its thread runs on",
            tool.name,
        )
        return CallError(
            ErrorKind.DEADLINE_EXCEEDED,
            f"tool {tool.name!r} did not finish within its deadline ({remaining:.3f}s); "
            "its thread keeps running until the tool returns",
        )

    def describe(self) -> worker_pb2.DescribeReply:
        return worker_pb2.DescribeReply(tools=self._tool_infos, adapter=self.adapter.spec)

    def health(self) -> worker_pb2.HealthReply:
        return worker_pb2.HealthReply(**health_payload(not self._shutdown.requested))

    def stats(self) -> worker_pb2.StatsReply:
        return worker_pb2.StatsReply(
            **stats_payload(self._counters, self.capacity, self._started, self.profile))


def _rpc_deadline_ns(context: grpc.aio.ServicerContext) -> int:
    """The RPC's deadline in Unix nanoseconds; 0 for none."""
    try:
        left = context.time_remaining()
    except Exception:
        return 0
    if left is None or left != left or left > 10 * 365 * 86400:  # none, NaN, "infinite"
        return 0
    return time.time_ns() + int(max(0.0, left) * 1e9)


class WorkerServicer(worker_pb2_grpc.WorkerServicer):
    """Thin gRPC layer: authenticate, delegate, never leak an exception."""

    def __init__(self, worker: WorkerServer) -> None:
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
