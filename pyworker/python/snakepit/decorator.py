"""The ``@tool`` decorator that marks functions and methods as callable tools."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, TypeVar, overload

F = TypeVar("F", bound=Callable[..., Any])

#: Attribute set on a decorated function; its value is a ToolOptions.
MARKER = "__snakepit_tool__"


@dataclass(frozen=True)
class ToolOptions:
    """What ``@tool(...)`` recorded about a function."""

    #: Name the tool is called by; None means the function's own name.
    name: Optional[str] = None
    #: Whether the tool may run in several threads at once. False: the worker
    #: runs one call of it at a time per process (other tools keep running).
    thread_safe: bool = True


@overload
def tool(func: F) -> F: ...


@overload
def tool(*, name: Optional[str] = None, thread_safe: bool = True) -> Callable[[F], F]: ...


def tool(
    func: Optional[F] = None,
    *,
    name: Optional[str] = None,
    thread_safe: bool = True,
) -> Any:
    """Mark a function (``def`` or ``async def``) or a method as a tool.

    Usable bare (``@tool``) or with options
    (``@tool(name="other_name", thread_safe=False)``). The function is
    returned unchanged, so it stays directly callable in tests.

    ``thread_safe=False``: the worker runs one call of this tool at a time
    per process (a per-tool queue; calls waiting for it hold no thread), in
    every profile; other tools keep running alongside. See
    docs/thread-safety.md.
    """
    if name is not None and (not isinstance(name, str) or not name):
        raise ValueError("@tool(name=...) must be a non-empty string")
    options = ToolOptions(name=name, thread_safe=bool(thread_safe))

    def mark(target: F) -> F:
        # Accept @tool stacked above @staticmethod / @classmethod.
        inner = getattr(target, "__func__", target) if isinstance(
            target, (staticmethod, classmethod)
        ) else target
        if not callable(inner):
            raise TypeError(f"@tool can only decorate functions, not {type(target).__name__}")
        setattr(inner, MARKER, options)
        return target

    if func is not None:
        return mark(func)
    return mark


def tool_options(obj: Any) -> Optional[ToolOptions]:
    """The ToolOptions of a function marked with ``@tool``, else None."""
    if isinstance(obj, (staticmethod, classmethod)):
        obj = obj.__func__
    try:
        options = getattr(obj, MARKER, None)
    except Exception:  # objects with hostile __getattr__
        return None
    return options if isinstance(options, ToolOptions) else None
