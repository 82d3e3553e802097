"""Several worker processes, so that every core serves streams.

Each worker is a whole sidecar (its own event loop and sandboxes; the slow lanes, the
`shared-state` store and the metrics' files are the sidecar's, sidecar/runtime.py) on its own
port (or Unix socket, `path.N`); the Envoy cluster lists every worker, and Envoy's round robin
spreads streams over them, one stream at a time. (One shared port would leave the spreading to
the kernel, which sees only Envoy's few long-lived HTTP/2 connections.) The parent serves the
one metrics endpoint, every worker's figures summed (sidecar/metrics.py), and supervises: a
worker that dies is started again on its address. It passes SIGHUP (reload) and SIGTERM
(drain) on to every worker, and after SIGTERM waits for them to finish their streams,
restarting none. A worker whose parent dies (killed, so it cannot pass SIGTERM on) gets
SIGTERM from the kernel and drains as if told to.
"""

from __future__ import annotations

import ctypes
import dataclasses
import logging
import multiprocessing
import os
import signal
import time
from multiprocessing.connection import Connection, wait
from pathlib import Path

import uvloop

from sidecar.app import EarlyReload, Sidecar, serve
from sidecar.config import UNIX_PREFIX, SidecarConfig, load_config
from sidecar.logs import JsonLines, log_to_stderr, worker_text
from sidecar.metrics import serve_workers, share_with_workers, worker_gone
from sidecar.runtime import Runtime

log = logging.getLogger("hyperfilter")
_spawn = multiprocessing.get_context("spawn")  # a fresh interpreter: no inherited threads
# Blocked while a worker starts, so that it inherits them blocked: until its handlers are in
# place, they wait instead of killing it.
PASSED_ON = {signal.SIGHUP, signal.SIGTERM}
# After SIGTERM the parent waits drain-seconds plus this for its workers, then kills the rest.
DRAIN_MARGIN_SECONDS = 5.0
STOP_SECONDS = 20.0  # after SIGINT
RESTART_DELAY_SECONDS = 5.0  # before trying again to start a worker that could not start
_PR_SET_PDEATHSIG = 1  # prctl(2): the signal a process gets when its parent thread ends


def worker_address(address: str, index: int, workers: int) -> str:
    """Worker `index`'s address: a Unix socket's path plus `.index` (when there are several
    workers); a TCP port plus the index (port 0 stays 0: any free port)."""
    if address.startswith(UNIX_PREFIX):
        return f"{address}.{index}" if workers > 1 else address
    host, _, port = address.rpartition(":")
    return f"{host}:{int(port) + index if int(port) else 0}"


def _end_with_parent(parent: int) -> None:
    """SIGTERM to this worker when its parent ends: a supervisor killed outright would
    otherwise leave its workers serving, and holding their ports, with no one to stop them."""
    libc = ctypes.CDLL(None, use_errno=True)
    # SAFETY: prctl with PR_SET_PDEATHSIG takes one int argument and touches no memory.
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
    if os.getppid() != parent:  # it ended before the signal was asked for
        os.kill(os.getpid(), signal.SIGTERM)


def _worker(config_path: Path, listen: str, index: int, level: str, log_format: str,
            runtime: Runtime, report: Connection, parent: int) -> None:
    _end_with_parent(parent)  # while loading, SIGTERM ends the worker; serving, drains it
    early = EarlyReload()
    signal.pthread_sigmask(signal.SIG_UNBLOCK, PASSED_ON)
    log_to_stderr(level, JsonLines(index) if log_format == "json" else worker_text(index))

    def read_config() -> SidecarConfig:
        # the parent serves the metrics, from the files this worker's values live in
        return dataclasses.replace(load_config(config_path), listen=listen, metrics=None,
                                   workers=1)

    def ready(address: str, metrics_port: int | None) -> None:
        report.send(address)
        report.close()

    sidecar = Sidecar(read_config(), runtime=runtime)
    uvloop.run(serve(sidecar, None, ready, read_config, early))


@dataclasses.dataclass
class Worker:
    index: int
    listen: str
    process: multiprocessing.process.BaseProcess | None = None
    not_before: float = 0.0  # no restart before this (monotonic) time

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.is_alive()


class Supervisor:
    def __init__(self, config_path: Path, config: SidecarConfig, listen: str | None,
                 level: str, log_format: str) -> None:
        self._config_path = config_path
        self._level = level
        self._log_format = log_format
        self._drain_seconds = config.drain_seconds
        self._stopping: signal.Signals | None = None
        self._runtime = Runtime.create(config.slow_plugin_cores)  # every worker's, restarted too
        self.metrics = config.metrics  # host:port; the port bound once `start` serves it
        self._metrics_dir = self._runtime.directory / "metrics"  # when `metrics` is set
        if self.metrics:
            share_with_workers(self._metrics_dir)
        base = listen or config.listen
        self.workers = [Worker(i, worker_address(base, i, config.workers))
                        for i in range(config.workers)]

    def _start(self, worker: Worker) -> None:
        receive, send = _spawn.Pipe(duplex=False)
        worker.process = _spawn.Process(
            target=_worker, name=f"hyperfilter-worker-{worker.index}", daemon=True,
            args=(self._config_path, worker.listen, worker.index, self._level,
                  self._log_format, self._runtime, send, os.getpid()))
        unblocked = signal.pthread_sigmask(signal.SIG_BLOCK, PASSED_ON)
        try:
            worker.process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, unblocked)
        send.close()
        try:
            # A restarted worker must come back on the same address, for Envoy's endpoints.
            worker.listen = receive.recv()
        except EOFError:
            raise RuntimeError(f"worker {worker.index} exited before listening") from None

    def _signal(self, signum: int, frame: object) -> None:
        sig = signal.Signals(signum)
        if sig is not signal.SIGHUP and self._stopping is None:
            self._stopping = sig
        for worker in self.workers:
            if worker.alive:
                os.kill(worker.process.pid, sig)  # type: ignore[union-attr, arg-type]

    def start(self) -> list[Worker]:
        """The metrics served (when set), then every worker started and listening (SIGHUP,
        SIGTERM and SIGINT are passed on to them from now on)."""
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._signal)
        try:
            if self.metrics:
                host = self.metrics.rpartition(":")[0]
                self.metrics = f"{host}:{serve_workers(self._metrics_dir, self.metrics)}"
            for worker in self.workers:
                if self._stopping is None:
                    try:
                        self._start(worker)
                    except RuntimeError:
                        if self._stopping is None:  # else it ended as it was told to
                            raise
        except (OSError, RuntimeError):
            self._runtime.remove()
            raise
        return self.workers

    def run(self) -> None:
        """Restart workers that die, until SIGTERM (every worker drains; waited for up to
        drain-seconds plus a margin) or SIGINT (every worker stops at once)."""
        try:
            while self._stopping is None:
                wait([w.process.sentinel for w in self.workers if w.process and w.alive],
                     timeout=0.5)
                for worker in self.workers:
                    if self._stopping is None and worker.process is not None \
                            and not worker.alive and time.monotonic() >= worker.not_before:
                        self._restart(worker)
            self._wait_for_workers()
        finally:
            self._runtime.remove()

    def _restart(self, worker: Worker) -> None:
        log.error("worker %d exited with %s; starting it again", worker.index,
                  worker.process.exitcode)  # type: ignore[union-attr]
        if self.metrics:
            worker_gone(self._metrics_dir, worker.process.pid)  # type: ignore[union-attr, arg-type]
        try:
            self._start(worker)
        except RuntimeError as exc:
            if self._stopping is None:
                worker.not_before = time.monotonic() + RESTART_DELAY_SECONDS
                log.error("%s; trying again in %g s", exc, RESTART_DELAY_SECONDS)
            return
        log.info("worker %d (pid %d) listening on %s again", worker.index,
                 worker.process.pid, worker.listen)  # type: ignore[union-attr]

    def _wait_for_workers(self) -> None:
        draining = self._stopping is signal.SIGTERM
        seconds = self._drain_seconds + DRAIN_MARGIN_SECONDS if draining else STOP_SECONDS
        log.info("%s: waiting up to %g s for the workers to %s", self._stopping.name,  # type: ignore[union-attr]
                 seconds, "drain" if draining else "stop")
        deadline = time.monotonic() + seconds
        for worker in self.workers:
            if worker.process is not None:
                worker.process.join(timeout=max(0.0, deadline - time.monotonic()))
        for worker in self.workers:
            if worker.alive:
                log.error("worker %d did not end within %g s; killed", worker.index, seconds)
                worker.process.kill()  # type: ignore[union-attr]
                worker.process.join()  # type: ignore[union-attr]
