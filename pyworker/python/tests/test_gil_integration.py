"""End-to-end: a free-threaded worker reports who switched its GIL on, and when.

Builds testdata/pyadapters/gil_ext/gilmod.c (a module that never declares
it can run without the GIL) for each interpreter in $SNAKEPIT_TEST_PYTHONS;
skipped without a C compiler or Python headers.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List

import pytest

from gilext import build_gil_extension, c_compiler, interpreter_build
from helpers import ADAPTER_DIR, PY_ROOT, REPO_ROOT, TEST_ADAPTER_DIR, WorkerProcess, pythons_under_test

PYTHONS = pythons_under_test()

EAGER = """
import gilmod
import snakepit

@snakepit.tool
def answer() -> int:
    return gilmod.answer()
"""

LAZY = """
import warnings
import snakepit

@snakepit.tool
def plain() -> int:
    return 1

@snakepit.tool
def use_gilmod() -> int:
    import gilmod
    return gilmod.answer()

@snakepit.tool
def warn(message: str) -> None:
    warnings.warn(message, UserWarning)
"""

FIX_HINTS = ("Py_mod_gil", "PyUnstable_Module_SetGIL", "PYTHON_GIL=0")


@pytest.fixture(params=PYTHONS, ids=PYTHONS, scope="module")
def python(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def ext_dir(python: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    if c_compiler() is None:
        pytest.skip("no C compiler (cc / gcc)")
    directory = tmp_path_factory.mktemp("gilext")
    built = build_gil_extension(python, directory)
    if built is None:
        pytest.skip(f"no Python headers for {python}")
    (directory / "gil_eager.py").write_text(textwrap.dedent(EAGER))
    (directory / "gil_lazy.py").write_text(textwrap.dedent(LAZY))
    return directory


@pytest.fixture
def spawn(python: str, ext_dir: Path) -> Iterator[Callable[..., WorkerProcess]]:
    started: List[WorkerProcess] = []
    path = os.pathsep.join(str(p) for p in (PY_ROOT, REPO_ROOT, ADAPTER_DIR, TEST_ADAPTER_DIR, ext_dir))

    def start(adapter: str, env: Dict[str, str] = {}, **kwargs: Any) -> WorkerProcess:
        worker = WorkerProcess(adapter, python=python, transport="native",
                               env={"PYTHONPATH": path, **env}, **kwargs)
        started.append(worker)
        worker.wait_ready()
        return worker

    yield start
    for worker in started:
        worker.close()


def free_threaded(python: str) -> bool:
    return bool(interpreter_build(python)["free_threaded"])


def gil_fields(reply: Dict[str, Any]) -> Any:
    return (reply["gil_enabled"], reply["gil_enabled_by"], reply["gil_enabled_when"])


def test_adapter_import_enables_the_gil(spawn: Callable[..., WorkerProcess], python: str) -> None:
    worker = spawn("gil_eager")
    with worker.connect() as c:
        assert c.value("answer") == 42
        health, stats = c.request("health"), c.request("stats")
    if not free_threaded(python):
        assert gil_fields(health) == (True, "", "")
        assert health["free_threaded_build"] is False
        assert (stats["gil_enabled_by"], stats["gil_enabled_when"]) == ("", "")
        return
    assert gil_fields(health) == (True, "gilmod", "adapter import")
    assert health["free_threaded_build"] is True
    assert gil_fields(stats) == (True, "gilmod", "adapter import")
    lines = worker.wait_stderr(lambda ls: any("the GIL was enabled by" in line for line in ls))
    found = [line for line in lines if "the GIL was enabled by" in line]
    assert len(found) == 1
    assert found[0].startswith(
        "WARNING snakepit.gil: the GIL was enabled by module gilmod (adapter import); "
        "this free-threaded worker now runs with the GIL")
    for hint in FIX_HINTS:
        assert hint in found[0]
    # Python's own RuntimeWarning is replaced by that line, not repeated.
    assert "has been enabled to load module" not in worker.stderr_text()


def test_lazy_import_in_a_tool_enables_the_gil(spawn: Callable[..., WorkerProcess],
                                               python: str) -> None:
    if not free_threaded(python):
        pytest.skip("not a free-threaded build")
    worker = spawn("gil_lazy", capacity=2)
    with worker.connect() as c:
        assert gil_fields(c.request("health")) == (False, "", "")
        assert c.value("plain") == 1
        c.value("warn", {"message": "a warning before the GIL came on"})
        assert gil_fields(c.request("stats")) == (False, "", "")
        assert c.value("use_gilmod") == 42
        expected = (True, "gilmod", "first call of tool use_gilmod")
        assert gil_fields(c.request("health")) == expected
        assert gil_fields(c.request("stats")) == expected
        assert c.value("use_gilmod") == 42
        c.value("warn", {"message": "a warning after the GIL came on"})
        assert gil_fields(c.request("health")) == expected
    # Other warnings still reach the log, before and after.
    worker.wait_stderr(lambda ls: any("a warning after the GIL came on" in line for line in ls))
    text = worker.stderr_text()
    assert "a warning before the GIL came on" in text
    assert text.count("the GIL was enabled by module gilmod (first call of tool use_gilmod)") == 1


def test_gil_on_from_the_start(spawn: Callable[..., WorkerProcess], python: str) -> None:
    if not free_threaded(python):
        pytest.skip("not a free-threaded build")
    worker = spawn("gil_lazy", env={"PYTHON_GIL": "1"})
    with worker.connect() as c:
        assert gil_fields(c.request("health")) == (True, "", "interpreter start")
        assert c.value("use_gilmod") == 42
        assert gil_fields(c.request("health")) == (True, "", "interpreter start")
    assert "started with the GIL already enabled" in worker.stderr_text()


def test_gil_kept_off_with_python_gil_0(spawn: Callable[..., WorkerProcess],
                                        python: str) -> None:
    if not free_threaded(python):
        pytest.skip("not a free-threaded build")
    worker = spawn("gil_eager", env={"PYTHON_GIL": "0"})
    with worker.connect() as c:
        assert c.value("answer") == 42
        assert gil_fields(c.request("health")) == (False, "", "")
