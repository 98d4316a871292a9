"""A class adapter (``--adapter examples.sentiment:SentimentModel``).

The class is instantiated once per worker process, so ``__init__`` is the
place to load a model; every call then reuses it.
"""

from __future__ import annotations

import os
import re
import threading
import time
from typing import Dict

import snakepit

_LOAD_LOCK = threading.Lock()
#: How many times the model was loaded in this process (tests expect 1).
_LOADS = 0

_WORD = re.compile(r"[a-z']+")


def _load_lexicon() -> Dict[str, float]:
    """Stand-in for loading model weights from disk."""
    positive = {"good": 1.0, "great": 1.5, "excellent": 2.0, "love": 1.5, "happy": 1.0,
                "nice": 0.8, "fine": 0.3, "best": 1.8, "wonderful": 1.8}
    negative = {"bad": -1.0, "terrible": -2.0, "awful": -1.8, "hate": -1.5, "sad": -1.0,
                "poor": -0.8, "worst": -1.8, "boring": -0.7}
    return {**positive, **negative}


class SentimentModel(snakepit.ThreadSafeAdapter):
    """A tiny lexicon-based sentiment scorer. Calls only read the lexicon
    loaded in __init__, so many may run at once (thread profile)."""

    def __init__(self) -> None:
        global _LOADS
        with _LOAD_LOCK:
            _LOADS += 1
            self.load_number = _LOADS
        self.lexicon = _load_lexicon()
        self.loaded_at = time.time()

    @snakepit.tool
    def score(self, text: str) -> float:
        """Mean lexicon score of the known words in ``text``: > 0 positive,
        < 0 negative, 0.0 when no word is known."""
        scores = [self.lexicon[w] for w in _WORD.findall(text.lower()) if w in self.lexicon]
        return round(sum(scores) / len(scores), 4) if scores else 0.0

    @snakepit.tool
    def info(self) -> dict:
        """The worker's pid, how many times the model was loaded in this
        process (always 1) and when."""
        return {"pid": os.getpid(), "loads": _LOADS, "loaded_at": self.loaded_at,
                "lexicon_size": len(self.lexicon)}

    def close(self) -> None:
        """Called once at graceful shutdown."""
        self.lexicon = {}
