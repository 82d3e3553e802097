"""The contenders: ways to put (or not put) a filter between a client and the same upstreams.
Each runs in its own processes on loopback ports the OS picks, and offers three listeners:
"tcp" (to the echo upstream), "http" (headers only), "http_body" (request bodies streamed)."""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from sidecar.envoy import (
    Envoy,
    HttpListener,
    HttpProxyListener,
    Listener,
    TcpListener,
    TcpProxyListener,
    Upstream,
    render_bootstrap,
)

ROOT = Path(__file__).resolve().parent.parent
BENCH_CACHE = ROOT / ".cache" / "bench"
ENVOY_WORKERS = 2  # one per core, as Envoy runs by default


class ServerProcess:
    """A `python -m bench.servers KIND` process; it prints its port when ready."""

    def __init__(self, kind: str) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "bench.servers", kind], cwd=ROOT,
                                        stdout=subprocess.PIPE, text=True)
        self.port = int(self.process.stdout.readline())  # type: ignore[union-attr]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


@dataclass(frozen=True)
class Upstreams:
    echo: Upstream
    http: Upstream


class Contender(ABC):
    name: str
    label: str
    ports: dict[str, int]

    @abstractmethod
    def start(self, upstreams: Upstreams) -> None: ...

    @abstractmethod
    def stop(self) -> None: ...


class Direct(Contender):
    name, label = "direct", "no proxy"

    def start(self, upstreams: Upstreams) -> None:
        self.ports = {"tcp": upstreams.echo.port, "http": upstreams.http.port,
                      "http_body": upstreams.http.port}

    def stop(self) -> None:
        pass  # the upstreams belong to the harness


class EnvoyContender(Contender):
    envoy: Envoy

    @abstractmethod
    def listeners(self, upstreams: Upstreams) -> list[Listener]: ...

    def start_envoy(self, upstreams: Upstreams, sidecar_ports: list[int] | None = None) -> None:
        sidecars = [("127.0.0.1", port) for port in sidecar_ports or [1]]
        self.envoy = Envoy(render_bootstrap(sidecars, self.listeners(upstreams)),
                           concurrency=ENVOY_WORKERS).start()
        self.ports = self.envoy.listener_ports

    def start(self, upstreams: Upstreams) -> None:
        self.start_envoy(upstreams)

    def stop(self) -> None:
        self.envoy.stop()


class EnvoyAlone(EnvoyContender):
    name, label = "envoy", "Envoy alone"

    def listeners(self, upstreams: Upstreams) -> list[Listener]:
        return [TcpProxyListener("tcp", upstreams.echo),
                HttpProxyListener("http", upstreams.http),
                HttpProxyListener("http_body", upstreams.http)]


class ExtProcContender(EnvoyContender):
    """Envoy's ext_proc filters pointed at a sidecar whose streams run `chain`."""

    chain = "bench"

    def listeners(self, upstreams: Upstreams) -> list[Listener]:
        return [TcpListener("tcp", self.chain, upstreams.echo),
                HttpListener("http", self.chain, upstreams.http),
                HttpListener("http_body", self.chain, upstreams.http,
                             request_body_mode="STREAMED")]


class Naive(ExtProcContender):
    """The plainest grpcio server (both ext_proc services), as tutorials have it."""

    name, label = "naive", "Envoy + naive grpcio ext_proc (no sandbox)"

    def start(self, upstreams: Upstreams) -> None:
        self.server = ServerProcess("naive")
        self.start_envoy(upstreams, [self.server.port])

    def stop(self) -> None:
        super().stop()
        self.server.stop()


class Hyperfilter(ExtProcContender):
    """`hyperfilter serve` in its own processes (a worker per core), every stream through
    `plugin` on `tier`; with no plugin, the same server with the sandbox call removed (an empty
    chain)."""

    def __init__(self, plugin: str | None = "pass-through", tier: str = "wasmtime",
                 workers: int = 2) -> None:
        self.plugin, self.tier, self.workers = plugin, tier, workers
        self.name = f"hyperfilter-{tier}" if plugin else "hyperfilter-path"
        self.label = (f"Envoy + hyperfilter ({plugin}, {tier})" if plugin
                      else "Envoy + hyperfilter, sandbox call removed")
        self.worker_pids: list[int] = []

    def start(self, upstreams: Upstreams) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="hyperfilter-bench-")
        workdir = Path(self._dir.name)
        plugin = ROOT / "plugins" / "examples" / (self.plugin or "pass-through")
        chain = '["pass"]' if self.plugin else "[]"
        (workdir / "sidecar.toml").write_text(
            f'cache-dir = "{BENCH_CACHE}"\nworkers = {self.workers}\n'
            f'[plugins.pass]\npath = "{plugin}"\ntier = "{self.tier}"\n'
            f"[chains]\nbench = {chain}\n")
        self.log = workdir / "sidecar.log"
        with self.log.open("w") as log:
            self.sidecar = subprocess.Popen(
                [str(Path(sys.executable).parent / "hyperfilter"), "serve", "--config",
                 str(workdir / "sidecar.toml"), "--listen", "127.0.0.1:0"], stderr=log)
        workers = self._wait_for_workers()
        self.worker_pids = [pid for pid, _ in workers]
        self.start_envoy(upstreams, [port for _, port in workers])

    def _wait_for_workers(self, timeout: float = 120) -> list[tuple[int, int]]:
        """(pid, port) of each worker, from the startup log."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log.read_text()
            if self.workers == 1 and (found := re.search(r"listening on [\d.]+:(\d+)", text)):
                return [(self.sidecar.pid, int(found.group(1)))]
            if self.workers > 1 and "give Envoy's cluster every one" in text:
                return [(int(pid), int(port)) for pid, port in re.findall(
                    r"worker \d+ \(pid (\d+)\) listening on [\d.]+:(\d+)", text)]
            if self.sidecar.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"hyperfilter serve did not start:\n{self.log.read_text()}")

    def stop(self) -> None:
        super().stop()
        self.sidecar.terminate()
        self.sidecar.wait(timeout=30)
        self._dir.cleanup()


@dataclass(frozen=True)
class WasmTcpListener:
    name: str
    upstream: Upstream
    wasm: str
    port: int = 0
    listen_host: str = "127.0.0.1"
    template = str(ROOT / "bench" / "envoy" / "tcp-wasm-listener.yaml")


@dataclass(frozen=True)
class WasmHttpListener(WasmTcpListener):
    template = str(ROOT / "bench" / "envoy" / "http-wasm-listener.yaml")


class EnvoyWasm(EnvoyContender):
    """Envoy's own in-process Wasm filter (V8) with a proxy-wasm pass-through: no isolation."""

    name, label = "envoy-wasm", "Envoy + its own Wasm filter (V8, pass-through)"

    def __init__(self) -> None:
        BENCH_CACHE.mkdir(parents=True, exist_ok=True)
        self.wasm = BENCH_CACHE / "proxy-wasm-passthrough.wasm"
        subprocess.run([sys.executable, "-m", "ziglang", "cc", "--target=wasm32-freestanding",
                        "-O2", "-nostdlib", "-Wl,--no-entry",
                        str(ROOT / "bench" / "proxy_wasm" / "passthrough.c"), "-o",
                        str(self.wasm)], check=True)

    def listeners(self, upstreams: Upstreams) -> list[Listener]:
        wasm = str(self.wasm)
        return [WasmTcpListener("tcp", upstreams.echo, wasm),  # type: ignore[list-item]
                WasmHttpListener("http", upstreams.http, wasm),
                WasmHttpListener("http_body", upstreams.http, wasm)]
