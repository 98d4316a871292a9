"""The native server's listening Unix socket and its ``snakepit-accept``
thread (standard library only)."""

from __future__ import annotations

import errno
import logging
import os
import socket
import stat
import threading
import time
from typing import Callable, Optional, Tuple

from snakepit.config import check_socket_path

logger = logging.getLogger(__name__)

_LISTEN_BACKLOG = 128
#: accept() errors that concern one connection only: accept the next one.
_RETRY_AT_ONCE = (errno.ECONNABORTED, errno.EPROTO)
#: accept() errors of a process out of resources: wait a little, retry.
_RETRY_LATER = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


class UnixListener:
    """A Unix socket at ``path``, mode 0600, listening from construction
    on (a stale socket file there is replaced; raises OSError, or the
    errors of config.check_socket_path, where it cannot be bound).

    :meth:`start` hands every accepted socket to ``on_accept`` from the
    ``snakepit-accept`` thread; :meth:`stop` (any thread) ends that and
    removes the socket file, if it is still this socket's.
    """

    def __init__(self, path: str) -> None:
        check_socket_path(path)
        if os.path.lexists(path):  # a stale socket (check_socket_path: nothing else)
            os.unlink(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            old_umask = os.umask(0o177)
            try:
                sock.bind(path)
            finally:
                os.umask(old_umask)
            try:
                os.chmod(path, 0o600)
            except OSError:
                pass
            sock.listen(_LISTEN_BACKLOG)
            st = os.stat(path)
        except BaseException:
            sock.close()
            raise
        self.path = path
        self._sock = sock
        self._ino: Tuple[int, int] = (st.st_dev, st.st_ino)
        #: True once stop() was called.
        self.closing = False
        self.thread: Optional[threading.Thread] = None

    def start(self, on_accept: Callable[[socket.socket], None]) -> None:
        self.thread = threading.Thread(
            target=self._accept_loop, args=(on_accept,), name="snakepit-accept", daemon=True
        )
        self.thread.start()

    def _accept_loop(self, on_accept: Callable[[socket.socket], None]) -> None:
        listener = self._sock
        try:
            while True:
                try:
                    sock, _ = listener.accept()
                except OSError as exc:
                    if self.closing:
                        return
                    if exc.errno in _RETRY_AT_ONCE:
                        continue
                    if exc.errno in _RETRY_LATER:
                        logger.error("accept failed: %s; retrying", exc)
                        time.sleep(0.05)
                        continue
                    logger.error("accept failed: %s; no longer accepting connections", exc)
                    return
                if self.closing:
                    sock.close()
                    return
                on_accept(sock)
        finally:
            listener.close()

    def stop(self) -> None:
        """Stop accepting (the accept thread closes the socket) and remove
        the socket file."""
        self.closing = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes accept()
        except OSError:
            pass
        try:
            st = os.lstat(self.path)
            if stat.S_ISSOCK(st.st_mode) and (st.st_dev, st.st_ino) == self._ino:
                os.unlink(self.path)
        except OSError:
            pass
