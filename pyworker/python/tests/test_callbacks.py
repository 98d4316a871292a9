"""Callbacks end to end (snakepit.call / acall): the test plays the runtime,
answering the worker's CALLBACK frames (native) or its Callbacks RPC (gRPC)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import random
import time
from pathlib import Path
from typing import Any, Callable, Dict

import pytest

import snakepit
from snakepit.callbacks import CallbackError, decode_result, encode_args
from transports import Runtime, start, transport, wait_until  # noqa: F401 - fixtures

Start = Callable[..., Runtime]


def read_json(path: Path, timeout: float = 10.0) -> Dict[str, Any]:
    wait_until(path.exists, timeout)
    return json.loads(path.read_text())


# --------------------------------------------------------------- round trips


def test_round_trip_with_nested_data(start: Start) -> None:
    worker = start("callback_tools")
    peer = worker.callbacks()
    nested = {"a": {"b": [1, 2.5, {"c": None, "d": True}]}, "s": "ü ✓", "n": -3}
    call = worker.start_call("callback", {"name": "lookup", "args": nested}, request_id="req-1")
    cb = peer.next()
    assert (cb.name, cb.parent, cb.args, cb.binary) == ("lookup", "req-1", nested, {})
    peer.result(cb.id, {"got": cb.args, "deep": [1, [2, [3, {"x": None}]]]})
    assert call.result() == ("ok", {"got": nested, "deep": [1, [2, [3, {"x": None}]]]})
    # The async flavour, from an async tool.
    call = worker.start_call("acallback", {"name": "alookup", "args": {"x": [1]}},
                             request_id="req-2")
    cb = peer.next()
    assert (cb.name, cb.parent, cb.args) == ("alookup", "req-2", {"x": [1]})
    peer.result(cb.id, "done")
    assert call.result() == ("ok", "done")
    # No arguments, a null result.
    call = worker.start_call("callback", {"name": "ping"})
    cb = peer.next()
    assert (cb.args, cb.binary) == ({}, {})
    peer.result(cb.id, None)
    assert call.result() == ("ok", None)


def test_ten_megabytes_travel_raw_and_byte_exact(start: Start) -> None:
    worker = start("callback_tools")
    peer = worker.callbacks()
    data = os.urandom(10 * 1024 * 1024)
    call = worker.start_call("callback_bytes", {"name": "blob"}, binary={"data": data})
    cb = peer.next(timeout=30)
    assert cb.name == "blob" and cb.args == {}
    assert cb.binary.keys() == {"data"} and cb.binary["data"] == data
    peer.result(cb.id, raw=data[::-1])
    assert call.result() == ("ok", data[::-1])


def test_callback_errors_raise_callback_error(start: Start) -> None:
    worker = start("callback_tools")
    peer = worker.callbacks()
    for kind in ("UNKNOWN_CALLBACK", "HANDLER_ERROR", "DEADLOCK"):
        call = worker.start_call("try_callback", {"name": "f"})
        peer.error(peer.next().id, kind, f"{kind.lower()} happened")
        assert call.result() == ("ok", {"raised": "CallbackError", "kind": kind,
                                        "message": f"{kind.lower()} happened"})
    call = worker.start_call("atry_callback", {"name": "f"})
    peer.error(peer.next().id, "BAD_ARGUMENTS", "x must be an int")
    assert call.result()[1]["kind"] == "BAD_ARGUMENTS"
    # Escaping the tool: a tool exception naming the kind, its traceback in the tool.
    call = worker.start_call("callback", {"name": "f"})
    peer.error(peer.next().id, "HANDLER_PANIC", "panic: boom")
    kind, error = call.result()
    assert (kind, error["kind"], error["type"]) == (
        "error", "TOOL_EXCEPTION", "snakepit.callbacks.CallbackError")
    assert error["message"] == "callback 'f' failed: HANDLER_PANIC: panic: boom"
    assert "in callback" in error["traceback"]
    machinery = ("server.py", "native_calls.py", "native_callbacks.py", "native_conn.py",
                 "grpc_", "core.py")
    assert not [name for name in machinery if name in error["traceback"]], error["traceback"]


def test_the_calling_calls_end_raises_cancelled(start: Start) -> None:
    # The runtime answers CANCELLED / DEADLINE_EXCEEDED when the calling
    # call's context ended while its handler ran: the tool gets
    # snakepit.Cancelled, as when the worker notices first.
    worker = start("callback_tools")
    peer = worker.callbacks()
    for tool in ("try_callback", "atry_callback"):
        for kind, deadline in (("CANCELLED", False), ("DEADLINE_EXCEEDED", True)):
            call = worker.start_call(tool, {"name": "f"})
            peer.error(peer.next().id, kind, "the calling call ended")
            raised = call.result()[1]
            assert (raised["raised"], raised["deadline_exceeded"]) == ("Cancelled", deadline), (
                tool, kind, raised)


def test_unencodable_arguments_and_misuse_send_nothing(start: Start) -> None:
    worker = start("callback_tools")
    peer = worker.callbacks()
    raised = worker.value("unencodable_argument", {"kind": "object"})
    assert raised["raised"] == "TypeError"
    assert "argument 'bad' holds a value of type object inside it" in raised["message"]
    raised = worker.value("unencodable_argument", {"kind": "nan"})
    assert raised["raised"] == "ValueError" and "NaN" in raised["message"]
    assert worker.value("unencodable_argument", {"kind": "set"})["raised"] == "TypeError"
    raised = worker.value("blocking_call_on_the_loop")
    assert raised["raised"] == "RuntimeError"
    assert "would block the event loop" in raised["message"]
    assert "await snakepit.acall" in raised["message"]
    # None of those sent anything: the next callback the runtime sees is this one.
    call = worker.start_call("callback", {"name": "after"})
    assert peer.next().name == "after"
    call.cancel()


def test_one_hundred_concurrent_callbacks_are_matched(start: Start) -> None:
    worker = start("callback_tools", 4, "--profile", "thread")
    peer = worker.callbacks()
    calls = [worker.start_call("callback_many", {"name": "square", "n": 25},
                               request_id=f"c{k}") for k in range(4)]
    pending = [peer.next(timeout=30) for _ in range(100)]  # all 100 in flight at once
    assert len({cb.id for cb in pending}) == 100
    assert sorted((cb.parent, cb.args["i"]) for cb in pending) == sorted(
        (f"c{k}", i) for k in range(4) for i in range(25))
    random.Random(7).shuffle(pending)
    for cb in pending:
        peer.result(cb.id, {"parent": cb.parent, "square": cb.args["i"] ** 2})
    for k, call in enumerate(calls):
        assert call.result() == ("ok", [{"parent": f"c{k}", "square": i * i} for i in range(25)])


# ------------------------------------------------------------- cancellation


def test_cancel_while_waiting_for_the_answer(start: Start) -> None:
    worker = start("callback_tools")
    peer = worker.callbacks()
    call = worker.start_call("callback", {"name": "slow"})
    cb = peer.next()
    call.cancel()
    if worker.transport == "native":
        kind, error = call.result()
        assert (kind, error["kind"]) == ("error", "CANCELLED")
        assert "callback 'slow' of tool 'callback' gave up while waiting" in error["message"]
    else:
        import grpc

        with pytest.raises(grpc.FutureCancelledError):
            call.result()
    wait_until(lambda: worker.stats()["in_flight"] == 0)
    peer.result(cb.id, "too late")  # dropped
    call = worker.start_call("callback", {"name": "next"})
    cb = peer.next()
    peer.result(cb.id, "fine")
    assert call.result() == ("ok", "fine")


def test_deadline_while_waiting_for_the_answer(start: Start) -> None:
    worker = start("callback_tools")
    peer = worker.callbacks()
    began = time.monotonic()
    call = worker.start_call("callback", {"name": "slow"},
                             deadline_ns=time.time_ns() + 300_000_000)
    assert peer.next().name == "slow"
    kind, error = call.result()
    assert (kind, error["kind"]) == ("error", "DEADLINE_EXCEEDED")
    assert time.monotonic() - began > 0.25  # it waited for the deadline, not less
    wait_until(lambda: worker.stats()["in_flight"] == 0)


def test_connection_closing_fails_waiting_callbacks(start: Start, tmp_path: Path) -> None:
    worker = start("callback_tools")
    peer = worker.callbacks()
    marker = tmp_path / "raised"
    call = worker.start_call("call_and_record", {"name": "slow", "marker": str(marker)})
    assert peer.next().name == "slow"
    if worker.transport == "native":
        worker.client.close()  # the runtime's connection goes away
    else:
        peer.abandon()  # the runtime's Callbacks stream goes away
    raised = read_json(marker)
    assert (raised["raised"], raised["kind"]) == ("CallbackError", "CONNECTION_CLOSED")
    if worker.transport == "grpc":
        kind, error = call.result()
        assert error["kind"] == "TOOL_EXCEPTION" and "CONNECTION_CLOSED" in error["message"]
    wait_until(lambda: worker.stats()["in_flight"] == 0)


def test_grpc_without_a_callbacks_stream(start: Start) -> None:
    worker = start("callback_tools")
    if worker.transport != "grpc":
        pytest.skip("gRPC only: native callbacks ride on the call's connection")
    raised = worker.value("try_callback", {"name": "f"})
    assert (raised["raised"], raised["kind"]) == ("CallbackError", "UNAVAILABLE")
    assert "no Callbacks stream open" in raised["message"]
    first = worker.callbacks()
    second = worker.callbacks()  # the most recent one carries new callbacks
    call = worker.start_call("callback", {"name": "g"})
    cb = second.next()
    second.result(cb.id, 2)
    assert call.result() == ("ok", 2)
    second.close()
    second._thread.join(10)  # the worker ended that RPC: it no longer carries callbacks
    call = worker.start_call("callback", {"name": "h"})
    cb = first.next()  # back to the one still open
    first.result(cb.id, 3)
    assert call.result() == ("ok", 3)


# -------------------------------------------------------------- in-process


def test_outside_a_tool_call() -> None:
    with pytest.raises(RuntimeError, match=r"snakepit\.call can only be used inside a tool call"):
        snakepit.call("anything", x=1)
    with pytest.raises(RuntimeError, match=r"snakepit\.acall can only be used inside a tool call"):
        asyncio.run(snakepit.acall("anything"))


def test_encode_args() -> None:
    @dataclasses.dataclass
    class Point:
        x: int
        y: int

    args_json, binary = encode_args("f", {"a": [1, {"b": None}], "p": Point(1, 2),
                                          "raw": b"\x00\x01", "ba": bytearray(b"z"),
                                          "mv": memoryview(b"mv")})
    assert json.loads(args_json) == {"a": [1, {"b": None}], "p": {"x": 1, "y": 2}}
    assert binary == {"raw": b"\x00\x01", "ba": b"z", "mv": b"mv"}
    assert all(type(v) is bytes for v in binary.values())
    assert encode_args("f", {}) == (b"{}", {})
    with pytest.raises(TypeError, match="argument 'o' holds a value of type object"):
        encode_args("f", {"ok": 1, "o": object()})
    with pytest.raises(ValueError, match="argument 'n' holds a float NaN or infinity"):
        encode_args("f", {"n": float("inf")})
    with pytest.raises(TypeError, match="argument 'k' of type dict cannot be encoded"):
        encode_args("f", {"k": {(1, 2): 3}})
    with pytest.raises(TypeError, match="must be a str"):
        encode_args(5, {})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must not be empty"):
        encode_args("", {})


def test_decode_result_and_error() -> None:
    assert decode_result("f", b'{"a":1}', False) == {"a": 1}
    assert decode_result("f", b"\x00", True) == b"\x00"
    assert decode_result("f", b"", False) is None
    with pytest.raises(CallbackError) as info:
        decode_result("f", b"{", False)
    assert info.value.kind == "BAD_REPLY"
    err = CallbackError("HANDLER_ERROR", "no", "f")
    assert (err.kind, err.message, err.name, str(err)) == (
        "HANDLER_ERROR", "no", "f", "callback 'f' failed: HANDLER_ERROR: no")
    assert snakepit.CallbackError is CallbackError
