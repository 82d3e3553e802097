"""The real thing on loopback for integration tests: upstreams, the sidecar on its own event
loop thread, and the Envoy binary with one listener per scenario; plus plain socket clients."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from sidecar.app import Sidecar
from sidecar.config import SidecarConfig, parse_config
from sidecar.envoy import (
    Envoy,
    HttpListener,
    Listener,
    SidecarTls,
    TcpListener,
    Upstream,
    render_bootstrap,
)
from sidecar.upstreams import EchoServer, HttpUpstream
from tests.conftest import ROOT, plugin_dir, skip_unless_tier_runs

T = TypeVar("T")


class LoopThread:
    """An asyncio loop in a thread, so that tests can stay plain synchronous code."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, make: Callable[[], Awaitable[T]], timeout: float = 60) -> T:
        async def wrapper() -> T:
            return await make()
        return asyncio.run_coroutine_threadsafe(wrapper(), self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


@contextlib.contextmanager
def sidecar_on_a_thread(config: SidecarConfig) -> Iterator[Sidecar]:
    """A sidecar serving on its own event loop thread (no Envoy), stopped afterwards."""
    loop = LoopThread()

    async def start() -> Sidecar:
        running = Sidecar(config)
        await running.start()
        return running

    try:
        running = loop.run(start)
        yield running
        loop.run(running.stop)
    finally:
        loop.close()


@dataclass
class StackSpec:
    """Plugins by instance name (a plugin directory name, or a table as in the sidecar's
    configuration), chains, and listeners: TCP ones by chain (or chain and options), HTTP ones
    with their options."""

    plugins: Mapping[str, str | dict[str, Any]]
    tcp: Mapping[str, str | tuple[str, dict[str, Any]]] = field(default_factory=dict)
    http: Mapping[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    chains: Mapping[str, list[str]] = field(default_factory=dict)
    default_failure_policy: str = "fail-closed"
    echo_replies: Mapping[bytes, bytes] = field(default_factory=dict)
    listen: str = "127.0.0.1:0"  # or "unix:/path"
    tls: Mapping[str, str] | None = None  # the sidecar's [tls] table
    envoy_tls: SidecarTls | None = None  # how Envoy reaches the sidecar over TLS
    # None: the sidecar on a thread of this process, whose objects a test may reach
    # (`Stack.sidecar`). N: `hyperfilter serve` with N worker processes, and Envoy with as
    # many workers, as `make bench` runs them. For load: on a thread, the sidecar shares one
    # GIL with the test's clients and the echo upstream, on asyncio's own loop, behind one
    # Envoy worker, and serves at a fraction of its speed.
    workers: int | None = None


# Starting a sidecar loads its plugins: on kvm, the first load of a component toolchain's
# interpreter compiles it (minutes, once per cache).
START_SECONDS = 900


class Stack:
    def __init__(self, spec: StackSpec, cache_dir: Path, tier: str = "wasmtime") -> None:
        plugins = {}
        for name, entry in spec.plugins.items():
            table = {"path": entry} if isinstance(entry, str) else dict(entry)
            table["path"] = str(plugin_dir(table["path"]))
            table.setdefault("tier", tier)
            plugins[name] = table
        tls = {"tls": dict(spec.tls)} if spec.tls is not None else {}
        self.table: dict[str, Any] = {
            "plugins": plugins, "chains": dict(spec.chains), "listen": spec.listen,
            "cache-dir": str(cache_dir), "default-failure-policy": spec.default_failure_policy,
            **tls}
        if spec.workers is not None:
            self.table["workers"] = spec.workers
        self.config = parse_config(self.table, Path("."))
        self.spec = spec
        self.ports: dict[str, int] = {}
        self.served: ServedSidecar | None = None

    def __enter__(self) -> Stack:
        self.loop = LoopThread()
        try:
            if self.spec.workers is None:
                self.sidecar = self.loop.run(self._start_sidecar, timeout=START_SECONDS)
                sidecars = [str(self.sidecar.address)]
            else:
                self.served = ServedSidecar(self.table)
                sidecars = self.served.addresses
            self.echo = EchoServer(dict(self.spec.echo_replies))
            echo = Upstream("127.0.0.1", self.loop.run(self.echo.start))
            self.web = HttpUpstream()
            web = Upstream("127.0.0.1", self.web.start())
            listeners: list[Listener] = []
            for name, entry in self.spec.tcp.items():
                chain, options = (entry, {}) if isinstance(entry, str) else entry
                listeners.append(TcpListener(name, chain, echo, **options))
            for name, (chain, options) in self.spec.http.items():
                listeners.append(HttpListener(name, chain, web, **options))
            self.envoy = Envoy(render_bootstrap(sidecars, listeners, tls=self.spec.envoy_tls),
                               concurrency=self.spec.workers or 1)
            self.envoy.start()
            self.ports = self.envoy.listener_ports
        except BaseException:
            if self.served is not None:
                self.served.stop()
            self.loop.close()
            raise
        return self

    def headers_seen(self) -> dict[str, str]:
        """The headers of the last request the HTTP upstream received."""
        headers = self.web.requests[-1]["headers"]
        assert isinstance(headers, dict)  # its records' values are untyped
        return headers

    async def _start_sidecar(self) -> Sidecar:
        sidecar = Sidecar(self.config)
        await sidecar.start()
        return sidecar

    def __exit__(self, *exc: object) -> None:
        self.envoy.stop()
        if self.served is not None:
            self.served.stop()
        else:
            self.loop.run(self.sidecar.stop)
        self.loop.run(self.echo.stop)
        self.web.stop()
        self.loop.close()


def _toml(value: object) -> str:
    """A value of a configuration table as TOML (JSON's strings and numbers are TOML's)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(value)


class ServedSidecar:
    """`hyperfilter serve` on the configuration table `table` (its `workers` processes), run
    from this tree; its log in a file, shown when it does not start."""

    def __init__(self, table: Mapping[str, Any]) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="hyperfilter-stack-")
        workdir = Path(self._dir.name)
        config = workdir / "sidecar.toml"
        config.write_text("".join(f"{json.dumps(key)} = {_toml(value)}\n"
                                  for key, value in table.items()))
        self.log_path = workdir / "serve.log"
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(
                [str(Path(sys.executable).parent / "hyperfilter"), "serve", "--config",
                 str(config)], cwd=ROOT, stderr=log,
                env={**os.environ, "PYTHONPATH": str(ROOT)})  # this tree's modules first
        try:
            self.addresses = self._wait_for_addresses()
        except BaseException:
            self.stop()
            raise

    def _wait_for_addresses(self) -> list[str]:
        """Every worker's address, from the line `serve` logs once all of them listen."""
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            found = re.search(r"listening on (.+?): network ext_proc", self.log())
            if found:
                return found.group(1).split(", ")
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"hyperfilter serve did not start:\n{self.log()[-4000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()  # drains: no stream is open by now
            try:
                self.process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._dir.cleanup()


def stack_per_tier(spec: StackSpec, tier: str, cache_dir: Path) -> Iterator[Stack]:
    """A module's whole suite once per tier. Plugins pinned to a tier in `spec` stay there, so
    a chain may mix both."""
    skip_unless_tier_runs(tier)
    with Stack(spec, cache_dir, tier) as running:
        yield running


def wait_until(condition: Callable[[], bool], seconds: float) -> bool:
    """Whether `condition` holds within `seconds` (asked every 50 ms)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


# --- clients ----------------------------------------------------------------------------------


@dataclass
class Exchange:
    replies: list[bytes]
    closed: bool = False  # the peer closed the connection (FIN)
    reset: bool = False  # the peer reset it (RST)


def tcp_exchange(port: int, messages: list[bytes], timeout: float = 5.0) -> Exchange:
    """Send each message, then read until the echo of as many bytes arrives (or the connection
    ends): each message is its own segment, as the plugins see it."""
    exchange = Exchange([])
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        for message in messages:
            try:
                conn.sendall(message)
                reply = b""
                while len(reply) < len(message):
                    chunk = conn.recv(1 << 20)
                    if not chunk:
                        exchange.closed = True
                        break
                    reply += chunk
            except ConnectionResetError:
                exchange.reset = True
                return exchange
            except TimeoutError:
                reply = b"<timeout>"
            if reply:
                exchange.replies.append(reply)
            if exchange.closed:
                break
    return exchange


@dataclass
class HttpReply:
    status: int
    headers: dict[str, str]
    body: bytes


def http_request(port: int, method: str = "GET", path: str = "/", body: bytes | None = None,
                 headers: Mapping[str, str] | None = None) -> HttpReply:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, path, body=body, headers=dict(headers or {}))
        response = connection.getresponse()
        return HttpReply(response.status, {k.lower(): v for k, v in response.getheaders()},
                         response.read())
    finally:
        connection.close()


def chunked_request(port: int, path: str, chunks: list[bytes],
                    trailers: Mapping[str, str]) -> HttpReply:
    """An HTTP/1.1 request with a chunked body and trailers (http.client cannot send those)."""
    head = (f"POST {path} HTTP/1.1\r\nhost: test\r\ntransfer-encoding: chunked\r\n"
            f"trailer: {', '.join(trailers)}\r\n\r\n").encode()
    body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n"
    tail = "".join(f"{k}: {v}\r\n" for k, v in trailers.items()).encode() + b"\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(head + body + tail)
        response = http.client.HTTPResponse(conn)
        response.begin()
        return HttpReply(response.status, {k.lower(): v for k, v in response.getheaders()},
                         response.read())


class LineClient:
    """A plain TCP client that reads what it is sent piece by piece: lines, or all until the
    connection ends."""

    def __init__(self, port: int, timeout: float = 5.0) -> None:
        self.socket = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self._buffer = b""

    def send(self, data: bytes) -> None:
        self.socket.sendall(data)

    def line(self) -> bytes:
        """The next line, "\\r\\n" included; b"" if the connection ends first."""
        while b"\r\n" not in self._buffer:
            chunk = self.socket.recv(65536)
            if not chunk:
                return b""
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\r\n")
        return line + b"\r\n"

    def rest(self) -> tuple[bytes, str]:
        """Everything until the connection ends, and how it ended: "closed" (FIN), "reset"
        (RST) or "open" (nothing more within the timeout)."""
        data, self._buffer = self._buffer, b""
        try:
            while chunk := self.socket.recv(65536):
                data += chunk
        except ConnectionResetError:
            return data, "reset"
        except TimeoutError:
            return data, "open"
        return data, "closed"

    def close(self) -> None:
        self.socket.close()

    def __enter__(self) -> LineClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
