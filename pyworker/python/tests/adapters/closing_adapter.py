"""A class adapter whose close() leaves a trace on stderr (test-only)."""

from __future__ import annotations

import sys

import snakepit


class Closing(snakepit.Adapter):
    @snakepit.tool
    def ping(self) -> str:
        return "pong"

    def close(self) -> None:
        print("closing_adapter: close() called", file=sys.stderr, flush=True)
