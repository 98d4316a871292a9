"""Tools for the Go bad-input test (badinput_test.go): each misbehaves in one
way a caller or a tool author can, and the worker must survive it."""

from __future__ import annotations

import os
import sys
import time
from typing import Any, List

import snakepit


class QuotaError(Exception):
    """An exception type of the adapter's own, for the qualified type name."""


class Unprintable(Exception):
    """An exception whose str() itself raises."""

    def __str__(self) -> str:
        raise RuntimeError("str() of this exception fails")


@snakepit.tool
def echo(value: Any = None) -> Any:
    """Return ``value`` unchanged."""
    return value


@snakepit.tool
def echo_bytes(data: bytes) -> bytes:
    """Return ``data`` unchanged (raw bytes both ways)."""
    return data


@snakepit.tool
def bump(path: str) -> int:
    """Append a line to the file at ``path``: proof that the call ran.
    Returns how many lines it holds now."""
    with open(path, "a", encoding="utf-8") as f:
        f.write("ran\n")
    with open(path, encoding="utf-8") as f:
        return len(f.readlines())


@snakepit.tool
def add(x: int, y: int = 0) -> int:
    """Return ``x + y``; a str ``x`` makes the body raise TypeError."""
    return x + y


@snakepit.tool
def raise_error(kind: str, message: str) -> None:
    """Raise ``kind(message)``: ValueError, QuotaError, SystemExit or
    Unprintable."""
    errors = {"ValueError": ValueError, "QuotaError": QuotaError, "SystemExit": SystemExit}
    if kind == "Unprintable":
        raise Unprintable()
    raise errors[kind](message)


@snakepit.tool
def unencodable(kind: str) -> Any:
    """Return a value JSON cannot carry, chosen by ``kind``."""
    if kind == "object":
        return object()
    if kind == "set":
        return {1, 2}
    if kind == "nan":
        return float("nan")
    if kind == "inf":
        return [1.0, float("inf")]
    if kind == "tuple_keys":
        return {(1, 2): "x"}
    if kind == "nested":
        return {"ok": [1, 2, {"deep": object()}]}
    if kind == "cycle":
        loop: List[Any] = []
        loop.append(loop)
        return loop
    raise ValueError(f"unknown kind {kind!r}")


@snakepit.tool
def big_bytes(n: int) -> bytes:
    """Return ``n`` bytes (a raw reply)."""
    return b"x" * n


@snakepit.tool
def big_text(n: int) -> str:
    """Return a string of ``n`` characters (a JSON reply)."""
    return "y" * n


@snakepit.tool
def junk_output(marker: str) -> str:
    """Write binary junk, bare newlines, a fake protocol line and an 80 KiB
    line without a newline to stdout and stderr, then return ``marker``.
    None of it may disturb the protocol: after the handshake stdout and
    stderr are only logs."""
    junk = b"\x00\xff\xfe\x1b[31m\r\n\n\n\xc3\x28 not utf-8 \xa0\xa1\n"
    fake = b'SNAKEPIT-READY {"protocol": 999, "pid": 1}\nSNAKEPIT-BOOT-ERROR {"type": "x"}\n'
    for fd in (1, 2):
        os.write(fd, junk + fake + marker.encode() + b"\n")
        os.write(fd, b"z" * (80 << 10))  # longer than one log line, no newline yet
        os.write(fd, b"\n")
    print("\x00half a line", end="")
    sys.stdout.flush()
    print("\n" + marker + " via print", file=sys.stderr)
    return marker


@snakepit.tool
def sleep(seconds: float) -> float:
    """Block for ``seconds``; return ``seconds``."""
    time.sleep(seconds)
    return seconds


class FailingAdapter(snakepit.Adapter):
    """An adapter class whose constructor raises: a boot error."""

    def __init__(self) -> None:
        raise RuntimeError("badinput: cannot load the model; set BADINPUT_MODEL_PATH")

    @snakepit.tool
    def never(self) -> None:
        """Never reachable."""
