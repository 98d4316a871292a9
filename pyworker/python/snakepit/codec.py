"""Arguments in, results and errors out: the rules of the wire encoding.

Pure Python (standard library only) so it can be unit-tested directly; the
gRPC server turns these values into protobuf messages, the native server
into frames.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import traceback
from types import TracebackType
from typing import Any, Dict, Mapping, Optional, Tuple

from snakepit import wire
from snakepit.adapter import Tool

ALLOWED_RESULT_TYPES = (
    "None, bool, int, float (finite), str, list, tuple, dict with str keys, "
    "dataclass instances, objects with .tolist() (e.g. numpy arrays), "
    "or bytes/bytearray/memoryview as the whole result (sent raw)"
)


class ErrorKind(enum.Enum):
    """Mirrors snakepit.v1.ErrorInfo.Kind; the value is the proto enum name,
    the member name is the native wire format's ``kind``."""

    INTERNAL = "KIND_UNSPECIFIED"
    TOOL_EXCEPTION = "KIND_TOOL_EXCEPTION"
    UNKNOWN_TOOL = "KIND_UNKNOWN_TOOL"
    BAD_ARGUMENTS = "KIND_BAD_ARGUMENTS"
    UNENCODABLE_RESULT = "KIND_UNENCODABLE_RESULT"
    DEADLINE_EXCEEDED = "KIND_DEADLINE_EXCEEDED"
    SHUTTING_DOWN = "KIND_SHUTTING_DOWN"
    TOO_LARGE = "KIND_TOO_LARGE"
    CANCELLED = "KIND_CANCELLED"


class CallError(Exception):
    """A failed call, as it goes into ErrorInfo."""

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        type_name: str = "",
        traceback_text: str = "",
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.type_name = type_name
        self.traceback_text = traceback_text

    def __repr__(self) -> str:
        return f"CallError({self.kind.name}, {self.message!r}, type_name={self.type_name!r})"


@dataclasses.dataclass(frozen=True)
class EncodedResult:
    """A successful result: JSON text (raw=False) or raw bytes (raw=True)."""

    data: bytes
    raw: bool


def qualified_name(cls: type) -> str:
    """``builtins.ValueError``, ``mymod.Outer.MyError``."""
    module = getattr(cls, "__module__", None) or "builtins"
    name = getattr(cls, "__qualname__", None) or getattr(cls, "__name__", repr(cls))
    return f"{module}.{name}"


def _short_type_name(cls: type) -> str:
    """``object`` for builtins, else the qualified name."""
    if getattr(cls, "__module__", None) == "builtins":
        return cls.__qualname__
    return qualified_name(cls)


# ---------------------------------------------------------------- arguments


def decode_args(
    tool_name: str, args_json: bytes, binary_args: Optional[Mapping[str, bytes]] = None
) -> Dict[str, Any]:
    """Keyword arguments from ``args_json`` (a JSON object, or empty) plus
    ``binary_args`` (added as ``bytes``). Raises CallError(BAD_ARGUMENTS),
    also for JSON nested deeper than the decoder goes (wire.MAX_JSON_DEPTH
    is what the runtime sends at most)."""
    decoded: Any
    if not args_json:
        decoded = {}
    else:
        try:
            decoded = wire.loads(args_json)
        except ValueError as exc:  # includes UnicodeDecodeError
            raise CallError(
                ErrorKind.BAD_ARGUMENTS,
                f"{tool_name}: args_json is not valid UTF-8 JSON: {exc}",
            ) from None
        except wire.JSONLimitError as exc:
            raise args_limit_error(tool_name, exc) from None
    return merge_args(tool_name, decoded, binary_args)


def args_limit_error(tool_name: str, exc: wire.JSONLimitError) -> CallError:
    """BAD_ARGUMENTS for arguments that are well-formed JSON this worker
    cannot decode (nested too deep, an integer of too many digits)."""
    return CallError(ErrorKind.BAD_ARGUMENTS, f"{tool_name}: the arguments {exc.problem}")


def merge_args(
    tool_name: str,
    decoded: Any,
    binary_args: Optional[Mapping[str, bytes]] = None,
    json_field: str = "args_json",
    binary_field: str = "binary_args",
) -> Dict[str, Any]:
    """Keyword arguments from an already decoded JSON value (must be an
    object; it is updated in place) plus ``binary_args`` as ``bytes``.
    Raises CallError(BAD_ARGUMENTS); the messages name the fields as given."""
    if not isinstance(decoded, dict):
        raise CallError(
            ErrorKind.BAD_ARGUMENTS,
            f"{tool_name}: {json_field} must be a JSON object of keyword arguments, "
            f"got a JSON {_json_kind(decoded)}",
        )
    kwargs: Dict[str, Any] = decoded
    if binary_args:
        for name, value in binary_args.items():
            if name in kwargs:
                raise CallError(
                    ErrorKind.BAD_ARGUMENTS,
                    f"{tool_name}: argument {name!r} is given both in {json_field} "
                    f"and in {binary_field}",
                )
            kwargs[name] = value if type(value) is bytes else bytes(value)
    return kwargs


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    return "number"


def bind_args(tool: Tool, kwargs: Dict[str, Any]) -> Tuple[Tuple[Any, ...], Dict[str, Any]]:
    """Check the keyword arguments against the tool's signature before calling.

    Returns ``(args, kwargs)`` to call with. Raises CallError(BAD_ARGUMENTS)
    naming the tool and its signature when they do not fit.
    """
    if tool.signature is None:
        return (), kwargs
    fast = tool.keyword_binding
    if fast is not None:
        keys = kwargs.keys()
        if keys <= fast[0] and fast[1] <= keys:
            return (), kwargs  # exactly what Signature.bind would accept
    try:
        bound = tool.signature.bind(**kwargs)
    except TypeError as exc:
        raise CallError(
            ErrorKind.BAD_ARGUMENTS, f"{tool.describe_signature()}: {exc}"
        ) from None
    return bound.args, bound.kwargs


# ------------------------------------------------------------------ results


class _Unencodable(Exception):
    def __init__(self, value: Any) -> None:
        super().__init__(type(value))
        self.value_type = type(value)


def _json_default(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        # Shallow: nested values go through this hook again (no deep copy).
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    tolist = getattr(value, "tolist", None)
    if callable(tolist) and not isinstance(value, type):
        return tolist()
    raise _Unencodable(value)


def encode_result(tool_name: str, value: Any, verb: str = "returned") -> EncodedResult:
    """Encode a tool's return value (or, with ``verb="yielded"``, an item a
    streaming tool yielded). Raises CallError(UNENCODABLE_RESULT)."""
    if isinstance(value, (bytes, bytearray)):
        return EncodedResult(data=bytes(value), raw=True)
    if isinstance(value, memoryview):
        return EncodedResult(data=value.tobytes(), raw=True)
    try:
        text = json.dumps(value, allow_nan=False, separators=(",", ":"), default=_json_default)
    except _Unencodable as exc:
        where = "" if exc.value_type is type(value) else " inside the result"
        raise CallError(
            ErrorKind.UNENCODABLE_RESULT,
            f"tool {tool_name!r} {verb} a value of type "
            f"{_short_type_name(exc.value_type)}{where}, which cannot be encoded as JSON; "
            f"allowed: {ALLOWED_RESULT_TYPES}",
        ) from None
    except ValueError as exc:
        if "Out of range float" in str(exc):
            detail = "a float NaN or infinity, which JSON cannot encode"
        else:
            detail = f"a value JSON cannot encode ({exc})"
        raise CallError(
            ErrorKind.UNENCODABLE_RESULT,
            f"tool {tool_name!r} {verb} {detail}; allowed: {ALLOWED_RESULT_TYPES}",
        ) from None
    except (TypeError, RecursionError) as exc:  # e.g. dict keys that are tuples
        raise CallError(
            ErrorKind.UNENCODABLE_RESULT,
            f"tool {tool_name!r} {verb} a value of type {_short_type_name(type(value))} "
            f"that cannot be encoded as JSON ({exc}); allowed: {ALLOWED_RESULT_TYPES}",
        ) from None
    return EncodedResult(data=text.encode("utf-8"), raw=False)


# ------------------------------------------------------------------- errors


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return f"<unprintable {type(exc).__name__} object>"


def format_traceback(exc: BaseException, skip_frames: int = 0) -> str:
    """The full formatted traceback (chained exceptions included), dropping
    the first ``skip_frames`` frames (our own calling code)."""
    tb: Optional[TracebackType] = exc.__traceback__
    for _ in range(skip_frames):
        if tb is None or tb.tb_next is None:
            break
        tb = tb.tb_next
    try:
        return "".join(traceback.format_exception(type(exc), exc, tb))
    except Exception:  # a broken __str__ or similar
        return f"{qualified_name(type(exc))}: <traceback unavailable>\n"


def error_from_exception(
    exc: BaseException, kind: ErrorKind = ErrorKind.TOOL_EXCEPTION, skip_frames: int = 0
) -> CallError:
    """ErrorInfo data for an exception raised by a tool."""
    return CallError(
        kind,
        _safe_str(exc),
        type_name=qualified_name(type(exc)),
        traceback_text=format_traceback(exc, skip_frames),
    )
