"""What the benchmarks measure, as plain functions returning nanosecond samples."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable


def _exchange(conn: socket.socket, payload: bytes) -> None:
    conn.sendall(payload)
    received = 0
    while received < len(payload):
        chunk = conn.recv(1 << 20)
        if not chunk:
            raise ConnectionError("the connection closed during a round trip")
        received += len(chunk)


class RoundTrips:
    """One persistent connection; each sample is send `size` bytes, receive their echo."""

    def __init__(self, port: int, size: int) -> None:
        self.conn = socket.create_connection(("127.0.0.1", port))
        self.conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.payload = b"x" * size

    def run(self, count: int) -> list[int]:
        samples = []
        for _ in range(count):
            start = time.perf_counter_ns()
            _exchange(self.conn, self.payload)
            samples.append(time.perf_counter_ns() - start)
        return samples

    def close(self) -> None:
        self.conn.close()


def connect_and_round_trip(port: int, count: int, size: int = 100) -> list[int]:
    """Each sample: a new connection, one round trip, close."""
    payload = b"x" * size
    samples = []
    for _ in range(count):
        start = time.perf_counter_ns()
        with socket.create_connection(("127.0.0.1", port)) as conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            _exchange(conn, payload)
        samples.append(time.perf_counter_ns() - start)
    return samples


def timed(action: Callable[[], object], count: int) -> list[int]:
    samples = []
    for _ in range(count):
        start = time.perf_counter_ns()
        action()
        samples.append(time.perf_counter_ns() - start)
    return samples
