"""An adapter whose import writes to fd 1 directly, without a newline, as a
C library's banner does (``--adapter raw_banner``)."""

import os
from typing import Any

import snakepit

os.write(1, b"C-LIB BANNER v1.0")


@snakepit.tool
def echo(value: Any = None) -> Any:
    """Return ``value`` unchanged."""
    return value
