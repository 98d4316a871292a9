"""Tools for the Go tests that prove calls run at the same time."""
import os
import time
import uuid

from snakepit import tool

__snakepit_thread_safe__ = True  # arrivals touch only the directory passed in


@tool
def arrive(directory: str, n: int, timeout: float = 20.0) -> int:
    """Record an arrival in directory, wait until n callers have arrived, and
    return this worker's pid. Fails if fewer than n arrive within timeout,
    which happens when the calls cannot all run at once."""
    open(os.path.join(directory, uuid.uuid4().hex), "w").close()
    deadline = time.monotonic() + timeout
    while len(os.listdir(directory)) < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(os.listdir(directory))} of {n} callers arrived")
        time.sleep(0.002)
    return os.getpid()
