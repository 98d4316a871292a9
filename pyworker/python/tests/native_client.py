"""A small client for the native wire format (docs/wire-format.md), for tests.

Written from the spec independently of ``snakepit.wire`` (only ``struct``,
``json`` and ``socket``), so it checks the server rather than sharing its
bugs, and shows what the runtime's side of a connection does: connect, send
HELLO, read HELLO_OK, then EXECUTE / CANCEL / REQUEST / CREDIT frames on
streams of its choosing, matching RESULT / ERROR / REPLY / CHUNK frames by
stream, and answering the worker's CALLBACK frames.
"""

from __future__ import annotations

import collections
import json
import socket
import struct
from typing import Any, Deque, Dict, List, Mapping, NamedTuple, Optional, Tuple

HEADER = struct.Struct(">IBBHQ")  # length, version, type, flags, stream
VERSION = 2

(HELLO, HELLO_OK, EXECUTE, RESULT, ERROR, CANCEL, REQUEST, REPLY, PROTOCOL_ERROR, CHUNK, CREDIT,
 CALLBACK, CALLBACK_RESULT, CALLBACK_ERROR) = range(1, 15)
NAMES = {
    HELLO: "HELLO", HELLO_OK: "HELLO_OK", EXECUTE: "EXECUTE", RESULT: "RESULT",
    ERROR: "ERROR", CANCEL: "CANCEL", REQUEST: "REQUEST", REPLY: "REPLY",
    PROTOCOL_ERROR: "PROTOCOL_ERROR", CHUNK: "CHUNK", CREDIT: "CREDIT", CALLBACK: "CALLBACK",
    CALLBACK_RESULT: "CALLBACK_RESULT", CALLBACK_ERROR: "CALLBACK_ERROR",
}
FLAG_RAW = 1
#: Frames that end a call (or answer a request) on their stream.
FINAL = (RESULT, ERROR, REPLY)


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

    def chunk(self) -> Any:
        """A CHUNK's item: decoded JSON, or bytes when raw."""
        assert self.type == CHUNK, self
        return self.body if self.flags & FLAG_RAW else json.loads(self.body)

    def callback(self) -> Tuple[Dict[str, Any], Dict[str, bytes]]:
        """A CALLBACK's ``(meta, binary arguments)``."""
        assert self.type == CALLBACK, self
        (meta_len,) = struct.unpack_from(">I", self.body, 0)
        meta = json.loads(self.body[4:4 + meta_len])
        binary: Dict[str, bytes] = {}
        offset = 4 + meta_len
        for name, length in meta.get("bin") or []:
            binary[name] = self.body[offset:offset + length]
            offset += length
        assert offset == len(self.body), "CALLBACK body longer than its meta says"
        return meta, binary


class ConnectionClosed(Exception):
    """The server closed the connection."""


def encode_frame(frame_type: int, stream: int, body: bytes = b"", flags: int = 0,
                 version: int = VERSION, length: Optional[int] = None) -> bytes:
    size = len(body) if length is None else length
    return HEADER.pack(size, version, frame_type, flags, stream) + body


def execute_body(tool: str, args: Any = None, *, binary: Optional[Mapping[str, bytes]] = None,
                 deadline_ns: int = 0, request_id: str = "",
                 raw_args: Optional[bytes] = None, window: Any = None,
                 session: Optional[str] = None) -> bytes:
    binary = dict(binary or {})
    meta_dict: Dict[str, Any] = {
        "id": request_id,
        "tool": tool,
        "deadline_ns": deadline_ns,
        "bin": [[name, len(data)] for name, data in binary.items()],
    }
    if window is not None:
        meta_dict["stream"] = window
    if session is not None:
        meta_dict["session"] = session
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
        #: Frames read but not asked for yet: by stream, and the CALLBACKs.
        self._stash: Dict[int, Deque[Frame]] = {}
        self._callbacks: Deque[Frame] = collections.deque()
        self.hello_ok: Optional[Dict[str, Any]] = None
        if token is not None:
            self.hello(token)

    # ------------------------------------------------------------- framing

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_frame(self, frame_type: int, stream: int, body: bytes = b"", flags: int = 0,
                   version: int = VERSION) -> None:
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
        assert version == VERSION, f"server sent wire version {version}"
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

    def hello(self, token: str, version: int = VERSION) -> Dict[str, Any]:
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

    def _pump(self) -> None:
        """Read one frame and keep it for whoever asks."""
        frame = self.read_frame()
        if frame.type == CALLBACK:
            self._callbacks.append(frame)
            return
        assert frame.type in FINAL or frame.type == CHUNK, (frame.name, frame.body[:500])
        queue = self._stash.setdefault(frame.stream, collections.deque())
        if frame.type in FINAL:
            assert not any(f.type in FINAL for f in queue), f"two answers on stream {frame.stream}"
        else:
            assert not any(f.type in FINAL for f in queue), (
                f"a CHUNK after the final answer on stream {frame.stream}")
        queue.append(frame)

    def next_on(self, stream: int) -> Frame:
        """The next frame on ``stream`` (a CHUNK or its final answer)."""
        while not self._stash.get(stream):
            self._pump()
        frame = self._stash[stream].popleft()
        if not self._stash[stream]:
            del self._stash[stream]
        return frame

    def wait(self, stream: int) -> Frame:
        """The answer on ``stream`` (frames for other streams are kept); no
        CHUNK may come before it."""
        frame = self.next_on(stream)
        assert frame.type in FINAL, (frame.name, frame.body[:500])
        return frame

    def stream(self, tool: str, args: Any = None, window: int = 4, **kw: Any) -> int:
        """Start a streaming call with ``window`` chunks of credit; its stream."""
        return self.start(tool, args, window=window, **kw)

    def credit(self, stream: int, n: int = 1) -> None:
        self.send_frame(CREDIT, stream, struct.pack(">I", n))

    def collect(self, stream: int, window: int) -> Tuple[List[Any], Frame]:
        """Read a stream to its end, returning one credit per chunk taken
        and checking the worker never sends beyond its credit; ``(items,
        final frame)``."""
        items: List[Any] = []
        granted = window
        while True:
            frame = self.next_on(stream)
            if frame.type != CHUNK:
                return items, frame
            items.append(frame.chunk())
            assert len(items) <= granted, f"chunk {len(items)} beyond the credit of {granted}"
            self.credit(stream, 1)
            granted += 1

    def next_callback(self) -> Frame:
        """The next CALLBACK the worker sent (frames for calls are kept)."""
        while not self._callbacks:
            self._pump()
        return self._callbacks.popleft()

    def callback_result(self, callback_id: int, value: Any = None, raw: Optional[bytes] = None) -> None:
        if raw is not None:
            self.send_frame(CALLBACK_RESULT, callback_id, raw, FLAG_RAW)
        else:
            self.send_frame(CALLBACK_RESULT, callback_id, json.dumps(value).encode())

    def callback_error(self, callback_id: int, kind: str, message: str) -> None:
        self.send_frame(CALLBACK_ERROR, callback_id,
                        json.dumps({"kind": kind, "message": message}).encode())

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
