"""End-to-end: cooperative cancellation (snakepit.checkpoint / current_call)
and --stack-file, against real workers: native under every interpreter in
$SNAKEPIT_TEST_PYTHONS, gRPC under the one running pytest."""

from __future__ import annotations

import json
import os
import signal
import stat
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List

import pytest

from helpers import WorkerProcess, pythons_under_test

PYTHONS = pythons_under_test()
#: How soon after the cancellation a checkpointing tool must have stopped.
STOP_WITHIN = 0.05


@pytest.fixture(params=PYTHONS, ids=PYTHONS, scope="module")
def python(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def spawn_native(python: str) -> Iterator[Callable[..., WorkerProcess]]:
    started: List[WorkerProcess] = []

    def start(adapter: str = "cancel_tools", **kwargs: Any) -> WorkerProcess:
        worker = WorkerProcess(adapter, python=python, transport="native", **kwargs)
        started.append(worker)
        worker.wait_ready()
        return worker

    yield start
    for worker in started:
        worker.close()


@pytest.fixture
def spawn_grpc() -> Iterator[Callable[..., WorkerProcess]]:
    pytest.importorskip("grpc")
    started: List[WorkerProcess] = []

    def start(adapter: str = "cancel_tools", **kwargs: Any) -> WorkerProcess:
        worker = WorkerProcess(adapter, transport="grpc", **kwargs)
        started.append(worker)
        worker.wait_ready()
        return worker

    yield start
    for worker in started:
        worker.close()


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.002)


def native_running(worker: WorkerProcess) -> int:
    with worker.connect() as c:
        return c.request("stats")["max_in_flight"]


def read_marker(path: Path, timeout: float = 5.0) -> Dict[str, Any]:
    wait_for(path.exists, timeout)
    return json.loads(path.read_text())


# -------------------------------------------------------------------- native


def test_native_cancel_stops_a_checkpointing_tool(spawn_native: Callable[..., WorkerProcess],
                                                  tmp_path: Path) -> None:
    worker = spawn_native()
    marker = tmp_path / "stopped"
    with worker.connect() as c:
        stream = c.start("loop_until_cancelled", {"marker": str(marker)})
        wait_for(lambda: native_running(worker) == 1)
        time.sleep(0.02)  # well inside the loop
        cancelled_at = time.monotonic()
        c.cancel(stream)
        reply = c.wait(stream)
        answered = time.monotonic() - cancelled_at
        assert reply.kind == "CANCELLED", reply.error
        assert reply.error["type"] == "snakepit.cancellation.Cancelled"
        assert "cancelled" in reply.error["message"]
        record = read_marker(marker)
        assert record["cancelled"] is True
        assert record["iterations"] >= 1
        assert record["at"] - cancelled_at < STOP_WITHIN, record
        assert answered < STOP_WITHIN, answered
        # The only tool thread is free again.
        assert c.value("echo", {"value": 7}) == 7
        stats = c.request("stats")
        assert stats["in_flight"] == 0


def test_native_cancelled_flag_flips(spawn_native: Callable[..., WorkerProcess],
                                     tmp_path: Path) -> None:
    worker = spawn_native()
    marker = tmp_path / "flag"
    with worker.connect() as c:
        stream = c.start("watch_flag", {"marker": str(marker)})
        wait_for(lambda: native_running(worker) == 1)
        cancelled_at = time.monotonic()
        c.cancel(stream)
        assert c.wait(stream).value() == "saw it"  # a tool that returns still answers
        record = read_marker(marker)
        assert record["cancelled"] is True
        assert record["at"] - cancelled_at < STOP_WITHIN


def test_native_deadline_stops_a_checkpointing_tool(spawn_native: Callable[..., WorkerProcess],
                                                    tmp_path: Path) -> None:
    worker = spawn_native()
    marker = tmp_path / "stopped"
    with worker.connect() as c:
        deadline_ns = time.time_ns() + 200_000_000
        reply = c.call("loop_until_cancelled", {"marker": str(marker)}, deadline_ns=deadline_ns)
        late = (time.time_ns() - deadline_ns) / 1e9
        assert reply.kind == "DEADLINE_EXCEEDED", reply.error
        assert "deadline" in reply.error["message"]
        assert -0.001 < late < STOP_WITHIN
        assert read_marker(marker)["cancelled"] is True
        reply = c.call("sleep_then_checkpoint", {"seconds": 0.15},
                       deadline_ns=time.time_ns() + 50_000_000)
        assert reply.kind == "DEADLINE_EXCEEDED"
        assert c.value("sleep_then_checkpoint", {"seconds": 0}) == "finished"


def test_native_current_call(spawn_native: Callable[..., WorkerProcess]) -> None:
    worker = spawn_native()
    with worker.connect() as c:
        seen = c.value("describe_call", request_id="req-1")
        assert seen == {"tool": "describe_call", "request_id": "req-1", "deadline": None,
                        "remaining": None, "cancelled": False}
        deadline_ns = time.time_ns() + 5_000_000_000
        seen = c.value("adescribe_call", request_id="req-2", deadline_ns=deadline_ns)
        assert (seen["tool"], seen["request_id"]) == ("adescribe_call", "req-2")
        assert seen["deadline"] == pytest.approx(deadline_ns / 1e9, abs=1e-6)
        assert 0 < seen["remaining"] <= 5
        assert seen["cancelled"] is False


# ---------------------------------------------------------------------- gRPC


def _request(tool: str, args: Dict[str, Any], deadline_unix_nano: int = 0) -> Any:
    from snakepit.v1 import worker_pb2

    return worker_pb2.ExecuteRequest(
        request_id=uuid.uuid4().hex, tool=tool, args_json=json.dumps(args).encode(),
        deadline_unix_nano=deadline_unix_nano)


def test_grpc_cancel_stops_a_checkpointing_tool(spawn_grpc: Callable[..., WorkerProcess],
                                                tmp_path: Path) -> None:
    import grpc

    worker = spawn_grpc()
    marker = tmp_path / "stopped"
    future = worker.stub.Execute.future(
        _request("loop_until_cancelled", {"marker": str(marker)}),
        metadata=worker.metadata(), timeout=30)
    wait_for(lambda: worker.stats().max_in_flight == 1)
    time.sleep(0.02)
    cancelled_at = time.monotonic()
    assert future.cancel()
    record = read_marker(marker)
    assert record["cancelled"] is True
    assert record["at"] - cancelled_at < STOP_WITHIN, record
    with pytest.raises(grpc.FutureCancelledError):
        future.result()
    wait_for(lambda: worker.stats().in_flight == 0, timeout=2)
    assert worker.execute_json("echo", {"value": 3}) == 3


def test_grpc_rpc_deadline_stops_a_checkpointing_tool(spawn_grpc: Callable[..., WorkerProcess],
                                                      tmp_path: Path) -> None:
    import grpc

    worker = spawn_grpc()
    marker = tmp_path / "stopped"
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as info:
        worker.execute("loop_until_cancelled", {"marker": str(marker)}, timeout=0.3)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    record = read_marker(marker)
    assert record["cancelled"] is True
    assert 0.25 < record["at"] - started < 0.3 + STOP_WITHIN + 0.05, record
    wait_for(lambda: worker.stats().in_flight == 0, timeout=2)
    assert worker.execute_json("echo", {"value": 4}) == 4


def test_grpc_request_deadline_stops_a_checkpointing_tool(
    spawn_grpc: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    from snakepit.v1 import worker_pb2

    worker = spawn_grpc()
    marker = tmp_path / "stopped"
    deadline_ns = time.time_ns() + 200_000_000
    reply = worker.execute("loop_until_cancelled", {"marker": str(marker)},
                           deadline_unix_nano=deadline_ns)
    assert reply.error.kind == worker_pb2.ErrorInfo.Kind.KIND_DEADLINE_EXCEEDED
    assert read_marker(marker)["cancelled"] is True
    wait_for(lambda: worker.stats().in_flight == 0, timeout=2)


def test_grpc_current_call(spawn_grpc: Callable[..., WorkerProcess]) -> None:
    worker = spawn_grpc()
    seen = worker.execute_json("describe_call", {}, request_id="g-1", timeout=60)
    assert (seen["tool"], seen["request_id"], seen["cancelled"]) == ("describe_call", "g-1", False)
    # The RPC's own deadline bounds the call's (60 s here).
    assert seen["deadline"] == pytest.approx(time.time() + 60, abs=5)
    deadline_ns = time.time_ns() + 5_000_000_000
    seen = worker.execute_json("adescribe_call", {}, request_id="g-2",
                               deadline_unix_nano=deadline_ns, timeout=60)
    assert (seen["tool"], seen["request_id"]) == ("adescribe_call", "g-2")
    assert seen["deadline"] == pytest.approx(deadline_ns / 1e9, abs=1e-6)


# ---------------------------------------------------------------- stack file


def _dump_and_find(worker: WorkerProcess, path: Path, needle: str, dumps: int) -> str:
    os.kill(worker.proc.pid, signal.SIGUSR1)
    deadline = time.monotonic() + 10
    while True:
        text = path.read_text(errors="replace")
        if text.count(needle) >= dumps:
            return text
        if time.monotonic() > deadline:
            raise AssertionError(f"no {needle!r} in the stack file:\n{text}\n"
                                 f"stderr:\n{worker.stderr_text()}")
        time.sleep(0.01)


def test_stack_file_native(spawn_native: Callable[..., WorkerProcess], tmp_path: Path) -> None:
    path = tmp_path / "stacks.txt"
    path.write_text("old content\n")
    os.chmod(path, 0o644)
    worker = spawn_native(extra_args=["--stack-file", str(path)])
    assert path.read_text() == ""  # truncated at start
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with worker.connect() as c:
        c.start("stuck_in_sleep_for_dump", {"seconds": 60})
        # Asked on this connection, not a new one: a connection's reader
        # thread ending while faulthandler walks every thread's frames can
        # cut the dump short (it reads them without the GIL).
        wait_for(lambda: c.request("stats")["max_in_flight"] == 1)
        text = _dump_and_find(worker, path, "in stuck_in_sleep_for_dump", 1)
        assert text.count("Thread 0x") > 2  # every thread, not only the main one
        # A second signal appends a second dump; the worker still serves.
        _dump_and_find(worker, path, "in stuck_in_sleep_for_dump", 2)
        assert c.request("health")["ok"] is True
    assert worker.proc.poll() is None


def test_stack_file_grpc(spawn_grpc: Callable[..., WorkerProcess], tmp_path: Path) -> None:
    path = tmp_path / "stacks.txt"
    worker = spawn_grpc(extra_args=["--stack-file", str(path)])
    future = worker.stub.Execute.future(
        _request("stuck_in_sleep_for_dump", {"seconds": 60}), metadata=worker.metadata(),
        timeout=60)
    wait_for(lambda: worker.stats().max_in_flight == 1)
    _dump_and_find(worker, path, "in stuck_in_sleep_for_dump", 1)
    future.cancel()
    assert worker.proc.poll() is None


def test_unwritable_stack_file_is_a_boot_error(python: str, tmp_path: Path) -> None:
    worker = WorkerProcess("cancel_tools", python=python, transport="native",
                           extra_args=["--stack-file", str(tmp_path / "no" / "such" / "dir")])
    try:
        error = worker.wait_boot_error()
        assert error["type"] == "builtins.FileNotFoundError"
        assert worker.wait_exit() == 78
    finally:
        worker.close()
