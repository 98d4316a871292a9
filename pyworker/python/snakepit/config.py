"""Settings every worker server reads the same way, whatever its transport
(standard library only): the message limit from the environment, the
socket path check, the profiles and the signal grace period."""

from __future__ import annotations

import os
import stat
from typing import Mapping, Optional

MAX_MESSAGE_ENV = "SNAKEPIT_MAX_MESSAGE_BYTES"
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
#: Longest Unix socket path Linux accepts (sun_path is 108 bytes with the NUL).
MAX_SOCKET_PATH_BYTES = 107
#: Grace given by SIGTERM / SIGINT.
SIGNAL_GRACE_SECONDS = 5.0

PROFILES = ("process", "thread")


def profile_name(capacity: int) -> str:
    """The profile of a worker started without ``--profile``: "process" (one
    call at a time) for capacity 1, else "thread"."""
    return "process" if capacity == 1 else "thread"


def max_message_bytes_from_env(environ: Optional[Mapping[str, str]] = None) -> int:
    """``$SNAKEPIT_MAX_MESSAGE_BYTES`` or 64 MiB. Raises ValueError if malformed."""
    env = os.environ if environ is None else environ
    raw = env.get(MAX_MESSAGE_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_MESSAGE_BYTES
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{MAX_MESSAGE_ENV}={raw!r} is not an integer") from None
    if value <= 0:
        raise ValueError(f"{MAX_MESSAGE_ENV}={raw!r} must be positive")
    return value


def check_socket_path(path: str) -> None:
    """Fail early, with a clear message, where binding the Unix socket would fail.

    A stale socket file at ``path`` is fine: the server replaces it.
    """
    size = len(os.fsencode(path))
    if not path or size > MAX_SOCKET_PATH_BYTES:
        raise ValueError(
            f"socket path {path!r} is {size} bytes; Unix socket paths must be "
            f"1 to {MAX_SOCKET_PATH_BYTES} bytes"
        )
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"socket directory {directory!r} does not exist")
    if os.path.lexists(path) and not stat.S_ISSOCK(os.lstat(path).st_mode):
        raise FileExistsError(f"socket path {path!r} exists and is not a socket")
