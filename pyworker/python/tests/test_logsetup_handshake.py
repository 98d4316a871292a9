from __future__ import annotations

import io
import json
import logging
import platform
from typing import Iterator

import pytest

from snakepit.handshake import (
    BOOT_ERROR_PREFIX,
    READY_PREFIX,
    boot_error_line,
    ready_line,
)
from snakepit.logsetup import IndentingFormatter, LOG_FORMAT, configure_logging, parse_level


@pytest.fixture
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)
    logging.captureWarnings(False)


def test_formatter_indents_continuation_lines() -> None:
    formatter = IndentingFormatter(LOG_FORMAT)
    record = logging.LogRecord("a.b", logging.WARNING, __file__, 1, "one\ntwo\r\nthree\n", None, None)
    assert formatter.format(record) == "WARNING a.b: one\n    two\n    three"


def test_exception_tracebacks_are_indented(restore_root_logger: None,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SNAKEPIT_LOG_LEVEL", "debug")
    stream = io.StringIO()
    configure_logging(stream)
    assert logging.getLogger().level == logging.DEBUG
    try:
        raise ValueError("x")
    except ValueError:
        logging.getLogger("t").exception("failed")
    lines = stream.getvalue().splitlines()
    assert lines[0] == "ERROR t: failed"
    assert len(lines) > 2
    assert all(line.startswith("    ") for line in lines[1:])
    assert lines[-1] == "    ValueError: x"


def test_warnings_are_logged(restore_root_logger: None, monkeypatch: pytest.MonkeyPatch) -> None:
    import warnings

    monkeypatch.delenv("SNAKEPIT_LOG_LEVEL", raising=False)
    stream = io.StringIO()
    configure_logging(stream)
    assert logging.getLogger().level == logging.INFO
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("careful", DeprecationWarning)
    assert "WARNING py.warnings: " in stream.getvalue()
    assert "DeprecationWarning: careful" in stream.getvalue()


def test_bad_level_falls_back_to_info(restore_root_logger: None,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SNAKEPIT_LOG_LEVEL", "chatty")
    stream = io.StringIO()
    configure_logging(stream)
    assert logging.getLogger().level == logging.INFO
    assert "not a logging level" in stream.getvalue()


def test_parse_level() -> None:
    assert parse_level(None) == logging.INFO
    assert parse_level("warning") == logging.WARNING
    assert parse_level("10") == 10
    assert parse_level("nope") is None


def test_ready_line() -> None:
    line = ready_line("grpc", 1, pid=42)
    assert line.endswith("\n") and line.count("\n") == 1
    assert line.startswith(READY_PREFIX)
    assert json.loads(line[len(READY_PREFIX):]) == {
        "protocol": 1, "pid": 42, "python": platform.python_version(), "transport": "grpc",
    }


def test_boot_error_line_is_one_line_json() -> None:
    try:
        raise ImportError("no module named 'x'\nsecond line")
    except ImportError as exc:
        line = boot_error_line(exc)
    assert line.startswith(BOOT_ERROR_PREFIX) and line.count("\n") == 1
    payload = json.loads(line[len(BOOT_ERROR_PREFIX):])
    assert set(payload) == {"type", "message", "traceback"}
    assert payload["type"] == "builtins.ImportError"
    assert payload["message"] == "no module named 'x'\nsecond line"
    assert "Traceback (most recent call last)" in payload["traceback"]


def test_boot_error_line_stays_short() -> None:
    def recurse(n: int) -> None:
        recurse(n + 1)

    try:
        recurse(0)
    except RecursionError as exc:
        exc.args = ("m" * 100_000,)
        line = boot_error_line(exc)
    assert len(line.encode()) < 60 * 1024
    payload = json.loads(line[len(BOOT_ERROR_PREFIX):])
    assert payload["message"].startswith("mmm") and "characters cut" in payload["message"]
    assert payload["traceback"].startswith("... (")  # the head is cut, the end kept
    assert payload["traceback"].endswith("m\n")
