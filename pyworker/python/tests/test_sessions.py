"""Sessions end to end (snakepit.sessions): EXECUTE ``session`` and REQUEST
``session_end`` on the native transport, ExecuteRequest.session_id and
EndSession on gRPC, against real workers; and the registry in-process."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from snakepit.adapter import LoadedAdapter
from snakepit.cancellation import CallContext
from snakepit.sessions import Session, SessionRegistry
from transports import Runtime, drain, start, transport, wait_until  # noqa: F401 - fixtures

Start = Callable[..., Runtime]


def events(worker: Runtime, event: Optional[str] = None) -> List[Dict[str, Any]]:
    return [e for e in worker.value("log") if event is None or e["event"] == event]


def test_start_hook_runs_once_and_state_persists(start: Start) -> None:
    worker = start("session_tools")
    assert worker.value("bump") == {"session": None}
    assert [worker.value("bump", session="s1")["n"] for _ in range(3)] == [1, 2, 3]
    assert worker.value("abump", session="s1")["n"] == 4  # async tools share it
    assert worker.value("bump", session="s2") == {"session": "s2", "n": 1, "calls": 1}
    assert worker.value("bump", session="s1")["calls"] == 5
    starts = events(worker, "start")
    assert [(e["id"], e["call"]) for e in starts] == [("s1", "bump"), ("s2", "bump")]
    # On the thread that ran the call, before the tool.
    assert all(e["thread"].startswith("snakepit-tool") and e["state"] == {} for e in starts)


def test_concurrent_first_calls_start_the_session_once(start: Start) -> None:
    worker = start("session_tools", capacity=4)
    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(lambda _: worker.value("bump", session="conc-1"), range(4)))
    assert sorted(r["n"] for r in got) == [1, 2, 3, 4]
    assert [e["id"] for e in events(worker, "start")] == ["conc-1"]


def test_end_hook_runs_before_the_reply(start: Start) -> None:
    worker = start("session_tools")
    worker.value("bump", session="slow-1")
    began = time.monotonic()
    assert worker.end_session("slow-1") == {"ended": True, "hook_error": ""}
    assert time.monotonic() - began >= 0.3  # the hook's sleep
    ends = events(worker, "end")
    assert [(e["id"], e["state"]) for e in ends] == [("slow-1", {"n": 1})]
    assert ends[0]["thread"].startswith("snakepit-tool")  # a tool thread, not the reader
    assert worker.end_session("slow-1") == {"ended": False, "hook_error": ""}
    assert worker.end_session("never-seen") == {"ended": False, "hook_error": ""}
    # The same id again is a new session: the start hook runs again.
    assert worker.value("bump", session="slow-1")["n"] == 1
    assert [e["id"] for e in events(worker, "start")] == ["slow-1", "slow-1"]


def test_end_waits_for_the_sessions_running_calls(start: Start, tmp_path: Path) -> None:
    worker = start("session_tools", capacity=2)
    gate = tmp_path / "go"
    call = worker.start_call("block_until", {"path": str(gate)}, session="busy")
    wait_until(lambda: worker.stats()["in_flight"] == 1)
    replies: List[Dict[str, Any]] = []
    ender = threading.Thread(target=lambda: replies.append(worker.end_session("busy")))
    ender.start()
    time.sleep(0.3)
    assert replies == [] and events(worker, "end") == []  # still running: not ended yet
    gate.touch()
    assert call.result() == ("ok", True)
    ender.join(10)
    assert replies == [{"ended": True, "hook_error": ""}]
    assert [e["id"] for e in events(worker, "end")] == ["busy"]


def test_start_hook_failure_fails_the_call_and_is_retried(start: Start) -> None:
    worker = start("session_tools")
    for _ in range(2):
        kind, error = worker.call("bump", session="bad-1")
        assert (kind, error["kind"], error["type"]) == (
            "error", "TOOL_EXCEPTION", "builtins.RuntimeError")
        assert "session 'bad-1': the session-start hook on_session_start raised" in error["message"]
        assert "cannot start bad-1" in error["message"]
        assert "the session was not started" in error["message"]
        assert "in on_session_start" in error["traceback"]
    assert [e["id"] for e in events(worker, "start")] == ["bad-1", "bad-1"]  # tried again
    assert worker.end_session("bad-1") == {"ended": False, "hook_error": ""}
    assert events(worker, "end") == []


def test_end_hook_failure_is_reported(start: Start) -> None:
    worker = start("session_tools")
    worker.value("bump", session="endfail-1")
    reply = worker.end_session("endfail-1")
    assert reply["ended"] is True
    assert "ValueError: end hook failed" in reply["hook_error"]
    assert "in on_session_end" in reply["hook_error"]


def test_async_hooks(start: Start) -> None:
    worker = start("session_tools:AsyncSessions")
    assert worker.value("bump", session="a1")["n"] == 1  # a sync call, an async hook
    assert worker.value("abump", session="a1")["n"] == 2
    assert worker.value("abump", session="a2")["n"] == 1  # an async call first
    starts = events(worker, "start")
    assert [e["id"] for e in starts] == ["a1", "a2"]
    assert all(e["task"] for e in starts)  # awaited on the event loop
    assert worker.end_session("a1") == {"ended": True, "hook_error": ""}
    ends = events(worker, "end")
    assert [(e["id"], e["state"]) for e in ends] == [("a1", {"n": 2})]
    assert ends[0]["task"]


def test_a_stream_in_a_session(start: Start) -> None:
    worker = start("session_tools")
    items, final = drain(worker.stream("gen", {"n": 3}, window=1, session="st"))
    assert (items, final) == ([{"i": i, "session": "st"} for i in range(3)], ("end", None))
    assert worker.value("bump", session="st")["n"] == 1  # the same session, started once
    assert [e["id"] for e in events(worker, "start")] == ["st"]
    assert worker.end_session("st")["ended"] is True


def test_shutdown_ends_open_sessions_before_close(start: Start, tmp_path: Path) -> None:
    log = tmp_path / "log.json"
    worker = start("session_tools:AsyncSessions", env={"SESSION_TOOLS_LOG": str(log)})
    worker.value("bump", session="open-1")
    worker.value("bump", session="open-2")
    assert worker.end_session("open-2")["ended"] is True
    worker.shutdown(grace_ms=2000)
    assert worker.process.wait_exit(timeout=15) == 0
    entries = json.loads(log.read_text())
    assert [(e["event"], e.get("id")) for e in entries] == [
        ("start", "open-1"), ("start", "open-2"), ("end", "open-2"), ("end", "open-1"),
        ("close", None)]


# --------------------------------------------------------------- in-process


def test_registry_ends_a_session_when_its_last_call_leaves() -> None:
    started: List[str] = []
    ended: List[str] = []
    adapter = LoadedAdapter(spec="x", tools={})

    class Hooks:
        def on_session_start(self, session: Session) -> None:
            started.append(session.id)

        def on_session_end(self, session: Session) -> None:
            ended.append(session.id)

    adapter.instance = Hooks()
    registry = SessionRegistry(adapter, run_blocking=lambda aw: None)
    first, second = registry.join("s"), registry.join("s")
    assert first is second and len(registry) == 1
    call = CallContext("r", "t")
    call.session = first
    assert registry.open_sync(call) is None and registry.open_sync(call) is None
    assert started == ["s"] and first.open and first.calls == 2
    ready: List[Optional[Session]] = []
    registry.request_end("s", ready.append)
    assert ready == [] and len(registry) == 0  # calls still running; a new call starts anew
    registry.leave(first)
    assert ready == []
    registry.leave(first)
    assert ready == [first]
    assert registry.end_sync(first) == "" and ended == ["s"] and first.state == {}
    registry.request_end("unknown", ready.append)
    assert ready[-1] is None
