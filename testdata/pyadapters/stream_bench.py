"""Tools for bench/streambench (``--adapter stream_bench``): streams,
callbacks and sessions against plain calls of trivial tools.

Every tool does as little as it can, so that what is measured is the
runtime's cost of moving an item, a callback or a call, not Python's work.
"""

from __future__ import annotations

import itertools
import time
from typing import Any, Dict, Iterator, List

import snakepit

# One block per size, made once: yielding or returning it costs no copy in
# Python, so a bytes item measures the transport, not the allocation.
_blocks: Dict[int, bytes] = {}


def _block(size: int) -> bytes:
    block = _blocks.get(size)
    if block is None:
        block = bytes(i * 7 % 251 for i in range(size))
        _blocks[size] = block
    return block


@snakepit.tool
def item(i: int = 0) -> int:
    """Return ``i``: the trivial unary tool every ratio compares against."""
    return i


@snakepit.tool
def ints() -> Iterator[int]:
    """Yield 0, 1, 2, ... for ever; the consumer breaks out when done."""
    yield from itertools.count()


@snakepit.tool
def first() -> Iterator[int]:
    """Yield 0 at once, then end."""
    yield 0


@snakepit.tool
def block(size: int) -> bytes:
    """Return ``size`` bytes (the same block every call; raw bytes)."""
    return _block(size)


@snakepit.tool
def blocks(size: int) -> Iterator[bytes]:
    """Yield the ``size``-byte block for ever (raw bytes items)."""
    data = _block(size)
    while True:
        yield data


@snakepit.tool
def callbacks(name: str, k: int) -> Dict[str, Any]:
    """Call the Go function ``name`` k times in a loop with ``i=i``, checking
    each answer is ``i``. Returns ``{"loop_ns", "lat_ns"}``: the loop's
    duration and each callback's round trip (time.perf_counter_ns around
    snakepit.call)."""
    lat: List[int] = [0] * k
    clock = time.perf_counter_ns
    begin = clock()
    for i in range(k):
        t0 = clock()
        got = snakepit.call(name, i=i)
        lat[i] = clock() - t0
        if got != i:
            raise ValueError(f"callback {name!r} answered {got!r} to i={i}")
    return {"loop_ns": clock() - begin, "lat_ns": lat}
