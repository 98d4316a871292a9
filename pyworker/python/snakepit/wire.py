"""The native wire format (docs/wire-format.md), version 2: framing only.

Every frame is a 16-byte big-endian header (``length`` u32, ``version`` u8,
``type`` u8, ``flags`` u16, ``stream`` u64) followed by ``length`` bytes of
body. This module packs, unpacks and validates frames and parses the bodies
whose layout is fixed by the spec; it owns no connection and no policy.
Standard library only.

A problem with a frame raises :class:`WireError` (a *bad frame*: the
receiver answers PROTOCOL_ERROR and closes); :class:`TruncatedFrame` when the
connection ended inside a frame and :class:`VersionMismatch` for another wire
version are subclasses. Well-formed JSON that this side cannot hold (nested
deeper than the decoder goes, an integer of too many digits) raises
:class:`JSONLimitError` instead: the frame was read whole, so only the call
or the answer it carried fails, and the connection goes on.
"""

from __future__ import annotations

import json
import struct
from typing import (
    Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union, cast,
)

VERSION = 2
HEADER = struct.Struct(">IBBHQ")
HEADER_SIZE = HEADER.size  # 16
_U32 = struct.Struct(">I")
MAX_U32 = 0xFFFFFFFF
MAX_STREAM = 0xFFFFFFFFFFFFFFFF
#: Added to SNAKEPIT_MAX_MESSAGE_BYTES for a frame's metadata.
META_ALLOWANCE = 64 * 1024

HELLO = 1
HELLO_OK = 2
EXECUTE = 3
RESULT = 4
ERROR = 5
CANCEL = 6
REQUEST = 7
REPLY = 8
PROTOCOL_ERROR = 9
CHUNK = 10
CREDIT = 11
CALLBACK = 12
CALLBACK_RESULT = 13
CALLBACK_ERROR = 14

TYPE_NAMES: Dict[int, str] = {
    HELLO: "HELLO",
    HELLO_OK: "HELLO_OK",
    EXECUTE: "EXECUTE",
    RESULT: "RESULT",
    ERROR: "ERROR",
    CANCEL: "CANCEL",
    REQUEST: "REQUEST",
    REPLY: "REPLY",
    PROTOCOL_ERROR: "PROTOCOL_ERROR",
    CHUNK: "CHUNK",
    CREDIT: "CREDIT",
    CALLBACK: "CALLBACK",
    CALLBACK_RESULT: "CALLBACK_RESULT",
    CALLBACK_ERROR: "CALLBACK_ERROR",
}

#: RESULT, CHUNK and CALLBACK_RESULT flags bit 0: the body is raw bytes, not JSON.
FLAG_RAW = 0x0001
#: Flag bits each frame type may carry; every other bit must be 0.
ALLOWED_FLAGS: Dict[int, int] = {RESULT: FLAG_RAW, CHUNK: FLAG_RAW, CALLBACK_RESULT: FLAG_RAW}

#: Ops of a REQUEST frame.
OPS = ("health", "stats", "describe", "shutdown", "session_end")

#: The deepest nesting of JSON arrays and objects in a call's arguments
#: (the arguments object itself is level 1) that the runtime sends: it
#: refuses deeper ones before sending (snakepit.MaxArgsDepth, the same
#: number). Far within what every supported CPython decodes (3.11: about
#: 990 levels, bounded by sys.getrecursionlimit(); 3.13: about 10,000).
MAX_JSON_DEPTH = 512


class WireError(Exception):
    """A bad frame. ``message`` names the problem (it goes into PROTOCOL_ERROR)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class TruncatedFrame(WireError):
    """The connection ended inside a frame."""


class VersionMismatch(WireError):
    """The peer speaks another wire version."""

    def __init__(self, got: int) -> None:
        super().__init__(f"wire version {got}, this side speaks {VERSION}")
        self.got = got


class JSONLimitError(Exception):
    """Well-formed JSON this side cannot decode: nested deeper than the
    decoder goes (RecursionError), or holding an integer of more digits than
    Python converts (``sys.get_int_max_str_digits()``). Not a bad frame: it
    fails only the call (or callback answer) whose body held it.
    ``problem`` completes a sentence about the JSON ("the arguments ...")."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


def limit_error(exc: BaseException) -> JSONLimitError:
    """The JSONLimitError for a RecursionError or ValueError (not a
    JSONDecodeError) that decoding well-formed JSON raised."""
    if isinstance(exc, RecursionError):
        return JSONLimitError(
            f"nest deeper than this worker's JSON decoder goes ({exc}); keep arrays and "
            f"objects within {MAX_JSON_DEPTH} levels (the JSON nesting limit, "
            f"docs/wire-format.md)")
    return JSONLimitError(f"hold something this worker's JSON decoder refuses: {exc}")


def type_name(frame_type: int) -> str:
    return TYPE_NAMES.get(frame_type, f"type {frame_type}")


def frame_limit(max_message_bytes: int) -> int:
    """The largest body a connection accepts: the message limit plus metadata."""
    return max_message_bytes + META_ALLOWANCE


# ------------------------------------------------------------------ headers


def pack_header(frame_type: int, stream: int, length: int, flags: int = 0) -> bytes:
    """The 16 header bytes. Raises ValueError for out-of-range fields."""
    if not 0 <= length <= MAX_U32:
        raise ValueError(f"frame body of {length} bytes does not fit the 32-bit length field")
    return HEADER.pack(length, VERSION, frame_type, flags, stream)


def unpack_header(data: Union[bytes, bytearray, memoryview], offset: int = 0) -> Tuple[int, int, int, int, int]:
    """``(length, version, type, flags, stream)``, unvalidated."""
    return cast(Tuple[int, int, int, int, int], HEADER.unpack_from(data, offset))


def check_header(length: int, version: int, frame_type: int, flags: int, max_length: int) -> None:
    """Validate a header per the spec. Raises WireError naming the problem.

    Checked in this order: version (so a peer of another release learns
    that first), type, flags, length.
    """
    if version != VERSION:
        raise VersionMismatch(version)
    if frame_type not in TYPE_NAMES:
        raise WireError(f"unknown frame type {frame_type}")
    if flags & ~ALLOWED_FLAGS.get(frame_type, 0):
        raise WireError(f"flags {flags:#06x} not allowed on a {TYPE_NAMES[frame_type]} frame")
    if length > max_length:
        raise WireError(
            f"{TYPE_NAMES[frame_type]} frame of {length} bytes exceeds the limit of {max_length}"
        )


# ------------------------------------------------------------------- reading


RecvInto = Callable[[memoryview], int]


class FrameReader:
    """Reads frames from a stream socket with few system calls.

    One ``recv_into`` into a preallocated buffer usually brings a whole frame
    (or several); a body larger than the buffer gets a buffer of its own.
    :meth:`read` returns ``(type, flags, stream, body)`` where ``body`` is a
    memoryview valid only until the next :meth:`read`, or ``None`` when the
    connection ended cleanly between frames.
    """

    __slots__ = ("_recv_into", "_buf", "_view", "_start", "_end", "max_length")

    def __init__(self, recv_into: RecvInto, max_length: int, buffer_size: int = 256 * 1024) -> None:
        if buffer_size < HEADER_SIZE:
            raise ValueError("buffer_size must hold at least a header")
        self._recv_into = recv_into
        self._buf = bytearray(buffer_size)
        self._view = memoryview(self._buf)
        self._start = 0
        self._end = 0
        #: Largest body accepted; may be changed between reads (e.g. after HELLO).
        self.max_length = max_length

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as (part of) a frame."""
        return self._end - self._start

    def _fill(self, need: int) -> bool:
        """Buffer at least ``need`` bytes (need <= buffer size). False at EOF."""
        start, end = self._start, self._end
        if start + need > len(self._buf):
            # Move the partial frame to the front (copied out first: the
            # regions may overlap).
            self._buf[: end - start] = bytes(self._view[start:end])
            end -= start
            start = 0
            self._start = 0
            self._end = end
        view, recv_into = self._view, self._recv_into
        while end - start < need:
            got = recv_into(view[end:])
            if not got:
                self._end = end
                return False
            end += got
        self._end = end
        return True

    def read(self) -> Optional[Tuple[int, int, int, memoryview]]:
        if self._end - self._start < HEADER_SIZE and not self._fill(HEADER_SIZE):
            if self._end == self._start:
                return None
            raise TruncatedFrame(
                f"connection ended inside a frame header ({self._end - self._start} of "
                f"{HEADER_SIZE} bytes)"
            )
        start = self._start
        length, version, frame_type, flags, stream = HEADER.unpack_from(self._buf, start)
        if (
            version != VERSION
            or flags
            or length > self.max_length
            or frame_type not in TYPE_NAMES
        ):
            # Slow path: RESULT, CHUNK and CALLBACK_RESULT may carry
            # FLAG_RAW; everything else is bad.
            check_header(length, version, frame_type, flags, self.max_length)
        total = HEADER_SIZE + length
        if total <= len(self._buf):
            if self._end - start < total and not self._fill(total):
                raise self._truncated(frame_type, length)
            start = self._start
            self._start = start + total
            if self._start == self._end:
                self._start = self._end = 0
            return frame_type, flags, stream, self._view[start + HEADER_SIZE : start + total]
        # A body larger than the buffer: read it into its own.
        body = bytearray(length)
        body_view = memoryview(body)
        have = self._end - start - HEADER_SIZE
        body_view[:have] = self._view[start + HEADER_SIZE : self._end]
        self._start = self._end = 0
        while have < length:
            got = self._recv_into(body_view[have:])
            if not got:
                raise self._truncated(frame_type, length)
            have += got
        return frame_type, flags, stream, body_view

    @staticmethod
    def _truncated(frame_type: int, length: int) -> TruncatedFrame:
        return TruncatedFrame(
            f"connection ended inside the {length}-byte body of a {type_name(frame_type)} frame"
        )


# ---------------------------------------------------------------------- JSON


_DECODER = json.JSONDecoder()
#: ``(value, end)`` of the JSON value at an index; json.loads without its
#: whitespace handling. JSONDecoder.__init__ sets it; typeshed does not
#: declare it.
_scan_once: Callable[[str, int], Tuple[Any, int]] = _DECODER.scan_once  # type: ignore[attr-defined]


def dumps(value: Any) -> bytes:
    """Compact JSON bytes."""
    return json.dumps(value, separators=(",", ":")).encode("utf-8")


def loads(data: Union[bytes, bytearray, memoryview]) -> Any:
    """Decode one UTF-8 JSON document (json.loads' rules, less overhead).

    Raises ValueError (json.JSONDecodeError, UnicodeDecodeError) for what is
    not UTF-8 JSON, and JSONLimitError for well-formed JSON nested deeper
    than the decoder goes or holding an integer Python refuses.
    """
    text = str(data, "utf-8")
    try:
        try:
            value, end = _scan_once(text, 0)
        except StopIteration:  # no value starts at 0 (or leading whitespace)
            return json.loads(text)  # whitespace is fine; anything else raises there
    except json.JSONDecodeError:
        raise
    except (ValueError, RecursionError) as exc:
        raise limit_error(exc) from None
    if end != len(text) and text[end:].strip(" \t\n\r"):
        raise json.JSONDecodeError("Extra data", text, end)
    return value


def parse_object(body: Union[bytes, bytearray, memoryview], what: str) -> Dict[str, Any]:
    """A frame body that must be a JSON object (one the runtime builds, which
    never nests deep: HELLO, REQUEST, ...). Raises WireError, also for JSON
    it cannot decode."""
    try:
        value = loads(body)
    except ValueError as exc:  # includes UnicodeDecodeError
        raise WireError(f"{what} body is not valid UTF-8 JSON: {exc}") from None
    except JSONLimitError as exc:
        raise WireError(f"{what} body does not decode: its contents {exc.problem}") from None
    if not isinstance(value, dict):
        raise WireError(f"{what} body must be a JSON object, got {type(value).__name__}")
    return value


# ------------------------------------------------------------------- EXECUTE


class ExecuteCall(NamedTuple):
    """A parsed EXECUTE body."""

    request_id: str
    tool: str
    deadline_ns: int
    #: The ``args`` value as decoded (normally a dict; checked by the codec).
    args: Any
    binary: Dict[str, bytes]
    #: The meta's ``stream``: the initial credit of a streaming call, as
    #: sent (the server refuses one below 1); None for a plain call.
    window: Optional[int] = None
    #: The meta's ``session``; "" for none.
    session: str = ""


def _split_meta(body: Union[bytes, bytearray, memoryview], what: str) -> Tuple[Dict[str, Any], int]:
    """``(meta, offset of the first binary argument)`` of an EXECUTE-like
    body (``u32 meta_len | meta JSON | binary args``). Raises WireError."""
    size = len(body)
    if size < 4:
        raise WireError(f"{what} body of {size} bytes has no 4-byte meta length")
    (meta_len,) = _U32.unpack_from(body, 0)
    if meta_len > size - 4:
        raise WireError(f"{what} meta length {meta_len} exceeds the {size - 4} bytes that follow it")
    try:
        meta = loads(body[4 : 4 + meta_len])
    except ValueError as exc:
        raise WireError(f"{what} meta is not valid UTF-8 JSON: {exc}") from None
    if type(meta) is not dict:
        raise WireError(f"{what} meta must be a JSON object, got {type(meta).__name__}")
    return meta, 4 + meta_len


def _read_binary(
    body: Union[bytes, bytearray, memoryview], bins: Any, offset: int, what: str
) -> Dict[str, bytes]:
    """The binary arguments the meta's ``bin`` list announces, from ``offset``
    to the end of ``body`` (which they must fill exactly). Raises WireError."""
    size = len(body)
    binary: Dict[str, bytes] = {}
    if bins:
        if type(bins) is not list:
            raise WireError(f"{what} meta field 'bin' must be a list of [name, length] pairs")
        for entry in bins:
            if (
                type(entry) is not list
                or len(entry) != 2
                or type(entry[0]) is not str
                or type(entry[1]) is not int
                or entry[1] < 0
            ):
                raise WireError(
                    f"{what} meta 'bin' entry {entry!r} is not a [name, length] pair"
                )
            name, length = entry
            if name in binary:
                raise WireError(f"{what} meta 'bin' names binary argument {name!r} twice")
            if offset + length > size:
                raise WireError(
                    f"{what} binary argument {name!r} of {length} bytes runs past the "
                    f"end of the {size}-byte body"
                )
            binary[name] = bytes(body[offset : offset + length])
            offset += length
    elif bins is not None and type(bins) is not list:
        raise WireError(f"{what} meta field 'bin' must be a list of [name, length] pairs")
    if offset != size:
        raise WireError(
            f"{what} body has {size - offset} bytes after its meta and binary arguments"
        )
    return binary


def parse_execute(body: Union[bytes, bytearray, memoryview]) -> ExecuteCall:
    """Parse ``u32 meta_len | meta JSON | binary args``. Raises WireError,
    or JSONLimitError for a meta that is well-formed JSON this side cannot
    decode (the call's arguments nest too deep, say): a bad argument of the
    call, not a bad frame.

    Binary arguments are copied out as ``bytes``, so the result outlives the
    read buffer. A malformed ``args`` value (not an object) is left to the
    caller: it is a bad argument of the call, not a bad frame.

    ``stream`` (the initial credit of a streaming call) must be an integer
    when present (null counts as absent): anything else is a bad frame. Its
    range is the server's to check: a ``stream`` below 1 is a bad argument of
    the call (answered ``ERROR`` kind ``BAD_ARGUMENTS``), not a bad frame.
    ``session`` must be a string (null or "" for none).
    """
    # _split_meta(), inlined: this is every call's path.
    size = len(body)
    if size < 4:
        raise WireError(f"EXECUTE body of {size} bytes has no 4-byte meta length")
    (meta_len,) = _U32.unpack_from(body, 0)
    if meta_len > size - 4:
        raise WireError(f"EXECUTE meta length {meta_len} exceeds the {size - 4} bytes that follow it")
    try:
        text = str(body[4 : 4 + meta_len], "utf-8")
        try:
            meta, end = _scan_once(text, 0)
        except StopIteration:
            meta, end = json.loads(text), len(text)
        if end != len(text) and text[end:].strip(" \t\n\r"):
            raise json.JSONDecodeError("Extra data", text, end)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise WireError(f"EXECUTE meta is not valid UTF-8 JSON: {exc}") from None
    except (ValueError, RecursionError) as exc:  # well-formed, but too deep or too big
        raise limit_error(exc) from None
    if type(meta) is not dict:
        raise WireError(f"EXECUTE meta must be a JSON object, got {type(meta).__name__}")
    offset = 4 + meta_len
    get = meta.get
    request_id = get("id", "")
    tool = get("tool", "")
    deadline_ns = get("deadline_ns", 0)
    if request_id is None:
        request_id = ""
    if deadline_ns is None:
        deadline_ns = 0
    if type(request_id) is not str:
        raise WireError("EXECUTE meta field 'id' must be a string")
    if type(tool) is not str:
        raise WireError("EXECUTE meta field 'tool' must be a string")
    if type(deadline_ns) is not int or deadline_ns < 0:
        raise WireError("EXECUTE meta field 'deadline_ns' must be a non-negative integer")
    args = get("args")
    if args is None:
        args = {}
    window = get("stream")
    if window is not None and type(window) is not int:
        raise WireError(
            f"EXECUTE meta field 'stream' must be an integer (the initial credit), "
            f"got {type(window).__name__}"
        )
    session = get("session")
    if session is None:
        session = ""
    elif type(session) is not str:
        raise WireError(
            f"EXECUTE meta field 'session' must be a string, got {type(session).__name__}"
        )
    bins = get("bin")
    if bins or offset != size:
        binary = _read_binary(body, bins, offset, "EXECUTE")
    else:
        if bins is not None and type(bins) is not list:
            raise WireError("EXECUTE meta field 'bin' must be a list of [name, length] pairs")
        binary = {}
    return ExecuteCall(request_id, tool, deadline_ns, args, binary, window, session)


def execute_body(
    tool: str,
    args: Any = None,
    *,
    request_id: str = "",
    deadline_ns: int = 0,
    binary: Optional[Mapping[str, bytes]] = None,
    raw_args: Optional[bytes] = None,
    window: Optional[int] = None,
    session: str = "",
) -> List[bytes]:
    """The parts of an EXECUTE body (the client side; used by tests and tools).

    ``raw_args`` puts pre-encoded JSON text in place of ``args``; ``window``
    makes it a streaming call with that initial credit; ``session`` puts
    the call in that session.
    """
    names = list(binary or {})
    meta: Dict[str, Any] = {
        "id": request_id,
        "tool": tool,
        "deadline_ns": deadline_ns,
        "bin": [[name, len(binary[name])] for name in names] if binary else [],
    }
    if window is not None:
        meta["stream"] = window
    if session:
        meta["session"] = session
    if raw_args is None:
        meta["args"] = {} if args is None else args
        meta_bytes = dumps(meta)
    else:
        meta_bytes = dumps(meta)[:-1] + b',"args":' + raw_args + b"}"
    parts = [_U32.pack(len(meta_bytes)), meta_bytes]
    for name in names:
        parts.append(bytes(binary[name]))  # type: ignore[index]
    return parts


# ------------------------------------------------------------------ CALLBACK


class CallbackCall(NamedTuple):
    """A parsed CALLBACK body (the runtime's side; used by tests)."""

    name: str
    parent: str
    #: The ``args`` value as decoded (a dict when this side built it).
    args: Any
    binary: Dict[str, bytes]


def callback_body(
    name: str, parent: str, args_json: bytes, binary: Optional[Mapping[str, bytes]] = None
) -> List[bytes]:
    """The parts of a CALLBACK body: EXECUTE's layout, meta
    ``{"name", "parent", "bin", "args"}``. ``args_json`` is the keyword
    arguments already encoded as one JSON object; ``binary`` the ``bytes``
    ones, sent raw after the meta in the order of ``bin``."""
    names = list(binary or {})
    meta: Dict[str, Any] = {
        "name": name,
        "parent": parent,
        "bin": [[key, len(binary[key])] for key in names] if binary else [],
    }
    meta_bytes = dumps(meta)[:-1] + b',"args":' + (args_json or b"{}") + b"}"
    parts = [_U32.pack(len(meta_bytes)), meta_bytes]
    for key in names:
        parts.append(bytes(binary[key]))  # type: ignore[index]
    return parts


def parse_callback(body: Union[bytes, bytearray, memoryview]) -> CallbackCall:
    """Parse a CALLBACK body (see :func:`callback_body`). Raises WireError,
    or JSONLimitError for well-formed meta JSON this side cannot decode."""
    meta, offset = _split_meta(body, "CALLBACK")
    name = meta.get("name")
    parent = meta.get("parent", "")
    if type(name) is not str or not name:
        raise WireError("CALLBACK meta field 'name' must be a non-empty string")
    if parent is None:
        parent = ""
    if type(parent) is not str:
        raise WireError("CALLBACK meta field 'parent' must be a string")
    args = meta.get("args")
    if args is None:
        args = {}
    return CallbackCall(name, parent, args, _read_binary(body, meta.get("bin"), offset, "CALLBACK"))


# -------------------------------------------------------------------- CREDIT


def credit_body(n: int) -> bytes:
    """A CREDIT body: ``n`` (1 to 2**32 - 1) as a big-endian u32."""
    if not 1 <= n <= MAX_U32:
        raise ValueError(f"a CREDIT grants 1 to {MAX_U32} chunks, not {n}")
    return _U32.pack(n)


def parse_credit(body: Union[bytes, bytearray, memoryview]) -> int:
    """The chunk count of a CREDIT body (a u32, at least 1). Raises WireError."""
    if len(body) != 4:
        raise WireError(f"CREDIT body of {len(body)} bytes; it must be a 4-byte count")
    n: int = _U32.unpack_from(body, 0)[0]
    if n < 1:
        raise WireError("CREDIT of 0 chunks; a CREDIT grants at least 1")
    return n


def encode_frame(frame_type: int, stream: int, body: Union[bytes, Sequence[bytes]] = b"", flags: int = 0) -> bytes:
    """A whole frame as one bytes object (convenient for small frames)."""
    if not isinstance(body, (bytes, bytearray, memoryview)):
        body = b"".join(body)
    return pack_header(frame_type, stream, len(body), flags) + bytes(body)
