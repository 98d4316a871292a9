from __future__ import annotations

import dataclasses
import json
from typing import Any, List

import pytest

import snakepit
from snakepit.adapter import Tool, make_tool
from snakepit.codec import (
    CallError,
    EncodedResult,
    ErrorKind,
    bind_args,
    decode_args,
    encode_result,
    error_from_exception,
    qualified_name,
)
from snakepit.decorator import ToolOptions


def as_tool(func: Any, name: str = "") -> Tool:
    return make_tool(name or func.__name__, func, ToolOptions())


def word_count(text: str) -> int:
    return len(text.split())


# ------------------------------------------------------------------ args


def test_empty_args_json_is_no_arguments() -> None:
    assert decode_args("t", b"") == {}
    assert decode_args("t", b"", {}) == {}


def test_args_json_object() -> None:
    assert decode_args("t", b'{"a": 1, "b": [true, null]}') == {"a": 1, "b": [True, None]}


@pytest.mark.parametrize(
    "raw, kind",
    [(b"[1, 2]", "array"), (b'"text"', "string"), (b"3", "number"), (b"null", "null"),
     (b"true", "boolean")],
)
def test_args_json_must_be_an_object(raw: bytes, kind: str) -> None:
    with pytest.raises(CallError) as info:
        decode_args("tool_x", raw)
    assert info.value.kind is ErrorKind.BAD_ARGUMENTS
    assert "JSON object" in info.value.message and kind in info.value.message
    assert "tool_x" in info.value.message


@pytest.mark.parametrize("raw", [b"{not json", b"\xff\xfe{}", b'{"a": 1'])
def test_invalid_json_is_bad_arguments(raw: bytes) -> None:
    with pytest.raises(CallError) as info:
        decode_args("t", raw)
    assert info.value.kind is ErrorKind.BAD_ARGUMENTS


def test_binary_args_are_merged_as_bytes() -> None:
    kwargs = decode_args("t", b'{"n": 2}', {"data": b"\x00\x01"})
    assert kwargs == {"n": 2, "data": b"\x00\x01"}
    assert type(kwargs["data"]) is bytes
    assert decode_args("t", b"", {"data": b""}) == {"data": b""}


def test_binary_and_json_name_conflict() -> None:
    with pytest.raises(CallError) as info:
        decode_args("t", b'{"data": "x"}', {"data": b"y"})
    assert info.value.kind is ErrorKind.BAD_ARGUMENTS
    assert "'data'" in info.value.message


def test_binding_failure_names_tool_and_signature() -> None:
    tool = as_tool(word_count)
    with pytest.raises(CallError) as info:
        bind_args(tool, {})
    assert info.value.kind is ErrorKind.BAD_ARGUMENTS
    assert info.value.message == (
        "word_count(text: str) -> int: missing a required argument: 'text'"
    )
    with pytest.raises(CallError) as info:
        bind_args(tool, {"text": "a", "extra": 1})
    assert "unexpected keyword argument 'extra'" in info.value.message


def test_binding_success_and_positional_only() -> None:
    def f(a: int, /, b: int = 2, *, c: int = 3) -> int:
        return a + b + c

    tool = as_tool(f)
    with pytest.raises(CallError) as info:
        bind_args(tool, {"a": 1})
    assert info.value.kind is ErrorKind.BAD_ARGUMENTS
    args, kwargs = bind_args(as_tool(word_count), {"text": "x y"})
    assert word_count(*args, **kwargs) == 2


def test_bound_method_binding_excludes_self() -> None:
    class A:
        def m(self, x: int) -> int:
            return x

    args, kwargs = bind_args(as_tool(A().m), {"x": 5})
    assert A().m(*args, **kwargs) == 5


# --------------------------------------------------------------- results


@pytest.mark.parametrize(
    "value, raw",
    [(b"\x00abc", b"\x00abc"), (bytearray(b"xy"), b"xy"), (memoryview(b"mv"), b"mv"), (b"", b"")],
)
def test_bytes_results_are_raw(value: Any, raw: bytes) -> None:
    assert encode_result("t", value) == EncodedResult(data=raw, raw=True)


@pytest.mark.parametrize(
    "value, text",
    [(None, "null"), (3, "3"), (1.5, "1.5"), ("é", '"\\u00e9"'), (True, "true"),
     ({"a": [1, (2, 3)]}, '{"a":[1,[2,3]]}'), ([], "[]")],
)
def test_json_results_are_compact(value: Any, text: str) -> None:
    assert encode_result("t", value) == EncodedResult(data=text.encode(), raw=False)


class FakeArray:
    """Looks like a numpy array: has .tolist()."""

    def __init__(self, items: List[Any]) -> None:
        self.items = items

    def tolist(self) -> List[Any]:
        return list(self.items)


@dataclasses.dataclass
class Point:
    x: int
    y: int
    tags: Any = None


def test_tolist_objects_and_dataclasses() -> None:
    assert json.loads(encode_result("t", FakeArray([1, 2])).data) == [1, 2]
    assert json.loads(encode_result("t", {"arr": FakeArray([[1.5]])}).data) == {"arr": [[1.5]]}
    assert json.loads(encode_result("t", Point(1, 2)).data) == {"x": 1, "y": 2, "tags": None}
    nested = Point(1, 2, tags=[Point(3, 4), FakeArray(["a"])])
    assert json.loads(encode_result("t", nested).data) == {
        "x": 1, "y": 2, "tags": [{"x": 3, "y": 4, "tags": None}, ["a"]],
    }


@pytest.mark.parametrize("value", [float("nan"), float("inf"), [1.0, float("-inf")],
                                   FakeArray([float("nan")])])
def test_nan_and_infinity_are_unencodable(value: Any) -> None:
    with pytest.raises(CallError) as info:
        encode_result("nan_tool", value)
    assert info.value.kind is ErrorKind.UNENCODABLE_RESULT
    assert "'nan_tool'" in info.value.message
    assert "NaN" in info.value.message
    assert "allowed:" in info.value.message


def test_unencodable_object_names_type_and_allowed_types() -> None:
    with pytest.raises(CallError) as info:
        encode_result("unencodable", object())
    err = info.value
    assert err.kind is ErrorKind.UNENCODABLE_RESULT
    assert "'unencodable'" in err.message
    assert "type object" in err.message
    assert "allowed:" in err.message and "bytes" in err.message

    class Thing:
        pass

    with pytest.raises(CallError) as info:
        encode_result("t", {"k": [Thing()]})
    assert "Thing" in info.value.message and "inside the result" in info.value.message
    with pytest.raises(CallError) as info:
        encode_result("t", {"blob": b"x"})  # bytes only travel raw at top level
    assert "bytes" in info.value.message
    with pytest.raises(CallError) as info:
        encode_result("t", {(1, 2): "tuple key"})
    assert info.value.kind is ErrorKind.UNENCODABLE_RESULT
    with pytest.raises(CallError):
        encode_result("t", {1, 2})


def test_circular_result_is_unencodable() -> None:
    loop: List[Any] = []
    loop.append(loop)
    with pytest.raises(CallError) as info:
        encode_result("t", loop)
    assert info.value.kind is ErrorKind.UNENCODABLE_RESULT


# ---------------------------------------------------------------- errors


class MyError(Exception):
    pass


def test_error_from_exception_has_qualified_type_and_traceback() -> None:
    try:
        raise ValueError("bad value")
    except ValueError as exc:
        err = error_from_exception(exc)
    assert err.kind is ErrorKind.TOOL_EXCEPTION
    assert err.type_name == "builtins.ValueError"
    assert err.message == "bad value"
    assert err.traceback_text.startswith("Traceback (most recent call last):")
    assert "ValueError: bad value" in err.traceback_text
    assert "test_error_from_exception_has_qualified_type_and_traceback" in err.traceback_text

    try:
        raise MyError("custom")
    except MyError as exc:
        err = error_from_exception(exc)
    assert err.type_name == f"{__name__}.MyError"


def test_chained_exception_traceback_and_unprintable_message() -> None:
    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    try:
        try:
            raise KeyError("inner")
        except KeyError as inner:
            raise Unprintable() from inner
    except Unprintable as exc:
        err = error_from_exception(exc)
    assert "KeyError: 'inner'" in err.traceback_text
    assert "direct cause" in err.traceback_text
    assert "unprintable" in err.message


def test_qualified_name() -> None:
    assert qualified_name(ValueError) == "builtins.ValueError"
    assert qualified_name(snakepit.Adapter) == "snakepit.adapter.Adapter"


# ------------------------------------------------- fast keyword binding


def _sig_bind(func: Any, kwargs: dict) -> Any:
    """What inspect.Signature.bind makes of kwargs: the call's result, or the error."""
    import inspect

    try:
        bound = inspect.signature(func).bind(**kwargs)
    except TypeError:
        return "TypeError"
    return func(*bound.args, **bound.kwargs)


def _fast_bind(func: Any, kwargs: dict) -> Any:
    try:
        args, bound_kwargs = bind_args(as_tool(func), dict(kwargs))
    except CallError as err:
        assert err.kind is ErrorKind.BAD_ARGUMENTS
        return "TypeError"
    return func(*args, **bound_kwargs)


def _plain(a, b=2):  # type: ignore[no-untyped-def]
    return ("plain", a, b)


def _kwonly(a, *, k, d=4):  # type: ignore[no-untyped-def]
    return ("kwonly", a, k, d)


def _posonly_default(p=1, /, q=2):  # type: ignore[no-untyped-def]
    return ("posonly_default", p, q)


def _posonly_required(p, /, q=2):  # type: ignore[no-untyped-def]
    return ("posonly_required", p, q)


def _varkw(a, **rest):  # type: ignore[no-untyped-def]
    return ("varkw", a, sorted(rest.items()))


def _varargs(a, *more, b=1):  # type: ignore[no-untyped-def]
    return ("varargs", a, more, b)


def _posonly_varkw(p=0, /, **rest):  # type: ignore[no-untyped-def]
    return ("posonly_varkw", p, sorted(rest.items()))


@pytest.mark.parametrize(
    "func", [_plain, _kwonly, _posonly_default, _posonly_required, _varkw, _varargs,
             _posonly_varkw])
@pytest.mark.parametrize(
    "kwargs",
    [{}, {"a": 1}, {"a": 1, "b": 5}, {"b": 5}, {"a": 1, "k": 2}, {"a": 1, "k": 2, "d": 3},
     {"a": 1, "zz": 0}, {"p": 7}, {"q": 8}, {"p": 7, "q": 8}, {"a": 1, "more": 2},
     {"rest": 1}],
)
def test_bind_args_agrees_with_signature_bind(func: Any, kwargs: dict) -> None:
    assert _fast_bind(func, kwargs) == _sig_bind(func, kwargs)


def test_keyword_binding_summary() -> None:
    assert as_tool(_kwonly).keyword_binding == (frozenset({"a", "k", "d"}), frozenset({"a", "k"}))
    assert as_tool(_posonly_required).keyword_binding is None
    assert as_tool(_varkw).keyword_binding == (frozenset({"a"}), frozenset({"a"}))
