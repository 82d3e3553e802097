"""A sidecar assembled from its configuration: backends, plugins, metrics, the gRPC server."""

from __future__ import annotations

import asyncio
import gc
import signal
from collections.abc import Callable

from sidecar.admission import Admission
from sidecar.config import PluginEntry, SidecarConfig
from sidecar.metrics import Metrics
from sidecar.registry import Registry
from sidecar.server import SidecarServer
from sidecar.streams import Observer
from sidecar.tiers import Tiers


class Sidecar:
    """Loaded and checked: every plugin compiled, every chain resolved. Nothing listens
    until `start`."""

    def __init__(self, config: SidecarConfig, observers: tuple[Observer, ...] = (),
                 on_plugin: Callable[[PluginEntry], None] = lambda entry: None) -> None:
        self.config = config
        self.metrics = Metrics()
        self.tiers = Tiers(config)
        try:
            self.registry = Registry.load(config, self.tiers.backend_for, self.metrics,
                                          on_plugin)
        except BaseException:
            self.tiers.close()
            raise
        self.observers = (self.metrics, *observers)
        self.server: SidecarServer | None = None
        self.port = 0
        self.metrics_port: int | None = None

    async def start(self, listen: str | None = None) -> int:
        admission = Admission(self.config.max_streams, self.config.max_sandboxes,
                              lambda bound: self.metrics.refused.labels(bound).inc())
        self.metrics.watch(admission)
        self.server = SidecarServer(self.registry, admission, self.observers)
        self.port = await self.server.start(listen or self.config.listen)
        if self.config.metrics:
            self.metrics_port = self.metrics.serve(self.config.metrics)
        return self.port

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()
        self.close()

    def close(self) -> None:
        self.registry.close()
        self.tiers.close()


async def serve(sidecar: Sidecar, listen: str | None,
                ready: Callable[[int, int | None], None]) -> None:
    """Serve until SIGINT or SIGTERM; `ready(port, metrics_port)` once listening."""
    port = await sidecar.start(listen)
    # Everything loaded so far (plugins, protos, modules) lives as long as the process: keep
    # it out of the cyclic collector's way, so its passes stay short on the request path.
    gc.freeze()
    ready(port, sidecar.metrics_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await sidecar.stop()
