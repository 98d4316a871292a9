"""SIGTERM and SIGINT for the native server, outside Python signal handlers
(standard library only).

The work is not done in a Python signal handler: that runs in the main
thread between two bytecodes, perhaps in the middle of a write to stderr
(logging from it fails: "reentrant call") or holding a lock it would need.
Instead the C-level handler writes the signal number to a pipe
(signal.set_wakeup_fd) and the ``snakepit-signals`` thread reads it and
calls back. This also works when the kernel delivers the signal to another
thread than the main one.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from types import FrameType
from typing import Callable, Optional

logger = logging.getLogger(__name__)

#: The signals that stop the worker.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class SignalWatcher:
    """Calls ``on_signal(signal)`` in its own thread for each SIGTERM / SIGINT."""

    def __init__(self, on_signal: Callable[[signal.Signals], None]) -> None:
        self._on_signal = on_signal
        self._write_fd = -1
        #: The ``snakepit-signals`` thread, once installed.
        self.thread: Optional[threading.Thread] = None

    def install(self) -> bool:
        """Take over SIGTERM and SIGINT. Main thread only: elsewhere (False)
        they keep their default action."""
        read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)
        try:
            signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        except ValueError:  # not the main thread
            os.close(read_fd)
            os.close(write_fd)
            logger.debug("not the main thread: SIGTERM / SIGINT keep their default action")
            return False
        for signum in STOP_SIGNALS:
            signal.signal(signum, _note_signal)
        self._write_fd = write_fd
        self.thread = threading.Thread(
            target=self._watch, args=(read_fd,), name="snakepit-signals", daemon=True
        )
        self.thread.start()
        return True

    def _watch(self, read_fd: int) -> None:
        try:
            while True:
                data = os.read(read_fd, 64)
                if not data:
                    return  # close() closed the write end
                for signum in data:
                    if signum in STOP_SIGNALS:
                        self._on_signal(signal.Signals(signum))
        except OSError as exc:
            logger.error("cannot read signals any more: %s", exc)
        finally:
            os.close(read_fd)

    def close(self) -> None:
        """Stop watching (further SIGTERM / SIGINT are ignored); the thread
        then ends. Main thread."""
        if self._write_fd < 0:
            return
        try:
            signal.set_wakeup_fd(-1)
        except ValueError:
            pass
        os.close(self._write_fd)
        self._write_fd = -1


def _note_signal(signum: int, frame: Optional[FrameType]) -> None:
    """The Python-level handler: nothing to do here (the watcher thread acts)."""
