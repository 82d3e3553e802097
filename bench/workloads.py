"""What the benchmarks measure, as plain functions returning nanosecond samples."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


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


class HttpRequests:
    """One keep-alive HTTP/1.1 connection; each sample is one request and its whole answer."""

    def __init__(self, port: int, body: bytes = b"") -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        self.body = body

    def run(self, count: int) -> list[int]:
        samples = []
        method = "POST" if self.body else "GET"
        for _ in range(count):
            start = time.perf_counter_ns()
            self.conn.request(method, "/", body=self.body or None)
            response = self.conn.getresponse()
            response.read()
            samples.append(time.perf_counter_ns() - start)
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status} from the contender")
        return samples

    def close(self) -> None:
        self.conn.close()


def _load(*args: object) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "bench.load", *map(str, args)], cwd=ROOT,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def round_trips_per_second(port: int, connections: int, seconds: float, size: int = 100) -> float:
    """Closed-loop echo round trips on `connections` connections, from a separate process."""
    process = _load("throughput", port, connections, seconds, size)
    output, _ = process.communicate(timeout=seconds + 120)
    result = json.loads(output)
    return result["round_trips"] / result["seconds"]


def resident_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def memory_per_connection(pids: list[int], port: int, connections: int) -> float:
    """How much the resident memory of `pids` grows per live connection (each with its stream
    and sandbox), with `connections` held open at once."""
    before = sum(map(resident_bytes, pids))
    process = _load("hold", port, connections)
    try:
        if (answer := process.stdout.readline().strip()) != "ready":  # type: ignore[union-attr]
            raise RuntimeError(f"holding {connections} connections to port {port}: {answer}")
        time.sleep(0.5)
        return (sum(map(resident_bytes, pids)) - before) / connections
    finally:
        process.communicate(timeout=120)
