"""Bad input fails only the call it came with: JSON nested deeper than the
decoder goes, numbers Python refuses, lone surrogates, and malformed
frames fed straight into the frame parser and the codec.

The rule (docs/wire-format.md, "Limits"): a frame read whole whose JSON is
well formed but cannot be decoded (too deep, an integer of too many
digits) is a bad argument of its call (``ERROR`` kind ``BAD_ARGUMENTS``),
or a bad answer to its callback (``CallbackError`` kind ``BAD_REPLY``): the
connection and the worker go on. Only what breaks the framing itself (or
JSON that is not JSON) is a bad frame.
"""

from __future__ import annotations

import json
import random
from typing import Any, Callable, List

import pytest

from snakepit import wire
from snakepit.callbacks import BAD_REPLY, CallbackError, decode_result
from snakepit.codec import CallError, ErrorKind, decode_args
from transports import Runtime, start, transport  # noqa: F401 - fixtures
from native_client import CALLBACK_RESULT, ERROR, HELLO, REQUEST, encode_frame

Start = Callable[..., Runtime]


def deep_list(depth: int) -> bytes:
    return b"[" * depth + b"0" + b"]" * depth


def deep_object(depth: int) -> bytes:
    return b'{"k":' * depth + b"0" + b"}" * depth


def args_with(value: bytes) -> bytes:
    return b'{"value":' + value + b"}"


HUGE_INT = b"9" * 5000
DEPTH_SAYS = f"within {wire.MAX_JSON_DEPTH} levels"
#: Arguments a worker cannot decode, and what the error must say.
UNDECODABLE = [
    pytest.param(args_with(deep_list(100_000)), DEPTH_SAYS, id="100k-nested-lists"),
    pytest.param(args_with(deep_object(20_000)), DEPTH_SAYS, id="20k-nested-objects"),
    pytest.param(args_with(HUGE_INT), "4300 digits", id="5000-digit-int"),
]


# ------------------------------------------------------------ unit: decoding


@pytest.mark.parametrize("data, says", UNDECODABLE)
def test_loads_tells_limits_from_syntax(data: bytes, says: str) -> None:
    with pytest.raises(wire.JSONLimitError) as info:
        wire.loads(data)
    assert says in info.value.problem
    for bad in (b"{", b"\xff", b"[1,]", b"{} x"):
        with pytest.raises(ValueError):
            wire.loads(bad)


@pytest.mark.parametrize("data, says", UNDECODABLE)
def test_parse_execute_reports_undecodable_args_as_the_calls_error(data: bytes, says: str) -> None:
    body = b"".join(wire.execute_body("echo", raw_args=data))
    with pytest.raises(wire.JSONLimitError) as info:
        wire.parse_execute(memoryview(body))
    assert says in info.value.problem
    assert not isinstance(info.value, wire.WireError)  # not a bad frame


def test_parse_object_refuses_deep_bodies_as_bad_frames() -> None:
    with pytest.raises(wire.WireError, match="HELLO body does not decode: its contents nest deeper"):
        wire.parse_object(deep_list(50_000), "HELLO")


@pytest.mark.parametrize("data, says", UNDECODABLE)
def test_decode_args_is_bad_arguments(data: bytes, says: str) -> None:
    with pytest.raises(CallError) as info:
        decode_args("echo", data)
    assert info.value.kind is ErrorKind.BAD_ARGUMENTS
    assert info.value.message.startswith("echo: the arguments ")
    assert says in info.value.message


@pytest.mark.parametrize("data, says", UNDECODABLE)
def test_decode_result_is_bad_reply(data: bytes, says: str) -> None:
    with pytest.raises(CallbackError) as info:
        decode_result("lookup", data, False)
    assert info.value.kind == BAD_REPLY and says in info.value.message
    assert "cannot be decoded" in info.value.message


def test_the_limit_decodes_on_this_python() -> None:
    """What the runtime sends at most (MAX_JSON_DEPTH levels of arguments,
    one more for the meta object) decodes here, with room to spare."""
    body = b"".join(wire.execute_body("echo", raw_args=args_with(deep_list(wire.MAX_JSON_DEPTH - 2))))
    assert wire.parse_execute(body).tool == "echo"


# ------------------------------------------- fuzz: the parsers raise only theirs


def _mutations(seed: bytes, rng: random.Random, n: int) -> List[bytes]:
    out = []
    for _ in range(n):
        data = bytearray(seed)
        for _ in range(rng.randint(1, 6)):
            op = rng.randrange(4)
            at = rng.randrange(len(data) + 1)
            if op == 0 and data:
                data[min(at, len(data) - 1)] = rng.randrange(256)
            elif op == 1:
                data[at:at] = bytes([rng.choice(b'[]{}",:\\0e9\xff\x00 ')]) * rng.randint(1, 3000)
            elif op == 2 and data:
                del data[at:at + rng.randint(1, 8)]
            else:
                data[at:at] = rng.choice([b"NaN", b"1e999", b"-", b'"\\ud800"', HUGE_INT, b"null"])
        out.append(bytes(data))
    return out


def _split(body: bytes) -> Any:
    (meta_len,) = wire._U32.unpack_from(body, 0)
    return body[4:4 + meta_len], body[4 + meta_len:]


#: (meta JSON, binary tail) of well-formed bodies to mutate.
SEEDS = [_split(b"".join(parts)) for parts in (
    wire.execute_body("echo", {"value": [1, {"a": "b"}]}, request_id="r",
                      binary={"d": b"xy"}, window=3, session="s"),
    wire.execute_body("echo", raw_args=args_with(deep_list(30))),
    wire.callback_body("lookup", "r", b'{"k":[1,2]}', {"d": b"z"}),
)]


def test_parsers_raise_only_their_errors() -> None:
    """Mutated EXECUTE / CALLBACK / CREDIT bodies (the meta mutated, its
    length kept true, or the whole body): each parses, or raises WireError
    (a bad frame) or JSONLimitError (a bad call); nothing else (a
    RecursionError or ValueError escaping would end the connection as an
    internal error)."""
    rng = random.Random(13)
    for meta, tail in SEEDS:
        whole = wire._U32.pack(len(meta)) + meta + tail
        bodies = [wire._U32.pack(len(m)) + m + tail for m in _mutations(meta, rng, 600)]
        for body in bodies + _mutations(whole, rng, 200):
            for parse in (wire.parse_execute, wire.parse_callback, wire.parse_credit):
                try:
                    parse(memoryview(body))
                except (wire.WireError, wire.JSONLimitError):
                    pass


def test_frame_reader_raises_only_wire_errors() -> None:
    """Random byte streams through FrameReader: frames, a clean end, or a
    WireError; never anything else."""
    rng = random.Random(7)
    good = encode_frame(REQUEST, 1, b'{"op":"health"}') + encode_frame(ERROR, 2, b"{}")
    for data in _mutations(good, rng, 500) + [deep_list(70_000)]:
        chunks = [data[i:i + 5] for i in range(0, len(data), 5)]

        def recv_into(view: memoryview) -> int:
            if not chunks:
                return 0
            chunk = chunks.pop(0)
            n = min(len(view), len(chunk))
            view[:n] = chunk[:n]
            if n < len(chunk):
                chunks.insert(0, chunk[n:])
            return n

        reader = wire.FrameReader(recv_into, 1 << 16, buffer_size=64)
        try:
            while reader.read() is not None:
                pass
        except wire.WireError:
            pass


# ------------------------------------------------- integration: real workers


def _execute_raw(worker: Runtime, tool: str, args_json: bytes, **kw: Any) -> Any:
    """One call with these exact argument bytes: ``(kind or "OK", message)``."""
    if worker.transport == "native":
        frame = worker.client.call(tool, raw_args=args_json, **kw)
        return ("OK", frame.value()) if frame.ok else (frame.kind, frame.error["message"])
    from snakepit.v1 import worker_pb2

    reply = worker.process.stub.Execute(
        worker_pb2.ExecuteRequest(request_id="raw", tool=tool, args_json=args_json),
        metadata=worker.process.metadata(), timeout=30)
    if reply.WhichOneof("outcome") == "error":
        return (worker_pb2.ErrorInfo.Kind.Name(reply.error.kind).replace("KIND_", ""),
                reply.error.message)
    return ("OK", json.loads(reply.result_json))


def _pid(worker: Runtime) -> int:
    return _execute_raw(worker, "pid", b"{}")[1]


@pytest.mark.parametrize("data, says", UNDECODABLE)
def test_undecodable_arguments_fail_only_their_call(start: Start, data: bytes, says: str) -> None:
    worker = start("echo_tools", 1)
    pid = _pid(worker)
    for _ in range(3):
        kind, message = _execute_raw(worker, "echo", data)
        assert kind == "BAD_ARGUMENTS" and says in message, (kind, message[:300])
    # The same connection (native) or channel (gRPC) still serves, the same process.
    assert _execute_raw(worker, "echo", b'{"value":"after"}') == ("OK", "after")
    assert _pid(worker) == pid
    if worker.transport == "native":
        assert worker.client.request("health")["ok"] is True
        assert worker.process.proc.poll() is None


def test_undecodable_stream_and_session_calls_fail_only_themselves(start: Start) -> None:
    worker = start("echo_tools", 1)
    if worker.transport != "native":
        pytest.skip("gRPC carries the arguments apart from the stream and session fields")
    client = worker.client
    stream = client.stream("count", raw_args=args_with(deep_list(50_000)), window=2)
    _items, final = client.collect(stream, 2)
    assert final.type == ERROR and final.kind == "BAD_ARGUMENTS"
    client.credit(stream, 1)  # a late credit for the refused stream is ignored
    frame = client.call("session_info", raw_args=args_with(HUGE_INT), session="s-1")
    assert frame.kind == "BAD_ARGUMENTS"
    assert client.value("session_info", {}, session="s-1")["calls"] == 1  # the session starts now
    assert client.value("echo", {"value": 1}) == 1


def test_deep_hello_is_a_clean_protocol_error(start: Start) -> None:
    worker = start("echo_tools", 1)
    if worker.transport != "native":
        pytest.skip("HELLO is a native frame")
    with worker.process.connect(token=None) as c:
        c.send_frame(HELLO, 0, deep_list(30_000))
        message = c.expect_protocol_error()
    assert "HELLO body does not decode" in message and "internal" not in message
    assert worker.value("echo", {"value": 2}) == 2


def _answer_raw(worker: Runtime, peer: Any, callback_id: int, body: bytes) -> None:
    if worker.transport == "native":
        peer.client.send_frame(CALLBACK_RESULT, callback_id, body)
    else:
        peer._replies.put(peer._pb.CallbackReply(id=callback_id, result_json=body))


@pytest.mark.parametrize("data, says", UNDECODABLE)
def test_undecodable_callback_result_fails_only_that_callback(start: Start, data: bytes,
                                                               says: str) -> None:
    worker = start("callback_tools", 1)
    peer = worker.callbacks()
    for _ in range(2):
        call = worker.start_call("try_callback", {"name": "lookup"})
        _answer_raw(worker, peer, peer.next().id, data)
        outcome = call.result()
        assert outcome[0] == "ok", outcome
        assert outcome[1]["raised"] == "CallbackError" and outcome[1]["kind"] == BAD_REPLY
        assert says in outcome[1]["message"]
    # The channel still carries callbacks.
    call = worker.start_call("try_callback", {"name": "lookup"})
    peer.result(peer.next().id, {"fine": True})
    assert call.result() == ("ok", {"value": {"fine": True}})


def test_lone_surrogates_reach_error_messages_escaped(start: Start) -> None:
    worker = start("echo_tools", 1)
    kind, message = _execute_raw(worker, "raise_error", b'{"message":"bad \\ud800 char"}')
    assert kind == "TOOL_EXCEPTION" and "bad" in message and "char" in message
    kind, message = _execute_raw(worker, "echo", b'{"\\udfff":1}')
    assert kind == "BAD_ARGUMENTS" and "unexpected keyword argument" in message
    assert _execute_raw(worker, "echo", b'{"value":"\\ud83d\\ude00"}') == ("OK", "\U0001F600")
