"""End-to-end: a real ``python -m snakepit.worker`` process over gRPC."""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import stat
import subprocess
import sys
import sysconfig
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import grpc
import pytest

import snakepit
from helpers import WorkerProcess
from snakepit.v1 import worker_pb2

Spawn = Callable[..., WorkerProcess]
Kind = worker_pb2.ErrorInfo.Kind


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.005)


# ------------------------------------------------------- handshake and setup


def test_ready_line_and_socket_mode(textstats: WorkerProcess) -> None:
    # textstats fixture already consumed READY; check the socket it announced.
    mode = stat.S_IMODE(os.stat(textstats.socket).st_mode)
    assert stat.S_ISSOCK(os.stat(textstats.socket).st_mode)
    assert mode == 0o600


def test_ready_payload(spawn: Spawn) -> None:
    worker = spawn("examples.textstats")
    ready = worker.wait_ready()
    assert ready == {
        "protocol": 2,
        "pid": worker.proc.pid,
        "python": platform.python_version(),
        "transport": "grpc",
    }
    assert worker.stdout_seen[0].startswith("SNAKEPIT-READY {")
    # logs go to stderr in "LEVEL name: message" form
    lines = worker.wait_stderr(lambda ls: any("ready" in line for line in ls))
    assert any(line.startswith("INFO snakepit.worker: worker w1 ready") for line in lines)


@pytest.mark.parametrize(
    "adapter, error_type, needle",
    [
        ("broken_import", "builtins.ModuleNotFoundError", "not_installed_dependency_xyz"),
        ("no_tools", "snakepit.adapter.AdapterError", "decorate functions with @snakepit.tool"),
        ("examples.textstats:Nope", "snakepit.adapter.AdapterError", "no attribute 'Nope'"),
        ("definitely_missing_module", "builtins.ModuleNotFoundError", "definitely_missing_module"),
    ],
)
def test_boot_errors(spawn: Spawn, adapter: str, error_type: str, needle: str) -> None:
    worker = spawn(adapter)
    payload = worker.wait_boot_error()
    assert payload["type"] == error_type
    assert needle in payload["message"]
    assert payload["traceback"].startswith("Traceback (most recent call last):")
    assert worker.wait_exit() == 78
    assert worker.next_stdout_line() is None  # exactly one line on stdout


def test_boot_error_in_class_init(spawn: Spawn, tmp_path: Path) -> None:
    module = os.path.join(str(tmp_path), "init_fails.py")
    with open(module, "w") as fh:
        fh.write(
            "import snakepit\n"
            "class Model:\n"
            "    def __init__(self):\n"
            "        raise OSError('weights not found')\n"
            "    @snakepit.tool\n"
            "    def f(self):\n"
            "        return 1\n"
        )
    worker = spawn("init_fails:Model", env={"PYTHONPATH": os.pathsep.join(
        [os.environ.get("PYTHONPATH", ""), str(tmp_path), *sys.path])})
    payload = worker.wait_boot_error()
    assert payload["type"] == "builtins.OSError"
    assert payload["message"] == "weights not found"
    assert "init_fails.py" in payload["traceback"]
    assert worker.wait_exit() == 78


@pytest.mark.parametrize(
    "make_path, needle",
    [
        (lambda d: os.path.join(d, "x" * 120 + ".sock"), "Unix socket paths must be"),
        (lambda d: os.path.join(d, "missing", "w.sock"), "does not exist"),
        (lambda d: os.path.join(d, "file"), "exists and is not a socket"),
    ],
)
def test_unusable_socket_path_is_a_boot_error(
    spawn: Spawn, make_path: Callable[[str], str], needle: str
) -> None:
    directory = tempfile.mkdtemp(prefix="sp-", dir="/tmp")
    try:
        with open(os.path.join(directory, "file"), "w"):
            pass
        worker = spawn("examples.textstats", socket=make_path(directory))
        payload = worker.wait_boot_error()
        assert needle in payload["message"]
        assert worker.wait_exit() == 78
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_stale_socket_file_is_replaced(spawn: Spawn) -> None:
    import socket as socketlib

    worker_dir = tempfile.mkdtemp(prefix="sp-", dir="/tmp")
    path = os.path.join(worker_dir, "w.sock")
    try:
        stale = socketlib.socket(socketlib.AF_UNIX)
        stale.bind(path)
        stale.close()
        worker = spawn("examples.textstats", socket=path)
        worker.wait_ready()
        assert worker.execute_json("word_count", {"text": "a b c"}) == 3
    finally:
        shutil.rmtree(worker_dir, ignore_errors=True)


def test_missing_token_is_a_boot_error(spawn: Spawn) -> None:
    worker = spawn("examples.textstats", env={"SNAKEPIT_TOKEN": ""})
    payload = worker.wait_boot_error()
    assert payload["type"] == "snakepit.handshake.BootError"
    assert "SNAKEPIT_TOKEN" in payload["message"]
    assert worker.wait_exit() == 78


def test_unsupported_transport_is_rejected(spawn: Spawn) -> None:
    worker = spawn("examples.textstats", extra_args=["--transport", "stdio"])
    assert worker.wait_exit() == 2
    assert worker.next_stdout_line() is None
    assert "unsupported transport 'stdio': choose one of native, grpc" in worker.stderr_text()


def test_slow_boot_class_adapter(spawn: Spawn) -> None:
    worker = spawn("slow_boot:SlowModel")
    worker.wait_ready()
    assert worker.execute_json("ready") is True


# ------------------------------------------------------------------- Execute


def test_execute_round_trip(textstats: WorkerProcess) -> None:
    reply = textstats.execute("word_count", {"text": "the quick brown fox"}, request_id="req-1")
    assert reply.request_id == "req-1"
    assert reply.WhichOneof("outcome") == "result_json"
    assert reply.result_json == b"4"
    assert textstats.execute_json("top_words", {"text": "b a b c b a", "n": 2}) == [
        ["b", 3], ["a", 2]]
    assert textstats.execute_json("char_count", {"text": "héllo"}) == 5


def test_bytes_round_trip(textstats: WorkerProcess) -> None:
    payload = bytes(range(256)) * 4
    reply = textstats.execute("reverse_bytes", binary={"data": payload})
    assert reply.WhichOneof("outcome") == "result_raw"
    assert reply.result_raw == payload[::-1]


def test_async_tool(textstats: WorkerProcess) -> None:
    assert textstats.execute_json("slow_word_count", {"text": "a b", "delay": 0.01}) == 2


def test_python_exception_reply(textstats: WorkerProcess) -> None:
    reply = textstats.execute("fail", {"message": "kaboom"}, request_id="r-fail")
    assert reply.request_id == "r-fail"
    assert reply.WhichOneof("outcome") == "error"
    err = reply.error
    assert err.kind == Kind.KIND_TOOL_EXCEPTION
    assert err.type == "builtins.ValueError"
    assert err.message == "kaboom"
    assert "Traceback (most recent call last)" in err.traceback
    assert "raise ValueError(message)" in err.traceback


def test_unknown_tool(textstats: WorkerProcess) -> None:
    reply = textstats.execute("nope", {}, request_id="r-unknown")
    assert reply.request_id == "r-unknown"
    assert reply.error.kind == Kind.KIND_UNKNOWN_TOOL
    assert "char_count, fail, note, reverse_bytes, shout_words, slow_word_count, top_words, word_count, words" in (
        reply.error.message)
    assert textstats.execute("", {}).error.kind == Kind.KIND_UNKNOWN_TOOL


def test_bad_arguments(textstats: WorkerProcess) -> None:
    reply = textstats.execute("word_count", {})
    assert reply.error.kind == Kind.KIND_BAD_ARGUMENTS
    assert reply.error.message == (
        "word_count(text: str) -> int: missing a required argument: 'text'")
    assert textstats.execute("word_count", args_json=b"[1]").error.kind == Kind.KIND_BAD_ARGUMENTS
    assert textstats.execute("word_count", args_json=b"{").error.kind == Kind.KIND_BAD_ARGUMENTS
    conflict = textstats.execute("reverse_bytes", {"data": "x"}, binary={"data": b"y"})
    assert conflict.error.kind == Kind.KIND_BAD_ARGUMENTS
    # A TypeError raised inside the tool is the tool's exception.
    inside = textstats.execute("word_count", {"text": 5})
    assert inside.error.kind == Kind.KIND_TOOL_EXCEPTION
    assert inside.error.type == "builtins.AttributeError"


def test_deadline_already_passed(textstats: WorkerProcess) -> None:
    reply = textstats.execute(
        "word_count", {"text": "a"}, deadline_unix_nano=time.time_ns() - 1_000_000)
    assert reply.error.kind == Kind.KIND_DEADLINE_EXCEEDED
    ok = textstats.execute(
        "word_count", {"text": "a"}, deadline_unix_nano=time.time_ns() + 10_000_000_000)
    assert ok.result_json == b"1"


# ------------------------------------------------------------- authentication


@pytest.mark.parametrize("token", [None, "wrong-token", ""])
def test_missing_or_wrong_token(textstats: WorkerProcess, token: "str | None") -> None:
    metadata = () if token is None else (("x-snakepit-token", token),)
    calls = [
        lambda: textstats.stub.Execute(
            worker_pb2.ExecuteRequest(tool="word_count", args_json=b'{"text":"a"}'),
            metadata=metadata, timeout=5),
        lambda: textstats.stub.Describe(worker_pb2.DescribeRequest(), metadata=metadata, timeout=5),
        lambda: textstats.stub.Health(worker_pb2.HealthRequest(), metadata=metadata, timeout=5),
        lambda: textstats.stub.Stats(worker_pb2.StatsRequest(), metadata=metadata, timeout=5),
        lambda: textstats.stub.Shutdown(worker_pb2.ShutdownRequest(), metadata=metadata, timeout=5),
    ]
    for call in calls:
        with pytest.raises(grpc.RpcError) as info:
            call()
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # still alive and serving
    assert textstats.execute_json("word_count", {"text": "a b"}) == 2


# --------------------------------------------------- Describe, Health, Stats


def test_describe(textstats: WorkerProcess) -> None:
    reply = textstats.stub.Describe(worker_pb2.DescribeRequest(), metadata=textstats.metadata())
    assert reply.adapter == "examples.textstats"
    tools = {t.name: t for t in reply.tools}
    assert [t.name for t in reply.tools] == sorted(tools)
    assert set(tools) == {"char_count", "fail", "note", "reverse_bytes", "shout_words",
                          "slow_word_count", "top_words", "word_count", "words"}
    top = tools["top_words"]
    assert "most frequent" in top.doc
    assert not top.is_async
    assert [(p.name, p.annotation, p.required, p.default_json, p.kind) for p in top.params] == [
        ("text", "str", True, "", "POSITIONAL_OR_KEYWORD"),
        ("n", "int", False, "3", "POSITIONAL_OR_KEYWORD"),
    ]
    assert tools["slow_word_count"].is_async
    assert tools["reverse_bytes"].params[0].annotation == "bytes"


def test_health(textstats: WorkerProcess) -> None:
    reply = textstats.stub.Health(worker_pb2.HealthRequest(), metadata=textstats.metadata())
    assert reply.ok
    assert reply.protocol_version == worker_pb2.PROTOCOL_VERSION_CURRENT
    assert reply.protocol_version == snakepit.PROTOCOL_VERSION
    assert reply.pid == textstats.proc.pid
    free_threaded = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
    assert reply.free_threaded_build is free_threaded
    assert reply.gil_enabled is (not free_threaded or getattr(sys, "_is_gil_enabled")())
    assert (reply.gil_enabled_by, reply.gil_enabled_when) == ("", "")


def test_stats(textstats: WorkerProcess) -> None:
    before = textstats.stats().requests_served
    textstats.execute_json("word_count", {"text": "x"})
    stats = textstats.stats()
    assert stats.pid == textstats.proc.pid
    assert stats.python_version == platform.python_version()
    assert stats.implementation == platform.python_implementation()
    assert stats.in_flight == 0
    assert stats.requests_served == before + 1
    assert stats.capacity == 4
    expected_free_threaded = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
    assert stats.free_threaded_build is expected_free_threaded
    if not expected_free_threaded:
        assert stats.gil_enabled is True
    if sys.platform.startswith("linux"):
        assert stats.rss_bytes > 1_000_000
    assert stats.uptime_seconds > 0


def test_capacity_runs_sync_calls_in_parallel(spawn: Spawn, tmp_path: Path) -> None:
    worker = spawn("gate_tools", capacity=4)
    worker.wait_ready()
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = [pool.submit(worker.execute, "gather",
                               {"directory": str(tmp_path), "n": 4}, timeout=30)
                   for _ in range(4)]
        replies = [f.result() for f in futures]
    assert [json.loads(r.result_json) for r in replies] == [4] * 4
    assert worker.stats().in_flight == 0
    assert worker.stats().requests_served == 4
    assert worker.stats().max_in_flight == 4
    assert worker.stats().profile == "thread"


# ---------------------------------------------------------- class adapter


def test_class_adapter_loaded_once(spawn: Spawn) -> None:
    worker = spawn("examples.sentiment:SentimentModel", capacity=2)
    worker.wait_ready()
    infos = [worker.execute_json("info") for _ in range(20)]
    assert {i["pid"] for i in infos} == {worker.proc.pid}
    assert {i["loads"] for i in infos} == {1}
    assert len({i["loaded_at"] for i in infos}) == 1
    assert worker.execute_json("score", {"text": "what a great day"}) > 0
    assert worker.execute_json("score", {"text": "awful"}) < 0


# ------------------------------------------------------------- echo_tools


def test_echo_tools(spawn: Spawn) -> None:
    worker = spawn("echo_tools")
    worker.wait_ready()
    value = {"a": [1, 2.5, None, True, "ü"], "b": {}}
    assert worker.execute_json("echo", {"value": value}) == value
    assert worker.execute_json("echo") is None
    assert worker.execute("echo_bytes", binary={"data": b"\x00\xff"}).result_raw == b"\x00\xff"
    assert worker.execute_json("pid") == worker.proc.pid

    err = worker.execute("raise_error", {"message": "nope"}).error
    assert (err.kind, err.type, err.message) == (
        Kind.KIND_TOOL_EXCEPTION, "builtins.RuntimeError", "nope")

    unenc = worker.execute("unencodable").error
    assert unenc.kind == Kind.KIND_UNENCODABLE_RESULT
    assert "'unencodable'" in unenc.message and "object" in unenc.message
    assert worker.execute("nan").error.kind == Kind.KIND_UNENCODABLE_RESULT

    big = worker.execute("big", {"n": 8 * 1024 * 1024})  # over gRPC's 4 MiB default
    assert big.result_raw == b"x" * (8 * 1024 * 1024)


def test_deadline_during_call(spawn: Spawn, tmp_path: Path) -> None:
    worker = spawn("gate_tools", capacity=2)
    worker.wait_ready()
    gate = str(tmp_path / "open")
    reply = worker.execute("ablock_until", {"path": gate},
                           deadline_unix_nano=time.time_ns() + 100_000_000)
    assert reply.error.kind == Kind.KIND_DEADLINE_EXCEEDED
    assert "cancelled" in reply.error.message
    assert worker.stats().in_flight == 0  # the async tool was cancelled
    reply = worker.execute("block_until", {"path": gate},
                           deadline_unix_nano=time.time_ns() + 100_000_000)
    assert reply.error.kind == Kind.KIND_DEADLINE_EXCEEDED
    # A thread cannot be stopped: the call counts as in flight until it returns.
    assert worker.stats().in_flight == 1
    open(gate, "w").close()
    wait_for(lambda: worker.stats().in_flight == 0)


def test_logging_and_print(spawn: Spawn) -> None:
    worker = spawn("echo_tools")
    worker.wait_ready()
    assert worker.execute_json("log", {"message": "first\nsecond", "level": "warning"}) is None
    lines = worker.wait_stderr(lambda ls: "    second" in ls)
    index = lines.index("WARNING echo_tools: first")
    assert lines[index + 1] == "    second"
    worker.execute_json("print_stdout", {"message": "hello from a tool"})
    assert worker.wait_stdout(lambda line: True) == "hello from a tool"


def test_crash_exits_with_code(spawn: Spawn) -> None:
    worker = spawn("echo_tools")
    worker.wait_ready()
    with pytest.raises(grpc.RpcError):
        worker.execute("crash", {"code": 5})
    assert worker.wait_exit() == 5


# ------------------------------------------------------------------ shutdown


def test_shutdown_rpc_exits_zero(spawn: Spawn) -> None:
    worker = spawn("examples.sentiment:SentimentModel")
    worker.wait_ready()
    reply = worker.stub.Shutdown(worker_pb2.ShutdownRequest(grace_ms=2000),
                                 metadata=worker.metadata(), timeout=5)
    assert reply.in_flight == 0
    assert worker.wait_exit() == 0
    assert not os.path.exists(worker.socket)


def test_shutdown_waits_for_in_flight_calls(spawn: Spawn, tmp_path: Path) -> None:
    worker = spawn("gate_tools", capacity=2)
    worker.wait_ready()
    gate = str(tmp_path / "open")
    with ThreadPoolExecutor(max_workers=2) as pool:
        blocked = pool.submit(worker.execute, "ablock_until", {"path": gate}, timeout=30)
        wait_for(lambda: worker.stats().in_flight == 1)
        reply = worker.stub.Shutdown(worker_pb2.ShutdownRequest(grace_ms=20_000),
                                     metadata=worker.metadata(), timeout=5)
        assert reply.in_flight == 1
        late = worker.execute("block_until", {"path": gate})
        assert late.error.kind == Kind.KIND_SHUTTING_DOWN
        health = worker.stub.Health(worker_pb2.HealthRequest(), metadata=worker.metadata())
        assert health.ok is False
        assert worker.proc.poll() is None  # still draining
        open(gate, "w").close()
        assert blocked.result().result_json == b"true"
    assert worker.wait_exit() == 0


def test_shutdown_grace_expires(spawn: Spawn) -> None:
    worker = spawn("echo_tools")
    worker.wait_ready()
    with ThreadPoolExecutor(max_workers=1) as pool:
        stuck = pool.submit(worker.execute, "sleep", {"seconds": 60}, timeout=30)
        wait_for(lambda: worker.stats().in_flight == 1)
        started = time.monotonic()
        reply = worker.stub.Shutdown(worker_pb2.ShutdownRequest(grace_ms=100),
                                     metadata=worker.metadata(), timeout=5)
        assert reply.in_flight == 1
        assert worker.wait_exit() == 0
        assert time.monotonic() - started < 10
        assert isinstance(stuck.exception(timeout=10), grpc.RpcError)
    assert "grace period over with 1 call(s) still running" in worker.stderr_text()


def test_sigterm_exits_zero(spawn: Spawn) -> None:
    worker = spawn("examples.textstats")
    worker.wait_ready()
    assert worker.execute_json("word_count", {"text": "a"}) == 1
    worker.signal(signal.SIGTERM)
    assert worker.wait_exit() == 0
    assert "shutting down (SIGTERM)" in worker.stderr_text()


def test_watch_stdin_exits_when_stdin_closes(spawn: Spawn) -> None:
    worker = spawn("examples.textstats", extra_args=["--watch-stdin"], stdin=subprocess.PIPE)
    worker.wait_ready()
    assert worker.proc.stdin is not None
    worker.proc.stdin.write(b"ignored\n")
    worker.proc.stdin.flush()
    assert worker.execute_json("word_count", {"text": "still alive"}) == 2
    worker.proc.stdin.close()
    assert worker.wait_exit() == 70


def test_host_identity_flags_are_accepted(spawn: Spawn) -> None:
    # The Go runtime adds these to every worker it starts (the start-up sweep
    # reads them back from /proc/PID/cmdline).
    worker = spawn("examples.textstats",
                   extra_args=["--host-pid", str(os.getpid()), "--host-start", "123456"])
    worker.wait_ready()
    assert worker.execute_json("word_count", {"text": "a b"}) == 2
