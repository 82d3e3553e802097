"""The contenders: ways to put (or not put) a filter between a client and the same upstreams.
Each runs in its own processes on loopback ports the OS picks, and offers three listeners:
"tcp" (to the echo upstream), "http" (headers only), "http_body" (request bodies streamed)."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
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
HYPERFILTER = Path(sys.executable).parent / "hyperfilter"
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
    sidecar_pids: list[int]  # the processes serving the ext_proc streams

    def listeners(self, upstreams: Upstreams) -> list[Listener]:
        return [TcpListener("tcp", self.chain, upstreams.echo),
                HttpListener("http", self.chain, upstreams.http),
                HttpListener("http_body", self.chain, upstreams.http,
                             request_body_mode="STREAMED")]


class UnsandboxedExtProc(ExtProcContender):
    """An ext_proc server of bench/servers.py (`kind`) serving both services, no sandbox."""

    kind: str

    def start(self, upstreams: Upstreams) -> None:
        self.server = ServerProcess(self.kind)
        self.sidecar_pids = [self.server.process.pid]
        self.start_envoy(upstreams, [self.server.port])

    def stop(self) -> None:
        super().stop()
        self.server.stop()


class Naive(UnsandboxedExtProc):
    """The plainest grpcio server, as tutorials have it."""

    name, label, kind = "naive", "Envoy + naive grpcio ext_proc (no sandbox)", "naive"


class GrpcAio(UnsandboxedExtProc):
    """What a Python user would run instead: an async servicer on grpc.aio and uvloop, the
    shape of the Python ext_proc SDKs."""

    name, label, kind = "grpc-aio", "Envoy + grpc.aio ext_proc, uvloop (no sandbox)", "aio"


@dataclass(frozen=True)
class NeighbourPlugin:
    """Another plugin on the same sidecar, on an Envoy TCP listener (and chain) of its name."""

    name: str
    path: Path
    config: tuple[tuple[str, str], ...] = ()
    what: str = ""  # what it does, for the report

    def toml(self, tier: str) -> str:
        config = ", ".join(f'{key} = "{value}"' for key, value in self.config)
        return (f'[plugins.{self.name}]\npath = "{self.path}"\ntier = "{tier}"\n'
                f"config = {{ {config} }}\n")


# The slow neighbours: 18 ms of computing per TCP data event, 90% of its 20 ms cpu-ms; one
# reads the clock (a host call) every 100,000 iterations, the other every 10,000 (about every
# 15 µs): a host call runs Python on the slow event's thread, with the GIL the loop needs.
BUSY = NeighbourPlugin("busy", ROOT / "tests" / "plugins" / "busy",
                       (("busy-ms", "18"), ("clock-every", "100000")), "computing")
BUSY_CALLING = NeighbourPlugin("busy-calling", BUSY.path,
                               (("busy-ms", "18"), ("clock-every", "10000")),
                               "computing, a host call every ~15 µs")
SLOW_NEIGHBOURS = (BUSY, BUSY_CALLING)


class Hyperfilter(ExtProcContender):
    """`hyperfilter serve` in its own processes (a worker per core), every stream through
    `plugin` on `tier`; with no plugin, the same server with the sandbox call removed (an empty
    chain). Each of `neighbours` is loaded too, with a TCP listener of its own."""

    measure_live_memory = True
    cache = BENCH_CACHE

    def __init__(self, plugin: str | None = "pass-through", tier: str = "wasmtime",
                 workers: int = 2, neighbours: tuple[NeighbourPlugin, ...] = ()) -> None:
        self.plugin, self.tier, self.workers = plugin, tier, workers
        self.neighbours = neighbours
        self.name = f"hyperfilter-{tier}" if plugin else "hyperfilter-path"
        self.label = (f"Envoy + hyperfilter ({plugin}, {tier})" if plugin
                      else "Envoy + hyperfilter, sandbox call removed")
        self.sidecar_pids: list[int] = []
        self.sidecar_ports: list[int] = []

    def listeners(self, upstreams: Upstreams) -> list[Listener]:
        return [*super().listeners(upstreams),
                *(TcpListener(n.name, n.name, upstreams.echo) for n in self.neighbours)]

    def start(self, upstreams: Upstreams) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="hyperfilter-bench-")
        workdir = Path(self._dir.name)
        # The plugin is also a chain of its own name, which bench/attacks.py's streams name.
        plugin = self.plugin or "pass-through"
        chain = f'["{plugin}"]' if self.plugin else "[]"
        code = self.code(workdir)
        env = {**os.environ, "PYTHONPATH": str(code)}  # its modules ahead of the installed ones
        (workdir / "sidecar.toml").write_text(
            f'cache-dir = "{self.cache}"\nworkers = {self.workers}\n'
            f'[plugins.{plugin}]\npath = "{code / "plugins" / "examples" / plugin}"\n'
            f'tier = "{self.tier}"\n' + "".join(n.toml(self.tier) for n in self.neighbours)
            + f"[chains]\nbench = {chain}\n")
        imported = subprocess.run([sys.executable, "-c", "import sidecar; print(sidecar.__file__)"],
                                  cwd=code, env=env, capture_output=True, text=True,
                                  check=True).stdout.strip()
        if not Path(imported).is_relative_to(code):
            raise RuntimeError(f"{self.label}: sidecar imported from {imported}, not {code}")
        self.log = workdir / "sidecar.log"
        with self.log.open("w") as log:
            self.sidecar = subprocess.Popen(
                [str(HYPERFILTER), "serve", "--config", str(workdir / "sidecar.toml"),
                 "--listen", "127.0.0.1:0"], cwd=code, env=env, stderr=log)
        workers = self._wait_for_workers()
        self.sidecar_pids = [pid for pid, _ in workers]
        self.sidecar_ports = [port for _, port in workers]
        self.start_envoy(upstreams, self.sidecar_ports)

    def code(self, workdir: Path) -> Path:
        """Where the code the sidecar runs lives: this tree."""
        return ROOT

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
        raise RuntimeError(f"{self.label} did not start:\n{self.log.read_text()}")

    def stop(self) -> None:
        super().stop()
        self.sidecar.terminate()
        self.sidecar.wait(timeout=30)
        self._dir.cleanup()


class AtCommit(Hyperfilter):
    """The same server and plugin (pass-through, wasmtime), running the code of git commit
    `commit`, extracted from git at start (not kept in the tree)."""

    measure_live_memory = False

    def __init__(self, commit: str, name: str, what: str) -> None:
        super().__init__()
        self.commit = commit
        self.name = f"hyperfilter-{name}"
        self.label = f"Envoy + hyperfilter, {what} ({commit}; pass-through, wasmtime)"
        self.cache = BENCH_CACHE / f"commit-{commit}"  # its cache format need not be today's

    def unavailable(self) -> str | None:
        """Why this clone cannot run it (a shallow clone lacks the commit), or None."""
        found = subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e",
                                f"{self.commit}^{{commit}}"], capture_output=True)
        return None if found.returncode == 0 else (
            f"commit {self.commit} is not in this clone (shallow?): not run")

    def code(self, workdir: Path) -> Path:
        source = workdir / "source"
        source.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", self.commit],
                                 capture_output=True, check=True).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(source, filter="data")
        # Its plugin, built by its own tools: the plugin world changes between commits.
        subprocess.run([str(HYPERFILTER), "plugin", "build",
                        str(source / "plugins" / "examples" / "pass-through")], cwd=source,
                       env={**os.environ, "PYTHONPATH": str(source)}, check=True,
                       capture_output=True)
        return source


def previous_framing() -> AtCommit:
    """The last commit with the hand-written HTTP/2 framing."""
    return AtCommit("bc4adb5", "previous-framing", "previous framing")


BEFORE_CONTAINMENT = "93b4b6b"


def before_containment() -> AtCommit:
    """The last commit before a slow plugin was contained: libnghttp2 framing, but no
    offloading of slow plugins, no verdict checks, no CPU-clock bound."""
    return AtCommit(BEFORE_CONTAINMENT, "before-containment", "before containment")


# Envoy's proxy listeners with its own Wasm filter in front; an absolute template path
# overrides envoy-config/.
@dataclass(frozen=True)
class WasmTcpListener(TcpProxyListener):
    wasm: str = field(kw_only=True)
    template = str(ROOT / "bench" / "envoy" / "tcp-wasm-listener.yaml")


@dataclass(frozen=True)
class WasmHttpListener(HttpProxyListener):
    wasm: str = field(kw_only=True)
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
        return [WasmTcpListener("tcp", upstreams.echo, wasm=wasm),
                WasmHttpListener("http", upstreams.http, wasm=wasm),
                WasmHttpListener("http_body", upstreams.http, wasm=wasm)]
