"""The handshake on its own pipe (``--handshake-fd``), as the Go runtime starts workers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest

from helpers import ADAPTER_DIR, PY_ROOT, REPO_ROOT, START_TIMEOUT, pythons_under_test
from snakepit.handshake import BOOT_ERROR_PREFIX, READY_PREFIX, BootError, HandshakeChannel

#: An adapter that leaves stdout in the middle of a line, and checks at
#: import whether a process it starts would inherit the handshake pipe.
CHATTY_ADAPTER = """\
import os, subprocess, sys
import snakepit

fd = os.environ["HANDSHAKE_FD_UNDER_TEST"]
probe = subprocess.run(["sh", "-c", f"if [ -e /proc/self/fd/{fd} ]; then echo inherited; else echo not-inherited; fi"],
                       close_fds=False, stdout=subprocess.PIPE, text=True)
print("probe:", probe.stdout.strip())
print("loading...", end="", flush=True)
os.write(1, b"[banner]")

@snakepit.tool
def ping() -> str:
    return "pong"
"""


class Worker:
    """A worker started with ``--handshake-fd``; its stdout and the pipe read apart."""

    def __init__(self, adapter: str, python: str, extra_path: str = "", fd_args: Tuple[str, ...] = ()) -> None:
        self.dir = tempfile.mkdtemp(prefix="sp-", dir="/tmp")
        read, write = os.pipe()
        self.handshake = os.fdopen(read, "rb")
        env = {k: v for k, v in os.environ.items() if not k.startswith("SNAKEPIT_")}
        env.update(SNAKEPIT_TOKEN="t", HANDSHAKE_FD_UNDER_TEST=str(write), PYTHONPATH=os.pathsep.join(
            p for p in (str(PY_ROOT), str(ADAPTER_DIR), extra_path) if p))
        args = fd_args or ("--handshake-fd", str(write))
        self.proc = subprocess.Popen(
            [python, "-m", "snakepit.worker", "--adapter", adapter, "--transport", "native",
             "--socket", os.path.join(self.dir, "w.sock"), *args],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=env, cwd=str(REPO_ROOT), pass_fds=(write,))
        os.close(write)

    def handshake_lines(self) -> List[bytes]:
        """Everything the pipe carries until its end (the worker closed it)."""
        return self.handshake.read().splitlines(keepends=True)

    def stop(self) -> Tuple[bytes, bytes]:
        """SIGTERM (a graceful stop), then its stdout and stderr."""
        self.proc.terminate()
        return self.output()

    def output(self) -> Tuple[bytes, bytes]:
        """Its stdout and stderr, once it has exited."""
        out, err = self.proc.communicate(timeout=START_TIMEOUT)
        return out, err

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate(timeout=START_TIMEOUT)
        self.handshake.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(params=pythons_under_test())
def python(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def chatty(tmp_path: Path) -> str:
    (tmp_path / "chatty_adapter.py").write_text(CHATTY_ADAPTER)
    return str(tmp_path)


@pytest.fixture
def workers() -> Iterator[List[Worker]]:
    started: List[Worker] = []
    yield started
    for w in started:
        w.close()


def test_ready_goes_to_the_pipe_and_stdout_is_only_output(
        python: str, chatty: str, workers: List[Worker]) -> None:
    w = Worker("chatty_adapter", python, chatty)
    workers.append(w)
    lines = w.handshake_lines()  # returns at EOF: the worker closed the pipe
    assert len(lines) == 1 and lines[0].startswith(READY_PREFIX.encode()), lines
    ready = json.loads(lines[0][len(READY_PREFIX):])
    assert ready["pid"] == w.proc.pid and ready["transport"] == "native"
    out, err = w.stop()
    assert out == b"probe: not-inherited\nloading...[banner]", (out, err)
    assert w.proc.returncode == 0


def test_boot_error_goes_to_the_pipe(python: str, workers: List[Worker]) -> None:
    w = Worker("broken_import", python)
    workers.append(w)
    lines = w.handshake_lines()
    assert len(lines) == 1 and lines[0].startswith(BOOT_ERROR_PREFIX.encode()), lines
    assert json.loads(lines[0][len(BOOT_ERROR_PREFIX):])["type"] == "builtins.ModuleNotFoundError"
    out, _ = w.output()
    assert w.proc.returncode == 78 and out == b""


def test_a_handshake_fd_that_is_not_open_is_a_boot_error_on_stdout(
        python: str, workers: List[Worker]) -> None:
    w = Worker("echo_tools", python, fd_args=("--handshake-fd", "97"))
    workers.append(w)
    out, _ = w.output()
    assert w.proc.returncode == 78
    assert out.startswith(BOOT_ERROR_PREFIX.encode()) and b"--handshake-fd 97 is not an open descriptor" in out


@pytest.mark.parametrize("value", ["1", "x"])
def test_a_bad_handshake_fd_is_refused(python: str, workers: List[Worker], value: str) -> None:
    w = Worker("echo_tools", python, fd_args=("--handshake-fd", value))
    workers.append(w)
    _, err = w.output()
    assert w.proc.returncode == 2 and b"handshake fd must be" in err


def test_channel_writes_once_and_closes() -> None:
    read, write = os.pipe()
    os.set_inheritable(write, True)
    channel = HandshakeChannel.open(write)
    assert not os.get_inheritable(write)
    channel.send("SNAKEPIT-READY {}\n")
    with os.fdopen(read, "rb") as pipe:
        assert pipe.read() == b"SNAKEPIT-READY {}\n"  # EOF: the write end is closed
    with pytest.raises(RuntimeError):
        channel.send("again\n")


def test_channel_refuses_a_descriptor_that_is_no_longer_the_pipe(tmp_path: Path) -> None:
    read, write = os.pipe()
    channel = HandshakeChannel.open(write)
    os.close(write)
    other = os.open(str(tmp_path / "adapter-file"), os.O_WRONLY | os.O_CREAT)
    try:
        if other == write:  # the adapter's own file now has the number
            with pytest.raises(OSError, match="no longer the handshake pipe"):
                channel.send("SNAKEPIT-READY {}\n")
            assert (tmp_path / "adapter-file").read_bytes() == b""
        else:
            with pytest.raises(OSError):
                channel.send("SNAKEPIT-READY {}\n")
    finally:
        os.close(other)
        os.close(read)


def test_channel_open_refuses_what_is_not_a_pipe(tmp_path: Path) -> None:
    fd = os.open(str(tmp_path / "f"), os.O_WRONLY | os.O_CREAT)
    try:
        with pytest.raises(BootError, match="is not a pipe"):
            HandshakeChannel.open(fd)
    finally:
        os.close(fd)
    assert sys.stdout is not None
