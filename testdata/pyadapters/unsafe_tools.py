"""The tools of thread_tools, in a module NOT declared thread-safe: a worker
started with --profile thread refuses it at boot; --profile process runs it."""

from thread_tools import (  # noqa: F401 - the tools of this adapter
    max_seen,
    meet,
    reset,
    serial_max_seen,
    serial_track,
    track,
)
