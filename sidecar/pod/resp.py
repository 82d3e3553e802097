"""Just enough of Redis's protocol (RESP2) for the pod's clients: commands as arrays of bulk
strings, and one reply read at a time from a blocking socket."""

from __future__ import annotations

import socket

Reply = bytes | int | list["Reply"] | None


class RedisError(Exception):
    """Redis answered with an error reply."""


def encode_command(*args: bytes | str) -> bytes:
    """`*N\\r\\n` then each argument as `$len\\r\\n...\\r\\n`, as every Redis client sends."""
    parts = [arg.encode() if isinstance(arg, str) else arg for arg in args]
    return b"".join([b"*%d\r\n" % len(parts), *(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)])


class RedisConnection:
    """One connection; `command` sends one command and reads its reply. Raises
    ConnectionError when the peer closes the connection (or resets it)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buffer = b""

    def command(self, *args: bytes | str) -> Reply:
        self.send(encode_command(*args))
        return self.reply()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> Reply:
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest
        if kind == b"-":
            raise RedisError(rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            length = int(rest)
            return None if length < 0 else self._exactly(length + 2)[:-2]
        if kind == b"*":
            count = int(rest)
            return None if count < 0 else [self.reply() for _ in range(count)]
        raise ValueError(f"not a RESP reply: {line!r}")

    def _line(self) -> bytes:
        while b"\r\n" not in self._buffer:
            self._fill()
        line, _, self._buffer = self._buffer.partition(b"\r\n")
        return line

    def _exactly(self, size: int) -> bytes:
        while len(self._buffer) < size:
            self._fill()
        taken, self._buffer = self._buffer[:size], self._buffer[size:]
        return taken

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the connection was closed")
        self._buffer += chunk

    def close(self) -> None:
        self.sock.close()
