"""snakepit.core and what it draws on (snakepit.accounting, snakepit.config,
snakepit.payloads): what both servers share (no sockets, no grpc)."""

from __future__ import annotations

import os
import platform
import sys
import sysconfig
import threading
import time

import pytest

from snakepit.accounting import Counters, ShutdownState
from snakepit.adapter import load_adapter
from snakepit.config import DEFAULT_MAX_MESSAGE_BYTES, max_message_bytes_from_env, profile_name
from snakepit.core import token_matches
from snakepit.payloads import describe_payload, health_payload, stats_payload


def test_counters() -> None:
    counters = Counters()
    counters.start()
    counters.start()
    assert counters.snapshot() == (2, 0)
    counters.finish()
    counters.count_served()
    assert counters.snapshot() == (1, 2)
    assert counters.in_flight == 1


def test_max_in_flight_counts_running_tools_only() -> None:
    counters = Counters()
    for _ in range(3):
        counters.start()  # three calls accepted...
    counters.begin_run()  # ...one runs at a time
    counters.finish_run()
    counters.begin_run()
    counters.end_run()
    counters.finish()
    counters.finish()  # never ran (cancelled while queued)
    assert counters.max_in_flight == 1
    assert counters.snapshot() == (0, 3)
    counters.begin_run()
    counters.begin_run()
    assert counters.max_in_flight == 2


def test_profile_name() -> None:
    assert profile_name(1) == "process"
    assert profile_name(4) == "thread"


def test_wait_idle_returns_when_the_last_call_finishes() -> None:
    counters = Counters()
    counters.start()
    result = []
    waiter = threading.Thread(
        target=lambda: result.append(counters.wait_idle(lambda: time.monotonic() + 30)))
    waiter.start()
    counters.finish()
    waiter.join(10)
    assert result == [0]


def test_wait_idle_gives_up_at_the_deadline_and_rereads_it() -> None:
    counters = Counters()
    counters.start()
    assert counters.wait_idle(lambda: time.monotonic() - 1) == 1
    deadline = [time.monotonic() + 60]
    result = []
    waiter = threading.Thread(target=lambda: result.append(counters.wait_idle(lambda: deadline[0])))
    waiter.start()
    deadline[0] = time.monotonic()  # shortened...
    counters.wake()  # ...and the waiter told
    waiter.join(10)
    assert result == [1]


def test_shutdown_state_only_shortens() -> None:
    state = ShutdownState()
    assert not state.requested
    assert state.request(60.0) is True
    first = state.deadline()
    assert state.requested
    assert state.request(120.0) is False
    assert state.deadline() == first
    assert state.request(-5) is False  # negative grace: now
    assert state.deadline() <= time.monotonic()


def test_token_matches() -> None:
    assert token_matches("abc", b"abc")
    assert token_matches(b"abc", b"abc")
    assert not token_matches("abd", b"abc")
    assert not token_matches("", b"abc")
    assert not token_matches(None, b"abc")
    assert not token_matches(123, b"abc")  # type: ignore[arg-type]
    assert not token_matches("\udcff", b"abc")  # not encodable


def test_payloads() -> None:
    free_threaded = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
    gil_on = getattr(sys, "_is_gil_enabled", lambda: True)()
    assert health_payload(True) == {
        "ok": True, "protocol_version": 2, "pid": os.getpid(),
        "gil_enabled": gil_on, "gil_enabled_by": "", "gil_enabled_when": "",
        "free_threaded_build": free_threaded,
    }
    counters = Counters()
    stats = stats_payload(counters, 3, time.monotonic() - 2)
    assert stats["capacity"] == 3 and stats["in_flight"] == 0
    assert (stats["max_in_flight"], stats["profile"]) == (0, "thread")
    assert stats["python_version"] == platform.python_version()
    assert stats["uptime_seconds"] >= 2
    assert (stats["gil_enabled_by"], stats["gil_enabled_when"]) == ("", "")
    described = describe_payload(load_adapter("examples.textstats"))
    assert described["adapter"] == "examples.textstats"
    assert [t["name"] for t in described["tools"]] == sorted(t["name"] for t in described["tools"])


def test_max_message_bytes_from_env() -> None:
    assert max_message_bytes_from_env({}) == DEFAULT_MAX_MESSAGE_BYTES
    assert max_message_bytes_from_env({"SNAKEPIT_MAX_MESSAGE_BYTES": " 1000 "}) == 1000
    for bad in ("x", "0", "-1"):
        with pytest.raises(ValueError, match="SNAKEPIT_MAX_MESSAGE_BYTES"):
            max_message_bytes_from_env({"SNAKEPIT_MAX_MESSAGE_BYTES": bad})


def test_stats_profile_comes_from_the_flag() -> None:
    counters = Counters()
    assert stats_payload(counters, 1, time.monotonic(), "thread")["profile"] == "thread"
    assert stats_payload(counters, 4, time.monotonic(), "process")["profile"] == "process"
    assert stats_payload(counters, 1, time.monotonic())["profile"] == "process"


def test_worker_profile_options() -> None:
    from snakepit.handshake import BootError
    from snakepit.worker import check_profile, parse_args, thread_safety_required

    base = ["--adapter", "m", "--socket", "/tmp/x.sock"]
    options = parse_args(base)
    assert (options.profile, options.profile_given, options.thread_checks) == (
        "process", False, False)
    assert thread_safety_required(options) is None
    options = parse_args(base + ["--capacity", "4"])
    assert (options.profile, options.profile_given) == ("thread", False)
    assert thread_safety_required(options) is None  # no --profile: nobody is asked
    options = parse_args(base + ["--capacity", "4", "--profile", "thread", "--thread-checks"])
    assert (options.profile, options.profile_given, options.thread_checks) == (
        "thread", True, True)
    assert thread_safety_required(options) == 4
    check_profile(options)
    check_profile(parse_args(base + ["--profile", "process"]))
    with pytest.raises(BootError, match="--profile process runs one call at a time"):
        check_profile(parse_args(base + ["--profile", "process", "--capacity", "2"]))
    with pytest.raises(SystemExit):
        parse_args(base + ["--profile", "auto"])


def test_worker_host_options() -> None:
    """--host-pid / --host-start name the Go host for its orphan sweep; the
    worker accepts them (0 when absent) and refuses nonsense."""
    from snakepit.worker import parse_args

    base = ["--adapter", "m", "--socket", "/tmp/x.sock"]
    options = parse_args(base)
    assert (options.host_pid, options.host_start) == (0, 0)
    options = parse_args(base + ["--host-pid", "4242", "--host-start", "987654321"])
    assert (options.host_pid, options.host_start) == (4242, 987654321)
    options = parse_args(base + ["--host-pid=7", "--host-start=8"])
    assert (options.host_pid, options.host_start) == (7, 8)
    for bad in (["--host-pid", "-1"], ["--host-pid", "x"], ["--host-start", "1.5"]):
        with pytest.raises(SystemExit):
            parse_args(base + bad)
