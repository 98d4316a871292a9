from __future__ import annotations

import sys
import types
from typing import Any, Iterator

import pytest

import snakepit
from snakepit.adapter import AdapterError, load_adapter, parse_spec


@pytest.fixture
def fake_module(monkeypatch: pytest.MonkeyPatch) -> Iterator[types.ModuleType]:
    module = types.ModuleType("sp_fake_adapter")
    monkeypatch.setitem(sys.modules, "sp_fake_adapter", module)
    yield module


def test_parse_spec() -> None:
    assert parse_spec("pkg.mod") == ("pkg.mod", None)
    assert parse_spec("pkg.mod:Cls") == ("pkg.mod", "Cls")
    for bad in ("", "  ", ":Cls", "pkg.mod:"):
        with pytest.raises(AdapterError):
            parse_spec(bad)


def test_module_adapter_discovers_marked_functions() -> None:
    loaded = load_adapter("examples.textstats")
    assert loaded.instance is None
    assert loaded.tool_names() == [
        "char_count", "fail", "note", "reverse_bytes", "shout_words", "slow_word_count",
        "top_words", "word_count", "words",
    ]
    assert loaded.tools["slow_word_count"].is_async
    assert not loaded.tools["word_count"].is_async
    assert loaded.tools["word_count"].describe_signature() == "word_count(text: str) -> int"
    # private helpers are not tools
    assert "_words" not in loaded.tools


def test_module_adapter_custom_names_and_aliases(fake_module: types.ModuleType) -> None:
    @snakepit.tool(name="renamed", thread_safe=False)
    def original() -> int:
        return 1

    fake_module.original = original
    fake_module.alias = original  # the same function twice is one tool
    fake_module.plain = lambda: 0
    loaded = load_adapter("sp_fake_adapter")
    assert loaded.tool_names() == ["renamed"]
    assert loaded.tools["renamed"].thread_safe is False
    assert loaded.tools["renamed"].func() == 1


def test_duplicate_tool_names_are_an_error(fake_module: types.ModuleType) -> None:
    @snakepit.tool(name="same")
    def a() -> None: ...

    @snakepit.tool(name="same")
    def b() -> None: ...

    fake_module.a, fake_module.b = a, b
    with pytest.raises(AdapterError, match="duplicate tool name 'same'"):
        load_adapter("sp_fake_adapter")


def test_module_without_tools_is_an_error() -> None:
    with pytest.raises(AdapterError) as info:
        load_adapter("no_tools")
    message = str(info.value)
    assert "decorate functions with @snakepit.tool" in message
    assert "'module:Class'" in message


def test_generator_tools_are_streaming_tools(fake_module: types.ModuleType) -> None:
    @snakepit.tool
    def gen() -> Iterator[int]:
        yield 1

    @snakepit.tool
    async def agen() -> Any:
        yield 1

    @snakepit.tool
    async def coro() -> int:
        return 1

    fake_module.gen, fake_module.agen, fake_module.coro = gen, agen, coro
    tools = load_adapter("sp_fake_adapter").tools
    assert (tools["gen"].is_generator, tools["gen"].is_async) == (True, False)
    assert (tools["agen"].is_generator, tools["agen"].is_async) == (True, True)
    assert (tools["coro"].is_generator, tools["coro"].is_async) == (False, True)


def test_session_hooks_are_found_by_name(fake_module: types.ModuleType) -> None:
    from snakepit.adapter import adapter_hook

    @snakepit.tool
    def t() -> None: ...

    def on_session_start(session: Any) -> None: ...

    fake_module.t = t
    fake_module.on_session_start = on_session_start
    loaded = load_adapter("sp_fake_adapter")
    assert adapter_hook(loaded, "on_session_start") is on_session_start
    assert adapter_hook(loaded, "on_session_end") is None

    class Model(snakepit.Adapter):
        @snakepit.tool
        def m(self) -> None: ...

        async def on_session_end(self, session: Any) -> None: ...

    fake_module.Model = Model
    loaded = load_adapter("sp_fake_adapter:Model")
    assert adapter_hook(loaded, "on_session_end") == loaded.instance.on_session_end
    assert adapter_hook(loaded, "on_session_start") is None  # not the module's: the class's
    fake_module.on_session_end = 5
    with pytest.raises(AdapterError, match="on_session_end must be a function, got int"):
        adapter_hook(load_adapter("sp_fake_adapter"), "on_session_end")


def test_class_adapter_instantiated_once_with_bound_methods(fake_module: types.ModuleType) -> None:
    created = []

    class Model(snakepit.Adapter):
        def __init__(self) -> None:
            created.append(self)
            self.factor = 3

        @snakepit.tool
        def triple(self, x: int) -> int:
            return x * self.factor

        @snakepit.tool(name="shout")
        async def loud(self, text: str) -> str:
            return text.upper()

        @snakepit.tool
        @staticmethod
        def const() -> int:
            return 7

        @property
        def prop(self) -> int:  # must not be evaluated by discovery
            raise AssertionError("property evaluated")

        def helper(self) -> None: ...

    class Child(Model):
        @snakepit.tool
        def extra(self) -> str:
            return "child"

    fake_module.Model = Model
    fake_module.Child = Child
    loaded = load_adapter("sp_fake_adapter:Model")
    assert len(created) == 1
    assert loaded.instance is created[0]
    assert loaded.tool_names() == ["const", "shout", "triple"]
    assert loaded.tools["triple"].func(2) == 6
    assert loaded.tools["shout"].is_async
    assert loaded.tools["triple"].describe_signature() == "triple(x: int) -> int"

    child = load_adapter("sp_fake_adapter:Child")
    assert child.tool_names() == ["const", "extra", "shout", "triple"]


def test_class_spec_errors(fake_module: types.ModuleType) -> None:
    fake_module.not_a_class = 5

    class Empty:
        pass

    class Boom:
        def __init__(self) -> None:
            raise RuntimeError("model file missing")

    fake_module.Empty, fake_module.Boom = Empty, Boom
    with pytest.raises(AdapterError, match="no attribute 'Missing'"):
        load_adapter("sp_fake_adapter:Missing")
    with pytest.raises(AdapterError, match="not a class"):
        load_adapter("sp_fake_adapter:not_a_class")
    with pytest.raises(AdapterError, match="exposes no tools"):
        load_adapter("sp_fake_adapter:Empty")
    with pytest.raises(RuntimeError, match="model file missing"):
        load_adapter("sp_fake_adapter:Boom")


def test_import_errors_propagate() -> None:
    with pytest.raises(ImportError):
        load_adapter("broken_import")


def test_example_class_adapter() -> None:
    loaded = load_adapter("examples.sentiment:SentimentModel")
    assert loaded.tool_names() == ["info", "score"]
    assert loaded.tools["score"].func("a great and wonderful day") > 0
    assert loaded.tools["score"].func("terrible, awful") < 0
    assert loaded.tools["score"].func("neutral words only") == 0.0


# ------------------------------------------------------------ thread safety


def test_declared_thread_safe(fake_module: types.ModuleType) -> None:
    from snakepit.adapter import declared_thread_safe

    assert not declared_thread_safe(fake_module)
    fake_module.__snakepit_thread_safe__ = True
    assert declared_thread_safe(fake_module)
    fake_module.__snakepit_thread_safe__ = "yes"  # only True counts
    assert not declared_thread_safe(fake_module)

    class Plain(snakepit.Adapter):
        pass

    class Safe(snakepit.ThreadSafeAdapter):
        pass

    class ByAttribute:
        __snakepit_thread_safe__ = True

    class Withdrawn(Safe):
        __snakepit_thread_safe__ = False

    assert [declared_thread_safe(c) for c in (Plain, Safe, ByAttribute, Withdrawn)] == [
        False, True, True, False]
    assert issubclass(snakepit.ThreadSafeAdapter, snakepit.Adapter)


def test_thread_profile_refuses_undeclared_module_adapter(fake_module: types.ModuleType) -> None:
    from snakepit.adapter import NotThreadSafeError

    @snakepit.tool
    def f() -> int:
        return 1

    fake_module.f = f
    with pytest.raises(NotThreadSafeError) as info:
        load_adapter("sp_fake_adapter", require_thread_safe=4)
    assert str(info.value) == (
        "adapter 'sp_fake_adapter' is not declared thread-safe, but the thread profile runs "
        "up to 4 of its calls at once in one process. Make it safe (see "
        "docs/thread-safety.md), then declare it: subclass snakepit.ThreadSafeAdapter, or set "
        "__snakepit_thread_safe__ = True in the module; or run the pool with Profile "
        '"process".'
    )
    assert isinstance(info.value, AdapterError)
    assert load_adapter("sp_fake_adapter").tool_names() == ["f"]  # no profile: no question
    fake_module.__snakepit_thread_safe__ = True
    assert load_adapter("sp_fake_adapter", require_thread_safe=4).tool_names() == ["f"]


def test_thread_profile_refuses_undeclared_class_before_instantiating(
    fake_module: types.ModuleType,
) -> None:
    from snakepit.adapter import NotThreadSafeError

    created = []

    class Model(snakepit.Adapter):
        def __init__(self) -> None:
            created.append(self)

        @snakepit.tool
        def f(self) -> int:
            return 1

    class SafeModel(Model, snakepit.ThreadSafeAdapter):
        pass

    fake_module.Model, fake_module.SafeModel = Model, SafeModel
    fake_module.__snakepit_thread_safe__ = True  # the module's flag does not cover classes
    with pytest.raises(NotThreadSafeError, match="in the class; or run the pool") as info:
        load_adapter("sp_fake_adapter:Model", require_thread_safe=1)
    assert "is for adapters whose calls may run at once on several threads" in str(info.value)
    assert created == []
    loaded = load_adapter("sp_fake_adapter:SafeModel", require_thread_safe=8)
    assert loaded.tool_names() == ["f"] and len(created) == 1
