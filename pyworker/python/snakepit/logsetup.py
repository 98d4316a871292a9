"""Logging for the worker process: plain lines on stderr.

Format: ``LEVEL logger.name: message``. Continuation lines of a multi-line
record (tracebacks, multi-line messages) are indented by four spaces so the
Go side can attach them to the line that carries the level.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Optional, TextIO

LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"
CONTINUATION_INDENT = "    "
LEVEL_ENV = "SNAKEPIT_LOG_LEVEL"


class IndentingFormatter(logging.Formatter):
    """A Formatter that indents every continuation line of a record."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        lines = text.replace("\r\n", "\n").replace("\r", "\n").rstrip("\n").split("\n")
        return ("\n" + CONTINUATION_INDENT).join(lines)


def parse_level(value: Optional[str]) -> Optional[int]:
    """A logging level from a name ("debug", "WARNING") or a number; None if invalid."""
    if value is None or not value.strip():
        return logging.INFO
    text = value.strip()
    if text.isdigit():
        return int(text)
    level = logging.getLevelName(text.upper())
    return level if isinstance(level, int) else None


def configure_logging(stream: Optional[TextIO] = None) -> None:
    """Send the root logger to stderr at ``$SNAKEPIT_LOG_LEVEL`` (default INFO)
    and route ``warnings`` into logging."""
    raw = os.environ.get(LEVEL_ENV)
    level = parse_level(raw)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(IndentingFormatter(LOG_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level if level is not None else logging.INFO)
    logging.captureWarnings(True)
    if level is None:
        logging.getLogger(__name__).warning(
            "ignoring %s=%r: not a logging level; using INFO", LEVEL_ENV, raw
        )
