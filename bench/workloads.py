"""What the benchmarks measure: latency samples in nanoseconds, rates, CPU time, memory and
integrity counts, each from plain functions and clients."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvloop

from bench.attacks import QUICK_WINDOW, AttackWindow, Outcome, trial, trial_summary
from bench.integrity import FlowOptions, concurrent_flows
from bench.stats import percentile, summarize

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

    def run_for(self, seconds: float) -> list[int]:
        """As many round trips as fit in `seconds`."""
        deadline = time.monotonic() + seconds
        samples: list[int] = []
        while time.monotonic() < deadline:
            samples += self.run(10)
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
    if result["failed"]:
        raise RuntimeError(f"{result['failed']} of {connections} connections to port {port} "
                           "failed under load")
    return result["round_trips"] / result["seconds"]


def slow_neighbour(port: int, busy_port: int, connections: int,
                   seconds: float) -> dict[str, Any]:
    """A neighbour's 100-byte round trips on one connection (`port`) for `seconds` with the
    sidecar otherwise idle, then for as long while `connections` closed-loop connections from
    another process keep a slow plugin of the same sidecar (`busy_port`) busy: both latency
    summaries, the p99 during ÷ before, and what the busy connections got done."""
    neighbour = RoundTrips(port, 100)
    try:
        neighbour.run(20)  # warm: its stream and sandbox exist
        before = neighbour.run_for(seconds)
        load = _load("keep-busy", busy_port, connections, seconds + 0.5, 100)
        try:
            if (answer := load.stdout.readline().strip()) != "ready":  # type: ignore[union-attr]
                raise RuntimeError(f"keeping {connections} connections busy: {answer!r}")
            during = neighbour.run_for(seconds)
            output, _ = load.communicate(timeout=seconds + 120)
        finally:
            if load.poll() is None:
                load.kill()
                load.wait()
    finally:
        neighbour.close()
    busy = json.loads(output)
    quiet, loaded = summarize(before), summarize(during)
    return {"connections": connections, "before": quiet, "during": loaded,
            "p99_ratio": round(loaded["p99_us"] / quiet["p99_us"], 2),
            "busy_round_trips_per_s": round(busy["round_trips"] / busy["seconds"]),
            "busy_failed_connections": busy["failed"]}


def cpu_seconds(pids: list[int]) -> float:
    """User and system CPU time the processes have used, all their threads included (exited
    ones too): the sum /proc/PID/stat gives as utime + stime, read from the kernel's CPU clock
    of each process, in nanoseconds rather than in 10 ms ticks."""
    return sum(time.clock_gettime_ns(_process_cpu_clock(pid)) for pid in pids) / 1e9


def _process_cpu_clock(pid: int) -> int:
    """The clock id Linux gives another process's CPU time (what clock_getcpuclockid(3) makes:
    the pid complemented, shifted by 3, and 2 for the scheduler's whole-process clock)."""
    return (~pid << 3) | 2


class SidecarCpu:
    """Round trips on one persistent connection through Envoy, and the CPU time the ext_proc
    server's processes spend meanwhile: each round trip is two ext_proc messages (read_data,
    then write_data)."""

    def __init__(self, port: int, pids: list[int], size: int = 100) -> None:
        self.round_trips = RoundTrips(port, size)
        self.pids = pids
        self.seconds = 0.0
        self.messages = 0

    def warm_up(self, count: int) -> None:
        self.round_trips.run(count)

    def run(self, count: int) -> None:
        before = cpu_seconds(self.pids)
        self.round_trips.run(count)
        self.seconds += cpu_seconds(self.pids) - before
        self.messages += 2 * count

    def close(self) -> None:
        self.round_trips.close()


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


def integrity(port: int, connections: int, max_size: int,
              deadline_seconds: float) -> dict[str, Any]:
    """`connections` concurrent echo flows of 1..`max_size` seeded random bytes each (bench/
    integrity.py): how many came back whole, once and in order, and how many bytes did not."""
    result = uvloop.run(concurrent_flows(port, connections, max_size,
                                         options=FlowOptions(deadline_seconds=deadline_seconds)))
    lost = result.bytes_sent - result.bytes_received
    return {"connections": len(result.flows), "intact": result.completed,
            "died": len(result.died), "corrupted": len(result.corrupted),
            "bytes_sent": result.bytes_sent, "bytes_lost": lost,
            "seconds": round(result.seconds, 2),
            "MiB_per_s": round(result.bytes_received / result.seconds / (1 << 20), 1)} | (
        {} if result.intact else {"failures": result.summary()})


def _p99_us(seconds: list[float]) -> float | None:
    return round(percentile(sorted(seconds), 0.99) * 1e6, 1) if seconds else None


def attack_trial(port: int, pid: int, attack: Callable[[int], Outcome],
                 window: AttackWindow = QUICK_WINDOW) -> dict[str, Any]:
    """`attack` on a sidecar's gRPC port (bench/attacks.py), again and again for `window`,
    while a well-behaved ext_proc client in a process of its own does round trips on a
    connection of its own: its p99 before and during the attack, what the server did, what
    else it cost, and how busy the server and the attacker were meanwhile (a share of one
    core: a server at 100 is saturated, an attacker near 100 competes with it for the CPUs)."""
    run = trial(port, attack, pid=pid, window=window,
                counters={"server": lambda: cpu_seconds([pid]), "attacker": time.process_time})
    return {"server": trial_summary(run), "attack_runs": run.runs,
            "attack_seconds": round(run.seconds, 2), "n_before": len(run.before),
            "p99_before_us": _p99_us(run.before), "p99_during_us": _p99_us(run.during),
            "n_during": len(run.during),
            "p99_ratio": None if run.p99_ratio is None else round(run.p99_ratio, 2),
            "failed_round_trips": len(run.failures),
            "new_connection": run.new_connection or "served",
            "peak_rss_growth_MiB": round(run.peak_rss_growth / (1 << 20), 1),
            "server_cpu_percent": round(100 * run.counted["server"] / run.seconds),
            "attacker_cpu_percent": round(100 * run.counted["attacker"] / run.seconds)}
