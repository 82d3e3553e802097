"""Several worker processes, so that every core serves streams.

Each worker is a whole sidecar (its own event loop, sandboxes, `shared-state` store and metrics
endpoint) on its own port; the Envoy cluster lists every worker, and Envoy's round robin
spreads streams over them, one stream at a time. (One shared port would leave the spreading to
the kernel, which sees only Envoy's few long-lived HTTP/2 connections.) The parent supervises:
a worker that dies is started again on its port.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import signal
import threading
from multiprocessing.connection import Connection, wait
from pathlib import Path

import uvloop

from sidecar.app import Sidecar, serve
from sidecar.config import SidecarConfig, load_config

log = logging.getLogger("hyperfilter")
_spawn = multiprocessing.get_context("spawn")  # a fresh interpreter: no inherited threads


def offset(address: str | None, index: int) -> str | None:
    """Worker `index`'s address: the port plus the index (port 0 stays 0: any free port)."""
    if address is None:
        return None
    host, _, port = address.rpartition(":")
    return f"{host}:{int(port) + index if int(port) else 0}"


def _worker(config_path: Path, listen: str, metrics: str | None, index: int, level: str,
            report: Connection) -> None:
    logging.basicConfig(level=level.upper(),
                        format=f"%(asctime)s %(levelname)s w{index} %(name)s: %(message)s")
    config = dataclasses.replace(load_config(config_path), listen=listen, metrics=metrics,
                                 workers=1)
    sidecar = Sidecar(config)
    uvloop.run(serve(sidecar, None, lambda port, metrics_port: (
        report.send((port, metrics_port)), report.close())))


@dataclasses.dataclass
class Worker:
    index: int
    listen: str
    metrics: str | None
    process: multiprocessing.process.BaseProcess | None = None


class Supervisor:
    def __init__(self, config_path: Path, config: SidecarConfig, listen: str | None,
                 level: str) -> None:
        self._config_path = config_path
        self._level = level
        base = listen or config.listen
        self.workers = [Worker(i, offset(base, i), offset(config.metrics, i))  # type: ignore[arg-type]
                        for i in range(config.workers)]

    def _start(self, worker: Worker) -> None:
        receive, send = _spawn.Pipe(duplex=False)
        worker.process = _spawn.Process(
            target=_worker, name=f"hyperfilter-worker-{worker.index}", daemon=True,
            args=(self._config_path, worker.listen, worker.metrics, worker.index, self._level,
                  send))
        worker.process.start()
        send.close()
        try:
            port, metrics_port = receive.recv()
        except EOFError:
            raise RuntimeError(f"worker {worker.index} exited before listening") from None
        # A restarted worker must come back on the same ports, for Envoy's endpoints.
        worker.listen = f"{worker.listen.rpartition(':')[0]}:{port}"
        if worker.metrics and metrics_port:
            worker.metrics = f"{worker.metrics.rpartition(':')[0]}:{metrics_port}"

    def start(self) -> list[Worker]:
        for worker in self.workers:
            self._start(worker)
        return self.workers

    def run(self) -> None:
        """Restart workers that die, until SIGINT or SIGTERM; then stop them all."""
        stopping = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stopping.set())
        while not stopping.is_set():
            wait([w.process.sentinel for w in self.workers if w.process], timeout=0.5)
            for worker in self.workers:
                if worker.process and not worker.process.is_alive() and not stopping.is_set():
                    log.error("worker %d exited with %s; starting it again", worker.index,
                              worker.process.exitcode)
                    self._start(worker)
                    log.info("worker %d (pid %d) listening on %s again", worker.index,
                             worker.process.pid, worker.listen)
        self.stop()

    def stop(self) -> None:
        for worker in self.workers:
            if worker.process and worker.process.is_alive():
                worker.process.terminate()
        for worker in self.workers:
            if worker.process:
                worker.process.join(timeout=20)
