"""What every worker server shares, whatever its transport (standard library only).

Counters, the Health / Stats / Describe payloads (as plain dicts with the
field names of worker.proto), shutdown bookkeeping, the token check and the
limits read from the environment. ``snakepit.server`` (gRPC) turns these into
protobuf messages; ``snakepit.native_server`` sends them as JSON.
"""

from __future__ import annotations

import hmac
import inspect
import os
import platform
import stat
import sys
import threading
import time
from typing import Any, Callable, Dict, Mapping, Optional, Tuple, Union

from snakepit import PROTOCOL_VERSION, gil
from snakepit.adapter import LoadedAdapter, Tool
from snakepit.gil import free_threaded_build, gil_enabled  # noqa: F401 - re-exported
from snakepit.introspect import describe_params

MAX_MESSAGE_ENV = "SNAKEPIT_MAX_MESSAGE_BYTES"
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
#: Longest Unix socket path Linux accepts (sun_path is 108 bytes with the NUL).
MAX_SOCKET_PATH_BYTES = 107
#: Grace given by SIGTERM / SIGINT.
SIGNAL_GRACE_SECONDS = 5.0


class Counters:
    """Thread-safe call accounting (finish() runs in tool threads).

    ``in_flight``: calls accepted and not finished, queued ones included (a
    sync tool whose thread still runs counts, even after its reply went
    out). ``requests_served``: calls finished, failed ones included.
    ``max_in_flight``: the most tools that ever *ran* at once (queued calls do
    not count: with capacity 1 it stays 1).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)  # only for wait_idle()
        self._in_flight = 0
        self._served = 0
        self._running = 0
        self._max_running = 0
        self._waiting = 0

    def start(self) -> None:
        with self._lock:
            self._in_flight += 1

    def begin_run(self) -> None:
        """A started call's tool begins to run."""
        with self._lock:
            self._running += 1
            if self._running > self._max_running:
                self._max_running = self._running

    def end_run(self) -> None:
        with self._lock:
            self._running -= 1

    def finish(self) -> None:
        """A call is over (its tool never ran, or end_run() was called)."""
        with self._lock:
            self._in_flight -= 1
            self._served += 1
            if self._waiting and self._in_flight == 0:
                self._idle.notify_all()

    def finish_run(self) -> None:
        """end_run() and finish() in one."""
        with self._lock:
            self._running -= 1
            self._in_flight -= 1
            self._served += 1
            if self._waiting and self._in_flight == 0:
                self._idle.notify_all()

    @property
    def max_in_flight(self) -> int:
        with self._lock:
            return self._max_running

    def count_served(self) -> None:
        """A call that was answered at once (start() and finish() in one)."""
        with self._lock:
            self._served += 1

    def snapshot(self) -> Tuple[int, int]:
        """``(in_flight, requests_served)``."""
        with self._lock:
            return self._in_flight, self._served

    @property
    def in_flight(self) -> int:
        return self.snapshot()[0]

    def wake(self) -> None:
        """Wake wait_idle() so it re-reads its deadline."""
        with self._lock:
            self._idle.notify_all()

    def wait_idle(self, deadline: Callable[[], float]) -> int:
        """Block until no call is in flight or ``time.monotonic()`` passes
        ``deadline()`` (re-read on every wake-up). Returns the calls still in
        flight."""
        with self._lock:
            self._waiting += 1
            try:
                while self._in_flight > 0:
                    remaining = deadline() - time.monotonic()
                    if remaining <= 0:
                        break
                    self._idle.wait(remaining)
                return self._in_flight
            finally:
                self._waiting -= 1


class ShutdownState:
    """Whether a shutdown was requested, and the drain deadline (monotonic).

    Requesting again only ever shortens the grace period.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requested = False
        self._deadline: Optional[float] = None

    @property
    def requested(self) -> bool:
        return self._requested

    def request(self, grace_seconds: float) -> bool:
        """Record a request. True for the first one (the caller starts draining)."""
        deadline = time.monotonic() + max(0.0, grace_seconds)
        with self._lock:
            if self._deadline is None or deadline < self._deadline:
                self._deadline = deadline
            first = not self._requested
            self._requested = True
        return first

    def deadline(self) -> float:
        """The drain deadline on the time.monotonic() clock (now if unset)."""
        value = self._deadline
        return time.monotonic() if value is None else value


class WorkerCore:
    """What every server holds, whatever its transport: the adapter, its
    capacity and profile, the token, the call counters and the shutdown
    state."""

    def __init__(
        self,
        adapter: LoadedAdapter,
        token: str,
        capacity: int,
        max_message_bytes: int,
        started_monotonic: Optional[float],
        profile: Optional[str],
    ) -> None:
        if not token:
            raise ValueError("the worker token must not be empty")
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.adapter = adapter
        self.capacity = capacity
        self.profile = profile
        self.max_message_bytes = max_message_bytes
        self._token = token.encode("utf-8")
        self._started = time.monotonic() if started_monotonic is None else started_monotonic
        self._counters = Counters()
        self._shutdown = ShutdownState()

    @property
    def in_flight(self) -> int:
        """Calls running or queued now."""
        return self._counters.in_flight

    @property
    def shutting_down(self) -> bool:
        return self._shutdown.requested


def token_matches(supplied: Union[str, bytes, None], expected: bytes) -> bool:
    """Constant-time comparison of a supplied token with the worker's."""
    if isinstance(supplied, str):
        try:
            supplied = supplied.encode("utf-8")
        except UnicodeEncodeError:
            return False
    if not isinstance(supplied, bytes):
        return False
    return hmac.compare_digest(supplied, expected)


# ------------------------------------------------------------------ process


def rss_bytes() -> int:
    """Resident set size from /proc/self/statm; 0 where unreadable."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            resident_pages = int(statm.read().split()[1])
        return resident_pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


# ----------------------------------------------------------------- payloads


def health_payload(ok: bool) -> Dict[str, Any]:
    """The HealthReply fields as a dict: ``gil_enabled`` (now),
    ``free_threaded_build`` and, on a free-threaded build whose GIL got
    switched on, ``gil_enabled_by`` (the module) and ``gil_enabled_when``
    ("adapter import", "first call of tool NAME", ...; snakepit.gil)."""
    payload: Dict[str, Any] = {"ok": ok, "protocol_version": PROTOCOL_VERSION, "pid": os.getpid()}
    payload.update(gil.report())
    return payload


PROFILES = ("process", "thread")


def profile_name(capacity: int) -> str:
    """The profile of a worker started without ``--profile``: "process" (one
    call at a time) for capacity 1, else "thread"."""
    return "process" if capacity == 1 else "thread"


def stats_payload(
    counters: Counters, capacity: int, started_monotonic: float, profile: Optional[str] = None
) -> Dict[str, Any]:
    """The StatsReply fields as a dict. ``profile``: the worker's ``--profile``
    (None: what profile_name() derives from the capacity)."""
    in_flight, served = counters.snapshot()
    return {
        "pid": os.getpid(),
        "python_version": platform.python_version(),
        "implementation": platform.python_implementation(),
        "in_flight": in_flight,
        "requests_served": served,
        "free_threaded_build": free_threaded_build(),
        "gil_enabled": gil_enabled(),
        "capacity": capacity,
        "rss_bytes": rss_bytes(),
        "uptime_seconds": time.monotonic() - started_monotonic,
        "max_in_flight": counters.max_in_flight,
        "profile": profile or profile_name(capacity),
        "thread_violations": thread_violations(),
        "gil_enabled_by": gil.enabled_by(),
        "gil_enabled_when": gil.enabled_when(),
    }


def thread_violations() -> int:
    """Concurrent entries into @snakepit.single_threaded functions (0 unless
    the thread checks are on; snakepit.threadsafe is not imported for this)."""
    module = sys.modules.get("snakepit.threadsafe")
    return module.violation_count() if module is not None else 0


def tool_doc(tool: Tool) -> str:
    try:
        return inspect.getdoc(tool.func) or ""
    except Exception:
        return ""


def tool_payload(tool: Tool) -> Dict[str, Any]:
    """One ToolInfo as a dict, plus ``is_generator`` (a streaming tool),
    which the native describe carries and ToolInfo has no field for."""
    return {
        "name": tool.name,
        "doc": tool_doc(tool),
        "is_async": tool.is_async,
        "is_generator": tool.is_generator,
        "params": [
            {
                "name": p.name,
                "annotation": p.annotation,
                "required": p.required,
                "default_json": p.default_json,
                "kind": p.kind,
            }
            for p in describe_params(tool.signature)
        ],
    }


def describe_payload(adapter: LoadedAdapter) -> Dict[str, Any]:
    """The DescribeReply as a dict: tools sorted by name."""
    return {
        "adapter": adapter.spec,
        "tools": [tool_payload(adapter.tools[name]) for name in adapter.tool_names()],
    }


# ------------------------------------------------------------- configuration


def max_message_bytes_from_env(environ: Optional[Mapping[str, str]] = None) -> int:
    """``$SNAKEPIT_MAX_MESSAGE_BYTES`` or 64 MiB. Raises ValueError if malformed."""
    env = os.environ if environ is None else environ
    raw = env.get(MAX_MESSAGE_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_MESSAGE_BYTES
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{MAX_MESSAGE_ENV}={raw!r} is not an integer") from None
    if value <= 0:
        raise ValueError(f"{MAX_MESSAGE_ENV}={raw!r} must be positive")
    return value


def check_socket_path(path: str) -> None:
    """Fail early, with a clear message, where binding the Unix socket would fail.

    A stale socket file at ``path`` is fine: the server replaces it.
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

