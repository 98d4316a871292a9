"""The tool threads of the native transport (standard library only):
``capacity`` daemon threads fed by one FIFO queue. A ThreadPoolExecutor
costs several microseconds more per call."""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any, Callable

logger = logging.getLogger(__name__)


class ToolThreads:
    """``size`` daemon threads running ``handler(item)`` for each queued
    tuple, FIFO; a queued callable (a session's end hook) is called instead."""

    def __init__(self, size: int, handler: Callable[[Any], None], name: str = "snakepit-tool") -> None:
        self._queue: "queue.SimpleQueue[Any]" = queue.SimpleQueue()
        self.put = self._queue.put
        self._handler = handler
        #: True once stop() was called.
        self.stopping = False
        self.threads = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
            for i in range(size)
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def _work(self) -> None:
        get, handler = self._queue.get, self._handler
        while True:
            item = get()
            if item is None or self.stopping:
                return
            try:
                if type(item) is tuple:
                    handler(item)
                else:
                    item()
            except BaseException:  # the handler answers its call itself; this is a bug
                logger.exception("internal error in a tool thread")

    def stop(self) -> None:
        """Let every thread end once its current item is done; queued items are dropped."""
        self.stopping = True
        for _ in self.threads:
            self._queue.put(None)
