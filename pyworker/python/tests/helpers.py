"""A handle on a real ``python -m snakepit.worker`` subprocess, for tests."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import IO, Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

PY_ROOT = Path(__file__).resolve().parents[1]
REPO_ROOT = PY_ROOT.parents[1]
ADAPTER_DIR = REPO_ROOT / "testdata" / "pyadapters"
#: Test-only adapters (gate_tools).
TEST_ADAPTER_DIR = Path(__file__).resolve().parent / "adapters"

READY_PREFIX = "SNAKEPIT-READY "
BOOT_ERROR_PREFIX = "SNAKEPIT-BOOT-ERROR "
START_TIMEOUT = 20.0
#: os.pathsep-separated interpreters to run native workers under (default: this one).
PYTHONS_ENV = "SNAKEPIT_TEST_PYTHONS"


def pythons_under_test() -> List[str]:
    """Interpreters for the native integration tests: $SNAKEPIT_TEST_PYTHONS or this one."""
    raw = os.environ.get(PYTHONS_ENV, "").strip()
    found = [p for p in raw.split(os.pathsep) if p.strip()] if raw else []
    return found or [sys.executable]


class WorkerProcess:
    """Starts a worker, collects its stdout/stderr lines, talks gRPC to it."""

    def __init__(
        self,
        adapter: str,
        *,
        capacity: int = 1,
        token: str = "",
        extra_args: Sequence[str] = (),
        env: Optional[Mapping[str, str]] = None,
        stdin: Any = subprocess.DEVNULL,
        socket: str = "",
        transport: Optional[str] = "grpc",
        python: str = "",
    ) -> None:
        self.token = token or uuid.uuid4().hex
        # Short directory: Unix socket paths are limited to ~107 bytes.
        self.dir = tempfile.mkdtemp(prefix="sp-", dir="/tmp")
        self.socket = socket or os.path.join(self.dir, "w.sock")
        self.transport = transport
        self.python = python or sys.executable
        cmd = [
            self.python, "-m", "snakepit.worker",
            "--adapter", adapter,
            *(["--transport", transport] if transport else []),
            "--socket", self.socket,
            "--worker-id", "w1",
            "--run-id", "run-test",
            "--capacity", str(capacity),
            *extra_args,
        ]
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("SNAKEPIT_")}
        # Exercise the worker's own flushing: no -u / PYTHONUNBUFFERED here.
        full_env.pop("PYTHONUNBUFFERED", None)
        full_env["PYTHONDONTWRITEBYTECODE"] = "1"
        full_env["PYTHONPATH"] = os.pathsep.join(
            [str(PY_ROOT), str(REPO_ROOT), str(ADAPTER_DIR), str(TEST_ADAPTER_DIR)]
        )
        full_env["SNAKEPIT_TOKEN"] = self.token
        full_env.update(env or {})
        self.stdout_lines: "queue.Queue[Optional[str]]" = queue.Queue()
        self.stdout_seen: List[str] = []
        self.stderr_lines: List[str] = []
        self._stderr_lock = threading.Lock()
        self.proc = subprocess.Popen(
            cmd,
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=full_env,
            cwd=str(REPO_ROOT),
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._threads = [
            threading.Thread(target=self._pump_stdout, args=(self.proc.stdout,), daemon=True),
            threading.Thread(target=self._pump_stderr, args=(self.proc.stderr,), daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        self._channel: Any = None
        self._stub: Any = None
        self._clients: List[Any] = []

    # ------------------------------------------------------------- output

    def _pump_stdout(self, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            self.stdout_lines.put(raw.decode("utf-8", "replace").rstrip("\n"))
        self.stdout_lines.put(None)

    def _pump_stderr(self, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            with self._stderr_lock:
                self.stderr_lines.append(raw.decode("utf-8", "replace").rstrip("\n"))

    def stderr_text(self) -> str:
        with self._stderr_lock:
            return "\n".join(self.stderr_lines)

    def next_stdout_line(self, timeout: float = START_TIMEOUT) -> Optional[str]:
        """The next stdout line; None at EOF. Raises TimeoutError."""
        try:
            line = self.stdout_lines.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(
                f"no stdout line within {timeout}s; stderr:\n{self.stderr_text()}"
            ) from None
        if line is not None:
            self.stdout_seen.append(line)
        return line

    def wait_ready(self, timeout: float = START_TIMEOUT) -> Dict[str, Any]:
        line = self.next_stdout_line(timeout)
        if line is None or not line.startswith(READY_PREFIX):
            raise AssertionError(
                f"expected a READY line, got {line!r}; exit={self.proc.poll()} "
                f"stderr:\n{self.stderr_text()}"
            )
        return json.loads(line[len(READY_PREFIX):])

    def wait_boot_error(self, timeout: float = START_TIMEOUT) -> Dict[str, Any]:
        line = self.next_stdout_line(timeout)
        assert line is not None and line.startswith(BOOT_ERROR_PREFIX), (
            f"expected a BOOT-ERROR line, got {line!r}; stderr:\n{self.stderr_text()}"
        )
        return json.loads(line[len(BOOT_ERROR_PREFIX):])

    def wait_stdout(self, predicate: Callable[[str], bool], timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            line = self.next_stdout_line(max(0.01, deadline - time.monotonic()))
            if line is None:
                raise AssertionError("stdout closed before the expected line")
            if predicate(line):
                return line

    def wait_stderr(self, predicate: Callable[[List[str]], bool], timeout: float = 10.0) -> List[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._stderr_lock:
                lines = list(self.stderr_lines)
            if predicate(lines):
                return lines
            time.sleep(0.01)
        raise AssertionError(f"stderr never matched; got:\n{self.stderr_text()}")

    def wait_exit(self, timeout: float = 15.0) -> int:
        return self.proc.wait(timeout=timeout)

    def signal(self, signum: int = signal.SIGTERM) -> None:
        self.proc.send_signal(signum)

    # --------------------------------------------------------------- gRPC

    @property
    def stub(self) -> Any:
        if self._stub is None:
            import grpc

            from snakepit.v1 import worker_pb2_grpc

            self._channel = grpc.insecure_channel(
                "unix:" + self.socket,
                options=[
                    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
                    ("grpc.max_send_message_length", 64 * 1024 * 1024),
                ],
            )
            self._stub = worker_pb2_grpc.WorkerStub(self._channel)
        return self._stub

    def metadata(self, token: Optional[str] = None) -> Tuple[Tuple[str, str], ...]:
        return (("x-snakepit-token", self.token if token is None else token),)

    def execute(
        self,
        tool: str,
        args: Optional[Dict[str, Any]] = None,
        *,
        args_json: Optional[bytes] = None,
        binary: Optional[Dict[str, bytes]] = None,
        deadline_unix_nano: int = 0,
        request_id: str = "",
        timeout: float = 10.0,
    ) -> Any:
        from snakepit.v1 import worker_pb2

        if args_json is None:
            args_json = json.dumps(args).encode() if args is not None else b""
        request = worker_pb2.ExecuteRequest(
            request_id=request_id or uuid.uuid4().hex,
            tool=tool,
            args_json=args_json,
            binary_args=binary or {},
            deadline_unix_nano=deadline_unix_nano,
        )
        return self.stub.Execute(request, metadata=self.metadata(), timeout=timeout)

    def execute_json(self, tool: str, args: Optional[Dict[str, Any]] = None, **kw: Any) -> Any:
        reply = self.execute(tool, args, **kw)
        assert reply.WhichOneof("outcome") == "result_json", reply
        return json.loads(reply.result_json)

    def stats(self) -> Any:
        from snakepit.v1 import worker_pb2

        return self.stub.Stats(worker_pb2.StatsRequest(), metadata=self.metadata(), timeout=10)

    # ------------------------------------------------------------- native

    def connect(self, token: Optional[str] = "", **kw: Any) -> Any:
        """A NativeClient on this worker's socket, after HELLO with the right
        token ("" default), another token, or none (``token=None``: no HELLO).
        Closed with the worker."""
        from native_client import NativeClient

        client = NativeClient(self.socket, self.token if token == "" else token, **kw)
        self._clients.append(client)
        return client

    # ------------------------------------------------------------ cleanup

    def close(self) -> None:
        for client in self._clients:
            client.close()
        self._clients.clear()
        if self._channel is not None:
            self._channel.close()
            self._channel = None
            self._stub = None
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover
            pass
        for thread in self._threads:
            thread.join(timeout=5)
        for stream in (self.proc.stdout, self.proc.stderr, self.proc.stdin):
            if stream is not None:
                stream.close()
        shutil.rmtree(self.dir, ignore_errors=True)
