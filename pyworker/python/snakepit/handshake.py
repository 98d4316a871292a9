"""The worker's stdout protocol: exactly one READY or BOOT-ERROR line.

* ``SNAKEPIT-READY {"protocol": 2, "pid": 123, "python": "3.11.2", "transport": "grpc"}``
  once the server listens; exit code is whatever shutdown gives (0).
* ``SNAKEPIT-BOOT-ERROR {"type": "...", "message": "...", "traceback": "..."}``
  when start-up fails; the process then exits with BOOT_ERROR_EXIT_CODE.

Each is one line of JSON (json.dumps never emits raw newlines).
"""

from __future__ import annotations

import json
import os
import platform
from typing import Optional, TextIO

from snakepit.codec import format_traceback, qualified_name

READY_PREFIX = "SNAKEPIT-READY "
BOOT_ERROR_PREFIX = "SNAKEPIT-BOOT-ERROR "
#: EX_CONFIG: the adapter (or the worker's configuration) cannot start.
BOOT_ERROR_EXIT_CODE = 78
#: EX_SOFTWARE: --watch-stdin saw EOF, the parent is gone.
PARENT_GONE_EXIT_CODE = 70

class BootError(Exception):
    """The worker's own configuration (not the adapter) is unusable."""


# Keep the BOOT-ERROR line well under the 64 KiB the Go side reads per line.
_MAX_MESSAGE_CHARS = 8 * 1024
_MAX_TRACEBACK_CHARS = 40 * 1024


def _cut(text: str, limit: int, keep_end: bool) -> str:
    if len(text) <= limit:
        return text
    marker = f"... ({len(text) - limit} characters cut) ..."
    return marker + "\n" + text[-limit:] if keep_end else text[:limit] + marker


def ready_line(transport: str, protocol: int, pid: Optional[int] = None) -> str:
    payload = {
        "protocol": protocol,
        "pid": os.getpid() if pid is None else pid,
        "python": platform.python_version(),
        "transport": transport,
    }
    return READY_PREFIX + json.dumps(payload) + "\n"


def boot_error_line(exc: BaseException) -> str:
    try:
        message = str(exc)
    except Exception:
        message = f"<unprintable {type(exc).__name__} object>"
    payload = {
        "type": qualified_name(type(exc)),
        "message": _cut(message, _MAX_MESSAGE_CHARS, keep_end=False),
        # The end of a traceback (the failing line, the exception) matters most.
        "traceback": _cut(format_traceback(exc), _MAX_TRACEBACK_CHARS, keep_end=True),
    }
    return BOOT_ERROR_PREFIX + json.dumps(payload) + "\n"


def emit(line: str, stream: TextIO) -> None:
    """Write one protocol line and flush it."""
    stream.write(line)
    stream.flush()
