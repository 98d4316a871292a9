"""The worker's handshake: exactly one READY or BOOT-ERROR line.

The line goes to the descriptor named by ``--handshake-fd`` (a pipe the Go
runtime passes as fd 3), which the worker makes non-inheritable at once and
closes after the line; then stdout is only the adapter's and the tools' own
output, whatever they wrote before. Without ``--handshake-fd`` the line goes
to stdout (for manual runs and the Python tests).

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
import stat
import sys
from typing import Optional, TextIO, Tuple

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


class HandshakeChannel:
    """Where the worker's one protocol line goes: the ``--handshake-fd``
    pipe, or stdout when there is none. ``send`` may be called once."""

    def __init__(self, fd: Optional[int], identity: Optional[Tuple[int, int]] = None) -> None:
        self._fd = fd
        self._identity = identity
        self._sent = False

    @classmethod
    def open(cls, fd: Optional[int]) -> "HandshakeChannel":
        """Take over ``fd``: make it non-inheritable at once, so that no
        process the adapter or a tool starts holds it, and remember which
        pipe it is. Raises BootError when it is not an open pipe."""
        if fd is None:
            return cls(None)
        try:
            os.set_inheritable(fd, False)
            st = os.fstat(fd)
        except OSError as exc:
            raise BootError(
                f"--handshake-fd {fd} is not an open descriptor ({exc.strerror}): "
                "start the worker with that descriptor open, or without the flag"
            ) from None
        if not stat.S_ISFIFO(st.st_mode):
            raise BootError(f"--handshake-fd {fd} is not a pipe: pass the write end of a pipe")
        return cls(fd, (st.st_dev, st.st_ino))

    def send(self, line: str) -> None:
        """Write ``line`` and close the descriptor. Raises OSError (e.g. the
        adapter closed the descriptor, or it now names another file)."""
        if self._sent:
            raise RuntimeError("the handshake line was already sent")
        self._sent = True
        if self._fd is None:
            emit(line, sys.stdout)
            return
        fd, self._fd = self._fd, None
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != self._identity:
            raise OSError(f"descriptor {fd} is no longer the handshake pipe (the adapter closed it)")
        try:
            data = line.encode("utf-8")
            while data:
                data = data[os.write(fd, data):]
        finally:
            os.close(fd)
