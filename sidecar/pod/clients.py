"""The world outside the pod: connections from the client namespace to Envoy's listeners, each
timed. Every socket is made by a thread inside the client namespace and bound to the client's
address, so that none can leave through the host's own network by mistake."""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

from sidecar.pod.netns import PodNetwork
from sidecar.pod.resp import RedisConnection

P = ParamSpec("P")
T = TypeVar("T")
CONNECT_SECONDS = 2.0
IO_SECONDS = 5.0  # any one read or write
CLIENT_THREADS = 8


@dataclass(frozen=True)
class Sample:
    """One command or request as the client saw it."""

    at: float  # seconds since the scenario began
    kind: str  # "redis" or "http"
    ms: float
    ok: bool


class Samples:
    """Every sample of the scenario (appended from the client threads)."""

    def __init__(self) -> None:
        self.began = time.perf_counter()
        self.items: list[Sample] = []

    def now(self) -> float:
        return time.perf_counter() - self.began

    @contextmanager
    def timed(self, kind: str) -> Iterator[list[bool]]:
        """Times the block; it marks the outcome good by appending True to the list given."""
        outcome: list[bool] = []
        start = time.perf_counter()
        try:
            yield outcome
        finally:
            self.items.append(Sample(start - self.began, kind,
                                     (time.perf_counter() - start) * 1000, outcome == [True]))


class Outside:
    """The client namespace's side of the pod."""

    def __init__(self, network: PodNetwork) -> None:
        self.network = network
        self._pool = network.client.threads(CLIENT_THREADS)
        self.stopping = threading.Event()

    def submit(self, work: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        """`work` on a thread inside the client namespace."""
        return self._pool.submit(work, *args, **kwargs)

    def connect(self, port: int, host: str | None = None) -> socket.socket:
        host = host or self.network.pod_ip
        loopback = host.startswith("127.")
        sock = socket.create_connection(
            (host, port), timeout=CONNECT_SECONDS,
            source_address=None if loopback else (self.network.client_ip, 0))
        sock.settimeout(IO_SECONDS)
        return sock

    def reachable(self, port: int, host: str | None = None) -> bool:
        try:
            self.connect(port, host).close()
        except OSError:  # refused, or nothing answered in time
            return False
        return True

    def redis(self, port: int) -> RedisConnection:
        return RedisConnection(self.connect(port))

    def http(self, port: int, path: str, headers: Mapping[str, str]) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection(
            self.network.pod_ip, port, timeout=IO_SECONDS,
            source_address=(self.network.client_ip, 0))
        try:
            connection.request("GET", path, headers=dict(headers))
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def close(self) -> None:
        self.stopping.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
