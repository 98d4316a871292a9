"""snakepit.threadsafe: frozen / ThreadLocal / Locked, the single_threaded
checker and the library compatibility table."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime
import decimal
import logging
import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Iterator, List

import pytest

import snakepit
from helpers import PY_ROOT, REPO_ROOT
from snakepit import threadsafe
from snakepit.threadsafe import (
    LIBRARY_NOTES,
    FrozenList,
    FrozenMapping,
    Locked,
    ReadOnlyError,
    SharedReadOnly,
    ThreadLocal,
    compatibility_table_markdown,
    frozen,
    imported_library_notes,
    single_threaded,
    warn_about_libraries,
)

DOC = REPO_ROOT / "docs" / "thread-safety.md"


def run_in_threads(n: int, target: Callable[[int], Any]) -> List[Any]:
    """Run target(i) in n threads; their results (exceptions re-raised)."""
    results: List[Any] = [None] * n
    errors: List[BaseException] = []

    def run(i: int) -> None:
        try:
            results[i] = target(i)
        except BaseException as exc:  # noqa: B036
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,), name=f"t{i}") for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not any(t.is_alive() for t in threads), "threads did not finish"
    if errors:
        raise errors[0]
    return results


# ------------------------------------------------------------------ frozen


def test_frozen_mapping_reads_like_the_original_and_refuses_changes() -> None:
    data = {"a": 1, "b": [1, 2, {"c": {3, 4}}], "d": {"e": "f"}, "t": (1, [2])}
    shared = frozen(data)
    assert isinstance(shared, FrozenMapping) and isinstance(shared, SharedReadOnly)
    assert shared == data and data == shared
    assert shared["a"] == 1 and shared.get("zz", 5) == 5 and "d" in shared
    assert len(shared) == 4 and list(shared) == ["a", "b", "d", "t"]
    assert isinstance(shared["b"], FrozenList)
    assert shared["b"][2]["c"] == frozenset({3, 4})
    assert shared["t"] == (1, FrozenList([2])) and type(shared["t"]) is tuple
    for change in (
        lambda: shared.__setitem__("a", 2),
        lambda: shared.__delitem__("a"),
        lambda: shared.update({"x": 1}),
        lambda: shared.pop("a"),
        lambda: shared.popitem(),
        lambda: shared.clear(),
        lambda: shared.setdefault("x", 1),
        lambda: shared["b"].append(3),
        lambda: shared["b"].__setitem__(0, 9),
        lambda: shared["b"].sort(),
        lambda: shared["d"].__setitem__("e", "g"),
        lambda: shared["t"][1].extend([5]),
    ):
        with pytest.raises(ReadOnlyError, match="shared read-only state"):
            change()
    assert isinstance(ReadOnlyError("x"), TypeError)
    # The original can change; the frozen copy does not follow.
    data["b"].append(99)
    data["d"]["e"] = "changed"
    assert len(shared["b"]) == 3 and shared["d"]["e"] == "f"


def test_frozen_sequences_and_values() -> None:
    items = frozen([1, [2, 3], "x"])
    assert isinstance(items, FrozenList)
    assert items == [1, [2, 3], "x"] and items == (1, (2, 3), "x")
    assert items[1:] == [[2, 3], "x"]
    assert isinstance(items[1:], FrozenList)
    assert hash(items) == hash(frozen([1, [2, 3], "x"]))
    assert items.count(1) == 1 and items.index("x") == 2 and 1 in items
    assert frozen(collections.deque([1, 2])) == [1, 2]
    assert frozen({1, 2}) == frozenset({1, 2})
    assert frozen(bytearray(b"ab")) == b"ab"
    view = frozen(memoryview(bytearray(b"ab")))
    assert view.readonly
    Point = collections.namedtuple("Point", "x y")
    point = frozen(Point([1], 2))
    assert type(point) is Point and point.x == FrozenList([1])
    for value in ("s", b"b", 1, 2.5, True, None, 3j, range(3), decimal.Decimal("1.5"),
                  datetime.date(2024, 1, 1), Path("/x"), frozenset({1})):
        assert frozen(value) == value
    assert frozen(items) is items
    # The constructors freeze what they are given too.
    assert isinstance(FrozenMapping({"a": [1]})["a"], FrozenList)
    assert isinstance(FrozenList([{"a": 1}])[0], FrozenMapping)
    with pytest.raises(TypeError, match=r"value\[0\] is a builtins.object"):
        FrozenList([object()])


def test_frozen_thaw_gives_a_private_mutable_copy() -> None:
    shared = frozen({"a": [1, {"b": 2}], "t": (1, [2])})
    copy = shared.thaw()
    assert copy == {"a": [1, {"b": 2}], "t": (1, [2])}
    assert type(copy) is dict and type(copy["a"]) is list and type(copy["a"][1]) is dict
    copy["a"].append(3)
    assert len(shared["a"]) == 2
    assert frozen([1, [2]]).thaw() == [1, [2]]


def test_frozen_shares_parts_once_and_refuses_cycles() -> None:
    part = [1, 2]
    shared = frozen({"x": part, "y": part})
    assert shared["x"] is shared["y"]
    loop: List[Any] = [1]
    loop.append(loop)
    with pytest.raises(ValueError, match="refers back to itself"):
        frozen(loop)


def test_frozen_refuses_objects_it_cannot_protect_unless_not_strict() -> None:
    class Model:
        pass

    @dataclasses.dataclass(frozen=True)
    class Config:
        size: int

    with pytest.raises(TypeError, match=r"value\['models'\]\[1\] is a .*Model"):
        frozen({"models": [1, Model()]})
    model = Model()
    assert frozen({"m": model}, strict=False)["m"] is model
    config = Config(3)
    assert frozen([config])[0] is config


def test_frozen_numpy_like_arrays_become_read_only_views() -> None:
    class Array:
        def __init__(self) -> None:
            self.writeable = True
            self.base: Any = None

        def view(self) -> "Array":
            other = Array()
            other.base = self
            return other

        def setflags(self, write: bool) -> None:
            self.writeable = write

    original = Array()
    view = frozen(original)
    assert view.base is original and view.writeable is False and original.writeable is True


def test_frozen_with_real_numpy_if_installed() -> None:
    np = pytest.importorskip("numpy")
    original = np.arange(4)
    shared = frozen({"weights": original})
    with pytest.raises(ValueError):
        shared["weights"][0] = 5
    original[0] = 7  # the owner can still write it
    assert shared["weights"][0] == 7


def test_frozen_state_is_read_by_many_threads() -> None:
    shared = frozen({"words": [f"w{i}" for i in range(1000)]})
    barrier = threading.Barrier(8)

    def read(_i: int) -> int:
        barrier.wait(10)
        return sum(len(w) for w in shared["words"])

    assert len(set(run_in_threads(8, read))) == 1


# -------------------------------------------------------------- ThreadLocal


def test_thread_local_makes_one_instance_per_thread_lazily() -> None:
    made: List[int] = []
    lock = threading.Lock()

    def factory() -> dict:
        with lock:
            made.append(threading.get_ident())
        return {"owner": threading.get_ident()}

    local = ThreadLocal(factory)
    assert made == []
    barrier = threading.Barrier(4)

    def use(_i: int) -> bool:
        first = local.get()
        barrier.wait(10)  # all four threads hold their instance at once
        return first is local.get() and first["owner"] == threading.get_ident()

    assert run_in_threads(4, use) == [True] * 4
    assert len(made) == 4 and len(set(made)) == 4
    mine = local.get()
    assert local.get() is mine
    local.clear()
    assert local.get() is not mine
    local.clear()
    local.clear()  # clearing twice is fine
    assert "ThreadLocal" in repr(local)


def test_thread_local_factory_failure_is_retried() -> None:
    attempts = []

    def factory() -> str:
        attempts.append(1)
        if len(attempts) == 1:
            raise OSError("database not ready")
        return "conn"

    local = ThreadLocal(factory)
    with pytest.raises(OSError):
        local.get()
    assert local.get() == "conn" and len(attempts) == 2
    with pytest.raises(TypeError):
        ThreadLocal(42)  # type: ignore[arg-type]


def test_thread_local_with_sqlite_connections() -> None:
    import sqlite3

    local = ThreadLocal(lambda: sqlite3.connect(":memory:"))
    barrier = threading.Barrier(4)

    def query(i: int) -> int:
        conn = local.get()
        barrier.wait(10)
        return conn.execute("select ?", (i,)).fetchone()[0]

    assert run_in_threads(4, query) == [0, 1, 2, 3]


# ------------------------------------------------------------------- Locked


def test_locked_serialises_read_modify_write() -> None:
    counter = Locked({"n": 0})
    barrier = threading.Barrier(8)

    def bump(_i: int) -> None:
        barrier.wait(10)
        for round_ in range(200):
            with counter as state:
                value = state["n"]
                if round_ % 50 == 0:
                    threading.Event().wait(0)  # let others try to get in between
                state["n"] = value + 1

    run_in_threads(8, bump)
    with counter as state:
        assert state["n"] == 1600


def test_locked_update_set_and_reentrance() -> None:
    hits = Locked(0)
    assert hits.update(lambda n: n + 1) == 1
    hits.set(10)
    assert hits.update(lambda n: n * 2) == 20
    with hits as outer:
        with hits as inner:  # re-entrant by default
            assert outer == inner == 20
    plain = Locked([], lock=threading.Lock())
    with plain as items:
        items.append(1)
    assert "Locked(list)" == repr(plain)


def test_locked_excludes_other_threads_while_held() -> None:
    box = Locked([])
    inside = threading.Event()
    release = threading.Event()
    order: List[str] = []

    def holder() -> None:
        with box as items:
            inside.set()
            release.wait(10)
            items.append("holder")
            order.append("holder")

    thread = threading.Thread(target=holder)
    thread.start()
    inside.wait(10)
    lock = box._lock  # the holder has it: a non-blocking try from here fails
    assert lock.acquire(blocking=False) is False
    release.set()
    thread.join(10)
    with box as items:
        assert items == ["holder"]


# ---------------------------------------------------------------- checker


@pytest.fixture
def checks() -> Iterator[None]:
    threadsafe.enable_checks()
    try:
        yield
    finally:
        threadsafe.enable_checks(False)


def test_single_threaded_costs_nothing_without_checks() -> None:
    assert not threadsafe.checks_enabled()

    def f() -> int:
        return 1

    assert single_threaded(f) is f


def test_single_threaded_detects_two_threads_inside(checks: None,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    barrier = threading.Barrier(2)

    @single_threaded
    def critical(x: int) -> int:
        barrier.wait(10)  # both threads are inside here at once
        return x * 2

    assert critical.__name__ == "critical" and critical.__wrapped__ is not None  # type: ignore[attr-defined]
    before = threadsafe.violation_count()
    with caplog.at_level(logging.WARNING, logger="snakepit.threadsafe"):
        assert run_in_threads(2, critical) == [0, 2]
        assert threadsafe.violation_count() == before + 1
        run_in_threads(2, critical)  # a second meeting: counted, not logged again
    assert threadsafe.violation_count() == before + 2
    name = next(n for n in threadsafe.violations() if n.endswith("critical"))
    assert threadsafe.violations()[name] == 2
    records = [r for r in caplog.records if "single_threaded" in r.getMessage()]
    assert len(records) == 1
    message = records[0].getMessage()
    assert records[0].levelno == logging.WARNING
    assert name in message and "test_threadsafe" in name
    assert re.search(r"thread 't[01]' entered it while thread 't[01]' was inside", message)
    assert "thread_violations" in message


def test_single_threaded_allows_sequential_use_and_recursion(checks: None) -> None:
    @single_threaded
    def fact(n: int) -> int:
        return 1 if n <= 1 else n * fact(n - 1)

    before = threadsafe.violation_count()
    assert fact(5) == 120
    lock = threading.Lock()

    def one_at_a_time(_i: int) -> int:
        with lock:
            return fact(4)

    assert run_in_threads(4, one_at_a_time) == [24] * 4
    assert threadsafe.violation_count() == before


def test_single_threaded_async_functions(checks: None) -> None:
    @single_threaded
    async def twice(x: int) -> int:
        await asyncio.sleep(0)
        return 2 * x

    async def main() -> List[int]:
        return list(await asyncio.gather(twice(1), twice(2)))  # one thread: no violation

    before = threadsafe.violation_count()
    assert asyncio.iscoroutinefunction(twice)
    assert asyncio.run(main()) == [2, 4]
    assert threadsafe.violation_count() == before


def test_single_threaded_keeps_tool_marks(checks: None) -> None:
    from snakepit.decorator import tool_options

    @single_threaded
    @snakepit.tool(name="checked")
    def f() -> int:
        return 1

    options = tool_options(f)
    assert options is not None and options.name == "checked"


# --------------------------------------------------------------- libraries


def test_library_table_covers_the_usual_suspects() -> None:
    modules = {note.module for note in LIBRARY_NOTES}
    assert {"numpy", "pandas", "matplotlib", "sqlite3", "torch", "sklearn",
            "tensorflow", "PIL"} <= modules
    assert len(modules) == len(LIBRARY_NOTES)
    for note in LIBRARY_NOTES:
        assert note.unsafe and note.advice and note.library
        assert "|" not in note.unsafe + note.advice


def test_imported_library_notes_match_top_level_names() -> None:
    fake = {"numpy": object(), "sklearn.linear_model": object(), "matplotlib": None,
            "torchvision": object(), "mypandas": object(), "PIL.Image": object()}
    found = [note.module for note in imported_library_notes(fake)]
    # matplotlib is a blocked import (None); torchvision and mypandas are other names
    assert found == ["numpy", "sklearn", "PIL"]
    assert imported_library_notes({}) == []


def test_warn_about_libraries_logs_one_line_per_library(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = {"sqlite3": object(), "sqlite3.dbapi2": object(), "pandas": object(),
            "pandas.core": object()}
    with caplog.at_level(logging.WARNING, logger="snakepit.threadsafe"):
        notes = warn_about_libraries(fake)
    assert [n.module for n in notes] == ["pandas", "sqlite3"]
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert lines[1].startswith("thread check: sqlite3 (sqlite3) is imported")
    assert "check_same_thread" in lines[1] and "snakepit.ThreadLocal" in lines[1]


def test_library_warning_for_a_stub_module_in_a_subprocess(tmp_path: Path) -> None:
    (tmp_path / "matplotlib").mkdir()
    (tmp_path / "matplotlib" / "__init__.py").write_text("")
    (tmp_path / "matplotlib" / "pyplot.py").write_text("")
    code = (
        "import logging, sys\n"
        "logging.basicConfig(level=logging.INFO, stream=sys.stderr, "
        "format='%(levelname)s %(name)s: %(message)s')\n"
        "import matplotlib.pyplot\n"
        "from snakepit import threadsafe\n"
        "print([n.module for n in threadsafe.warn_about_libraries()])\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(PY_ROOT)]))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert "'matplotlib'" in out.stdout
    assert "WARNING snakepit.threadsafe: thread check: Matplotlib (matplotlib)" in out.stderr
    assert "pyplot" in out.stderr


def test_docs_table_is_generated_from_the_code() -> None:
    text = DOC.read_text(encoding="utf-8")
    begin = "<!-- BEGIN LIBRARY TABLE: generated by `python -m snakepit.threadsafe` -->\n"
    end = "<!-- END LIBRARY TABLE -->"
    assert begin in text and end in text
    table = text.split(begin, 1)[1].split(end, 1)[0]
    assert table == compatibility_table_markdown(), (
        "docs/thread-safety.md is out of date: replace its table with the output of "
        "`python -m snakepit.threadsafe`"
    )
    out = subprocess.run([sys.executable, "-m", "snakepit.threadsafe"], capture_output=True,
                         text=True, env=dict(os.environ, PYTHONPATH=str(PY_ROOT)))
    assert out.returncode == 0 and out.stdout == compatibility_table_markdown()


# ------------------------------------------------------------------ package


def test_package_exports_and_lazy_import() -> None:
    for name in ("ThreadSafeAdapter", "frozen", "SharedReadOnly", "ThreadLocal", "Locked",
                 "single_threaded", "ReadOnlyError"):
        assert name in snakepit.__all__ and hasattr(snakepit, name)
    assert snakepit.frozen is frozen and snakepit.Locked is Locked
    assert issubclass(snakepit.ThreadSafeAdapter, snakepit.Adapter)
    assert "frozen" in dir(snakepit)
    with pytest.raises(AttributeError):
        snakepit.no_such_name  # noqa: B018
    code = ("import sys, snakepit, snakepit.worker, snakepit.native_server\n"
            "assert 'snakepit.threadsafe' not in sys.modules\n"
            "from snakepit import frozen\n"
            "assert 'snakepit.threadsafe' in sys.modules\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=str(PY_ROOT)))
    assert out.returncode == 0, out.stderr
