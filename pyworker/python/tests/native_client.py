"""A small client for the native wire format (docs/wire-format.md), for tests.

Written from the spec independently of ``snakepit.wire`` (only ``struct``,
``json`` and ``socket``), so it checks the server rather than sharing its
bugs, and shows what the runtime's side of a connection does: connect, send
HELLO, read HELLO_OK, then EXECUTE / CANCEL / REQUEST frames on streams of
its choosing, matching RESULT / ERROR / REPLY frames by stream.
"""

from __future__ import annotations

import json
import socket
import struct
from typing import Any, Dict, List, Mapping, NamedTuple, Optional

HEADER = struct.Struct(">IBBHQ")  # length, version, type, flags, stream

HELLO, HELLO_OK, EXECUTE, RESULT, ERROR, CANCEL, REQUEST, REPLY, PROTOCOL_ERROR = range(1, 10)
NAMES = {
    HELLO: "HELLO", HELLO_OK: "HELLO_OK", EXECUTE: "EXECUTE", RESULT: "RESULT",
    ERROR: "ERROR", CANCEL: "CANCEL", REQUEST: "REQUEST", REPLY: "REPLY",
    PROTOCOL_ERROR: "PROTOCOL_ERROR",
}
FLAG_RAW = 1


class Frame(NamedTuple):
    type: int
    flags: int
    stream: int
    body: bytes

    @property
    def name(self) -> str:
        return NAMES.get(self.type, f"type {self.type}")

    def json(self) -> Any:
        return json.loads(self.body)

    # EXECUTE answers

    @property
    def ok(self) -> bool:
        return self.type == RESULT

    @property
    def raw(self) -> bool:
        return self.type == RESULT and bool(self.flags & FLAG_RAW)

    def value(self) -> Any:
        """The JSON result; fails on anything else."""
        assert self.type == RESULT and not self.flags & FLAG_RAW, self
        return json.loads(self.body)

    @property
    def error(self) -> Dict[str, str]:
        assert self.type == ERROR, self
        return json.loads(self.body)

    @property
    def kind(self) -> str:
        return self.error["kind"]


class ConnectionClosed(Exception):
    """The server closed the connection."""


def encode_frame(frame_type: int, stream: int, body: bytes = b"", flags: int = 0,
                 version: int = 1, length: Optional[int] = None) -> bytes:
    size = len(body) if length is None else length
    return HEADER.pack(size, version, frame_type, flags, stream) + body


def execute_body(tool: str, args: Any = None, *, binary: Optional[Mapping[str, bytes]] = None,
                 deadline_ns: int = 0, request_id: str = "",
                 raw_args: Optional[bytes] = None) -> bytes:
    binary = dict(binary or {})
    meta_dict: Dict[str, Any] = {
        "id": request_id,
        "tool": tool,
        "deadline_ns": deadline_ns,
        "bin": [[name, len(data)] for name, data in binary.items()],
    }
    meta = json.dumps(meta_dict).encode()
    args_json = raw_args if raw_args is not None else json.dumps({} if args is None else args).encode()
    meta = meta[:-1] + b', "args": ' + args_json + b"}"
    return struct.pack(">I", len(meta)) + meta + b"".join(binary.values())


class NativeClient:
    """One connection to a native worker. Not thread-safe: one test thread."""

    def __init__(self, path: str, token: Optional[str] = None, *, timeout: float = 10.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self._next_stream = 0
        self._stash: Dict[int, Frame] = {}
        self.hello_ok: Optional[Dict[str, Any]] = None
        if token is not None:
            self.hello(token)

    # ------------------------------------------------------------- framing

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_frame(self, frame_type: int, stream: int, body: bytes = b"", flags: int = 0,
                   version: int = 1) -> None:
        self.sock.sendall(encode_frame(frame_type, stream, body, flags, version))

    def _recv_exact(self, n: int) -> bytes:
        chunks: List[bytes] = []
        while n:
            chunk = self.sock.recv(min(n, 1 << 20))
            if not chunk:
                if chunks:
                    raise AssertionError("the server closed the connection inside a frame")
                raise ConnectionClosed()
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def read_frame(self) -> Frame:
        """The next frame. Raises ConnectionClosed at EOF between frames."""
        length, version, frame_type, flags, stream = HEADER.unpack(self._recv_exact(16))
        assert version == 1, f"server sent wire version {version}"
        body = self._recv_exact(length) if length else b""
        return Frame(frame_type, flags, stream, body)

    def expect_closed(self) -> List[Frame]:
        """Read until EOF; the frames that came before it."""
        frames = []
        while True:
            try:
                frames.append(self.read_frame())
            except (ConnectionClosed, ConnectionResetError):
                return frames

    def expect_protocol_error(self) -> str:
        """The server answers PROTOCOL_ERROR and closes; its message."""
        frames = self.expect_closed()
        assert [f.type for f in frames] == [PROTOCOL_ERROR], frames
        assert frames[0].stream == 0
        return frames[0].json()["message"]

    # ----------------------------------------------------------- protocol

    def hello(self, token: str, version: int = 1) -> Dict[str, Any]:
        self.send_frame(HELLO, 0, json.dumps({"version": version, "token": token}).encode())
        frame = self.read_frame()
        assert frame.type == HELLO_OK, (frame, frame.body)
        assert frame.stream == 0 and frame.flags == 0
        self.hello_ok = frame.json()
        return self.hello_ok

    def new_stream(self) -> int:
        self._next_stream += 1
        return self._next_stream

    def start(self, tool: str, args: Any = None, **kw: Any) -> int:
        """Send an EXECUTE; its stream."""
        stream = kw.pop("stream", None) or self.new_stream()
        self.send_frame(EXECUTE, stream, execute_body(tool, args, **kw))
        return stream

    def wait(self, stream: int) -> Frame:
        """The answer on ``stream`` (frames for other streams are kept)."""
        while stream not in self._stash:
            frame = self.read_frame()
            assert frame.type in (RESULT, ERROR, REPLY), (frame.name, frame.body[:500])
            assert frame.stream not in self._stash, f"two answers on stream {frame.stream}"
            self._stash[frame.stream] = frame
        return self._stash.pop(stream)

    def call(self, tool: str, args: Any = None, **kw: Any) -> Frame:
        frame = self.wait(self.start(tool, args, **kw))
        assert frame.type in (RESULT, ERROR), frame
        return frame

    def value(self, tool: str, args: Any = None, **kw: Any) -> Any:
        return self.call(tool, args, **kw).value()

    def cancel(self, stream: int) -> None:
        self.send_frame(CANCEL, stream)

    def request(self, op: str, **fields: Any) -> Dict[str, Any]:
        stream = self.new_stream()
        self.send_frame(REQUEST, stream, json.dumps({"op": op, **fields}).encode())
        frame = self.wait(stream)
        assert frame.type == REPLY and frame.flags == 0, frame
        return frame.json()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "NativeClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
