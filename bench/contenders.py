"""The contenders: ways to put (or not put) a filter between a client and the same echo
upstream. Each runs in its own processes, started on loopback ports the OS picks."""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from abc import ABC, abstractmethod
from pathlib import Path

from sidecar.envoy import Envoy, Listener, TcpListener, TcpProxyListener, Upstream, render_bootstrap

ROOT = Path(__file__).resolve().parent.parent


class ServerProcess:
    """A `python -m bench.servers KIND` process; it prints its port when ready."""

    def __init__(self, kind: str) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "bench.servers", kind], cwd=ROOT,
                                        stdout=subprocess.PIPE, text=True)
        self.port = int(self.process.stdout.readline())  # type: ignore[union-attr]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


class Contender(ABC):
    """`port` accepts TCP connections that end up at the echo upstream."""

    name: str
    label: str
    port: int

    @abstractmethod
    def start(self, upstream: Upstream) -> None: ...

    @abstractmethod
    def stop(self) -> None:
        """Stop what `start` started."""


class Direct(Contender):
    name, label = "direct", "no proxy (client → echo)"

    def start(self, upstream: Upstream) -> None:
        self.port = upstream.port

    def stop(self) -> None:
        pass  # the upstream belongs to the harness


class EnvoyContender(Contender):
    """Envoy with one listener named "bench" in front of the upstream."""

    envoy: Envoy

    def start_envoy(self, listener: Listener, sidecar_port: int = 1) -> None:
        self.envoy = Envoy(render_bootstrap(("127.0.0.1", sidecar_port), [listener])).start()
        self.port = self.envoy.listener_ports["bench"]

    def stop(self) -> None:
        self.envoy.stop()


class EnvoyAlone(EnvoyContender):
    name, label = "envoy", "Envoy alone (tcp_proxy)"

    def start(self, upstream: Upstream) -> None:
        self.start_envoy(TcpProxyListener("bench", upstream))


class NaiveExtProc(EnvoyContender):
    name, label = "naive", "Envoy + naive grpcio ext_proc (no sandbox)"

    def start(self, upstream: Upstream) -> None:
        self.server = ServerProcess("naive")
        self.start_envoy(TcpListener("bench", "bench", upstream), self.server.port)

    def stop(self) -> None:
        super().stop()
        self.server.stop()


class Hyperfilter(EnvoyContender):
    """`hyperfilter serve` with one plugin, its own process."""

    name, label = "hyperfilter", "Envoy + hyperfilter (pass-through plugin, wasmtime)"
    plugin = "pass-through"

    def start(self, upstream: Upstream) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="hyperfilter-bench-")
        workdir = Path(self._dir.name)
        (workdir / "sidecar.toml").write_text(
            f'cache-dir = "{ROOT / ".cache" / "bench"}"\n'
            f'[plugins]\nbench = "{ROOT / "plugins" / "examples" / self.plugin}"\n')
        self.log = workdir / "sidecar.log"
        with self.log.open("w") as log:
            self.sidecar = subprocess.Popen(
                [str(Path(sys.executable).parent / "hyperfilter"), "serve", "--config",
                 str(workdir / "sidecar.toml"), "--listen", "127.0.0.1:0"], stderr=log)
        self.start_envoy(TcpListener("bench", "bench", upstream), self._sidecar_port())

    def _sidecar_port(self, timeout: float = 120) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(r"listening on [\d.]+:(\d+)", self.log.read_text())
            if found:
                return int(found.group(1))
            if self.sidecar.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"hyperfilter serve did not start:\n{self.log.read_text()}")

    def stop(self) -> None:
        super().stop()
        self.sidecar.terminate()
        self.sidecar.wait(timeout=20)
        self._dir.cleanup()


TCP_CONTENDERS: list[type[Contender]] = [Direct, EnvoyAlone, NaiveExtProc, Hyperfilter]
