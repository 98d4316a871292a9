"""Streaming calls end to end (snakepit.streams): native EXECUTE with
``stream`` / CHUNK / CREDIT / CANCEL, and gRPC ExecuteStream, against real
workers. The test plays the runtime: it grants credit and cancels."""

from __future__ import annotations

import os
import struct
import time
from pathlib import Path
from typing import Callable, List

import pytest

from native_client import CREDIT, EXECUTE, encode_frame, execute_body
from transports import Runtime, drain, start, transport, wait_until  # noqa: F401 - fixtures

Start = Callable[..., Runtime]


def marker_lines(path: Path) -> List[str]:
    return path.read_text().splitlines() if path.exists() else []


# ----------------------------------------------------------------- delivery


def test_stream_in_order_within_the_window(start: Start) -> None:
    worker = start("stream_tools")
    stream = worker.stream("count_window", {"n": 200}, window=4)
    items, final = drain(stream)
    assert final == ("end", None)
    assert [item["i"] for item in items] == list(range(200))
    # While item i was made, at most window - 1 chunks were unconsumed.
    assert max(item["in_flight"] for item in items) <= 3
    items, final = drain(worker.stream("count", {"n": 5, "start": 7}, window=1))
    assert (items, final) == ([7, 8, 9, 10, 11], ("end", None))
    stats = worker.stats()
    assert stats["in_flight"] == 0 and stats["requests_served"] >= 2


def test_producer_is_not_asked_while_credit_is_spent(start: Start) -> None:
    worker = start("stream_tools")
    stream = worker.stream("produce", {"key": "p"}, window=3)
    assert [stream.next() for _ in range(3)] == [("chunk", 0), ("chunk", 1), ("chunk", 2)]
    stream.quiet(0.3)  # no fourth chunk without credit...
    assert worker.value("record", {"key": "p"})["produced"] == 3  # ...nor a fourth item
    assert worker.stats()["in_flight"] == 1  # the stream counts as a call in flight
    stream.credit(2)
    assert [stream.next() for _ in range(2)] == [("chunk", 3), ("chunk", 4)]
    stream.quiet(0.2)
    assert worker.value("record", {"key": "p"})["produced"] == 5
    stream.cancel()
    kind, error = stream.next()
    assert (kind, error["kind"]) == ("error", "CANCELLED")
    record = worker.value("record", {"key": "p"})
    assert record["finally"]["thread"] == record["thread"]  # closed on its own thread
    assert record["thread"].startswith("snakepit-tool")
    wait_until(lambda: worker.stats()["in_flight"] == 0)


def test_async_generator_stream(start: Start) -> None:
    worker = start("stream_tools")
    items, final = drain(worker.stream("aproduce", {"key": "a", "n": 50}, window=2))
    assert (items, final) == (list(range(50)), ("end", None))
    stream = worker.stream("aproduce", {"key": "b"}, window=2)
    assert [stream.next(), stream.next()] == [("chunk", 0), ("chunk", 1)]
    stream.quiet(0.3)
    assert worker.value("record", {"key": "b"})["produced"] == 2
    stream.credit(1)
    assert stream.next() == ("chunk", 2)
    stream.cancel()
    kind, error = stream.next()
    assert (kind, error["kind"]) == ("error", "CANCELLED")
    record = worker.value("record", {"key": "b"})
    # Closed in the task that ran it, on the loop's thread.
    assert record["finally"]["task"] == record["task"] and record["task"]
    assert record["finally"]["thread"] == record["thread"]


def test_plain_tools_send_one_chunk(start: Start) -> None:
    worker = start("stream_tools")
    assert drain(worker.stream("echo", {"value": {"a": [1, 2]}}, window=1)) == (
        [{"a": [1, 2]}], ("end", None))
    assert drain(worker.stream("asleep", {"seconds": 0}, window=3)) == ([0], ("end", None))
    data = os.urandom(100_000)
    if worker.transport == "native":
        stream = worker.stream("echo_bytes", {}, window=1, binary={"data": data})
        assert drain(stream) == ([data], ("end", None))
    assert drain(worker.stream("raw_chunks", {"n": 3}, window=2)) == (
        [b"\x00" * 3, b"\x01" * 3, b"\x02" * 3], ("end", None))


# -------------------------------------------------------------------- errors


def test_error_after_chunks(start: Start) -> None:
    worker = start("stream_tools")
    items, (kind, error) = drain(worker.stream("fail_after", {"n": 3}, window=2))
    assert items == [0, 1, 2] and kind == "error"
    assert error["kind"] == "TOOL_EXCEPTION"
    assert (error["type"], error["message"]) == ("builtins.ValueError", "boom after 3")
    assert "in fail_after" in error["traceback"] and "snakepit/streams.py" not in error["traceback"]
    items, (kind, error) = drain(worker.stream("unencodable_after", {"n": 2}, window=5))
    assert items == [0, 1] and error["kind"] == "UNENCODABLE_RESULT"
    assert "tool 'unencodable_after' yielded a value of type object" in error["message"]
    assert worker.stats()["in_flight"] == 0


def test_chunk_over_the_message_limit(start: Start) -> None:
    worker = start("stream_tools", env={"SNAKEPIT_MAX_MESSAGE_BYTES": "4096"})
    items, (kind, error) = drain(worker.stream("big_after", {"n": 1, "size": 5000}, window=2))
    assert items == [0] and error["kind"] == "TOO_LARGE"
    assert "yielded an item of 5000 bytes" in error["message"]
    assert drain(worker.stream("big_after", {"n": 0, "size": 4000}, window=1))[1] == ("end", None)


def test_refused_streams(start: Start) -> None:
    worker = start("stream_tools")
    kind, error = worker.call("count", {"n": 2})  # a generator tool needs a stream
    assert (kind, error["kind"]) == ("error", "BAD_ARGUMENTS")
    assert "is a generator function (a streaming tool): call it as a stream" in error["message"]
    kind, error = worker.stream("count", {"n": 2}, window=0).next()
    assert (kind, error["kind"]) == ("error", "BAD_ARGUMENTS")
    assert "window" in error["message"]
    kind, error = worker.stream("count", {"m": 2}, window=2).next()
    assert (kind, error["kind"]) == ("error", "BAD_ARGUMENTS")
    kind, error = worker.stream("nope", {}, window=2).next()
    assert (kind, error["kind"]) == ("error", "UNKNOWN_TOOL")
    kind, error = worker.stream("count", {"n": 2}, window=2,
                                deadline_ns=time.time_ns() - 1_000_000).next()
    assert (kind, error["kind"]) == ("error", "DEADLINE_EXCEEDED")


def test_native_bad_stream_frames(start: Start) -> None:
    worker = start("stream_tools")
    if worker.transport != "native":
        pytest.skip("native frames")
    with worker.process.connect() as c:
        c.send_frame(EXECUTE, 1, execute_body("count", {"n": 1}, window="2"))
        assert "'stream' must be an integer" in c.expect_protocol_error()
    with worker.process.connect() as c:
        c.send_frame(EXECUTE, 1, execute_body("count", {"n": 1}, window=-1))
        assert c.wait(1).kind == "BAD_ARGUMENTS"
        c.wait(c.start("echo", {"value": 1}))
        c.send_frame(CREDIT, 5, struct.pack(">I", 1))  # no call on stream 5: ignored
        assert c.value("echo", {"value": 2}) == 2
        c.send_frame(CREDIT, 1, struct.pack(">I", 0))
        assert "CREDIT of 0 chunks" in c.expect_protocol_error()
    with worker.process.connect() as c:
        c.send_raw(encode_frame(EXECUTE, 1, execute_body("produce", {"key": "x"}, window=1)))
        assert c.next_on(1).type == 10
        c.send_frame(CREDIT, 1, b"\x00\x01")
        assert "4-byte count" in c.expect_protocol_error()


# -------------------------------------------------------------- cancellation


def test_cancel_closes_the_generator_on_its_thread_before_the_ack(start: Start,
                                                                  tmp_path: Path) -> None:
    worker = start("stream_tools")
    marker = tmp_path / "finally"
    stream = worker.stream("guarded", {"n": 1000, "marker": str(marker)}, window=2)
    assert [stream.next(), stream.next()] == [("chunk", 0), ("chunk", 1)]
    assert marker_lines(marker) == []
    stream.cancel()
    kind, error = stream.next()
    assert (kind, error["kind"]) == ("error", "CANCELLED")
    # The finally ran before the acknowledgement, on a tool thread.
    lines = marker_lines(marker)
    assert len(lines) == 1 and lines[0].startswith("finally thread=snakepit-tool"), lines
    assert lines[0].endswith("yielded=2")


def test_cancel_closes_an_async_generator_in_its_task(start: Start, tmp_path: Path) -> None:
    worker = start("stream_tools")
    marker = tmp_path / "finally"
    stream = worker.stream("aguarded", {"n": 1000, "marker": str(marker)}, window=3)
    assert [stream.next()[1] for _ in range(3)] == [0, 1, 2]
    stream.cancel()
    kind, error = stream.next()
    assert (kind, error["kind"]) == ("error", "CANCELLED")
    lines = marker_lines(marker)
    assert len(lines) == 1 and lines[0].startswith("finally task=") and "yielded=" in lines[0]


def test_cancel_a_generator_busy_computing(start: Start) -> None:
    worker = start("stream_tools")
    stream = worker.stream("spin", {"key": "s"}, window=4)
    assert stream.next() == ("chunk", "started")
    time.sleep(0.05)
    stream.cancel()
    kind, error = stream.next()
    assert (kind, error["kind"]) == ("error", "CANCELLED")
    assert error["type"] == "snakepit.cancellation.Cancelled"
    record = worker.value("record", {"key": "s"})
    assert record["finally"]["thread"] == record["thread"]


def test_deadline_closes_a_waiting_generator(start: Start, tmp_path: Path) -> None:
    worker = start("stream_tools")
    marker = tmp_path / "finally"
    stream = worker.stream("guarded", {"n": 1000, "marker": str(marker)}, window=1,
                           deadline_ns=time.time_ns() + 300_000_000)
    assert stream.next() == ("chunk", 0)
    kind, error = stream.next()  # no credit: the deadline ends it
    assert (kind, error["kind"]) == ("error", "DEADLINE_EXCEEDED")
    assert len(marker_lines(marker)) == 1
    stream = worker.stream("spin", {"key": "d"}, window=2, deadline_ns=time.time_ns() + 200_000_000)
    assert stream.next() == ("chunk", "started")
    kind, error = stream.next()
    assert (kind, error["kind"]) == ("error", "DEADLINE_EXCEEDED")


@pytest.mark.parametrize("tool", ["guarded", "aguarded"])
def test_closed_connection_frees_a_full_window(start: Start, tmp_path: Path, tool: str) -> None:
    worker = start("stream_tools", capacity=1)
    before = worker.value("threads")["active"]
    marker = tmp_path / "finally"
    stream = worker.stream(tool, {"n": 1000, "marker": str(marker)}, window=1)
    assert stream.next() == ("chunk", 0)
    stream.quiet(0.1)  # blocked for credit; with capacity 1 it holds the only thread
    stream.abandon()
    wait_until(lambda: len(marker_lines(marker)) == 1)
    wait_until(lambda: worker.stats()["in_flight"] == 0)
    assert worker.value("threads")["active"] == before  # no thread leaked or stuck
    assert worker.value("echo", {"value": "free"}) == "free"


def test_shutdown_frees_a_full_window(start: Start, tmp_path: Path) -> None:
    worker = start("stream_tools", capacity=1)
    marker = tmp_path / "finally"
    stream = worker.stream("guarded", {"n": 1000, "marker": str(marker)}, window=1)
    assert stream.next() == ("chunk", 0)
    assert worker.stats()["in_flight"] == 1
    worker.shutdown(grace_ms=200)
    assert worker.process.wait_exit(timeout=10) == 0
    assert len(marker_lines(marker)) == 1  # the generator was closed before the exit
