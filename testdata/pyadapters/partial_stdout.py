"""An adapter that leaves stdout in the middle of a line while it imports,
as progress output does (``print(..., end="")``): the handshake must not
care (``--adapter partial_stdout``)."""

from typing import Any

import snakepit

print("loading...", end="", flush=True)


@snakepit.tool
def echo(value: Any = None) -> Any:
    """Return ``value`` unchanged."""
    return value
