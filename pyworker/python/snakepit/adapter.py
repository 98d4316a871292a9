"""Adapters: where tools come from.

An adapter spec is either ``"pkg.module"`` (the module's functions marked with
``@tool``) or ``"pkg.module:ClassName"`` (the class is instantiated once, with
no arguments, and its ``@tool`` methods are the tools).

The thread profile runs several calls of an adapter at once in one process;
it only loads adapters declared safe for that (docs/thread-safety.md): a
module with ``__snakepit_thread_safe__ = True`` at its top level, a class
deriving from :class:`ThreadSafeAdapter` or with that class attribute.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import logging
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Callable, Dict, FrozenSet, List, Mapping, Optional, Tuple, cast

from snakepit.decorator import ToolOptions, tool_options
from snakepit.introspect import format_signature, safe_signature

logger = logging.getLogger(__name__)


class Adapter:
    """Optional base class for adapter classes.

    Nothing is required. Load expensive state (a model, a connection) in
    ``__init__``: the class is instantiated once per worker process. If the
    instance has a ``close()`` method (plain or ``async``), it is called once
    at graceful shutdown.
    """

    def close(self) -> None:
        """Release resources at graceful shutdown. The default does nothing."""


#: Module or class attribute declaring an adapter safe to call from many threads.
THREAD_SAFE_MARKER = "__snakepit_thread_safe__"


class ThreadSafeAdapter(Adapter):
    """Base class of adapter classes declared safe to call from many threads.

    Deriving from it is the declaration the thread profile asks for: the
    author vouches that the instance's tools may run at the same time on
    several threads (shared state read-only, per-thread, or behind a lock:
    see ``snakepit.threadsafe``). Single tools can still opt out with
    ``@tool(thread_safe=False)``. A subclass may set
    ``__snakepit_thread_safe__ = False`` to withdraw the declaration.
    """

    __snakepit_thread_safe__ = True


class AdapterError(Exception):
    """The adapter spec cannot be turned into a set of tools."""


class NotThreadSafeError(AdapterError):
    """The thread profile was asked to load an adapter not declared thread-safe."""


@dataclass(frozen=True)
class Tool:
    """One callable tool of a loaded adapter."""

    name: str
    func: Callable[..., Any]
    is_async: bool
    thread_safe: bool
    #: None when the callable has no introspectable signature.
    signature: Optional[inspect.Signature]
    #: A generator function (``def`` with ``yield``; with ``is_async``, an
    #: ``async def`` with ``yield``): a streaming tool, whose items are sent
    #: as they come. It can only be called as a stream.
    is_generator: bool = False

    @functools.cached_property
    def keyword_binding(self) -> Optional[Tuple[FrozenSet[str], FrozenSet[str]]]:
        """``(names, required)``: the parameters that can be passed by keyword,
        and those of them without a default; None when the signature has a
        required positional-only parameter (keywords can never bind it).

        Keyword arguments whose names are within ``names`` and cover
        ``required`` bind without ``Signature.bind`` (the fast path of
        codec.bind_args); anything else goes through it.
        """
        if self.signature is None:
            return None
        names = set()
        required = set()
        for param in self.signature.parameters.values():
            if param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY):
                names.add(param.name)
                if param.default is param.empty:
                    required.add(param.name)
            elif param.kind == param.POSITIONAL_ONLY and param.default is param.empty:
                return None
        return frozenset(names), frozenset(required)

    def describe_signature(self) -> str:
        """E.g. ``word_count(text: str) -> int``."""
        sig = format_signature(self.signature) if self.signature is not None else "(...)"
        return f"{self.name}{sig}"


@dataclass
class LoadedAdapter:
    """The result of loading an adapter spec."""

    spec: str
    tools: Dict[str, Tool]
    #: The adapter class instance, or None for a module adapter.
    instance: Optional[Any] = None
    module: Optional[ModuleType] = field(default=None, repr=False)

    def tool_names(self) -> List[str]:
        return sorted(self.tools)


def parse_spec(spec: str) -> tuple[str, Optional[str]]:
    """Split ``"pkg.module:Class"`` into ``("pkg.module", "Class")``."""
    if not isinstance(spec, str) or not spec.strip():
        raise AdapterError("adapter spec is empty; expected 'pkg.module' or 'pkg.module:Class'")
    module_name, sep, attr = spec.strip().partition(":")
    if not module_name or (sep and not attr):
        raise AdapterError(
            f"bad adapter spec {spec!r}; expected 'pkg.module' or 'pkg.module:Class'"
        )
    return module_name, (attr if sep else None)


def declared_thread_safe(target: Any) -> bool:
    """Whether a module or class declares itself safe to call from many threads.

    A module declares it with a top-level ``__snakepit_thread_safe__ = True``
    (its own, not one imported from elsewhere); a class with that class
    attribute, inherited from :class:`ThreadSafeAdapter` or set on it. Only
    the value ``True`` counts.
    """
    if isinstance(target, ModuleType):
        return vars(target).get(THREAD_SAFE_MARKER) is True
    try:
        return getattr(target, THREAD_SAFE_MARKER, None) is True
    except Exception:  # a hostile metaclass __getattr__
        return False


def not_thread_safe_message(spec: str, threads: int, is_class: bool) -> str:
    """What the thread profile says about an adapter not declared thread-safe."""
    if threads > 1:
        runs = f"runs up to {threads} of its calls at once in one process"
    else:
        runs = "is for adapters whose calls may run at once on several threads of one process"
    where = "in the class" if is_class else "in the module"
    return (
        f"adapter {spec!r} is not declared thread-safe, but the thread profile {runs}. "
        "Make it safe (see docs/thread-safety.md), then declare it: subclass "
        f"snakepit.ThreadSafeAdapter, or set {THREAD_SAFE_MARKER} = True {where}; "
        'or run the pool with Profile "process".'
    )


def load_adapter(spec: str, require_thread_safe: Optional[int] = None) -> LoadedAdapter:
    """Import (and, for a class spec, instantiate) the adapter and collect its tools.

    Exceptions from the import or from the class ``__init__`` propagate
    unchanged; a spec that yields no tools, or duplicate tool names, raises
    AdapterError.

    ``require_thread_safe``: the number of threads of a thread-profile
    worker; the adapter must then be declared thread-safe
    (:func:`declared_thread_safe`), else NotThreadSafeError, raised before a
    class adapter is instantiated.
    """
    module_name, attr = parse_spec(spec)
    module = importlib.import_module(module_name)
    if attr is None:
        if require_thread_safe is not None and not declared_thread_safe(module):
            raise NotThreadSafeError(
                not_thread_safe_message(spec, require_thread_safe, is_class=False))
        tools = collect_tools(_module_members(module), owner=f"module {module_name!r}")
        _require_tools(spec, tools)
        return LoadedAdapter(spec=spec, tools=tools, module=module)

    cls = _resolve_attr(module, attr, spec)
    if not inspect.isclass(cls):
        raise AdapterError(
            f"adapter {spec!r}: {attr!r} is a {type(cls).__name__}, not a class"
        )
    if require_thread_safe is not None and not declared_thread_safe(cls):
        raise NotThreadSafeError(not_thread_safe_message(spec, require_thread_safe, is_class=True))
    instance = cls()
    tools = collect_tools(_instance_members(cls, instance), owner=f"class {cls.__qualname__!r}")
    _require_tools(spec, tools)
    return LoadedAdapter(spec=spec, tools=tools, instance=instance, module=module)


def make_tool(name: str, func: Callable[..., Any], options: ToolOptions) -> Tool:
    """Build a Tool from a callable and its ``@tool`` options.

    A generator function (sync or ``async``) is a streaming tool
    (``is_generator``); an ``async`` one runs on the event loop
    (``is_async``), like an ``async def`` tool.
    """
    is_async_generator = inspect.isasyncgenfunction(func)
    return Tool(
        name=name,
        func=func,
        is_async=is_async_generator or inspect.iscoroutinefunction(func),
        thread_safe=options.thread_safe,
        signature=safe_signature(func),
        is_generator=is_async_generator or inspect.isgeneratorfunction(func),
    )


def collect_tools(
    members: Mapping[str, tuple[Any, ToolOptions]], owner: str
) -> Dict[str, Tool]:
    """Turn ``{attribute: (callable, options)}`` into ``{tool name: Tool}``."""
    tools: Dict[str, Tool] = {}
    origin: Dict[str, str] = {}
    seen: Dict[int, str] = {}
    for attr_name, (func, options) in members.items():
        key = id(_underlying(func))
        if key in seen:  # the same function under two attribute names
            continue
        seen[key] = attr_name
        name: str = options.name if options.name else getattr(func, "__name__", attr_name)
        if name in tools:
            raise AdapterError(
                f"duplicate tool name {name!r} in {owner}: "
                f"both {origin[name]!r} and {attr_name!r} are registered under it"
            )
        tools[name] = make_tool(name, func, options)
        origin[name] = attr_name
    return tools


def _underlying(func: Any) -> Any:
    return getattr(func, "__func__", func)


def _module_members(module: ModuleType) -> Dict[str, tuple[Any, ToolOptions]]:
    members: Dict[str, tuple[Any, ToolOptions]] = {}
    for attr_name, value in sorted(vars(module).items()):
        options = tool_options(value)
        if options is not None and callable(value) and not inspect.isclass(value):
            members[attr_name] = (value, options)
    return members


def _instance_members(cls: type, instance: Any) -> Dict[str, tuple[Any, ToolOptions]]:
    members: Dict[str, tuple[Any, ToolOptions]] = {}
    for attr_name in sorted(dir(cls)):
        try:
            static = inspect.getattr_static(cls, attr_name)
        except AttributeError:
            continue
        options = tool_options(static)
        if options is None:
            continue
        bound = getattr(instance, attr_name)  # binds methods; properties are never tools
        if not callable(bound):
            continue
        members[attr_name] = (bound, options)
    return members


def _resolve_attr(module: ModuleType, attr: str, spec: str) -> Any:
    value: Any = module
    for part in attr.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise AdapterError(
                f"adapter {spec!r}: module {module.__name__!r} has no attribute {attr!r}"
            ) from None
    return value


def _require_tools(spec: str, tools: Mapping[str, Tool]) -> None:
    if not tools:
        raise AdapterError(
            f"adapter {spec!r} exposes no tools: decorate functions with "
            "@snakepit.tool, or name an adapter class as 'module:Class'"
        )


#: Names of the adapter's session hooks (snakepit.sessions).
SESSION_START_HOOK = "on_session_start"
SESSION_END_HOOK = "on_session_end"


def adapter_hook(loaded: LoadedAdapter, name: str) -> Optional[Callable[..., Any]]:
    """The adapter's hook called ``name``, or None: a method of the class
    adapter's instance, or a module-level function of a module adapter (its
    own or imported into it). A non-callable attribute of that name raises
    AdapterError, so a typo'd assignment does not silently disable a hook."""
    if loaded.instance is not None:
        hook = getattr(loaded.instance, name, None)
        where = f"adapter class {type(loaded.instance).__qualname__!r}"
    elif loaded.module is not None:
        hook = vars(loaded.module).get(name)
        where = f"adapter module {loaded.module.__name__!r}"
    else:
        return None
    if hook is None:
        return None
    if not callable(hook):
        raise AdapterError(f"{where}: {name} must be a function, got {type(hook).__name__}")
    return cast(Callable[..., Any], hook)


async def close_adapter(loaded: LoadedAdapter) -> None:
    """Call the adapter instance's ``close()`` (plain or async) once, if any."""
    instance = loaded.instance
    close = getattr(instance, "close", None) if instance is not None else None
    if close is None or not callable(close):
        return
    result = close()
    if inspect.isawaitable(result):
        await result
