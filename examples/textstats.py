"""Text statistics: a module adapter (``--adapter examples.textstats``).

Every module-level function marked with ``@snakepit.tool`` is a tool.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from typing import Iterator, List

import snakepit

# Every tool here is a pure function of its arguments: safe to run on many
# threads at once, so the module may serve a "thread"-profile pool.
__snakepit_thread_safe__ = True

_WORD = re.compile(r"[\w']+")


def _words(text: str) -> List[str]:
    return [w.lower() for w in _WORD.findall(text)]


@snakepit.tool
def word_count(text: str) -> int:
    """Count the whitespace-separated words in ``text``."""
    return len(text.split())


@snakepit.tool
def char_count(text: str) -> int:
    """Count the characters (Unicode code points) in ``text``."""
    return len(text)


@snakepit.tool
def top_words(text: str, n: int = 3) -> list:
    """The ``n`` most frequent words (case-folded) as ``[word, count]`` pairs,
    most frequent first, ties in order of first appearance."""
    return [[word, count] for word, count in Counter(_words(text)).most_common(n)]


@snakepit.tool
def reverse_bytes(data: bytes) -> bytes:
    """Return ``data`` reversed; bytes travel raw in both directions."""
    return bytes(reversed(data))


@snakepit.tool
def fail(message: str = "boom") -> None:
    """Always raise ``ValueError(message)`` (to see how errors come back)."""
    raise ValueError(message)


@snakepit.tool
async def slow_word_count(text: str, delay: float = 0.1) -> int:
    """Like ``word_count`` but waits ``delay`` seconds first, without blocking
    the worker (an ``async`` tool runs on the event loop)."""
    await asyncio.sleep(delay)
    return len(text.split())


@snakepit.tool
def words(text: str) -> Iterator[str]:
    """Yield the words of ``text`` one at a time (a stream: ``rt.Stream``)."""
    for word in _words(text):
        yield word


@snakepit.tool
def shout_words(text: str) -> List[str]:
    """Ask the Go function registered as ``"shout"`` to transform each word
    (a callback: ``rt.Register``)."""
    return [snakepit.call("shout", Word=word) for word in _words(text)]


def on_session_start(session: snakepit.Session) -> None:
    """A session's first call on this worker: its notes start empty."""
    session.state["notes"] = []


@snakepit.tool
def note(text: str) -> int:
    """Keep ``text`` in the current session's state; return how many it has
    (``rt.OpenSession``)."""
    notes = snakepit.current_session().state["notes"]
    notes.append(text)
    return len(notes)
