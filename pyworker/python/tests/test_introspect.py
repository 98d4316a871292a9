from __future__ import annotations

import inspect
import typing
from typing import Any, Dict, Optional

from snakepit.introspect import (
    annotation_text,
    default_json,
    describe_params,
    format_signature,
    safe_signature,
)


def test_annotation_text() -> None:
    assert annotation_text(inspect.Parameter.empty) == ""
    assert annotation_text("str") == "str"
    assert annotation_text(int) == "int"
    assert annotation_text(list[int]) == "list[int]"
    assert annotation_text(Optional[int]) == "typing.Optional[int]"
    assert annotation_text(Dict[str, Any]) == str(Dict[str, Any])


def test_default_json() -> None:
    assert default_json(inspect.Parameter.empty) == ""
    assert default_json(None) == "null"
    assert default_json(3) == "3"
    assert default_json({"a": [1, 2]}) == '{"a":[1,2]}'
    assert default_json(object()) == ""
    assert default_json(float("nan")) == ""


def test_describe_params() -> None:
    def f(a: int, b: "str" = "x", *args: Any, c: float = 0.5, d=object(), **kw: Any) -> None: ...

    described = {p.name: p for p in describe_params(safe_signature(f))}
    assert list(described) == ["a", "b", "args", "c", "d", "kw"]
    a, b, args, c, d, kw = described.values()
    assert (a.annotation, a.required, a.default_json, a.kind) == (
        "int", True, "", "POSITIONAL_OR_KEYWORD")
    # string annotations are kept as written (this module uses postponed annotations)
    assert (b.annotation, b.required, b.default_json) == ("str", False, '"x"')
    assert (args.kind, args.required) == ("VAR_POSITIONAL", False)
    assert (c.kind, c.default_json, c.required) == ("KEYWORD_ONLY", "0.5", False)
    assert (d.annotation, d.default_json, d.required) == ("", "", False)
    assert (kw.kind, kw.required) == ("VAR_KEYWORD", False)


def test_safe_signature_of_uninspectable_callable() -> None:
    # Some builtins have no signature; that must not fail.
    sig = safe_signature(typing.cast(Any, dict.fromkeys))
    assert sig is None or isinstance(sig, inspect.Signature)
    assert describe_params(None) == []


def test_format_signature_unquotes_string_annotations() -> None:
    def f(a: "int", /, b: "list[str]", *, c: Optional[int] = None) -> "dict":
        ...

    sig = safe_signature(f)
    assert sig is not None
    # postponed annotations make every annotation a string here
    assert format_signature(sig) == "(a: int, /, b: list[str], *, c: Optional[int] = None) -> dict"
