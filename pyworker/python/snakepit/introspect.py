"""Signature introspection for tool descriptions (no grpc here)."""

from __future__ import annotations

import inspect
import json
import sys
import types
from dataclasses import dataclass
from typing import Any, Callable, List, Optional


@dataclass(frozen=True)
class ParamDescription:
    name: str
    annotation: str
    required: bool
    default_json: str
    kind: str


def safe_signature(func: Callable[..., Any]) -> Optional[inspect.Signature]:
    """``inspect.signature`` that never raises; None when there is none.

    On Python 3.14+ an annotation naming an undefined type makes the default
    evaluation fail, so fall back to the annotations' string form.
    """
    try:
        return inspect.signature(func)
    except (TypeError, ValueError):
        return None
    except Exception:  # NameError etc. from evaluating lazy annotations
        if sys.version_info >= (3, 14):
            try:
                import annotationlib

                return inspect.signature(func, annotation_format=annotationlib.Format.STRING)
            except Exception:
                return None
        return None


def _unquote(text: str) -> str:
    """``"'str'"`` -> ``"str"``: a quoted annotation under postponed evaluation."""
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def annotation_text(annotation: Any) -> str:
    """An annotation as text: "" when absent, the string itself for string
    annotations, ``__name__`` for plain classes, else ``str()``."""
    if annotation is inspect.Parameter.empty:
        return ""
    if isinstance(annotation, str):
        return _unquote(annotation)
    if isinstance(annotation, types.GenericAlias):  # list[int] poses as a class
        return str(annotation)
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation)


class _AsWritten:
    """Formats as its text (inspect would quote a string annotation)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def format_signature(signature: inspect.Signature) -> str:
    """``str(signature)`` with string annotations unquoted: ``(text: str) -> int``."""

    def plain(annotation: Any) -> Any:
        return _AsWritten(_unquote(annotation)) if isinstance(annotation, str) else annotation

    try:
        readable = signature.replace(
            parameters=[p.replace(annotation=plain(p.annotation))
                        for p in signature.parameters.values()],
            return_annotation=plain(signature.return_annotation),
        )
        return str(readable)
    except Exception:
        return str(signature)


def default_json(value: Any) -> str:
    """The default value as compact JSON, or "" when JSON cannot encode it."""
    if value is inspect.Parameter.empty:
        return ""
    try:
        return json.dumps(value, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError):
        return ""


def describe_params(signature: Optional[inspect.Signature]) -> List[ParamDescription]:
    if signature is None:
        return []
    described = []
    for param in signature.parameters.values():
        variadic = param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD)
        described.append(
            ParamDescription(
                name=param.name,
                annotation=annotation_text(param.annotation),
                required=param.default is param.empty and not variadic,
                default_json=default_json(param.default),
                kind=param.kind.name,
            )
        )
    return described
