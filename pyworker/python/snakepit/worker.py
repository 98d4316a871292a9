"""Worker entry point: ``python -m snakepit.worker --adapter SPEC --socket PATH``.

The worker writes exactly one protocol line (see snakepit.handshake): READY
once the server listens, or BOOT-ERROR (exit code 78) when start-up fails.
It goes to the pipe named by ``--handshake-fd`` (the Go runtime passes fd 3),
else to stdout. Logs go to stderr; stdout is only the adapter's and the
tools' own output (with ``--handshake-fd``, from its first byte).

Transports: ``native`` (the default; docs/wire-format.md, standard library
only) and ``grpc`` (needs grpcio and protobuf, imported only when chosen).

Profiles (``--profile``): ``process`` runs one call at a time (capacity 1);
``thread`` runs up to ``--capacity`` sync tools at once on as many threads,
and only loads adapters declared thread-safe (docs/thread-safety.md).
Without ``--profile`` the worker behaves as before profiles existed: it
runs ``--capacity`` calls at once, asks for no declaration, and reports
"process" for capacity 1, else "thread". ``--thread-checks`` turns on the
thread-safety checker (snakepit.threadsafe).

``--stack-file PATH``: each SIGUSR1 appends every thread's Python stack to
PATH (faulthandler), e.g. to see where a stuck tool is.

On a free-threaded build the worker watches whether the adapter import or a
tool's first call switches the GIL on (snakepit.gil).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass
from typing import IO, Callable, Optional, Sequence, Tuple

from snakepit import PROTOCOL_VERSION, gil
from snakepit.adapter import LoadedAdapter, load_adapter
from snakepit.config import PROFILES, max_message_bytes_from_env, profile_name
from snakepit.handshake import (
    BOOT_ERROR_EXIT_CODE,
    PARENT_GONE_EXIT_CODE,
    BootError,
    HandshakeChannel,
    boot_error_line,
    ready_line,
)
from snakepit.logsetup import configure_logging

# Named explicitly: under "python -m" __name__ is "__main__".
logger = logging.getLogger("snakepit.worker")

TOKEN_ENV = "SNAKEPIT_TOKEN"
TRANSPORTS = ("native", "grpc")
DEFAULT_TRANSPORT = "native"


@dataclass(frozen=True)
class Options:
    adapter: str
    transport: str
    socket: str
    worker_id: str
    run_id: str
    capacity: int
    watch_stdin: bool
    #: "process" or "thread": --profile, else derived from the capacity.
    profile: str = "process"
    #: Whether --profile was given (only then does "thread" ask for a declaration).
    profile_given: bool = False
    thread_checks: bool = False
    #: The Go host that started the worker: its pid and its start time (field
    #: 22 of /proc/<pid>/stat). 0 when not given. The worker only logs them;
    #: they are in its command line so that a later runtime's start-up sweep
    #: can tell whether this worker's host is gone (docs/reliability.md).
    host_pid: int = 0
    host_start: int = 0
    #: --stack-file: where SIGUSR1 dumps every thread's Python stack ("" for off).
    stack_file: str = ""
    #: --handshake-fd: the pipe the protocol line goes to (None: stdout).
    handshake_fd: Optional[int] = None


def _transport(value: str) -> str:
    if value not in TRANSPORTS:
        raise argparse.ArgumentTypeError(
            f"unsupported transport {value!r}: choose one of {', '.join(TRANSPORTS)}"
        )
    return value


def _capacity(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"capacity must be an integer, got {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"capacity must be at least 1, got {number}")
    return number


def _non_negative(what: str) -> Callable[[str], int]:
    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be an integer, got {value!r}") from None
        if number < 0:
            raise argparse.ArgumentTypeError(f"{what} must not be negative, got {number}")
        return number

    return parse


def _handshake_fd(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"handshake fd must be an integer, got {value!r}") from None
    if number < 3:
        raise argparse.ArgumentTypeError(
            f"handshake fd must be 3 or more (0-2 are the standard streams), got {number}")
    return number


def parse_args(argv: Optional[Sequence[str]] = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m snakepit.worker",
        description="Serve a Python adapter's tools to the Snakepit Go runtime.",
    )
    parser.add_argument("--adapter", required=True, metavar="SPEC",
                        help="'pkg.module' or 'pkg.module:ClassName'")
    parser.add_argument("--transport", type=_transport, default=DEFAULT_TRANSPORT,
                        help="wire transport: 'native' (default) or 'grpc'")
    parser.add_argument("--socket", required=True, metavar="PATH",
                        help="Unix socket path to listen on")
    parser.add_argument("--worker-id", default="", metavar="ID", help="worker id for logs")
    parser.add_argument("--run-id", default="", metavar="ID",
                        help="id of the Go runtime run that owns this process")
    parser.add_argument("--host-pid", type=_non_negative("host pid"), default=0, metavar="PID",
                        help="pid of the Go host that started this worker (for its orphan sweep)")
    parser.add_argument("--host-start", type=_non_negative("host start time"), default=0,
                        metavar="TICKS",
                        help="start time of that host, field 22 of /proc/PID/stat (clock ticks "
                             "after boot): with --host-pid it names the host even if its pid "
                             "is reused")
    parser.add_argument("--capacity", type=_capacity, default=1, metavar="N",
                        help="how many calls to run at once (default 1)")
    parser.add_argument("--watch-stdin", action="store_true",
                        help="exit (code 70) when stdin reaches EOF, i.e. the parent died")
    parser.add_argument("--profile", choices=PROFILES, default=None,
                        help="'process': one call at a time (capacity 1); 'thread': up to "
                             "--capacity sync tools at once on threads, for adapters declared "
                             "thread-safe (default: process for capacity 1, else thread, "
                             "without asking for a declaration)")
    parser.add_argument("--thread-checks", action="store_true",
                        help="report concurrent entry into @snakepit.single_threaded code and, "
                             "in the thread profile, imported libraries that need care when "
                             "shared across threads (warnings on stderr)")
    parser.add_argument("--stack-file", default="", metavar="PATH",
                        help="create (or truncate) PATH, mode 0600, and append a dump of every "
                             "thread's Python stack to it on each SIGUSR1 (faulthandler: works "
                             "even while a C call holds the GIL)")
    parser.add_argument("--handshake-fd", type=_handshake_fd, default=None, metavar="FD",
                        help="write the one READY or BOOT-ERROR line to this inherited pipe "
                             "(made non-inheritable at start, closed after the line) instead "
                             "of stdout")
    ns = parser.parse_args(argv)
    profile = ns.profile
    if profile is None:
        profile = profile_name(ns.capacity)
    return Options(
        adapter=ns.adapter,
        transport=ns.transport,
        socket=ns.socket,
        worker_id=ns.worker_id,
        run_id=ns.run_id,
        capacity=ns.capacity,
        watch_stdin=ns.watch_stdin,
        profile=profile,
        profile_given=ns.profile is not None,
        thread_checks=ns.thread_checks,
        host_pid=ns.host_pid,
        host_start=ns.host_start,
        stack_file=ns.stack_file,
        handshake_fd=ns.handshake_fd,
    )


def check_profile(options: Options) -> None:
    """Refuse flag combinations that contradict each other (a BootError)."""
    if options.profile_given and options.profile == "process" and options.capacity != 1:
        raise BootError(
            f"--profile process runs one call at a time per process, but --capacity is "
            f"{options.capacity}: use --capacity 1, or --profile thread to run several "
            "calls at once in one process"
        )


def thread_safety_required(options: Options) -> Optional[int]:
    """load_adapter()'s require_thread_safe: the thread count when the worker
    was started with --profile thread, else None."""
    if options.profile_given and options.profile == "thread":
        return options.capacity
    return None


def _watch_stdin(fd: int) -> None:
    # os.read on the raw descriptor, not sys.stdin.buffer: a daemon thread
    # blocked inside a BufferedReader holds its lock, and the interpreter
    # aborts ("could not acquire lock ... at interpreter shutdown") when it
    # finalizes the buffered stdin at a normal exit.
    try:
        while os.read(fd, 65536):
            pass
    except OSError:  # a broken stdin means the parent is gone too
        pass
    logger.warning("stdin closed: the parent process is gone; exiting")
    for handler in logging.getLogger().handlers:
        try:
            handler.flush()
        except Exception:
            pass
    os._exit(PARENT_GONE_EXIT_CODE)


def start_stdin_watch() -> None:
    stdin = sys.stdin
    if stdin is None:
        logger.warning("--watch-stdin given but there is no stdin; not watching")
        return
    thread = threading.Thread(
        target=_watch_stdin, args=(stdin.fileno(),), name="snakepit-stdin-watch", daemon=True
    )
    thread.start()


#: The open --stack-file: faulthandler keeps only its descriptor, so the file
#: object must stay alive as long as the process.
_stack_file: Optional[IO[str]] = None


def enable_stack_dumps(path: str) -> None:
    """Create (or truncate) ``path`` with mode 0600 and dump every thread's
    Python stack to it on SIGUSR1, appended on each signal. faulthandler
    writes from its C signal handler, so the dump comes even while a C call
    holds the GIL or the main thread is blocked. Raises OSError."""
    global _stack_file
    import faulthandler
    import signal

    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT
        stack_file = os.fdopen(fd, "w", encoding="utf-8")
    except BaseException:
        os.close(fd)
        raise
    try:
        faulthandler.register(signal.SIGUSR1, file=stack_file, all_threads=True, chain=False)
    except BaseException:
        stack_file.close()
        raise
    if _stack_file is not None:
        _stack_file.close()
    _stack_file = stack_file
    logger.debug("SIGUSR1 dumps every thread's stack to %s", path)


def _take_token() -> str:
    """Read the token and drop it from the environment tools and their children see."""
    token = os.environ.pop(TOKEN_ENV, "")
    if not token:
        raise BootError(f"{TOKEN_ENV} is not set; the worker refuses to serve without a token")
    return token


def _boot_failed(exc: BaseException, channel: HandshakeChannel) -> int:
    logger.error("worker failed to start: %s: %s", type(exc).__name__, exc)
    try:
        channel.send(boot_error_line(exc))
    except OSError as err:
        logger.error("cannot write the BOOT-ERROR line: %s", err)
    return BOOT_ERROR_EXIT_CODE


def _announce_ready(options: Options, adapter: LoadedAdapter, channel: HandshakeChannel) -> None:
    try:
        channel.send(ready_line(options.transport, PROTOCOL_VERSION))
    except OSError as err:
        # Nobody will connect: leave at once (the server's threads would
        # hold the interpreter's exit).
        logger.error("cannot write the READY line: %s; exiting", err)
        logging.shutdown()
        os._exit(BOOT_ERROR_EXIT_CODE)
    _line_buffer_stdout()
    logger.info(
        "worker %s ready: adapter %r, tools [%s], capacity %d, profile %s%s, socket %s, "
        "pid %d, run %s",
        options.worker_id or "-", adapter.spec, ", ".join(adapter.tool_names()),
        options.capacity, options.profile, ", thread checks on" if options.thread_checks else "",
        options.socket, os.getpid(), options.run_id or "-",
    )


def _serve_native(
    options: Options, adapter: LoadedAdapter, token: str, started: float,
    channel: HandshakeChannel,
) -> Tuple[int, int]:
    """Run the native server until shutdown. Returns (exit code, calls still running)."""
    from snakepit.native_server import NativeServer

    try:
        server = NativeServer(
            adapter,
            token,
            capacity=options.capacity,
            max_message_bytes=max_message_bytes_from_env(),
            started_monotonic=started,
            profile=options.profile,
        )
        server.start(options.socket)
    except Exception as exc:
        return _boot_failed(exc, channel), 0
    server.install_signal_handlers()
    _announce_ready(options, adapter, channel)
    server.wait_stopped()
    server.close()
    left = server.in_flight
    logger.info("worker %s stopped", options.worker_id or "-")
    return 0, left


async def _serve_grpc(
    options: Options, adapter: LoadedAdapter, token: str, started: float,
    channel: HandshakeChannel,
) -> Tuple[int, int]:
    """Run the gRPC server until shutdown. Returns (exit code, calls still running)."""
    with gil.phase("gRPC transport import"):
        from snakepit.grpc_server import GrpcServer  # imports grpc

    try:
        server = GrpcServer(
            adapter,
            token,
            capacity=options.capacity,
            max_message_bytes=max_message_bytes_from_env(),
            started_monotonic=started,
            profile=options.profile,
        )
        await server.start(options.socket)
    except Exception as exc:
        return _boot_failed(exc, channel), 0
    server.install_signal_handlers()
    _announce_ready(options, adapter, channel)
    await server.wait_stopped()
    left = server.in_flight
    logger.info("worker %s stopped", options.worker_id or "-")
    return 0, left


def _line_buffer_stdout() -> None:
    """Let tools' print() output reach the parent line by line."""
    reconfigure = getattr(sys.stdout, "reconfigure", None)
    if callable(reconfigure):
        try:
            reconfigure(line_buffering=True)
        except Exception:
            pass


def main(argv: Optional[Sequence[str]] = None) -> int:
    started = time.monotonic()
    options = parse_args(argv)
    try:
        # First: no process started from here on may inherit the descriptor.
        channel = HandshakeChannel.open(options.handshake_fd)
    except BootError as exc:
        configure_logging()
        return _boot_failed(exc, HandshakeChannel(None))
    configure_logging()
    if options.watch_stdin:
        start_stdin_watch()
    logger.debug(
        "starting worker %s (run %s, host pid %d started at %d): adapter %r",
        options.worker_id or "-", options.run_id or "-", options.host_pid, options.host_start,
        options.adapter,
    )
    try:
        token = _take_token()
        check_profile(options)
        if options.stack_file:
            # Before the adapter import: a hung import can be dumped too.
            enable_stack_dumps(options.stack_file)
        if options.thread_checks:
            from snakepit import threadsafe

            # Before the import: @single_threaded decides when it decorates.
            threadsafe.enable_checks()
        gil.start()
        with gil.phase(gil.ADAPTER_IMPORT):
            adapter = load_adapter(
                options.adapter, require_thread_safe=thread_safety_required(options))
    except BaseException as exc:  # noqa: B036 - SystemExit from an import is a boot error too
        if isinstance(exc, KeyboardInterrupt):
            raise
        return _boot_failed(exc, channel)
    if options.thread_checks and options.profile == "thread":
        from snakepit import threadsafe

        threadsafe.warn_about_libraries()

    if options.transport == "grpc":
        code, left = asyncio.run(_serve_grpc(options, adapter, token, started, channel))
    else:
        code, left = _serve_native(options, adapter, token, started, channel)
    if code != 0:
        return code
    if left:
        # A tool thread outlived the grace period; the interpreter would wait
        # for it at exit, so leave without running exit handlers.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
