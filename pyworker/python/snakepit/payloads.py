"""The Health / Stats / Describe answers as plain dicts with the field names
of worker.proto (standard library only). The gRPC server turns them into
protobuf messages (snakepit.grpc_messages); the native one sends them as
JSON."""

from __future__ import annotations

import inspect
import os
import platform
import sys
import time
from typing import Any, Dict, Optional

from snakepit import PROTOCOL_VERSION, gil
from snakepit.accounting import Counters
from snakepit.adapter import LoadedAdapter, Tool
from snakepit.config import profile_name
from snakepit.introspect import describe_params


def rss_bytes() -> int:
    """Resident set size from /proc/self/statm; 0 where unreadable."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            resident_pages = int(statm.read().split()[1])
        return resident_pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def health_payload(ok: bool) -> Dict[str, Any]:
    """The HealthReply fields as a dict: ``gil_enabled`` (now),
    ``free_threaded_build`` and, on a free-threaded build whose GIL got
    switched on, ``gil_enabled_by`` (the module) and ``gil_enabled_when``
    ("adapter import", "first call of tool NAME", ...; snakepit.gil)."""
    payload: Dict[str, Any] = {"ok": ok, "protocol_version": PROTOCOL_VERSION, "pid": os.getpid()}
    payload.update(gil.report())
    return payload


def stats_payload(
    counters: Counters, capacity: int, started_monotonic: float, profile: Optional[str] = None
) -> Dict[str, Any]:
    """The StatsReply fields as a dict. ``profile``: the worker's ``--profile``
    (None: what profile_name() derives from the capacity)."""
    in_flight, served = counters.snapshot()
    return {
        "pid": os.getpid(),
        "python_version": platform.python_version(),
        "implementation": platform.python_implementation(),
        "in_flight": in_flight,
        "requests_served": served,
        "free_threaded_build": gil.free_threaded_build(),
        "gil_enabled": gil.gil_enabled(),
        "capacity": capacity,
        "rss_bytes": rss_bytes(),
        "uptime_seconds": time.monotonic() - started_monotonic,
        "max_in_flight": counters.max_in_flight,
        "profile": profile or profile_name(capacity),
        "thread_violations": thread_violations(),
        "gil_enabled_by": gil.enabled_by(),
        "gil_enabled_when": gil.enabled_when(),
    }


def thread_violations() -> int:
    """Concurrent entries into @snakepit.single_threaded functions (0 unless
    the thread checks are on; snakepit.threadsafe is not imported for this)."""
    module = sys.modules.get("snakepit.threadsafe")
    if module is None:
        return 0
    count: int = module.violation_count()
    return count


def tool_doc(tool: Tool) -> str:
    try:
        return inspect.getdoc(tool.func) or ""
    except Exception:
        return ""


def tool_payload(tool: Tool) -> Dict[str, Any]:
    """One ToolInfo as a dict, plus ``is_generator`` (a streaming tool),
    which the native describe carries and ToolInfo has no field for."""
    return {
        "name": tool.name,
        "doc": tool_doc(tool),
        "is_async": tool.is_async,
        "is_generator": tool.is_generator,
        "params": [
            {
                "name": p.name,
                "annotation": p.annotation,
                "required": p.required,
                "default_json": p.default_json,
                "kind": p.kind,
            }
            for p in describe_params(tool.signature)
        ],
    }


def describe_payload(adapter: LoadedAdapter) -> Dict[str, Any]:
    """The DescribeReply as a dict: tools sorted by name."""
    return {
        "adapter": adapter.spec,
        "tools": [tool_payload(adapter.tools[name]) for name in adapter.tool_names()],
    }
