"""The gRPC (grpc.aio) server that implements snakepit.v1.Worker."""

from __future__ import annotations

import asyncio
import concurrent.futures
import hmac
import inspect
import logging
import os
import platform
import signal
import stat
import sys
import sysconfig
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

import grpc

from snakepit.adapter import LoadedAdapter, Tool, close_adapter
from snakepit.codec import CallError, EncodedResult, ErrorKind, error_from_exception
from snakepit.execution import Outcome, find_tool, prepare_call, run_async, run_sync
from snakepit.introspect import describe_params
from snakepit.v1 import worker_pb2, worker_pb2_grpc

logger = logging.getLogger(__name__)

TOKEN_METADATA_KEY = "x-snakepit-token"
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
#: Longest Unix socket path Linux accepts (sun_path is 108 bytes with the NUL).
MAX_SOCKET_PATH_BYTES = 107
#: Grace given by SIGTERM / SIGINT.
SIGNAL_GRACE_SECONDS = 5.0
#: How long server.stop() lets the last replies (e.g. Shutdown's) go out.
_STOP_GRACE_SECONDS = 0.5
_DRAIN_POLL_SECONDS = 0.01


class Counters:
    """Thread-safe in-flight / served counters (finish() runs in tool threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._in_flight = 0
        self._served = 0

    def start(self) -> None:
        with self._lock:
            self._in_flight += 1

    def finish(self) -> None:
        with self._lock:
            self._in_flight -= 1
            self._served += 1

    def snapshot(self) -> Tuple[int, int]:
        """``(in_flight, requests_served)``."""
        with self._lock:
            return self._in_flight, self._served

    @property
    def in_flight(self) -> int:
        return self.snapshot()[0]


def rss_bytes() -> int:
    """Resident set size from /proc/self/statm; 0 where unreadable."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            resident_pages = int(statm.read().split()[1])
        return resident_pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def gil_enabled() -> bool:
    is_enabled = getattr(sys, "_is_gil_enabled", None)
    return bool(is_enabled()) if callable(is_enabled) else True


def free_threaded_build() -> bool:
    return bool(sysconfig.get_config_var("Py_GIL_DISABLED"))


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


def tool_info(tool: Tool, doc: Optional[str]) -> worker_pb2.ToolInfo:
    return worker_pb2.ToolInfo(
        name=tool.name,
        doc=doc or "",
        is_async=tool.is_async,
        params=[
            worker_pb2.ParamInfo(
                name=p.name,
                annotation=p.annotation,
                required=p.required,
                default_json=p.default_json,
                kind=p.kind,
            )
            for p in describe_params(tool.signature)
        ],
    )


def _tool_doc(tool: Tool) -> str:
    try:
        return inspect.getdoc(tool.func) or ""
    except Exception:
        return ""


def max_message_bytes_from_env(environ: Optional[Dict[str, str]] = None) -> int:
    """``$SNAKEPIT_MAX_MESSAGE_BYTES`` or 64 MiB. Raises ValueError if malformed."""
    env = os.environ if environ is None else environ
    raw = env.get("SNAKEPIT_MAX_MESSAGE_BYTES", "").strip()
    if not raw:
        return DEFAULT_MAX_MESSAGE_BYTES
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"SNAKEPIT_MAX_MESSAGE_BYTES={raw!r} is not an integer") from None
    if value <= 0:
        raise ValueError(f"SNAKEPIT_MAX_MESSAGE_BYTES={raw!r} must be positive")
    return value


def check_socket_path(path: str) -> None:
    """Fail early, with a clear message, where binding the Unix socket would fail.

    A stale socket file at ``path`` is fine: gRPC replaces it.
    """
    size = len(os.fsencode(path))
    if not path or size > MAX_SOCKET_PATH_BYTES:
        raise ValueError(
            f"socket path {path!r} is {size} bytes; Unix socket paths must be "
            f"1 to {MAX_SOCKET_PATH_BYTES} bytes"
        )
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"socket directory {directory!r} does not exist")
    if os.path.lexists(path) and not stat.S_ISSOCK(os.lstat(path).st_mode):
        raise FileExistsError(f"socket path {path!r} exists and is not a socket")


class WorkerServer:
    """Owns the grpc.aio server, the tool thread pool and the shutdown sequence."""

    def __init__(
        self,
        adapter: LoadedAdapter,
        token: str,
        capacity: int = 1,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        started_monotonic: Optional[float] = None,
    ) -> None:
        if not token:
            raise ValueError("the worker token must not be empty")
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.adapter = adapter
        self.capacity = capacity
        self._token = token.encode("utf-8")
        self._max_message_bytes = max_message_bytes
        self._started = time.monotonic() if started_monotonic is None else started_monotonic
        self._counters = Counters()
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=capacity, thread_name_prefix="snakepit-tool"
        )
        self._tool_infos: List[worker_pb2.ToolInfo] = [
            tool_info(adapter.tools[name], _tool_doc(adapter.tools[name]))
            for name in adapter.tool_names()
        ]
        self._server: Optional[grpc.aio.Server] = None
        self._shutting_down = False
        self._drain_deadline: Optional[float] = None
        self._shutdown_task: Optional["asyncio.Task[None]"] = None
        self._stopped: Optional[asyncio.Event] = None

    # ------------------------------------------------------------ lifecycle

    async def start(self, socket_path: str) -> None:
        """Bind the Unix socket (mode 0600) and start serving."""
        check_socket_path(socket_path)
        self._stopped = asyncio.Event()
        options = [
            ("grpc.max_send_message_length", self._max_message_bytes),
            ("grpc.max_receive_message_length", self._max_message_bytes),
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

    @property
    def in_flight(self) -> int:
        return self._counters.in_flight

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    def request_shutdown(self, grace_seconds: float, reason: str = "Shutdown") -> int:
        """Stop taking calls; drain in the background. Returns calls in flight now.

        Calling again only ever shortens the grace period.
        """
        in_flight = self._counters.in_flight
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, grace_seconds)
        if self._drain_deadline is None or deadline < self._drain_deadline:
            self._drain_deadline = deadline
        if self._shutdown_task is None:
            self._shutting_down = True
            logger.info(
                "shutting down (%s): %d call(s) in flight, grace %.3fs",
                reason, in_flight, max(0.0, grace_seconds),
            )
            self._shutdown_task = loop.create_task(self._drain_and_stop())
        return in_flight

    async def _drain_and_stop(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._counters.in_flight > 0 and loop.time() < (self._drain_deadline or 0.0):
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
        if isinstance(supplied, str):
            supplied = supplied.encode("utf-8")
        if not isinstance(supplied, bytes):
            return False
        return hmac.compare_digest(supplied, self._token)

    async def execute(self, request: worker_pb2.ExecuteRequest) -> worker_pb2.ExecuteReply:
        request_id = request.request_id
        if self._shutting_down:
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
        outcome = await self._run(request, remaining)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "request %s tool %r: %s in %.3fs",
                request_id, request.tool,
                "ok" if isinstance(outcome, EncodedResult) else outcome.kind.name,
                time.monotonic() - started,
            )
        return execute_reply(request_id, outcome)

    async def _run(self, request: worker_pb2.ExecuteRequest, remaining: Optional[float]) -> Outcome:
        self._counters.start()
        handed_off = False
        try:
            try:
                tool = find_tool(self.adapter, request.tool)
                args, kwargs = prepare_call(tool, request.args_json, request.binary_args)
            except CallError as err:
                return err
            if tool.is_async:
                return await self._run_async(tool, args, kwargs, remaining)
            future = self._executor.submit(run_sync, tool, args, kwargs)
            # From here the thread, not this coroutine, ends the call's accounting:
            # a timed-out or cancelled wait must not free a slot still in use.
            future.add_done_callback(lambda _f: self._counters.finish())
            handed_off = True
            return await self._wait_sync(tool, future, remaining)
        finally:
            if not handed_off:
                self._counters.finish()

    async def _run_async(
        self, tool: Tool, args: Tuple[Any, ...], kwargs: Dict[str, Any], remaining: Optional[float]
    ) -> Outcome:
        if remaining is None:
            return await run_async(tool, args, kwargs)
        try:
            return await asyncio.wait_for(run_async(tool, args, kwargs), remaining)
        except asyncio.TimeoutError:
            logger.warning("tool %r passed its deadline and was cancelled", tool.name)
            return CallError(
                ErrorKind.DEADLINE_EXCEEDED,
                f"tool {tool.name!r} did not finish within its deadline ({remaining:.3f}s); "
                "it was cancelled",
            )

    async def _wait_sync(
        self, tool: Tool, future: "concurrent.futures.Future[Outcome]", remaining: Optional[float]
    ) -> Outcome:
        wrapped = asyncio.wrap_future(future)
        if remaining is None:
            return await wrapped
        done, _ = await asyncio.wait({wrapped}, timeout=remaining)
        if wrapped in done:
            return wrapped.result()
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
        return worker_pb2.HealthReply(
            ok=not self._shutting_down,
            protocol_version=worker_pb2.PROTOCOL_VERSION_CURRENT,
            pid=os.getpid(),
        )

    def stats(self) -> worker_pb2.StatsReply:
        in_flight, served = self._counters.snapshot()
        return worker_pb2.StatsReply(
            pid=os.getpid(),
            python_version=platform.python_version(),
            implementation=platform.python_implementation(),
            in_flight=in_flight,
            requests_served=served,
            free_threaded_build=free_threaded_build(),
            gil_enabled=gil_enabled(),
            capacity=self.capacity,
            rss_bytes=rss_bytes(),
            uptime_seconds=time.monotonic() - self._started,
        )


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
            return await self._worker.execute(request)
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
