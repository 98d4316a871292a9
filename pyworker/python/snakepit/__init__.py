"""Snakepit for Go: the Python side.

Adapter authors only need :func:`tool` and, optionally, :class:`Adapter`::

    import snakepit

    @snakepit.tool
    def word_count(text: str) -> int:
        return len(text.split())

Importing this package does not import grpc. The worker is
``python -m snakepit.worker`` (``snakepit.worker``); its default transport,
``snakepit.native_server`` (frames of ``snakepit.wire``), needs only the
standard library; the gRPC one is ``snakepit.server``.
"""

from snakepit.adapter import Adapter
from snakepit.decorator import tool

__version__ = "0.1.0"

#: Version of the Go <-> Python wire protocol this package speaks.
PROTOCOL_VERSION = 1

__all__ = ["Adapter", "PROTOCOL_VERSION", "__version__", "tool"]
