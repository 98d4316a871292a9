"""Helpers for adapters whose tools run on several threads at once (the
thread profile), and the opt-in thread-safety checker. Standard library only.

The three usual ways to make shared state safe (docs/thread-safety.md):

* read-only: load it once in ``__init__`` and share it frozen:
  ``self.vocab = frozen(load_vocab())`` (:func:`frozen`, :class:`SharedReadOnly`);
* one per thread: ``self.db = ThreadLocal(lambda: sqlite3.connect(path))``,
  then ``self.db.get()`` in a tool (:class:`ThreadLocal`);
* behind a lock: ``self.cache = Locked({})``, then
  ``with self.cache as cache: ...`` (:class:`Locked`).

The checker (``--thread-checks``, or :func:`enable_checks` before the adapter
is imported): :func:`single_threaded` functions report two threads inside
them at once, and :func:`warn_about_libraries` names imported libraries
from :data:`LIBRARY_NOTES` that need care when shared across threads.

``python -m snakepit.threadsafe`` prints that table as Markdown (it is the
one in docs/thread-safety.md).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import inspect
import logging
import sys
import threading
from collections import deque
from collections.abc import Mapping, Set
from typing import (
    Any,
    Callable,
    Dict,
    Generic,
    Iterator,
    List,
    Mapping as MappingType,
    Optional,
    Sequence as SequenceType,
    Tuple,
    TypeVar,
    Union,
    overload,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")
K = TypeVar("K")
V = TypeVar("V")
F = TypeVar("F", bound=Callable[..., Any])

__all__ = [
    "FrozenList",
    "FrozenMapping",
    "LIBRARY_NOTES",
    "LibraryNote",
    "Locked",
    "ReadOnlyError",
    "SharedReadOnly",
    "ThreadLocal",
    "checks_enabled",
    "compatibility_table_markdown",
    "enable_checks",
    "frozen",
    "imported_library_notes",
    "single_threaded",
    "violation_count",
    "violations",
    "warn_about_libraries",
]


# ----------------------------------------------------------- read-only state


class ReadOnlyError(TypeError):
    """A change was attempted on state shared read-only (made by :func:`frozen`)."""


def _refusal(kind: str) -> ReadOnlyError:
    return ReadOnlyError(
        f"this {kind} is shared read-only state (snakepit.frozen): every thread reads it, "
        "so it cannot be changed. Change a private copy (.thaw()), or keep state that "
        "calls change in snakepit.Locked or snakepit.ThreadLocal"
    )


class SharedReadOnly:
    """Base of the read-only containers :func:`frozen` makes.

    They hold no mutable containers (those were frozen too), so any number
    of threads may read them at once with no lock; every mutating method
    raises :class:`ReadOnlyError`.
    """

    __slots__ = ()

    def thaw(self) -> Any:
        """A deep, mutable copy (dicts and lists) for the caller to change."""
        return _thaw(self)


class FrozenMapping(SharedReadOnly, MappingType[K, V]):
    """A read-only mapping whose values are frozen too. Made by :func:`frozen`
    (``FrozenMapping(data)`` is ``frozen(dict(data))``)."""

    __slots__ = ("_data",)

    def __init__(self, data: MappingType[K, V]) -> None:
        self._data: Dict[K, V] = _Freezer(True).frozen_dict(data, "value")

    @classmethod
    def _adopt(cls, data: Dict[K, V]) -> "FrozenMapping[K, V]":
        """Wrap a dict whose values are frozen already (no copy)."""
        made = cls.__new__(cls)
        made._data = data
        return made

    def __getitem__(self, key: K) -> V:
        return self._data[key]

    def __iter__(self) -> Iterator[K]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def get(self, key: K, default: Any = None) -> Any:
        return self._data.get(key, default)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FrozenMapping):
            return self._data == other._data
        if isinstance(other, Mapping):
            return self._data == dict(other.items())
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"frozen({self._data!r})"

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise _refusal("mapping")

    __setitem__ = __delitem__ = __ior__ = _refuse
    update = pop = popitem = clear = setdefault = _refuse


class FrozenList(SharedReadOnly, SequenceType[T]):
    """A read-only sequence whose items are frozen too. Made by :func:`frozen`
    from a list (or deque); equal to a list or tuple with the same items.
    ``FrozenList(items)`` is ``frozen(list(items))``."""

    __slots__ = ("_items",)

    def __init__(self, items: Any = ()) -> None:
        freezer = _Freezer(True)
        self._items: Tuple[T, ...] = tuple(
            freezer.freeze(v, f"value[{i}]") for i, v in enumerate(items))

    @classmethod
    def _adopt(cls, items: Tuple[T, ...]) -> "FrozenList[T]":
        """Wrap a tuple of items frozen already."""
        made = cls.__new__(cls)
        made._items = items
        return made

    @overload
    def __getitem__(self, index: int) -> T: ...

    @overload
    def __getitem__(self, index: slice) -> "FrozenList[T]": ...

    def __getitem__(self, index: Union[int, slice]) -> Any:
        if isinstance(index, slice):
            return FrozenList._adopt(self._items[index])
        return self._items[index]

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[T]:
        return iter(self._items)

    def __contains__(self, value: object) -> bool:
        return value in self._items

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FrozenList):
            return self._items == other._items
        if isinstance(other, (list, tuple)):
            return self._items == tuple(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._items)

    def __repr__(self) -> str:
        return f"frozen({list(self._items)!r})"

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise _refusal("list")

    __setitem__ = __delitem__ = __iadd__ = __imul__ = _refuse
    append = extend = insert = pop = remove = clear = sort = reverse = _refuse


#: Types whose values cannot change: shared as they are.
_BUILTIN_IMMUTABLE: Tuple[type, ...] = (
    str, bytes, int, float, complex, bool, type(None), range, slice, enum.Enum,
)
#: More immutable types, "module:name", looked up only where the module is
#: already imported (a value of the type cannot exist otherwise), so that
#: importing snakepit does not import them.
_STDLIB_IMMUTABLE = (
    "decimal:Decimal", "fractions:Fraction", "datetime:date", "datetime:time",
    "datetime:timedelta", "datetime:timezone", "uuid:UUID", "pathlib:PurePath",
    "ipaddress:IPv4Address", "ipaddress:IPv6Address",
)


def _immutable_types() -> Tuple[type, ...]:
    found = list(_BUILTIN_IMMUTABLE)
    for spec in _STDLIB_IMMUTABLE:
        module_name, _, name = spec.partition(":")
        module = sys.modules.get(module_name)
        cls = getattr(module, name, None) if module is not None else None
        if isinstance(cls, type):
            found.append(cls)
    return tuple(found)


@overload
def frozen(value: MappingType[K, V], *, strict: bool = True) -> FrozenMapping[K, V]: ...


@overload
def frozen(value: List[T], *, strict: bool = True) -> FrozenList[T]: ...


@overload
def frozen(value: Any, *, strict: bool = True) -> Any: ...


def frozen(value: Any, *, strict: bool = True) -> Any:
    """A deep, read-only version of ``value`` that threads can share without a lock.

    Meant for data loaded once (in a class adapter's ``__init__`` or at
    module import) and then only read by tools. Containers are copied once,
    so later reads cost nothing extra:

    * dicts and other mappings become :class:`FrozenMapping`, lists and deques
      :class:`FrozenList`, sets ``frozenset``, ``bytearray`` ``bytes``, a
      ``memoryview`` a read-only one; tuples (named ones too) stay tuples of
      frozen items; values inside are frozen the same way;
    * objects with ``view()`` and ``setflags()`` (numpy arrays) become a
      read-only view: writes through it raise, the original stays writable
      for whoever still holds it;
    * immutable values (str, bytes, numbers, None, dates, enums, ...) and
      frozen dataclass instances are shared as they are.

    Any other object raises TypeError naming where it sits, since nothing
    here can stop it changing; ``strict=False`` shares such objects as they
    are (then keeping them unchanged is up to you).
    """
    return _Freezer(strict).freeze(value, "value")


class _Freezer:
    __slots__ = ("strict", "immutable", "memo", "active")

    def __init__(self, strict: bool) -> None:
        self.strict = strict
        self.immutable = _immutable_types() + (SharedReadOnly,)
        # id -> (value, frozen): shared parts are frozen once; holding the
        # value keeps its id from being reused by another object meanwhile.
        self.memo: Dict[int, Tuple[Any, Any]] = {}
        self.active: set[int] = set()  # ids being frozen, to refuse cycles

    def freeze(self, value: Any, path: str) -> Any:
        if isinstance(value, self.immutable):
            return value
        key = id(value)
        if key in self.memo:
            return self.memo[key][1]
        if key in self.active:
            raise ValueError(f"frozen(): {path} refers back to itself; cycles cannot be frozen")
        self.active.add(key)
        try:
            result = self.container(value, path)
        finally:
            self.active.discard(key)
        self.memo[key] = (value, result)
        return result

    def frozen_dict(self, value: MappingType[Any, Any], path: str) -> Dict[Any, Any]:
        return {k: self.freeze(v, f"{path}[{k!r}]") for k, v in value.items()}

    def container(self, value: Any, path: str) -> Any:
        freeze = self.freeze
        if isinstance(value, Mapping):
            return FrozenMapping._adopt(self.frozen_dict(value, path))
        if isinstance(value, tuple):
            items = [freeze(v, f"{path}[{i}]") for i, v in enumerate(value)]
            if type(value) is not tuple and hasattr(value, "_make"):
                return value._make(items)  # a named tuple keeps its type
            return tuple(items)
        if isinstance(value, (list, deque)):
            return FrozenList._adopt(
                tuple(freeze(v, f"{path}[{i}]") for i, v in enumerate(value)))
        if isinstance(value, (set, frozenset, Set)):
            return frozenset(freeze(v, f"{path} item") for v in value)
        if isinstance(value, bytearray):
            return bytes(value)
        if isinstance(value, memoryview):
            return value.toreadonly()
        if callable(getattr(value, "setflags", None)) and callable(getattr(value, "view", None)):
            view = value.view()  # numpy: a read-only view of the same data
            view.setflags(write=False)
            return view
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            params = getattr(type(value), "__dataclass_params__", None)
            if params is not None and params.frozen:
                return value
        if not self.strict:
            return value
        cls = type(value)
        raise TypeError(
            f"frozen(): {path} is a {cls.__module__}.{cls.__qualname__}, which frozen() "
            "cannot make read-only; convert it to plain data, keep it behind "
            "snakepit.Locked, give each thread its own with snakepit.ThreadLocal, or pass "
            "strict=False to share it as it is (and never change it)"
        )


def _thaw(value: Any) -> Any:
    if isinstance(value, FrozenMapping):
        return {k: _thaw(v) for k, v in value._data.items()}
    if isinstance(value, FrozenList):
        return [_thaw(v) for v in value._items]
    if type(value) is tuple:
        return tuple(_thaw(v) for v in value)
    return value


# -------------------------------------------------------- per-thread state


class ThreadLocal(Generic[T]):
    """One instance per thread, made by ``factory()`` on the thread's first
    :meth:`get`: for objects that must not be shared (a database connection,
    a tokenizer with per-call settings, an HTTP session)::

        class Tools(snakepit.ThreadSafeAdapter):
            def __init__(self) -> None:
                self.db = snakepit.ThreadLocal(lambda: sqlite3.connect(DB_PATH))

            @snakepit.tool
            def lookup(self, key: str) -> str:
                return self.db.get().execute(...).fetchone()[0]

    Worker threads live as long as the worker process, so each instance is
    made once per thread and kept. If ``factory()`` raises, nothing is kept
    and the next :meth:`get` tries again.
    """

    __slots__ = ("_factory", "_local", "__weakref__")

    def __init__(self, factory: Callable[[], T]) -> None:
        if not callable(factory):
            raise TypeError("ThreadLocal(factory): factory must be callable")
        self._factory = factory
        self._local = threading.local()

    def get(self) -> T:
        """This thread's instance (made now if it has none)."""
        try:
            return self._local.value  # type: ignore[no-any-return]
        except AttributeError:
            value = self._factory()
            self._local.value = value
            return value

    def clear(self) -> None:
        """Forget this thread's instance; the next :meth:`get` makes a new one."""
        self._local.__dict__.pop("value", None)

    def __repr__(self) -> str:
        return f"ThreadLocal({self._factory!r})"


# ---------------------------------------------------------- state behind a lock


class Locked(Generic[T]):
    """A value reached only while holding its lock::

        self.cache = snakepit.Locked({})        # in __init__
        with self.cache as cache:               # in a tool
            cache[key] = value

    For a value that is replaced rather than changed in place (a counter, a
    tuple), use :meth:`update`: ``self.hits.update(lambda n: n + 1)``.

    The lock is re-entrant by default (``threading.RLock``): a helper called
    while the lock is held may take it again. Pass ``lock=threading.Lock()``
    (or another) to choose. Do not keep references to the value after the
    ``with`` block: they escape the lock. Keep the blocks short: every other
    thread that needs the value waits.
    """

    __slots__ = ("_value", "_lock")

    def __init__(self, value: T, *, lock: Any = None) -> None:
        self._value = value
        #: Anything with acquire() and release(); a threading.RLock by default.
        self._lock = threading.RLock() if lock is None else lock

    def __enter__(self) -> T:
        self._lock.acquire()
        return self._value

    def __exit__(self, *exc: Any) -> None:
        self._lock.release()

    def update(self, change: Callable[[T], T]) -> T:
        """Replace the value with ``change(value)``, under the lock; the new value."""
        with self:
            self._value = change(self._value)
            return self._value

    def set(self, value: T) -> None:
        """Replace the value, under the lock."""
        with self:
            self._value = value

    def __repr__(self) -> str:
        return f"Locked({type(self._value).__name__})"


# --------------------------------------------------------------- the checker

_checks = False
_registry_lock = threading.Lock()
_watches: List["_Watch"] = []


def enable_checks(on: bool = True) -> None:
    """Turn the thread-safety checks on (or off) for functions decorated from
    now on. The worker calls this for ``--thread-checks`` before it imports
    the adapter; in your own tests, call it before importing your module."""
    global _checks
    _checks = bool(on)


def checks_enabled() -> bool:
    """Whether :func:`single_threaded` wraps the functions it decorates."""
    return _checks


class _Watch:
    """Who is inside one single_threaded function, and how often threads met there."""

    __slots__ = ("name", "lock", "inside", "count", "warned")

    def __init__(self, name: str) -> None:
        self.name = name
        self.lock = threading.Lock()
        #: thread ident -> [thread name, depth]
        self.inside: Dict[int, List[Any]] = {}
        self.count = 0
        self.warned = False

    def enter(self) -> None:
        me = threading.get_ident()
        with self.lock:
            entry = self.inside.get(me)
            if entry is not None:  # recursion in the same thread
                entry[1] += 1
                return
            other = next(iter(self.inside.values()), None)
            name = threading.current_thread().name
            self.inside[me] = [name, 1]
            if other is None:
                return
            self.count += 1
            first = not self.warned
            self.warned = True
        if first:
            logger.warning(
                "thread check: %s is marked @snakepit.single_threaded, but thread %r entered "
                "it while thread %r was inside; it is being called from several threads at "
                "once (protect what it touches, see docs/thread-safety.md; further "
                "occurrences are counted in stats' thread_violations, not logged)",
                self.name, name, other[0],
            )

    def leave(self) -> None:
        me = threading.get_ident()
        with self.lock:
            entry = self.inside.get(me)
            if entry is None:
                return
            entry[1] -= 1
            if entry[1] <= 0:
                del self.inside[me]


def single_threaded(func: F) -> F:
    """Mark a function its author believes only one thread enters at a time
    (adapter-internal code that touches unprotected state).

    With the checks on (``--thread-checks``, :func:`enable_checks`), a
    second thread entering while another is inside logs one WARNING per
    function (naming it and both threads) and is counted
    (:func:`violation_count`). With the checks off (the default) the
    function is returned unchanged and costs nothing. This detects; it does
    not prevent: use a lock (:class:`Locked`) or
    ``@tool(thread_safe=False)`` for that.
    """
    if not _checks:
        return func
    name = f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', repr(func))}"
    watch = _Watch(name)
    with _registry_lock:
        _watches.append(watch)

    if inspect.iscoroutinefunction(func):
        @functools.wraps(func)
        async def checked_async(*args: Any, **kwargs: Any) -> Any:
            watch.enter()
            try:
                return await func(*args, **kwargs)
            finally:
                watch.leave()

        return checked_async  # type: ignore[return-value]

    @functools.wraps(func)
    def checked(*args: Any, **kwargs: Any) -> Any:
        watch.enter()
        try:
            return func(*args, **kwargs)
        finally:
            watch.leave()

    return checked  # type: ignore[return-value]


def violations() -> Dict[str, int]:
    """Per checked function, how many times a thread entered it while
    another thread was inside (functions with none are left out)."""
    with _registry_lock:
        watches = list(_watches)
    found: Dict[str, int] = {}
    for watch in watches:
        with watch.lock:
            count = watch.count
        if count:
            found[watch.name] = found.get(watch.name, 0) + count
    return found


def violation_count() -> int:
    """All concurrent entries into @single_threaded functions so far."""
    return sum(violations().values())


# ------------------------------------------------------- library table


@dataclasses.dataclass(frozen=True)
class LibraryNote:
    """What needs care when a library is used by several threads of one process."""

    #: Top-level import name, as in ``sys.modules``.
    module: str
    #: Name people know the library by.
    library: str
    #: What is not safe to share across threads (the library itself may be fine).
    unsafe: str
    #: What to do instead.
    advice: str


#: The compatibility table: the one source for the boot warnings and for
#: docs/thread-safety.md (``python -m snakepit.threadsafe`` prints it).
LIBRARY_NOTES: Tuple[LibraryNote, ...] = (
    LibraryNote(
        "numpy", "NumPy",
        "arrays carry no lock, and many operations release the GIL: an array written "
        "in place (out=, +=, item assignment, resize) while other threads read or write "
        "it gives mixed or torn results. Reading shared arrays from many threads is fine",
        "load arrays once and share them read-only (snakepit.frozen gives a read-only "
        "view); give each call its own output arrays; put arrays updated in place behind "
        "snakepit.Locked. With N calls at once, BLAS threads multiply: consider "
        "OMP_NUM_THREADS / OPENBLAS_NUM_THREADS",
    ),
    LibraryNote(
        "pandas", "pandas",
        "DataFrame and Series objects are not safe to change from one thread while "
        "others use them (assignment, inplace=True, appending), and pandas documents "
        "copy() of shared objects as a known issue",
        "treat shared frames as read-only and build a new frame per call; take copies "
        "of shared frames under a lock (snakepit.Locked), or load them per thread "
        "(snakepit.ThreadLocal)",
    ),
    LibraryNote(
        "matplotlib", "Matplotlib",
        "matplotlib.pyplot keeps global state (the current figure and axes, the "
        "figure registry), so pyplot calls from several threads draw into each "
        "other's figures; Matplotlib as a whole is not designed for concurrent use",
        "do not use pyplot in tools: create a matplotlib.figure.Figure per call with "
        "the Agg backend and save it with fig.savefig; or mark plotting tools "
        "@tool(thread_safe=False)",
    ),
    LibraryNote(
        "sqlite3", "sqlite3",
        "a Connection (and its cursors) belongs to the thread that made it: by default "
        "(check_same_thread=True) other threads get ProgrammingError, and sharing one "
        "with check_same_thread=False needs your own locking",
        "one connection per thread: snakepit.ThreadLocal(lambda: sqlite3.connect(path)); "
        "or one connection behind snakepit.Locked",
    ),
    LibraryNote(
        "torch", "PyTorch",
        "process-wide settings (torch.set_num_threads, torch.manual_seed and the global "
        "RNG, default dtype/device) affect every call at once, while grad mode "
        "(no_grad, inference_mode, set_grad_enabled) is per thread; changing a shared "
        "module (train()/eval(), loading weights, optimizer steps) races with calls "
        "using it",
        "load the model and call model.eval() once in __init__; enter "
        "torch.inference_mode() inside each tool call, not in __init__ (it only holds "
        "for the thread that entered it); set torch.set_num_threads once at start-up, "
        "keeping threads × intra-op threads within the cores; never train or change "
        "the shared model in tools",
    ),
    LibraryNote(
        "sklearn", "scikit-learn",
        "estimators are changed by fit, partial_fit and set_params: doing that to a "
        "shared estimator while other threads call it races; n_jobs and BLAS threads "
        "add to the worker's own threads",
        "fit in __init__ (or load a fitted model) and only call predict / transform in "
        "tools; to fit per call, fit a fresh sklearn.base.clone(estimator); prefer "
        "n_jobs=1 for estimators used by tools",
    ),
    LibraryNote(
        "tensorflow", "TensorFlow / Keras",
        "Keras keeps global state (tf.keras.backend.clear_session, name counters, "
        "tf.random.set_seed), model.predict builds its function lazily on first use, "
        "and compiling or training a shared model races with calls using it",
        "build the model in __init__ and call it once there to warm it up; in tools "
        "call model(x, training=False) or a tf.function made in __init__; never "
        "compile, fit or clear the session in tools",
    ),
    LibraryNote(
        "PIL", "Pillow",
        "an Image is not safe to change from one thread while others use it, and "
        "Image.open is lazy: the pixels are read by the first operation that needs "
        "them, so even reading a shared, not yet loaded image from several threads "
        "races",
        "open images per call; for a shared image call .load() in __init__ and only "
        "read it, or .copy() it before changing it",
    ),
    LibraryNote(
        "tokenizers", "Hugging Face tokenizers",
        "a fast tokenizer shared by threads can fail with 'RuntimeError: Already "
        "borrowed' when calls that set truncation or padding (as transformers does "
        "per call) overlap",
        "one tokenizer per thread: snakepit.ThreadLocal(lambda: "
        "AutoTokenizer.from_pretrained(name)); or mark the tools using it "
        "@tool(thread_safe=False)",
    ),
    LibraryNote(
        "requests", "Requests",
        "a requests.Session is not documented as safe to share across threads (its "
        "cookie jar and connection pools are changed by every request); the "
        "module-level requests.get() and friends make a new session per call",
        "one Session per thread: snakepit.ThreadLocal(requests.Session)",
    ),
)


def imported_library_notes(
    modules: Optional[MappingType[str, Any]] = None,
) -> List[LibraryNote]:
    """The notes of :data:`LIBRARY_NOTES` whose library is imported: a
    ``modules`` key (default ``sys.modules``) whose top-level name is the
    note's ``module`` and whose value is not None (a blocked import)."""
    table = sys.modules if modules is None else modules
    imported = {
        name.partition(".")[0] for name, module in list(table.items()) if module is not None
    }
    return [note for note in LIBRARY_NOTES if note.module in imported]


def warn_about_libraries(modules: Optional[MappingType[str, Any]] = None) -> List[LibraryNote]:
    """Log one WARNING per imported library of :data:`LIBRARY_NOTES`; the notes logged."""
    notes = imported_library_notes(modules)
    for note in notes:
        logger.warning(
            "thread check: %s (%s) is imported and this worker runs several calls at once: "
            "not safe to share: %s. Advice: %s (docs/thread-safety.md)",
            note.library, note.module, note.unsafe, note.advice,
        )
    return notes


def compatibility_table_markdown() -> str:
    """:data:`LIBRARY_NOTES` as the Markdown table in docs/thread-safety.md."""
    rows = ["| library | import name | not safe to share | advice |", "|---|---|---|---|"]
    for note in LIBRARY_NOTES:
        cells = (note.library, f"`{note.module}`", note.unsafe, note.advice)
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    sys.stdout.write(compatibility_table_markdown())
