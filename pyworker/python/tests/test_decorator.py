from __future__ import annotations

import asyncio
import inspect
import subprocess
import sys

import pytest

import snakepit
from helpers import PY_ROOT
from snakepit.decorator import ToolOptions, tool_options


def test_bare_decorator_returns_function_unchanged() -> None:
    def add(a: int, b: int) -> int:
        return a + b

    decorated = snakepit.tool(add)
    assert decorated is add
    assert add(2, 3) == 5
    assert tool_options(add) == ToolOptions(name=None, thread_safe=True)


def test_decorator_with_options() -> None:
    @snakepit.tool(name="other_name", thread_safe=False)
    def f() -> str:
        return "x"

    assert f() == "x"
    assert f.__name__ == "f"
    assert tool_options(f) == ToolOptions(name="other_name", thread_safe=False)


def test_decorator_with_empty_parentheses() -> None:
    @snakepit.tool()
    def g() -> int:
        return 1

    assert tool_options(g) == ToolOptions()


def test_async_function_stays_a_coroutine_function() -> None:
    @snakepit.tool
    async def h(x: int) -> int:
        return x * 2

    assert inspect.iscoroutinefunction(h)
    assert asyncio.run(h(4)) == 8
    assert tool_options(h) is not None


def test_methods_and_staticmethods() -> None:
    class A:
        @snakepit.tool
        def m(self) -> int:
            return 1

        @snakepit.tool
        @staticmethod
        def s() -> int:
            return 2

    assert A().m() == 1
    assert A.s() == 2
    assert tool_options(A().m) is not None
    assert tool_options(A.__dict__["s"]) is not None


def test_undecorated_and_odd_objects_have_no_options() -> None:
    def plain() -> None: ...

    class Weird:
        def __getattr__(self, name: str) -> object:
            return "not options"

    assert tool_options(plain) is None
    assert tool_options(Weird()) is None
    assert tool_options(42) is None


def test_bad_name_is_rejected() -> None:
    with pytest.raises(ValueError):
        snakepit.tool(name="")


def test_package_exports() -> None:
    assert snakepit.PROTOCOL_VERSION == 2
    assert callable(snakepit.call) and callable(snakepit.acall)
    assert issubclass(snakepit.CallbackError, Exception)
    assert snakepit.current_session() is None
    assert isinstance(snakepit.Session, type)
    assert snakepit.__version__ == "0.1.0"
    assert callable(snakepit.tool)
    assert isinstance(snakepit.Adapter, type)


def test_importing_snakepit_does_not_import_grpc() -> None:
    code = (
        "import sys, snakepit, snakepit.adapter, snakepit.codec, snakepit.execution, "
        "snakepit.introspect, snakepit.handshake, snakepit.logsetup\n"
        "bad = [m for m in sys.modules if m == 'grpc' or m.startswith('grpc.')]\n"
        "assert not bad, bad\n"
    )
    env = {"PYTHONPATH": str(PY_ROOT), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
