"""Test helpers for adapter authors (standard library only).

:func:`hammer` calls a function (a tool, or what it calls) from many threads
at once and checks that every call gives what a serial run gives::

    from snakepit.testing import hammer
    from mytools import tokenize

    def test_tokenize_is_thread_safe() -> None:
        report = hammer(tokenize, [{"text": "a b"}, {"text": "c d e"}], threads=8)
        assert report.max_concurrency > 1

A pass is evidence, not proof: races show up only when threads meet at the
wrong moment. Make the calls slow enough to overlap (realistic inputs,
enough ``repeat``), and look at ``max_concurrency``.
"""

from __future__ import annotations

import copy
import math
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, List, Mapping, Optional, Sequence, Tuple, Union

__all__ = ["HammerReport", "hammer"]

#: How many problems of each kind the AssertionError spells out.
_SHOWN = 10

Outcome = Tuple[str, Any]  # ("value", result) or ("raised", exception)


@dataclass(frozen=True)
class HammerReport:
    """What :func:`hammer` did, when every call agreed with the serial run."""

    #: Calls made from the threads (the serial run not counted).
    calls: int
    threads: int
    #: The most calls of the function seen running at the same time.
    max_concurrency: int
    #: Calls of the serial run (one per input).
    serial_calls: int
    #: Concurrent entries into @snakepit.single_threaded functions during the
    #: threaded run (0 unless the thread checks are on).
    thread_violations: int
    seconds: float


def _violations() -> int:
    module = sys.modules.get("snakepit.threadsafe")
    if module is None:
        return 0
    count: int = module.violation_count()
    return count


def _same(expected: Any, got: Any) -> bool:
    if expected is got:
        return True
    try:
        equal = expected == got
        if isinstance(equal, bool):
            return equal or _both_nan(expected, got)
        all_ = getattr(equal, "all", None)  # numpy arrays compare elementwise
        return bool(all_()) if callable(all_) else bool(equal)
    except Exception:
        return False


def _both_nan(a: Any, b: Any) -> bool:
    return isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)


def _same_outcome(expected: Outcome, got: Outcome, compare: Callable[[Any, Any], bool]) -> bool:
    if expected[0] != got[0]:
        return False
    if expected[0] == "raised":
        a, b = expected[1], got[1]
        return type(a) is type(b) and str(a) == str(b)
    return bool(compare(expected[1], got[1]))


def _describe(outcome: Outcome) -> str:
    kind, value = outcome
    if kind == "raised":
        return f"raised {type(value).__name__}({str(value)!r})"
    text = repr(value)
    return "returned " + (text if len(text) <= 200 else text[:200] + "...")


def hammer(
    fn: Callable[..., Any],
    calls: Union[Mapping[str, Any], Sequence[Mapping[str, Any]], None] = None,
    *,
    threads: int = 8,
    repeat: int = 10,
    timeout: float = 60.0,
    compare: Optional[Callable[[Any, Any], bool]] = None,
) -> HammerReport:
    """Call ``fn(**kwargs)`` from ``threads`` threads at once and check every
    result against a serial run's.

    ``calls``: the keyword arguments of one call (a dict), or a list of them
    (default: one call with none). First each is called once, in order, in
    the calling thread: that serial run gives the expected outcome of each
    input (a value, or an exception: the same type and message is expected
    then). Then ``threads`` threads, released together by a barrier, each
    make every call ``repeat`` times, starting at different inputs so that
    different inputs overlap. Each call gets its own deep copy of its
    arguments, as tools do in a worker.

    Results are compared with ``compare(expected, got)`` (default ``==``,
    with elementwise ``.all()`` for numpy-like arrays, and NaN equal to NaN).
    Any wrong result or unexpected exception raises AssertionError listing
    them (the first ten of each, with thread names); so do threads still
    running after ``timeout`` seconds (a deadlock?). Otherwise returns a
    :class:`HammerReport`.
    """
    if threads < 1:
        raise ValueError("hammer(): threads must be at least 1")
    if repeat < 1:
        raise ValueError("hammer(): repeat must be at least 1")
    if calls is None:
        inputs: List[Mapping[str, Any]] = [{}]
    elif isinstance(calls, Mapping):
        inputs = [calls]
    else:
        inputs = list(calls)
        if not inputs:
            raise ValueError("hammer(): calls is an empty list")
    for kwargs in inputs:
        if not isinstance(kwargs, Mapping):
            raise TypeError(f"hammer(): each call is a dict of keyword arguments, got {kwargs!r}")
    same = compare if compare is not None else _same
    name = getattr(fn, "__qualname__", None) or f"a {type(fn).__qualname__} instance"

    def call(index: int) -> Outcome:
        kwargs = copy.deepcopy(dict(inputs[index]))
        try:
            return ("value", fn(**kwargs))
        except Exception as exc:
            return ("raised", exc)

    expected = [call(i) for i in range(len(inputs))]

    lock = threading.Lock()
    state = {"active": 0, "max": 0}
    start = threading.Barrier(threads)
    results: List[List[Tuple[int, Outcome]]] = [[] for _ in range(threads)]
    failures: List[str] = []

    def counted(index: int) -> Outcome:
        kwargs = copy.deepcopy(dict(inputs[index]))
        with lock:
            state["active"] += 1
            if state["active"] > state["max"]:
                state["max"] = state["active"]
        try:
            return ("value", fn(**kwargs))
        except Exception as exc:
            return ("raised", exc)
        finally:
            with lock:
                state["active"] -= 1

    def work(number: int) -> None:
        mine = results[number]
        try:
            start.wait(timeout)
        except threading.BrokenBarrierError:
            with lock:
                failures.append(f"thread {number} never started with the others")
            return
        n = len(inputs)
        for _ in range(repeat):
            for j in range(n):
                index = (j + number) % n
                mine.append((index, counted(index)))

    violations_before = _violations()
    began = time.monotonic()
    workers = [
        threading.Thread(target=work, args=(i,), name=f"hammer-{i}", daemon=True)
        for i in range(threads)
    ]
    for worker in workers:
        worker.start()
    deadline = began + timeout
    for worker in workers:
        worker.join(max(0.0, deadline - time.monotonic()))
    seconds = time.monotonic() - began
    stuck = [w.name for w in workers if w.is_alive()]

    wrong: List[str] = []
    raised: List[str] = []
    made = 0
    for number, outcomes in enumerate(results):
        for index, got in list(outcomes):
            made += 1
            if _same_outcome(expected[index], got, same):
                continue
            line = (f"call {index} {dict(inputs[index])!r} on thread hammer-{number} "
                    f"{_describe(got)}; the serial run {_describe(expected[index])}")
            (raised if got[0] == "raised" else wrong).append(line)

    if wrong or raised or stuck or failures:
        parts = [
            f"hammer({name}): {len(wrong)} wrong result(s) and {len(raised)} unexpected "
            f"exception(s) in {made} calls from {threads} threads (at most {state['max']} at "
            "once): it is not safe to call from several threads at once"
        ]
        if stuck:
            parts.append(f"threads still running after {timeout}s (a deadlock, or a call that "
                         f"never returns?): {', '.join(stuck)}")
        parts.extend(failures)
        for title, lines in (("wrong results", wrong), ("exceptions", raised)):
            if lines:
                parts.append(f"{title}:")
                parts.extend("  " + line for line in lines[:_SHOWN])
                if len(lines) > _SHOWN:
                    parts.append(f"  ... and {len(lines) - _SHOWN} more")
        raise AssertionError("\n".join(parts))

    return HammerReport(
        calls=made,
        threads=threads,
        max_concurrency=state["max"],
        serial_calls=len(inputs),
        thread_violations=_violations() - violations_before,
        seconds=seconds,
    )
