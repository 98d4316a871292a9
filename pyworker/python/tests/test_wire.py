"""snakepit.wire: headers, the frame reader, EXECUTE / CALLBACK / CREDIT
bodies (no sockets)."""

from __future__ import annotations

import json
import struct
from typing import Iterable, List, Optional

import pytest

import native_client
from snakepit import wire


class FakeSocket:
    """recv_into() that hands out the given chunks, then EOF."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self.chunks: List[bytes] = [bytes(c) for c in chunks]
        self.calls = 0

    def recv_into(self, view: memoryview) -> int:
        self.calls += 1
        if not self.chunks:
            return 0
        chunk = self.chunks[0]
        n = min(len(chunk), len(view))
        view[:n] = chunk[:n]
        if n < len(chunk):
            self.chunks[0] = chunk[n:]
        else:
            self.chunks.pop(0)
        return n


def reader_for(data: bytes, chunk: Optional[int] = None, max_length: int = 1 << 20,
               buffer_size: int = 256) -> wire.FrameReader:
    if chunk is None:
        chunks = [data]
    else:
        chunks = [data[i:i + chunk] for i in range(0, len(data), chunk)]
    return wire.FrameReader(FakeSocket(chunks).recv_into, max_length, buffer_size=buffer_size)


def frames(reader: wire.FrameReader) -> list:
    out = []
    while True:
        frame = reader.read()
        if frame is None:
            return out
        frame_type, flags, stream, body = frame
        out.append((frame_type, flags, stream, bytes(body)))


# ------------------------------------------------------------------- header


def test_header_layout_is_big_endian_16_bytes() -> None:
    header = wire.pack_header(wire.RESULT, 0x0102030405060708, 0x0A0B0C0D, flags=wire.FLAG_RAW)
    assert header == bytes.fromhex("0a0b0c0d" "02" "04" "0001" "0102030405060708")
    assert wire.HEADER_SIZE == 16
    assert wire.unpack_header(header) == (0x0A0B0C0D, 2, wire.RESULT, 1, 0x0102030405060708)


def test_constants_match_the_spec() -> None:
    assert wire.VERSION == 2
    assert (wire.HELLO, wire.HELLO_OK, wire.EXECUTE, wire.RESULT, wire.ERROR, wire.CANCEL,
            wire.REQUEST, wire.REPLY, wire.PROTOCOL_ERROR, wire.CHUNK, wire.CREDIT,
            wire.CALLBACK, wire.CALLBACK_RESULT, wire.CALLBACK_ERROR) == tuple(range(1, 15))
    assert wire.type_name(wire.CALLBACK_ERROR) == "CALLBACK_ERROR"
    assert "session_end" in wire.OPS
    assert wire.frame_limit(1000) == 1000 + 64 * 1024
    assert wire.type_name(wire.PROTOCOL_ERROR) == "PROTOCOL_ERROR"
    assert wire.type_name(77) == "type 77"


def test_pack_header_rejects_oversized_length() -> None:
    with pytest.raises(ValueError):
        wire.pack_header(wire.RESULT, 1, 1 << 32)


def test_check_header_accepts_valid() -> None:
    wire.check_header(10, 2, wire.EXECUTE, 0, 10)
    for frame_type in (wire.RESULT, wire.CHUNK, wire.CALLBACK_RESULT):
        wire.check_header(0, 2, frame_type, wire.FLAG_RAW, 10)


@pytest.mark.parametrize(
    "length, version, frame_type, flags, error, needle",
    [
        (0, 1, wire.EXECUTE, 0, wire.VersionMismatch, "wire version 1, this side speaks 2"),
        (0, 0, wire.HELLO, 0, wire.VersionMismatch, "wire version 0"),
        (0, 2, 0, 0, wire.WireError, "unknown frame type 0"),
        (0, 2, 15, 0, wire.WireError, "unknown frame type 15"),
        (0, 2, 255, 0, wire.WireError, "unknown frame type 255"),
        (0, 2, wire.EXECUTE, 1, wire.WireError, "flags 0x0001 not allowed on a EXECUTE frame"),
        (0, 2, wire.RESULT, 2, wire.WireError, "flags 0x0002 not allowed on a RESULT frame"),
        (0, 2, wire.RESULT, 0x8001, wire.WireError, "not allowed"),
        (0, 2, wire.CREDIT, 1, wire.WireError, "flags 0x0001 not allowed on a CREDIT frame"),
        (0, 2, wire.CALLBACK, 1, wire.WireError, "flags 0x0001 not allowed on a CALLBACK frame"),
        (0, 2, wire.CALLBACK_ERROR, 1, wire.WireError, "not allowed on a CALLBACK_ERROR"),
        (11, 2, wire.EXECUTE, 0, wire.WireError, "EXECUTE frame of 11 bytes exceeds the limit of 10"),
    ],
)
def test_check_header_rejects(length: int, version: int, frame_type: int, flags: int,
                              error: type, needle: str) -> None:
    with pytest.raises(error) as info:
        wire.check_header(length, version, frame_type, flags, 10)
    assert needle in info.value.message


def test_version_is_checked_before_everything_else() -> None:
    with pytest.raises(wire.VersionMismatch):
        wire.check_header(1 << 31, 9, 99, 0xFFFF, 10)


# ------------------------------------------------------------------- reader


def sample_stream() -> bytes:
    return b"".join([
        wire.encode_frame(wire.HELLO, 0, b'{"version":1}'),
        wire.encode_frame(wire.CANCEL, 5),
        wire.encode_frame(wire.RESULT, 7, b"\x00\xff" * 50, flags=wire.FLAG_RAW),
        wire.encode_frame(wire.REQUEST, 2**64 - 1, b'{"op":"health"}'),
    ])


EXPECTED = [
    (wire.HELLO, 0, 0, b'{"version":1}'),
    (wire.CANCEL, 0, 5, b""),
    (wire.RESULT, 1, 7, b"\x00\xff" * 50),
    (wire.REQUEST, 0, 2**64 - 1, b'{"op":"health"}'),
]


@pytest.mark.parametrize("chunk", [None, 1, 3, 16, 17, 100])
def test_reader_reassembles_any_chunking(chunk: Optional[int]) -> None:
    assert frames(reader_for(sample_stream(), chunk)) == EXPECTED


def test_reader_reads_several_frames_per_recv() -> None:
    sock = FakeSocket([sample_stream()])
    reader = wire.FrameReader(sock.recv_into, 1 << 20)
    assert frames(reader) == EXPECTED
    assert sock.calls == 2  # one recv for all four frames, one for EOF


def test_reader_compacts_a_partial_frame_at_the_buffer_end() -> None:
    # 40-byte buffer: the second frame straddles its end and must be moved.
    data = wire.encode_frame(wire.REQUEST, 1, b"a" * 20) + wire.encode_frame(wire.REQUEST, 2, b"b" * 20)
    got = frames(reader_for(data, chunk=None, buffer_size=40))
    assert got == [(wire.REQUEST, 0, 1, b"a" * 20), (wire.REQUEST, 0, 2, b"b" * 20)]


@pytest.mark.parametrize("chunk", [None, 7, 1000])
def test_reader_body_larger_than_its_buffer(chunk: Optional[int]) -> None:
    big = bytes(range(256)) * 40  # 10240 bytes, buffer 256
    data = (wire.encode_frame(wire.REQUEST, 1, b"{}") + wire.encode_frame(wire.EXECUTE, 2, big)
            + wire.encode_frame(wire.CANCEL, 3))
    got = frames(reader_for(data, chunk=chunk, buffer_size=256))
    assert got == [(wire.REQUEST, 0, 1, b"{}"), (wire.EXECUTE, 0, 2, big), (wire.CANCEL, 0, 3, b"")]


def test_reader_clean_eof_between_frames() -> None:
    assert reader_for(b"").read() is None


@pytest.mark.parametrize("cut", [1, 15, 16, 17, 30])
def test_reader_truncated(cut: int) -> None:
    data = wire.encode_frame(wire.REQUEST, 1, b'{"op":"health"}')
    reader = reader_for(data[:cut], chunk=4)
    with pytest.raises(wire.TruncatedFrame) as info:
        reader.read()
    assert "connection ended inside" in info.value.message


def test_reader_truncated_large_body() -> None:
    data = wire.encode_frame(wire.EXECUTE, 1, b"x" * 5000)[:3000]
    with pytest.raises(wire.TruncatedFrame, match="5000-byte body of a EXECUTE frame"):
        reader_for(data, buffer_size=256).read()


def test_reader_rejects_oversized_before_reading_the_body() -> None:
    sock = FakeSocket([wire.pack_header(wire.EXECUTE, 1, 1001)])
    reader = wire.FrameReader(sock.recv_into, 1000)
    with pytest.raises(wire.WireError, match="exceeds the limit of 1000"):
        reader.read()
    reader.max_length = 2000  # the limit can change between reads (after HELLO)


@pytest.mark.parametrize(
    "data, needle",
    [
        (struct.pack(">IBBHQ", 0, 1, wire.HELLO, 0, 0), "wire version 1, this side speaks 2"),
        (struct.pack(">IBBHQ", 0, 2, 42, 0, 0), "unknown frame type 42"),
        (struct.pack(">IBBHQ", 0, 2, wire.CANCEL, 4, 0), "flags 0x0004"),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "wire version 47"),
        (b"\x00" * 16, "wire version 0"),
    ],
)
def test_reader_rejects_bad_headers(data: bytes, needle: str) -> None:
    with pytest.raises(wire.WireError) as info:
        reader_for(data).read()
    assert needle in info.value.message


def test_reader_accepts_raw_result_flag() -> None:
    data = wire.encode_frame(wire.RESULT, 9, b"\x01", flags=wire.FLAG_RAW)
    assert frames(reader_for(data)) == [(wire.RESULT, 1, 9, b"\x01")]


def test_reader_accepts_raw_chunk_and_callback_result() -> None:
    data = (wire.encode_frame(wire.CHUNK, 3, b"\x02", flags=wire.FLAG_RAW)
            + wire.encode_frame(wire.CALLBACK_RESULT, 4, b"\x03", flags=wire.FLAG_RAW))
    assert frames(reader_for(data)) == [(wire.CHUNK, 1, 3, b"\x02"),
                                        (wire.CALLBACK_RESULT, 1, 4, b"\x03")]


# ------------------------------------------------------------------- bodies


def test_loads_and_parse_object() -> None:
    assert wire.loads(b' {"a": [1, 2]}\n') == {"a": [1, 2]}
    assert wire.loads(memoryview(b'"\xc3\xbc"')) == "ü"
    for bad in (b"", b"{", b"{} x", b"\xff", b"nul"):
        with pytest.raises(ValueError):
            wire.loads(bad)
    assert wire.parse_object(b'{"op":"x"}', "REQUEST") == {"op": "x"}
    with pytest.raises(wire.WireError, match="REQUEST body must be a JSON object"):
        wire.parse_object(b"[1]", "REQUEST")
    with pytest.raises(wire.WireError, match="not valid UTF-8 JSON"):
        wire.parse_object(b"{", "REQUEST")


def test_parse_execute_round_trip() -> None:
    parts = wire.execute_body("t", {"a": 1}, request_id="r1", deadline_ns=123,
                              binary={"x": b"\x00\x01", "y": b"", "z": b"zzz"})
    call = wire.parse_execute(memoryview(b"".join(parts)))
    assert call == wire.ExecuteCall("r1", "t", 123, {"a": 1},
                                    {"x": b"\x00\x01", "y": b"", "z": b"zzz"})
    assert all(type(v) is bytes for v in call.binary.values())


def test_parse_execute_matches_the_independent_client_encoder() -> None:
    body = native_client.execute_body("tool", {"k": "v"}, binary={"data": b"123"},
                                      deadline_ns=5, request_id="id")
    assert wire.parse_execute(body) == wire.ExecuteCall("id", "tool", 5, {"k": "v"},
                                                        {"data": b"123"})


def test_parse_execute_defaults() -> None:
    meta = b'{"tool":"t"}'
    call = wire.parse_execute(struct.pack(">I", len(meta)) + meta)
    assert call == wire.ExecuteCall("", "t", 0, {}, {})
    meta = b'{"tool":"t","args":null,"bin":null,"id":null,"deadline_ns":null,"extra":1}'
    assert wire.parse_execute(struct.pack(">I", len(meta)) + meta).args == {}


def test_parse_execute_leaves_bad_args_to_the_caller() -> None:
    body = b"".join(wire.execute_body("t", raw_args=b"[1]"))
    assert wire.parse_execute(body).args == [1]


def _body(meta: object, tail: bytes = b"") -> bytes:
    encoded = json.dumps(meta).encode() if not isinstance(meta, bytes) else meta
    return struct.pack(">I", len(encoded)) + encoded + tail


@pytest.mark.parametrize(
    "body, needle",
    [
        (b"", "no 4-byte meta length"),
        (b"\x00\x00", "no 4-byte meta length"),
        (struct.pack(">I", 10) + b"{}", "meta length 10 exceeds the 2 bytes"),
        (_body(b"{"), "meta is not valid UTF-8 JSON"),
        (_body(b"\xff"), "meta is not valid UTF-8 JSON"),
        (_body([1]), "meta must be a JSON object"),
        (_body({"tool": 5}), "'tool' must be a string"),
        (_body({"tool": "t", "id": 5}), "'id' must be a string"),
        (_body({"tool": "t", "deadline_ns": "soon"}), "'deadline_ns' must be"),
        (_body({"tool": "t", "deadline_ns": -1}), "'deadline_ns' must be"),
        (_body({"tool": "t", "deadline_ns": 1.5}), "'deadline_ns' must be"),
        (_body({"tool": "t", "bin": {"a": 1}}), "'bin' must be a list"),
        (_body({"tool": "t", "bin": [["a"]]}), "is not a [name, length] pair"),
        (_body({"tool": "t", "bin": [["a", -1]]}), "is not a [name, length] pair"),
        (_body({"tool": "t", "bin": [[1, 1]]}, b"x"), "is not a [name, length] pair"),
        (_body({"tool": "t", "bin": [["a", 1], ["a", 1]]}, b"xy"), "names binary argument 'a' twice"),
        (_body({"tool": "t", "bin": [["a", 5]]}, b"xy"), "runs past the end"),
        (_body({"tool": "t", "bin": [["a", 1]]}, b"xy"), "1 bytes after its meta"),
        (_body({"tool": "t"}, b"junk"), "4 bytes after its meta"),
    ],
)
def test_parse_execute_rejects(body: bytes, needle: str) -> None:
    with pytest.raises(wire.WireError) as info:
        wire.parse_execute(memoryview(body))
    assert needle in info.value.message


def test_execute_body_raw_args_and_order() -> None:
    parts = wire.execute_body("t", raw_args=b'{"b":2}', binary={"second": b"2", "first": b"1"})
    meta_len = struct.unpack(">I", parts[0])[0]
    meta = json.loads(parts[1])
    assert meta_len == len(parts[1])
    assert meta["args"] == {"b": 2}
    assert meta["bin"] == [["second", 1], ["first", 1]]
    assert parts[2:] == [b"2", b"1"]


def test_encode_frame_joins_parts() -> None:
    frame = wire.encode_frame(wire.EXECUTE, 3, [b"ab", b"c"])
    assert frame == wire.pack_header(wire.EXECUTE, 3, 3) + b"abc"


# ------------------------------------------------------- streams, callbacks


def test_parse_execute_stream_and_session() -> None:
    body = b"".join(wire.execute_body("t", {"a": 1}, window=8, session="s-1"))
    call = wire.parse_execute(body)
    assert (call.window, call.session) == (8, "s-1")
    plain = wire.parse_execute(b"".join(wire.execute_body("t")))
    assert (plain.window, plain.session) == (None, "")
    # Out-of-range windows are the server's to refuse (BAD_ARGUMENTS), not bad frames.
    assert wire.parse_execute(_body({"tool": "t", "stream": 0})).window == 0
    assert wire.parse_execute(_body({"tool": "t", "stream": None, "session": None})).window is None
    independent = native_client.execute_body("t", {}, window=3, session="s")
    assert wire.parse_execute(independent)[5:] == (3, "s")


@pytest.mark.parametrize(
    "meta, needle",
    [
        ({"tool": "t", "stream": "4"}, "'stream' must be an integer"),
        ({"tool": "t", "stream": 1.5}, "'stream' must be an integer"),
        ({"tool": "t", "stream": True}, "'stream' must be an integer"),
        ({"tool": "t", "session": 5}, "'session' must be a string"),
    ],
)
def test_parse_execute_rejects_bad_stream_and_session(meta: dict, needle: str) -> None:
    with pytest.raises(wire.WireError, match=needle):
        wire.parse_execute(_body(meta))


def test_callback_body_round_trip() -> None:
    parts = wire.callback_body("lookup", "r-1", b'{"k":[1,2]}', {"data": b"\x00" * 5, "e": b""})
    body = b"".join(parts)
    call = wire.parse_callback(memoryview(body))
    assert call == wire.CallbackCall("lookup", "r-1", {"k": [1, 2]},
                                     {"data": b"\x00" * 5, "e": b""})
    # The layout is EXECUTE's: the independent client's parser reads it too.
    meta, binary = native_client.Frame(native_client.CALLBACK, 0, 1, body).callback()
    assert meta == {"name": "lookup", "parent": "r-1", "bin": [["data", 5], ["e", 0]],
                    "args": {"k": [1, 2]}}
    assert binary == {"data": b"\x00" * 5, "e": b""}


@pytest.mark.parametrize(
    "meta, tail, needle",
    [
        ({"parent": "p"}, b"", "'name' must be a non-empty string"),
        ({"name": "", "parent": "p"}, b"", "'name' must be a non-empty string"),
        ({"name": "n", "parent": 3}, b"", "'parent' must be a string"),
        ({"name": "n", "bin": [["a", 2]]}, b"a", "runs past the end of the"),
        ({"name": "n"}, b"x", "CALLBACK body has 1 bytes after"),
    ],
)
def test_parse_callback_rejects(meta: dict, tail: bytes, needle: str) -> None:
    with pytest.raises(wire.WireError, match=needle):
        wire.parse_callback(_body(meta, tail))


def test_credit_body() -> None:
    assert wire.credit_body(1) == b"\x00\x00\x00\x01"
    assert wire.parse_credit(memoryview(wire.credit_body(0xFFFFFFFF))) == 0xFFFFFFFF
    for bad in (0, -1, 1 << 32):
        with pytest.raises(ValueError):
            wire.credit_body(bad)
    with pytest.raises(wire.WireError, match="CREDIT of 0 chunks"):
        wire.parse_credit(b"\x00\x00\x00\x00")
    for body in (b"", b"\x00\x01", b"\x00\x00\x00\x01\x00"):
        with pytest.raises(wire.WireError, match="it must be a 4-byte count"):
            wire.parse_credit(body)
