"""A tool whose helper is declared single-threaded but is entered by two
threads at once: the thread-safety checker must count it."""
import threading

import snakepit

__snakepit_thread_safe__ = True  # deliberately wrong about _critical, for the test

_inside = threading.Barrier(2)


@snakepit.single_threaded
def _critical() -> None:
    _inside.wait(timeout=20)  # two calls meet here: two threads inside at once


@snakepit.tool
def enter() -> bool:
    _critical()
    return True
