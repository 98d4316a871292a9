"""The thread profile, end to end: real ``python -m snakepit.worker`` processes.

Every test runs on the native transport under each interpreter of
$SNAKEPIT_TEST_PYTHONS (default: the one running pytest) and on gRPC under
the interpreter running pytest. Concurrency is proven with barriers and
files the test controls, never with sleeps.
"""

from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import pytest

from helpers import WorkerProcess, pythons_under_test

TRANSPORTS = [("native", p) for p in pythons_under_test()] + [("grpc", sys.executable)]

#: ("ok", value) or ("error", kind, type, message)
Outcome = Tuple[Any, ...]

UNSAFE_MODULE_MESSAGE = (
    "adapter 'unsafe_tools' is not declared thread-safe, but the thread profile runs up to 4 "
    "of its calls at once in one process. Make it safe (see docs/thread-safety.md), then "
    "declare it: subclass snakepit.ThreadSafeAdapter, or set __snakepit_thread_safe__ = True "
    'in the module; or run the pool with Profile "process".'
)


@pytest.fixture(params=TRANSPORTS, ids=[f"{t}-{p}" for t, p in TRANSPORTS])
def transport(request: pytest.FixtureRequest) -> Tuple[str, str]:
    return request.param


class Worker:
    """A worker plus transport-neutral calls."""

    def __init__(self, process: WorkerProcess) -> None:
        self.process = process
        self.transport = process.transport

    def ready(self) -> "Worker":
        self.process.wait_ready()
        return self

    def calls(self, calls: Sequence[Tuple[str, Dict[str, Any]]], **kw: Any) -> List[Outcome]:
        """Start all calls at once; their outcomes, in order."""
        if self.transport == "native":
            with self.process.connect() as client:
                streams = [client.start(tool, args, **kw) for tool, args in calls]
                return [_native_outcome(client.wait(s)) for s in streams]
        with ThreadPoolExecutor(max_workers=len(calls)) as pool:
            futures = [pool.submit(self._grpc_call, tool, args, **kw) for tool, args in calls]
            return [f.result() for f in futures]

    def call(self, tool: str, args: Optional[Dict[str, Any]] = None, **kw: Any) -> Outcome:
        return self.calls([(tool, args or {})], **kw)[0]

    def value(self, tool: str, args: Optional[Dict[str, Any]] = None) -> Any:
        outcome = self.call(tool, args)
        assert outcome[0] == "ok", outcome
        return outcome[1]

    def _grpc_call(self, tool: str, args: Dict[str, Any], deadline_ns: int = 0) -> Outcome:
        reply = self.process.execute(tool, args, deadline_unix_nano=deadline_ns, timeout=60)
        if reply.WhichOneof("outcome") == "result_json":
            return ("ok", json.loads(reply.result_json))
        from snakepit.v1 import worker_pb2

        kind = worker_pb2.ErrorInfo.Kind.Name(reply.error.kind).replace("KIND_", "")
        return ("error", kind, reply.error.type, reply.error.message)

    def stats(self) -> Dict[str, Any]:
        if self.transport == "native":
            with self.process.connect() as client:
                return client.request("stats")
        reply = self.process.stats()
        return {field.name: getattr(reply, field.name) for field in reply.DESCRIPTOR.fields}


def _native_outcome(frame: Any) -> Outcome:
    if frame.ok:
        return ("ok", frame.value())
    error = frame.error
    return ("error", error["kind"], error["type"], error["message"])


@pytest.fixture
def start(transport: Tuple[str, str]) -> Iterator[Callable[..., Worker]]:
    name, python = transport
    started: List[WorkerProcess] = []

    def start_worker(adapter: str, capacity: int, *flags: str, **kw: Any) -> Worker:
        process = WorkerProcess(adapter, capacity=capacity, transport=name, python=python,
                                extra_args=flags, **kw)
        started.append(process)
        return Worker(process)

    yield start_worker
    for process in started:
        process.close()


def deadline_in(seconds: float) -> int:
    return time.time_ns() + int(seconds * 1e9)


def wait_until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


# ------------------------------------------------------------ declarations


def test_thread_profile_refuses_undeclared_module_adapter(start: Callable[..., Worker]) -> None:
    worker = start("unsafe_tools", 4, "--profile", "thread")
    payload = worker.process.wait_boot_error()
    assert payload["type"] == "snakepit.adapter.NotThreadSafeError"
    assert payload["message"] == UNSAFE_MODULE_MESSAGE
    assert worker.process.wait_exit() == 78
    assert worker.process.next_stdout_line() is None
    worker.process.wait_stderr(lambda lines: any(
        line.startswith("ERROR snakepit.worker: worker failed to start: NotThreadSafeError")
        for line in lines))


@pytest.mark.parametrize("cls", ["Undeclared", "Withdrawn", "NotTrue"])
def test_thread_profile_refuses_undeclared_class_adapter(start: Callable[..., Worker],
                                                         cls: str) -> None:
    worker = start(f"thread_classes:{cls}", 2, "--profile", "thread")
    payload = worker.process.wait_boot_error()
    assert payload["type"] == "snakepit.adapter.NotThreadSafeError"
    assert payload["message"].startswith(
        f"adapter 'thread_classes:{cls}' is not declared thread-safe, but the thread profile "
        "runs up to 2 of its calls at once in one process.")
    assert ("subclass snakepit.ThreadSafeAdapter, or set __snakepit_thread_safe__ = True in "
            'the class; or run the pool with Profile "process".') in payload["message"]
    assert worker.process.wait_exit() == 78
    assert "INSTANTIATED" not in worker.process.stderr_text()  # refused before __init__


@pytest.mark.parametrize("spec", ["thread_tools", "thread_classes:Declared",
                                  "thread_classes:DeclaredByAttribute"])
def test_thread_profile_boots_declared_adapters(start: Callable[..., Worker], spec: str) -> None:
    worker = start(spec, 3, "--profile", "thread").ready()
    stats = worker.stats()
    assert (stats["profile"], stats["capacity"]) == ("thread", 3)
    lines = worker.process.wait_stderr(lambda ls: any(" ready: " in line for line in ls))
    assert any("capacity 3, profile thread," in line for line in lines)


@pytest.mark.parametrize("spec", ["unsafe_tools", "thread_classes:Undeclared"])
def test_process_profile_never_asks(start: Callable[..., Worker], spec: str) -> None:
    worker = start(spec, 1, "--profile", "process").ready()
    assert worker.stats()["profile"] == "process"
    if spec == "unsafe_tools":
        assert isinstance(worker.value("track", {"seconds": 0}), int)
    else:
        assert worker.value("name") == "Undeclared"


def test_without_profile_flag_nothing_changes(start: Callable[..., Worker]) -> None:
    worker = start("unsafe_tools", 4).ready()  # capacity 4, no --profile: as before
    assert worker.stats()["profile"] == "thread"
    outcomes = worker.calls([("meet", {"parties": 4, "timeout": 20})] * 4)
    assert [o[0] for o in outcomes] == ["ok"] * 4
    assert start("unsafe_tools", 1).ready().stats()["profile"] == "process"


def test_profile_is_reported_from_the_flag(start: Callable[..., Worker]) -> None:
    worker = start("thread_tools", 1, "--profile", "thread").ready()
    assert (worker.stats()["profile"], worker.stats()["capacity"]) == ("thread", 1)
    lines = worker.process.wait_stderr(lambda ls: any(" ready: " in line for line in ls))
    assert any("capacity 1, profile thread," in line for line in lines)


def test_process_profile_with_several_calls_is_a_boot_error(start: Callable[..., Worker]) -> None:
    worker = start("thread_tools", 4, "--profile", "process")
    payload = worker.process.wait_boot_error()
    assert payload["type"] == "snakepit.handshake.BootError"
    assert payload["message"] == (
        "--profile process runs one call at a time per process, but --capacity is 4: use "
        "--capacity 1, or --profile thread to run several calls at once in one process")
    assert worker.process.wait_exit() == 78


def test_unknown_profile_is_a_usage_error(start: Callable[..., Worker]) -> None:
    worker = start("thread_tools", 1, "--profile", "fiber")
    assert worker.process.wait_exit() == 2
    assert "invalid choice: 'fiber'" in worker.process.stderr_text()


# ------------------------------------------------------------- concurrency


def test_thread_profile_meets_and_process_profile_breaks_the_barrier(
    start: Callable[..., Worker],
) -> None:
    threads = start("thread_tools", 4, "--profile", "thread").ready()
    outcomes = threads.calls([("meet", {"parties": 4, "timeout": 20})] * 4)
    assert all(o[0] == "ok" and o[1].endswith(": 4 calls met") for o in outcomes), outcomes
    # Again: the barrier is reused for the next four.
    assert [o[0] for o in threads.calls([("meet", {"parties": 4, "timeout": 20})] * 4)] == \
        ["ok"] * 4

    single = start("thread_tools", 1, "--profile", "process").ready()
    outcome = single.call("meet", {"parties": 2, "timeout": 0.2})
    assert outcome[:3] == ("error", "TOOL_EXCEPTION", "threading.BrokenBarrierError")
    assert "fewer than 2 calls of meet were running at once" in outcome[3]
    assert single.value("meet", {"parties": 1, "timeout": 1}).endswith(": 1 calls met")


def test_serial_tool_never_overlaps_while_normal_tools_run_at_once(
    start: Callable[..., Worker],
) -> None:
    worker = start("thread_tools", 4, "--profile", "thread").ready()
    outcomes = worker.calls([("serial_track", {"seconds": 0.02})] * 4)
    assert [o[0] for o in outcomes] == ["ok"] * 4
    assert worker.value("serial_max_seen") == 1
    # The same worker runs four calls of a normal tool at once: each waits on
    # one Barrier(4), which would time out if they did not.
    outcomes = worker.calls([("meet", {"parties": 4, "timeout": 20})] * 4)
    assert [o[0] for o in outcomes] == ["ok"] * 4, outcomes
    outcomes = worker.calls([("track", {"seconds": 0.02})] * 4)
    assert [o[0] for o in outcomes] == ["ok"] * 4
    assert 1 <= worker.value("max_seen") <= 4
    worker.value("reset")
    assert (worker.value("max_seen"), worker.value("serial_max_seen")) == (0, 0)


@pytest.mark.parametrize("tool", ["serial_block", "aserial_block"])
def test_waiting_serial_calls_hold_no_thread(start: Callable[..., Worker], tmp_path: Path,
                                             tool: str) -> None:
    """One serial call runs (blocked on a file), three more wait for it: the
    three other threads still run three calls of meet at once."""
    worker = start("serial_tools", 4, "--profile", "thread").ready()
    gate, started = str(tmp_path / "open"), str(tmp_path / "started")
    with ThreadPoolExecutor(max_workers=1) as background:
        serial = background.submit(
            worker.calls, [(tool, {"path": gate, "started": started})] * 4)
        wait_until(lambda: Path(started).exists())
        wait_until(lambda: worker.stats()["in_flight"] == 4)  # one runs, three wait
        outcomes = worker.calls([("meet", {"parties": 3, "timeout": 20})] * 3)
        assert [o[0] for o in outcomes] == ["ok"] * 3, outcomes
        assert worker.value("seen", {"tool": tool})["runs"] == 1  # the others still wait
        Path(gate).touch()
        assert serial.result(60) == [("ok", True)] * 4
    assert worker.value("seen", {"tool": tool}) == {"now": 0, "max": 1, "runs": 4}


def test_waiting_serial_call_meets_its_deadline(start: Callable[..., Worker],
                                                tmp_path: Path) -> None:
    worker = start("serial_tools", 2, "--profile", "thread").ready()
    gate, started = str(tmp_path / "open"), str(tmp_path / "started")
    with ThreadPoolExecutor(max_workers=2) as background:
        first = background.submit(worker.call, "serial_block", {"path": gate, "started": started})
        wait_until(lambda: Path(started).exists())
        deadline = deadline_in(1.0)
        late = background.submit(worker.call, "serial_block", {"path": gate},
                                 deadline_ns=deadline)
        wait_until(lambda: worker.stats()["in_flight"] == 2)  # it waits for its turn
        wait_until(lambda: time.time_ns() > deadline)
        if worker.transport == "grpc":  # gRPC answers at the deadline
            assert late.result(20)[1] == "DEADLINE_EXCEEDED"
        Path(gate).touch()  # native answers when its turn comes
        outcome = late.result(20)
        assert outcome[1] == "DEADLINE_EXCEEDED", outcome
        assert "serial_block" in outcome[3] and "one call at a time" in outcome[3]
        assert first.result(20) == ("ok", True)
    assert worker.value("seen", {"tool": "serial_block"})["runs"] == 1  # the late one never ran


def test_cancelled_waiting_serial_call_never_runs(transport: Tuple[str, str],
                                                  start: Callable[..., Worker],
                                                  tmp_path: Path) -> None:
    if transport[0] != "native":
        pytest.skip("CANCEL is a native frame")
    worker = start("serial_tools", 2, "--profile", "thread").ready()
    gate, started = str(tmp_path / "open"), str(tmp_path / "started")
    with worker.process.connect() as client:
        first = client.start("serial_block", {"path": gate, "started": started})
        wait_until(lambda: Path(started).exists())
        waiting = client.start("serial_block", {"path": gate})
        client.cancel(waiting)
        assert client.wait(waiting).kind == "CANCELLED"
        Path(gate).touch()
        assert client.wait(first).value() is True
        assert client.value("serial_block", {"path": gate}) is True
        assert client.value("seen", {"tool": "serial_block"}) == {"now": 0, "max": 1, "runs": 2}


# ------------------------------------------------------------------ checks


def _warnings(worker: Worker, needle: str) -> List[str]:
    return [line for line in worker.process.stderr_lines if needle in line]


def test_thread_checks_report_concurrent_entry_and_libraries(start: Callable[..., Worker]) -> None:
    worker = start("checked_tools", 2, "--profile", "thread", "--thread-checks").ready()
    lines = worker.process.wait_stderr(lambda ls: any(" ready: " in line for line in ls))
    library = [line for line in lines if "thread check: sqlite3" in line]
    assert library == [
        "WARNING snakepit.threadsafe: thread check: sqlite3 (sqlite3) is imported and this "
        "worker runs several calls at once: not safe to share: a Connection (and its cursors) "
        "belongs to the thread that made it: by default (check_same_thread=True) other threads "
        "get ProgrammingError, and sharing one with check_same_thread=False needs your own "
        "locking. Advice: one connection per thread: snakepit.ThreadLocal(lambda: "
        "sqlite3.connect(path)); or one connection behind snakepit.Locked "
        "(docs/thread-safety.md)"
    ]
    assert any("profile thread, thread checks on," in line for line in lines)

    outcomes = worker.calls([("meet_inside", {"parties": 2})] * 2)
    assert outcomes == [("ok", True)] * 2
    found = worker.process.wait_stderr(
        lambda ls: any("is marked @snakepit.single_threaded" in line for line in ls))
    warning = next(line for line in found if "single_threaded" in line)
    assert warning.startswith(
        "WARNING snakepit.threadsafe: thread check: checked_tools._inside is marked "
        "@snakepit.single_threaded, but thread 'snakepit-tool")
    assert "' entered it while thread 'snakepit-tool" in warning
    assert worker.calls([("meet_inside", {"parties": 2})] * 2) == [("ok", True)] * 2
    if worker.transport == "native":
        assert worker.stats()["thread_violations"] == 2
    assert len(_warnings(worker, "single_threaded")) == 1  # once per function


def test_without_thread_checks_nothing_is_checked(start: Callable[..., Worker]) -> None:
    worker = start("checked_tools", 2, "--profile", "thread").ready()
    assert worker.calls([("meet_inside", {"parties": 2})] * 2) == [("ok", False)] * 2
    if worker.transport == "native":
        assert worker.stats()["thread_violations"] == 0
    worker.value("meet_inside", {"parties": 1})
    assert _warnings(worker, "thread check") == []


def test_thread_checks_in_process_profile_skip_library_warnings(
    start: Callable[..., Worker],
) -> None:
    worker = start("checked_tools", 1, "--profile", "process", "--thread-checks").ready()
    assert worker.value("meet_inside", {"parties": 1}) is True  # the checks are on
    worker.process.wait_stderr(lambda ls: any(" ready: " in line for line in ls))
    assert _warnings(worker, "thread check: sqlite3") == []
