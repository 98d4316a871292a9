"""End-to-end: a real ``python -m snakepit.worker --transport native`` process,
driven by the stdlib client in native_client.py.

The worker runs under every interpreter in $SNAKEPIT_TEST_PYTHONS
(os.pathsep-separated; default: the one running pytest), which need not have
grpc or protobuf installed.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from functools import lru_cache
from typing import Any, Callable, Dict, Iterator, List

import pytest

from helpers import WorkerProcess, pythons_under_test
from native_client import (
    CANCEL,
    ERROR,
    EXECUTE,
    HELLO,
    PROTOCOL_ERROR,
    REQUEST,
    RESULT,
    NativeClient,
    encode_frame,
    execute_body,
)

PYTHONS = pythons_under_test()


@pytest.fixture(params=PYTHONS, ids=PYTHONS, scope="module")
def python(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def spawn(python: str) -> Iterator[Callable[..., WorkerProcess]]:
    """Start native workers under ``python``; all are killed at teardown."""
    started: List[WorkerProcess] = []

    def start(adapter: str, **kwargs: object) -> WorkerProcess:
        kwargs.setdefault("transport", "native")
        worker = WorkerProcess(adapter, python=python, **kwargs)  # type: ignore[arg-type]
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.close()


@pytest.fixture(scope="module")
def textstats(python: str) -> Iterator[WorkerProcess]:
    """One shared examples.textstats worker (capacity 4) for read-only tests."""
    worker = WorkerProcess("examples.textstats", capacity=4, transport="native", python=python)
    try:
        worker.wait_ready()
        yield worker
    finally:
        worker.close()


@pytest.fixture
def client(textstats: WorkerProcess) -> Iterator[NativeClient]:
    c = NativeClient(textstats.socket, textstats.token)
    try:
        yield c
    finally:
        c.close()


@lru_cache(maxsize=None)
def interpreter(python: str) -> Dict[str, Any]:
    code = ("import json, platform, sysconfig; print(json.dumps({'version': "
            "platform.python_version(), 'free_threaded': "
            "bool(sysconfig.get_config_var('Py_GIL_DISABLED'))}))")
    out = subprocess.run([python, "-c", code], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def interpreter_version(python: str) -> str:
    return str(interpreter(python)["version"])


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.005)


def assert_in_stderr(worker: WorkerProcess, needle: str) -> None:
    worker.wait_stderr(lambda lines: any(needle in line for line in lines))


def in_flight(worker: WorkerProcess) -> int:
    with worker.connect() as c:
        return c.request("stats")["in_flight"]


def running_max(worker: WorkerProcess) -> int:
    with worker.connect() as c:
        return c.request("stats")["max_in_flight"]


# ------------------------------------------------------- handshake and setup


def test_ready_line_socket_mode_and_native_default(spawn: Callable[..., WorkerProcess],
                                                   python: str) -> None:
    worker = spawn("examples.textstats", transport=None)  # no --transport: native
    ready = worker.wait_ready()
    assert ready == {
        "protocol": 2,
        "pid": worker.proc.pid,
        "python": interpreter_version(python),
        "transport": "native",
    }
    st = os.stat(worker.socket)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600
    lines = worker.wait_stderr(lambda ls: any("ready" in line for line in ls))
    assert any(line.startswith("INFO snakepit.worker: worker w1 ready") for line in lines)


def test_hello_ok_payload(textstats: WorkerProcess, python: str) -> None:
    with NativeClient(textstats.socket) as c:
        hello = c.hello(textstats.token)
    assert hello == {"version": 2, "pid": textstats.proc.pid,
                     "python": interpreter_version(python), "capacity": 4}


def test_native_path_imports_only_the_standard_library(spawn: Callable[..., WorkerProcess]) -> None:
    worker = spawn("native_tools", capacity=2)
    worker.wait_ready()
    with worker.connect() as c:
        modules = c.value("loaded_modules")
    assert "snakepit.native_server" in modules and "snakepit.wire" in modules
    foreign = [m for m in modules if m.split(".")[0] in ("grpc", "google") or "protobuf" in m]
    assert foreign == []
    assert [m for m in modules if m.startswith(("snakepit.grpc_", "snakepit.v1"))] == []


def test_import_snakepit_needs_no_grpc(python: str) -> None:
    code = ("import sys, snakepit, snakepit.worker, snakepit.native_server, snakepit.wire; "
            "bad = [m for m in sys.modules if m.startswith(('grpc', 'google'))]; "
            "assert not bad, bad; print('ok')")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


@pytest.mark.parametrize(
    "adapter, error_type, needle",
    [
        ("broken_import", "builtins.ModuleNotFoundError", "not_installed_dependency_xyz"),
        ("no_tools", "snakepit.adapter.AdapterError", "decorate functions with @snakepit.tool"),
    ],
)
def test_boot_errors(spawn: Callable[..., WorkerProcess], adapter: str, error_type: str,
                     needle: str) -> None:
    worker = spawn(adapter)
    payload = worker.wait_boot_error()
    assert payload["type"] == error_type
    assert needle in payload["message"]
    assert worker.wait_exit() == 78
    assert worker.next_stdout_line() is None


@pytest.mark.parametrize(
    "make_path, needle",
    [
        (lambda d: os.path.join(d, "x" * 120 + ".sock"), "Unix socket paths must be"),
        (lambda d: os.path.join(d, "missing", "w.sock"), "does not exist"),
        (lambda d: os.path.join(d, "file"), "exists and is not a socket"),
    ],
)
def test_unusable_socket_path_is_a_boot_error(
    spawn: Callable[..., WorkerProcess], make_path: Callable[[str], str], needle: str
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


def test_missing_token_and_bad_limit_are_boot_errors(spawn: Callable[..., WorkerProcess]) -> None:
    worker = spawn("examples.textstats", env={"SNAKEPIT_TOKEN": ""})
    assert "SNAKEPIT_TOKEN" in worker.wait_boot_error()["message"]
    assert worker.wait_exit() == 78
    worker = spawn("examples.textstats", env={"SNAKEPIT_MAX_MESSAGE_BYTES": "lots"})
    assert "SNAKEPIT_MAX_MESSAGE_BYTES" in worker.wait_boot_error()["message"]
    assert worker.wait_exit() == 78


def test_stale_socket_file_is_replaced(spawn: Callable[..., WorkerProcess]) -> None:
    worker_dir = tempfile.mkdtemp(prefix="sp-", dir="/tmp")
    path = os.path.join(worker_dir, "w.sock")
    try:
        stale = socket.socket(socket.AF_UNIX)
        stale.bind(path)
        stale.close()
        worker = spawn("examples.textstats", socket=path)
        worker.wait_ready()
        with worker.connect() as c:
            assert c.value("word_count", {"text": "a b c"}) == 3
    finally:
        shutil.rmtree(worker_dir, ignore_errors=True)


# ------------------------------------------------------------------- EXECUTE


def test_execute_round_trip(client: NativeClient) -> None:
    reply = client.call("word_count", {"text": "the quick brown fox"}, request_id="req-1")
    assert (reply.type, reply.flags, reply.body) == (RESULT, 0, b"4")
    assert client.value("top_words", {"text": "b a b c b a", "n": 2}) == [["b", 3], ["a", 2]]
    assert client.value("char_count", {"text": "héllo"}) == 5


def test_streams_are_echoed(client: NativeClient) -> None:
    for stream in (1, 2**32 + 7, 2**64 - 1):
        assert client.wait(client.start("word_count", {"text": "x"}, stream=stream)).stream == stream


def test_binary_args_and_raw_result_1mib(spawn: Callable[..., WorkerProcess]) -> None:
    worker = spawn("native_tools")
    worker.wait_ready()
    payload = os.urandom(1024 * 1024)
    with worker.connect() as c:
        reply = c.call("echo_bytes", binary={"data": payload})
        assert reply.type == RESULT and reply.raw
        assert reply.body == payload
        empty = c.call("echo_bytes", binary={"data": b""})
        assert empty.raw and empty.body == b""
        # JSON args and binary args together, several binary args.
        assert c.value("echo", {"value": [1, "ü", None]}) == [1, "ü", None]


def test_bytes_round_trip_textstats(client: NativeClient) -> None:
    payload = bytes(range(256)) * 4
    reply = client.call("reverse_bytes", binary={"data": payload})
    assert reply.raw and reply.body == payload[::-1]


def test_async_tool(client: NativeClient) -> None:
    assert client.value("slow_word_count", {"text": "a b", "delay": 0.01}) == 2


def test_python_exception(client: NativeClient) -> None:
    reply = client.call("fail", {"message": "kaboom"})
    assert reply.type == ERROR and reply.flags == 0
    err = reply.error
    assert set(err) == {"kind", "type", "message", "traceback"}
    assert err["kind"] == "TOOL_EXCEPTION"
    assert err["type"] == "builtins.ValueError"
    assert err["message"] == "kaboom"
    assert "Traceback (most recent call last)" in err["traceback"]
    assert "raise ValueError(message)" in err["traceback"]


def test_unknown_tool(client: NativeClient) -> None:
    err = client.call("nope", {}).error
    assert err["kind"] == "UNKNOWN_TOOL"
    assert "char_count, fail, note, reverse_bytes, shout_words, slow_word_count, top_words, word_count, words" in (
        err["message"])
    assert err["type"] == "" and err["traceback"] == ""
    assert client.call("", {}).kind == "UNKNOWN_TOOL"


def test_bad_arguments(client: NativeClient) -> None:
    err = client.call("word_count", {}).error
    assert err["kind"] == "BAD_ARGUMENTS"
    assert err["message"] == "word_count(text: str) -> int: missing a required argument: 'text'"
    assert client.call("word_count", {"text": "a", "extra": 1}).kind == "BAD_ARGUMENTS"
    not_object = client.call("word_count", raw_args=b"[1]").error
    assert not_object["kind"] == "BAD_ARGUMENTS"
    assert "args must be a JSON object" in not_object["message"]
    conflict = client.call("reverse_bytes", {"data": "x"}, binary={"data": b"y"}).error
    assert conflict["kind"] == "BAD_ARGUMENTS"
    assert "given both in args and in bin" in conflict["message"]
    inside = client.call("word_count", {"text": 5}).error  # TypeError inside the tool
    assert (inside["kind"], inside["type"]) == ("TOOL_EXCEPTION", "builtins.AttributeError")
    assert client.value("word_count", {"text": "still fine"}) == 2  # same connection


def test_unencodable_results(spawn: Callable[..., WorkerProcess]) -> None:
    worker = spawn("echo_tools")
    worker.wait_ready()
    with worker.connect() as c:
        unenc = c.call("unencodable").error
        assert unenc["kind"] == "UNENCODABLE_RESULT"
        assert "'unencodable'" in unenc["message"] and "object" in unenc["message"]
        assert c.call("nan").kind == "UNENCODABLE_RESULT"
        err = c.call("raise_error", {"message": "nope"}).error
        assert (err["kind"], err["type"], err["message"]) == (
            "TOOL_EXCEPTION", "builtins.RuntimeError", "nope")
        assert c.value("pid") == worker.proc.pid


def test_too_large_result(spawn: Callable[..., WorkerProcess]) -> None:
    limit = 4096
    worker = spawn("echo_tools", env={"SNAKEPIT_MAX_MESSAGE_BYTES": str(limit)})
    worker.wait_ready()
    with worker.connect() as c:
        assert c.call("big", {"n": limit}).body == b"x" * limit  # exactly the limit: fine
        err = c.call("big", {"n": limit + 1}).error
        assert err["kind"] == "TOO_LARGE"
        assert f"{limit + 1} bytes" in err["message"] and str(limit) in err["message"]
        assert c.call("echo", {"value": "y" * limit}).kind == "TOO_LARGE"  # JSON too
        assert c.value("echo", {"value": 1}) == 1
        # An error too big for the limit is cut to fit, the traceback's end kept.
        huge = c.call("raise_error", {"message": "m" * 10_000 + "END"})
        assert len(huge.body) <= limit
        assert huge.kind == "TOOL_EXCEPTION" and huge.error["type"] == "builtins.RuntimeError"
        assert "characters cut" in huge.error["message"]
        assert huge.error["traceback"].endswith("END\n")
        # A request up to limit + 64 KiB is accepted...
        assert c.call("echo", {"value": "z" * (limit + 1000)}).kind == "TOO_LARGE"
        # ...one over it is a bad frame.
        c.send_raw(struct.pack(">IBBHQ", limit + 64 * 1024 + 1, 2, EXECUTE, 0, 9))
        assert "exceeds the limit" in c.expect_protocol_error()
    assert_in_stderr(worker, "tool 'big' returned a 4097-byte result")
    with worker.connect() as again:
        assert again.value("echo", {"value": 2}) == 2


def test_deadlines(spawn: Callable[..., WorkerProcess], tmp_path: Path) -> None:
    worker = spawn("gate_tools", capacity=2)
    worker.wait_ready()
    gate = str(tmp_path / "open")
    with worker.connect() as c:
        passed = c.call("block_until", {"path": gate}, deadline_ns=time.time_ns() - 1_000_000)
        assert passed.kind == "DEADLINE_EXCEEDED"
        assert "before tool 'block_until' could start" in passed.error["message"]
        ok = c.call("gather", {"directory": str(tmp_path / "g"), "n": 0},
                    deadline_ns=time.time_ns() + 10_000_000_000)
        assert ok.kind == "TOOL_EXCEPTION"  # the directory does not exist: it ran
        reply = c.call("ablock_until", {"path": gate}, deadline_ns=time.time_ns() + 100_000_000)
        assert reply.kind == "DEADLINE_EXCEEDED"
        assert "cancelled" in reply.error["message"]
        assert c.request("stats")["in_flight"] == 0  # the async tool was cancelled


def test_several_connections(textstats: WorkerProcess) -> None:
    clients = [textstats.connect() for _ in range(3)]
    streams = [c.start("word_count", {"text": "a " * (i + 1)}) for i, c in enumerate(clients)]
    assert [c.wait(s).value() for c, s in zip(clients, streams)] == [1, 2, 3]


# --------------------------------------------------------------- bad frames


def assert_logged(worker: WorkerProcess, needle: str) -> None:
    worker.wait_stderr(lambda ls: any(
        line.startswith("ERROR snakepit.native_server:") and needle in line for line in ls))


@pytest.mark.parametrize("token", ["wrong-token", ""])
def test_wrong_token_is_refused(textstats: WorkerProcess, token: str) -> None:
    with NativeClient(textstats.socket) as c:
        c.send_frame(HELLO, 0, json.dumps({"version": 2, "token": token}).encode())
        assert "wrong token" in c.expect_protocol_error()
    assert_logged(textstats, "wrong token")
    with textstats.connect() as c:  # still serving
        assert c.value("word_count", {"text": "a b"}) == 2


def test_hello_without_token_or_with_another_version(textstats: WorkerProcess) -> None:
    with NativeClient(textstats.socket) as c:
        c.send_frame(HELLO, 0, b'{"version": 2}')
        assert "wrong token" in c.expect_protocol_error()
    with NativeClient(textstats.socket) as c:  # a version 1 runtime, in the HELLO body
        c.send_frame(HELLO, 0, json.dumps({"version": 1, "token": textstats.token}).encode())
        assert c.expect_protocol_error() == "wire version 1, this side speaks 2"
    with NativeClient(textstats.socket) as c:  # ... or in the header
        c.send_frame(HELLO, 0, json.dumps({"version": 2, "token": textstats.token}).encode(),
                     version=1)
        assert c.expect_protocol_error() == "wire version 1, this side speaks 2"
    with NativeClient(textstats.socket) as c:
        c.send_frame(HELLO, 0, json.dumps({"version": 3, "token": textstats.token}).encode())
        assert c.expect_protocol_error() == "wire version 3, this side speaks 2"
    with NativeClient(textstats.socket) as c:
        c.send_frame(HELLO, 3, json.dumps({"version": 2, "token": textstats.token}).encode())
        assert "stream 0" in c.expect_protocol_error()
    with NativeClient(textstats.socket) as c:  # an enormous HELLO is not read
        c.send_raw(struct.pack(">IBBHQ", 1 << 20, 2, HELLO, 0, 0))
        assert "HELLO frame of 1048576 bytes exceeds the limit of 65536" in (
            c.expect_protocol_error())


@pytest.mark.parametrize(
    "frame",
    [
        encode_frame(EXECUTE, 1, execute_body("word_count", {"text": "a"})),
        encode_frame(REQUEST, 1, b'{"op":"health"}'),
        encode_frame(CANCEL, 1),
    ],
    ids=["execute", "request", "cancel"],
)
def test_first_frame_must_be_hello(textstats: WorkerProcess, frame: bytes) -> None:
    with NativeClient(textstats.socket) as c:
        c.send_raw(frame)
        assert "expected HELLO as the first frame" in c.expect_protocol_error()
    assert_logged(textstats, "expected HELLO as the first frame")


@pytest.mark.parametrize(
    "data, needle",
    [
        (struct.pack(">IBBHQ", 0, 1, REQUEST, 0, 1), "wire version 1, this side speaks 2"),
        (struct.pack(">IBBHQ", 0, 2, 42, 0, 1), "unknown frame type 42"),
        (struct.pack(">IBBHQ", 0, 2, EXECUTE, 1, 1), "flags 0x0001 not allowed"),
        (struct.pack(">IBBHQ", 0xFFFFFFFF, 2, EXECUTE, 0, 1), "exceeds the limit"),
        (b"GET / HTTP/1.1\r\nHost: worker\r\n\r\n", "wire version 47"),
        (encode_frame(HELLO, 0, b"{}"), "unexpected HELLO frame"),
        (encode_frame(RESULT, 1, b"1"), "unexpected RESULT frame"),
        (encode_frame(EXECUTE, 1, b"\x00\x00\x00\x01{"), "EXECUTE meta is not valid"),
        (encode_frame(EXECUTE, 1, b"\x00\x00"), "no 4-byte meta length"),
        (encode_frame(EXECUTE, 1, execute_body("echo", binary={"a": b"xy"})[:-1]),
         "runs past the end"),
        (encode_frame(REQUEST, 1, b"[]"), "REQUEST body must be a JSON object"),
        (encode_frame(CANCEL, 1, b"x"), "CANCEL frame with a 1-byte body"),
    ],
    ids=["version", "unknown-type", "flags", "oversized", "garbage", "second-hello", "result",
         "bad-meta", "short-execute", "bin-past-end", "bad-request", "cancel-body"],
)
def test_bad_frame_ends_the_connection_only(textstats: WorkerProcess, data: bytes,
                                            needle: str) -> None:
    with textstats.connect() as c:
        c.send_raw(data)
        assert needle in c.expect_protocol_error()
    assert_logged(textstats, needle)
    with textstats.connect() as c:
        assert c.value("word_count", {"text": "new connection works"}) == 3


def test_duplicate_stream_in_flight_is_a_protocol_error(spawn: Callable[..., WorkerProcess],
                                                        tmp_path: Path) -> None:
    worker = spawn("gate_tools")
    worker.wait_ready()
    gate = str(tmp_path / "open")
    with worker.connect() as c:
        c.start("block_until", {"path": gate}, stream=5)
        c.start("block_until", {"path": gate}, stream=5)
        assert "stream 5, which has a call in flight" in c.expect_protocol_error()
    open(gate, "w").close()


@pytest.mark.parametrize("cut", [5, 16, 20])
def test_truncated_frame_closes(textstats: WorkerProcess, cut: int) -> None:
    frame = encode_frame(EXECUTE, 1, execute_body("word_count", {"text": "a"}))
    with textstats.connect() as c:
        c.send_raw(frame[:cut])
        c.sock.shutdown(socket.SHUT_WR)
        assert c.expect_closed() == []
    assert_logged(textstats, "connection ended inside")
    with textstats.connect() as c:
        assert c.value("word_count", {"text": "a b"}) == 2


def test_peer_protocol_error_and_clean_close(textstats: WorkerProcess) -> None:
    with textstats.connect() as c:
        c.send_frame(PROTOCOL_ERROR, 0, b'{"message":"runtime is unhappy"}')
        assert c.expect_closed() == []
    assert_logged(textstats, "runtime is unhappy")
    with textstats.connect() as c:
        c.sock.shutdown(socket.SHUT_WR)  # clean EOF between frames
        assert c.expect_closed() == []


# --------------------------------------------------- REQUEST: describe etc.


def test_describe(client: NativeClient) -> None:
    reply = client.request("describe")
    assert reply["adapter"] == "examples.textstats"
    tools = {t["name"]: t for t in reply["tools"]}
    assert [t["name"] for t in reply["tools"]] == sorted(tools)
    assert set(tools) == {"char_count", "fail", "note", "reverse_bytes", "shout_words",
                          "slow_word_count", "top_words", "word_count", "words"}
    top = tools["top_words"]
    assert set(top) == {"name", "doc", "is_async", "is_generator", "params"}
    assert "most frequent" in top["doc"]
    assert top["is_async"] is False and top["is_generator"] is False
    assert top["params"] == [
        {"name": "text", "annotation": "str", "required": True, "default_json": "",
         "kind": "POSITIONAL_OR_KEYWORD"},
        {"name": "n", "annotation": "int", "required": False, "default_json": "3",
         "kind": "POSITIONAL_OR_KEYWORD"},
    ]
    assert tools["slow_word_count"]["is_async"] is True
    assert tools["reverse_bytes"]["params"][0]["annotation"] == "bytes"


def test_health(client: NativeClient, textstats: WorkerProcess, python: str) -> None:
    free_threaded = interpreter(python)["free_threaded"]
    assert client.request("health") == {"ok": True, "protocol_version": 2,
                                        "pid": textstats.proc.pid,
                                        "gil_enabled": not free_threaded,
                                        "gil_enabled_by": "", "gil_enabled_when": "",
                                        "free_threaded_build": free_threaded}


def test_stats(client: NativeClient, textstats: WorkerProcess, python: str) -> None:
    before = client.request("stats")["requests_served"]
    client.value("word_count", {"text": "x"})
    client.call("nope")  # failed calls are served calls too
    stats = client.request("stats")
    assert set(stats) == {"pid", "python_version", "implementation", "in_flight",
                          "requests_served", "free_threaded_build", "gil_enabled", "capacity",
                          "rss_bytes", "uptime_seconds", "max_in_flight", "profile",
                          "thread_violations", "gil_enabled_by", "gil_enabled_when"}
    assert stats["pid"] == textstats.proc.pid
    assert stats["python_version"] == interpreter_version(python)
    assert stats["implementation"] == "CPython"
    assert stats["in_flight"] == 0
    assert stats["requests_served"] == before + 2
    assert stats["capacity"] == 4
    assert stats["profile"] == "thread"
    assert stats["thread_violations"] == 0
    assert 1 <= stats["max_in_flight"] <= 4
    free_threaded = interpreter(python)["free_threaded"]
    assert stats["free_threaded_build"] is free_threaded
    if not free_threaded:
        assert stats["gil_enabled"] is True
    if python == sys.executable:
        assert stats["python_version"] == platform.python_version()
    if sys.version_info[:2] == (3, 11) and python == sys.executable:
        assert (stats["gil_enabled"], stats["free_threaded_build"]) == (True, False)
    assert stats["rss_bytes"] > 1_000_000
    assert stats["uptime_seconds"] > 0


def test_unknown_op_and_bad_shutdown(client: NativeClient) -> None:
    assert "unknown op 'reboot'" in client.request("reboot")["error"]
    stream = client.new_stream()
    client.send_frame(REQUEST, stream, b"{}")
    assert "unknown op None" in client.wait(stream).json()["error"]
    assert "grace_ms must be a number" in client.request("shutdown", grace_ms="soon")["error"]
    assert client.request("health")["ok"] is True  # not shut down


# ------------------------------------------------------------ multiplexing


def test_capacity_4_runs_four_calls_at_once_on_one_connection(
    spawn: Callable[..., WorkerProcess]
) -> None:
    worker = spawn("native_tools", capacity=4)
    worker.wait_ready()
    with worker.connect() as c:
        streams = [c.start("barrier_wait", {"timeout": 20}) for _ in range(4)]
        replies = [c.wait(s) for s in streams]
        assert sorted(r.value() for r in replies) == [0, 1, 2, 3]
        stats = c.request("stats")
        assert (stats["in_flight"], stats["requests_served"]) == (0, 4)
        assert (stats["max_in_flight"], stats["profile"]) == (4, "thread")


def test_capacity_1_runs_calls_one_at_a_time(spawn: Callable[..., WorkerProcess]) -> None:
    worker = spawn("native_tools", capacity=1)
    worker.wait_ready()
    with worker.connect() as c:
        streams = [c.start("probe", {"hold": 0.02}) for _ in range(4)]
        assert [c.wait(s).value() for s in streams] == [1, 1, 1, 1]
        assert c.value("max_concurrency") == 1
        stats = c.request("stats")
        assert (stats["max_in_flight"], stats["profile"]) == (1, "process")


def test_answers_come_in_completion_order(spawn: Callable[..., WorkerProcess],
                                          tmp_path: Path) -> None:
    worker = spawn("native_tools", capacity=2)
    worker.wait_ready()
    gate = str(tmp_path / "open")
    with worker.connect() as c:
        slow = c.start("block_until", {"path": gate})
        fast = c.start("echo", {"value": "fast"})
        first = c.read_frame()
        assert (first.stream, first.value()) == (fast, "fast")
        open(gate, "w").close()
        assert c.wait(slow).value() is True


# ---------------------------------------------------------------- CANCEL


def test_cancel_queued_call_never_runs(spawn: Callable[..., WorkerProcess],
                                       tmp_path: Path) -> None:
    worker = spawn("native_tools", capacity=1)
    worker.wait_ready()
    gate = str(tmp_path / "open")
    marker = str(tmp_path / "ran")
    with worker.connect() as c:
        blocker = c.start("block_until", {"path": gate})
        wait_for(lambda: in_flight(worker) == 1)
        queued = c.start("touch", {"path": marker})
        c.cancel(queued)
        reply = c.wait(queued)  # answered while the only thread is still busy
        assert reply.kind == "CANCELLED"
        assert "before tool 'touch' started" in reply.error["message"]
        c.cancel(queued)  # already answered: ignored
        c.cancel(12345)  # never existed: ignored
        open(gate, "w").close()
        assert c.wait(blocker).value() is True
        # FIFO, one thread: had the cancelled call been run, it would be by now.
        assert c.value("echo", {"value": 1}) == 1
        assert not os.path.exists(marker)
        stats = c.request("stats")
        assert (stats["in_flight"], stats["requests_served"]) == (0, 3)


def test_cancel_async_tool(spawn: Callable[..., WorkerProcess], tmp_path: Path) -> None:
    worker = spawn("native_tools", capacity=1)
    worker.wait_ready()
    gate = str(tmp_path / "open")
    with worker.connect() as c:
        stream = c.start("ablock_until", {"path": gate})
        # max_in_flight counts tools that started running (in_flight counts
        # queued calls too, and a queued call is cancelled another way).
        wait_for(lambda: running_max(worker) == 1)
        c.cancel(stream)
        reply = c.wait(stream)
        assert reply.kind == "CANCELLED"
        assert "'ablock_until' was cancelled" in reply.error["message"]
        assert c.request("stats")["in_flight"] == 0


def test_cancel_running_sync_tool_flags_it_and_sends_its_result(
    spawn: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    worker = spawn("native_tools", capacity=1)
    worker.wait_ready()
    gate = str(tmp_path / "open")
    with worker.connect() as c:
        stream = c.start("block_until", {"path": gate})
        wait_for(lambda: in_flight(worker) == 1)
        c.cancel(stream)
        assert c.request("health")["ok"] is True  # the CANCEL was read; no answer yet
        open(gate, "w").close()
        assert c.wait(stream).value() is True


def test_health_answered_while_all_capacity_is_busy(spawn: Callable[..., WorkerProcess],
                                                    tmp_path: Path) -> None:
    worker = spawn("native_tools", capacity=2)
    worker.wait_ready()
    gate = str(tmp_path / "open")
    with worker.connect() as c:
        streams = [c.start("block_until", {"path": gate}) for _ in range(3)]  # 2 run, 1 queued
        wait_for(lambda: in_flight(worker) == 3)
        assert c.request("health")["ok"] is True
        assert c.request("stats")["in_flight"] == 3
        assert len(c.request("describe")["tools"]) > 3
        open(gate, "w").close()
        assert [c.wait(s).value() for s in streams] == [True] * 3


def test_closed_connection_drops_its_queued_calls(spawn: Callable[..., WorkerProcess],
                                                  tmp_path: Path) -> None:
    worker = spawn("native_tools", capacity=1)
    worker.wait_ready()
    gate = str(tmp_path / "open")
    marker = str(tmp_path / "ran")
    c = worker.connect()
    c.start("block_until", {"path": gate})
    wait_for(lambda: in_flight(worker) == 1)
    c.start("touch", {"path": marker})
    wait_for(lambda: in_flight(worker) == 2)
    c.close()
    wait_for(lambda: in_flight(worker) == 1)  # the queued call is gone
    open(gate, "w").close()
    wait_for(lambda: in_flight(worker) == 0)
    with worker.connect() as again:
        assert again.value("echo", {"value": 1}) == 1
    assert not os.path.exists(marker)


# ------------------------------------------------------------------ shutdown


def test_shutdown_request_exits_zero(spawn: Callable[..., WorkerProcess]) -> None:
    worker = spawn("closing_adapter:Closing")
    worker.wait_ready()
    with worker.connect() as c:
        assert c.value("ping") == "pong"
        assert c.request("shutdown", grace_ms=2000) == {"in_flight": 0}
        assert c.expect_closed() == []
    assert worker.wait_exit() == 0
    assert not os.path.exists(worker.socket)
    assert_in_stderr(worker, "shutting down (shutdown request): 0 call(s) in flight")
    assert_in_stderr(worker, "closing_adapter: close() called")


def test_shutdown_waits_for_in_flight_calls(spawn: Callable[..., WorkerProcess],
                                            tmp_path: Path) -> None:
    worker = spawn("native_tools", capacity=2)
    worker.wait_ready()
    gate = str(tmp_path / "open")
    with worker.connect() as c, worker.connect() as other:
        sync_call = c.start("block_until", {"path": gate})
        async_call = c.start("ablock_until", {"path": gate})
        wait_for(lambda: other.request("stats")["in_flight"] == 2)
        assert other.request("shutdown", grace_ms=20_000) == {"in_flight": 2}
        late = other.call("echo", {"value": 1})
        assert late.kind == "SHUTTING_DOWN"
        assert other.request("health")["ok"] is False
        assert worker.proc.poll() is None  # still draining
        open(gate, "w").close()
        assert c.wait(sync_call).value() is True
        assert c.wait(async_call).value() is True
    assert worker.wait_exit() == 0


def test_shutdown_grace_expires(spawn: Callable[..., WorkerProcess]) -> None:
    worker = spawn("echo_tools")
    worker.wait_ready()
    with worker.connect() as c:
        c.start("sleep", {"seconds": 60})
        wait_for(lambda: c.request("stats")["in_flight"] == 1)
        started = time.monotonic()
        assert c.request("shutdown", grace_ms=100) == {"in_flight": 1}
        assert worker.wait_exit() == 0
        assert time.monotonic() - started < 10
        assert c.expect_closed() == []  # the stuck call never answered
    assert_in_stderr(worker, "grace period over with 1 call(s) still running")


def test_second_shutdown_shortens_the_grace(spawn: Callable[..., WorkerProcess]) -> None:
    worker = spawn("echo_tools")
    worker.wait_ready()
    with worker.connect() as c:
        c.start("sleep", {"seconds": 60})
        wait_for(lambda: c.request("stats")["in_flight"] == 1)
        assert c.request("shutdown", grace_ms=60_000) == {"in_flight": 1}
        assert c.request("shutdown", grace_ms=50) == {"in_flight": 1}
        assert worker.wait_exit(timeout=10) == 0


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_exits_zero(spawn: Callable[..., WorkerProcess], signum: int) -> None:
    worker = spawn("examples.textstats")
    worker.wait_ready()
    with worker.connect() as c:
        assert c.value("word_count", {"text": "a"}) == 1
        worker.signal(signum)
        try:
            code = worker.wait_exit()
        except subprocess.TimeoutExpired:
            raise AssertionError(f"no exit; stderr:\n{worker.stderr_text()}") from None
        assert code == 0
        assert c.expect_closed() == []
    assert_in_stderr(worker, f"shutting down ({signal.Signals(signum).name})")
    assert not os.path.exists(worker.socket)


def test_watch_stdin_exits_when_stdin_closes(spawn: Callable[..., WorkerProcess]) -> None:
    worker = spawn("examples.textstats", extra_args=["--watch-stdin"], stdin=subprocess.PIPE)
    worker.wait_ready()
    assert worker.proc.stdin is not None
    with worker.connect() as c:
        assert c.value("word_count", {"text": "still alive"}) == 2
    worker.proc.stdin.close()
    assert worker.wait_exit() == 70


def test_logging_and_print(spawn: Callable[..., WorkerProcess]) -> None:
    worker = spawn("echo_tools")
    worker.wait_ready()
    with worker.connect() as c:
        assert c.value("log", {"message": "first\nsecond", "level": "warning"}) is None
        lines = worker.wait_stderr(lambda ls: "    second" in ls)
        index = lines.index("WARNING echo_tools: first")
        assert lines[index + 1] == "    second"
        c.value("print_stdout", {"message": "hello from a tool"})
        assert worker.wait_stdout(lambda line: True) == "hello from a tool"


def test_crash_closes_the_connection(spawn: Callable[..., WorkerProcess]) -> None:
    worker = spawn("echo_tools")
    worker.wait_ready()
    with worker.connect() as c:
        c.start("crash", {"code": 5})
        assert c.expect_closed() == []
    assert worker.wait_exit() == 5


def test_frames_are_answered_in_one_piece_under_concurrency(
    spawn: Callable[..., WorkerProcess]
) -> None:
    # Many threads write on one connection at once: every frame must arrive whole.
    worker = spawn("native_tools", capacity=4)
    worker.wait_ready()
    payloads = {i: os.urandom(1000 * i) for i in range(1, 41)}
    with worker.connect() as c:
        streams = {c.start("echo_bytes", binary={"data": p}): i for i, p in payloads.items()}
        for _ in range(len(streams)):
            frame = c.read_frame()
            assert frame.type == RESULT and frame.body == payloads[streams[frame.stream]]
