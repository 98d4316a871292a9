"""Test set-up: make snakepit, the examples package and the test adapters importable."""

from __future__ import annotations

import sys
from typing import Callable, Iterator, List

import pytest

from helpers import ADAPTER_DIR, PY_ROOT, REPO_ROOT, WorkerProcess

for _path in (PY_ROOT, REPO_ROOT, ADAPTER_DIR):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))


@pytest.fixture
def spawn() -> Iterator[Callable[..., WorkerProcess]]:
    """Start worker subprocesses; all are killed at teardown."""
    started: List[WorkerProcess] = []

    def start(adapter: str, **kwargs: object) -> WorkerProcess:
        worker = WorkerProcess(adapter, **kwargs)  # type: ignore[arg-type]
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.close()


@pytest.fixture(scope="module")
def textstats() -> Iterator[WorkerProcess]:
    """One shared examples.textstats worker (capacity 4) for read-only tests."""
    worker = WorkerProcess("examples.textstats", capacity=4)
    try:
        worker.wait_ready()
        yield worker
    finally:
        worker.close()
