"""snakepit.testing.hammer: it must catch a racy function every time, and pass
a safe one.

The racy function is made to lose deterministically: calls from hammer's
threads (not the serial run, which happens in the calling thread) meet at a
barrier between writing the shared value and reading it back, so in every
round all threads write before any reads, and all but the last writer read
someone else's value.
"""

from __future__ import annotations

import os
import subprocess
import threading
from typing import Any, Dict, List

import pytest

from helpers import PY_ROOT, pythons_under_test
from snakepit import Locked, ThreadLocal, threadsafe
from snakepit.testing import HammerReport, hammer

THREADS = 8
INPUTS = [{"x": i} for i in range(THREADS)]  # distinct inputs meet in every round


class Scratch:
    """A function that stores its input in ``box`` and reads it back, with
    hammer's threads all meeting between the two steps."""

    def __init__(self, threads: int, per_thread: bool) -> None:
        self.caller = threading.get_ident()
        self.meet = threading.Barrier(threads)
        self.shared: Dict[str, Any] = {}
        self.local: ThreadLocal[Dict[str, Any]] = ThreadLocal(dict)
        self.per_thread = per_thread

    def __call__(self, x: int) -> int:
        box = self.local.get() if self.per_thread else self.shared
        box["x"] = x  # write
        if threading.get_ident() != self.caller:
            self.meet.wait(10)  # every thread has written
            value = box["x"]  # read back
            self.meet.wait(10)  # every thread has read before anyone writes again
        else:
            value = box["x"]
        return value * 2


def test_hammer_catches_a_read_modify_write_race() -> None:
    unsafe = Scratch(THREADS, per_thread=False)
    with pytest.raises(AssertionError) as info:
        hammer(unsafe, INPUTS, threads=THREADS, repeat=3)
    message = str(info.value)
    first = message.splitlines()[0]
    # 8 threads x 8 inputs x 3 repeats; per round 7 of 8 threads read another's value
    assert "wrong result(s)" in first and "in 192 calls from 8 threads" in first
    wrong = int(first.split("): ", 1)[1].split(" wrong", 1)[0])
    assert wrong >= 7 * 24
    assert "at most 8 at once" in first
    assert "not safe to call from several threads at once" in first
    assert "wrong results:" in message and "on thread hammer-" in message
    assert "the serial run returned" in message and "... and" in message


def test_hammer_passes_the_same_function_with_per_thread_state() -> None:
    safe = Scratch(THREADS, per_thread=True)
    report = hammer(safe, INPUTS, threads=THREADS, repeat=3)
    assert isinstance(report, HammerReport)
    assert report.calls == THREADS * len(INPUTS) * 3
    assert report.serial_calls == len(INPUTS)
    assert report.threads == THREADS
    assert report.max_concurrency == THREADS  # the barrier holds all eight inside at once
    assert report.thread_violations == 0


def test_hammer_passes_a_function_behind_a_lock() -> None:
    state = Locked({"x": 0})

    def store_and_read(x: int) -> int:
        with state as box:
            box["x"] = x
            threading.Event().wait(0)
            return box["x"] * 2

    report = hammer(store_and_read, INPUTS, threads=4, repeat=5)
    assert report.calls == 4 * 8 * 5


def test_hammer_reports_exceptions_that_only_happen_concurrently() -> None:
    caller = threading.get_ident()
    meet = threading.Barrier(2)
    busy = threading.Lock()

    def exclusive() -> str:
        threaded = threading.get_ident() != caller
        if threaded:
            meet.wait(10)  # both threads arrive before either tries the lock
        got = busy.acquire(blocking=False)
        if threaded:
            meet.wait(10)  # both have tried while the winner still holds it
        if not got:
            raise RuntimeError("resource busy")
        busy.release()
        return "ok"

    with pytest.raises(AssertionError) as info:
        hammer(exclusive, threads=2, repeat=1)
    message = str(info.value)
    assert "1 unexpected exception(s)" in message
    assert "raised RuntimeError('resource busy'); the serial run returned 'ok'" in message


def test_hammer_expects_the_same_exception_as_the_serial_run() -> None:
    def picky(x: int) -> int:
        if x < 0:
            raise ValueError(f"negative: {x}")
        return x

    report = hammer(picky, [{"x": -1}, {"x": 2}], threads=4, repeat=2)
    assert report.calls == 16


def test_hammer_single_dict_no_args_and_custom_compare() -> None:
    assert hammer(lambda: 42, threads=3, repeat=2).calls == 6
    assert hammer(lambda text: text.upper(), {"text": "a"}, threads=2).calls == 20
    counter = iter(range(10**6))
    lock = threading.Lock()

    def ticket() -> int:
        with lock:
            return next(counter)

    with pytest.raises(AssertionError):
        hammer(ticket, threads=2, repeat=2)  # every ticket differs from the serial one
    report = hammer(ticket, threads=2, repeat=2, compare=lambda a, b: isinstance(b, int))
    assert report.calls == 4


def test_hammer_gives_each_call_its_own_arguments() -> None:
    def consume(items: List[int]) -> int:
        total = 0
        while items:
            total += items.pop()
        return total

    assert hammer(consume, {"items": [1, 2, 3]}, threads=4, repeat=3).calls == 12


def test_hammer_reports_a_deadlock() -> None:
    never = threading.Event()
    caller = threading.get_ident()

    def stuck() -> int:
        if threading.get_ident() != caller:
            never.wait(5)
        return 1

    try:
        with pytest.raises(AssertionError, match="still running after 0.2s"):
            hammer(stuck, threads=2, repeat=1, timeout=0.2)
    finally:
        never.set()


def test_hammer_counts_single_threaded_violations() -> None:
    threadsafe.enable_checks()
    try:
        caller = threading.get_ident()
        meet = threading.Barrier(2)

        @threadsafe.single_threaded
        def helper() -> int:
            if threading.get_ident() != caller:
                meet.wait(10)
            return 1
    finally:
        threadsafe.enable_checks(False)
    report = hammer(helper, threads=2, repeat=1)
    assert report.thread_violations == 1


def test_hammer_argument_errors() -> None:
    with pytest.raises(ValueError):
        hammer(lambda: 1, threads=0)
    with pytest.raises(ValueError):
        hammer(lambda: 1, repeat=0)
    with pytest.raises(ValueError):
        hammer(lambda: 1, [])
    with pytest.raises(TypeError):
        hammer(lambda: 1, [1])  # type: ignore[list-item]


# Under each interpreter of $SNAKEPIT_TEST_PYTHONS (free-threaded ones have
# no pytest): the same race caught, the safe versions passing.
_UNDER_EACH_PYTHON = r'''
import sys, threading
from snakepit import Locked, ThreadLocal, frozen
from snakepit.testing import hammer

caller = threading.get_ident()
meet = threading.Barrier(8)
shared = {}
local = ThreadLocal(dict)

def make(box_of):
    def fn(x):
        box = box_of()
        box["x"] = x
        if threading.get_ident() != caller:
            meet.wait(10)
            value = box["x"]
            meet.wait(10)
        else:
            value = box["x"]
        return value * 2
    return fn

inputs = [{"x": i} for i in range(8)]
try:
    hammer(make(lambda: shared), inputs, threads=8, repeat=3)
except AssertionError as exc:
    assert "168 wrong result(s)" in str(exc), str(exc)[:300]
else:
    raise SystemExit("the race was not caught")
report = hammer(make(local.get), inputs, threads=8, repeat=3)
assert (report.calls, report.max_concurrency) == (192, 8), report

total = Locked(0)
def bump(n):
    for _ in range(n):
        total.update(lambda v: v + 1)
    return n
hammer(bump, {"n": 500}, threads=8, repeat=2)
with total as value:
    assert value == 500 * (1 + 8 * 2), value
words = frozen({"w": [str(i) for i in range(100)]})
hammer(lambda: len(words["w"]), threads=8, repeat=20)
print("ok", sys.version.split()[0])
'''


@pytest.mark.parametrize("python", pythons_under_test())
def test_hammer_and_helpers_under_each_interpreter(python: str) -> None:
    env = dict(os.environ, PYTHONPATH=str(PY_ROOT))
    out = subprocess.run([python, "-c", _UNDER_EACH_PYTHON], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 0 and out.stdout.startswith("ok "), out.stdout + out.stderr
