"""The call benchmark's floor: the least a Python process can do per call.

It reads frames in the native wire format's framing (a 16-byte header whose
first 4 bytes are the big-endian body length, then the body) and answers each
with the same bytes, the header's type byte set to RESULT. One thread, one
blocking read loop; no parsing beyond the length, no validation, no token.

    python3 floor_server.py socket PATH    # listen on a Unix socket, print "ready", serve one connection
    python3 floor_server.py pipe [BYTES]   # frames on stdin, answers on stdout; BYTES: pipe buffer size

Standard library only.
"""

import os
import socket
import sys

HEADER = 16
RESULT = 4


def serve(readinto, write):
    buf = bytearray(256 * 1024)
    view = memoryview(buf)
    start = end = 0  # buf[start:end]: received, not answered yet

    def have(n):
        # At least n bytes at buf[start:]; False at end of input.
        nonlocal buf, view, start, end
        if start + n > len(buf):  # move them to the front, of a bigger buffer if need be
            rest = bytes(view[start:end])
            if n > len(buf):
                view.release()
                buf = bytearray(n)
                view = memoryview(buf)
            buf[: len(rest)] = rest
            start, end = 0, len(rest)
        while end - start < n:
            got = readinto(view[end:])
            if not got:
                return False
            end += got
        return True

    while have(HEADER):
        size = HEADER + int.from_bytes(view[start : start + 4], "big")
        if not have(size):
            return
        buf[start + 5] = RESULT
        write(view[start : start + size])
        start += size
        if start == end:
            start = end = 0


def main():
    if sys.argv[1] == "socket":
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(sys.argv[2])
        listener.listen(1)
        print("ready", flush=True)
        conn, _ = listener.accept()
        serve(conn.recv_into, conn.sendall)
    else:
        if len(sys.argv) > 2:  # Linux: F_SETPIPE_SZ on both pipes
            import fcntl

            for fd in (0, 1):
                fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, int(sys.argv[2]))
        stdin = open(0, "rb", buffering=0, closefd=False)

        def write_all(data):
            while data:
                data = data[os.write(1, data) :]

        serve(stdin.readinto, write_all)


if __name__ == "__main__":
    main()
