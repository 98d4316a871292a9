"""Test-only class adapters, declared thread-safe or not."""

from __future__ import annotations

import sys

import snakepit


class _Tools:
    def __init__(self) -> None:
        # Proves (or disproves) that the class was instantiated.
        print(f"INSTANTIATED {type(self).__name__}", file=sys.stderr, flush=True)

    @snakepit.tool
    def name(self) -> str:
        return type(self).__name__


class Undeclared(_Tools, snakepit.Adapter):
    pass


class Declared(_Tools, snakepit.ThreadSafeAdapter):
    pass


class DeclaredByAttribute(_Tools):
    __snakepit_thread_safe__ = True


class Withdrawn(_Tools, snakepit.ThreadSafeAdapter):
    __snakepit_thread_safe__ = False


class NotTrue(_Tools):
    __snakepit_thread_safe__ = "yes"  # only True declares
