from __future__ import annotations

import sys
import types
from typing import Iterator

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
        "char_count", "fail", "reverse_bytes", "slow_word_count", "top_words", "word_count",
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


def test_generator_tools_are_rejected(fake_module: types.ModuleType) -> None:
    @snakepit.tool
    def gen() -> Iterator[int]:
        yield 1

    fake_module.gen = gen
    with pytest.raises(AdapterError, match="generator"):
        load_adapter("sp_fake_adapter")


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
