"""A sidecar assembled from its configuration: backends, plugins, metrics, the gRPC server."""

from __future__ import annotations

from collections.abc import Callable

from sidecar.config import PluginEntry, SidecarConfig
from sidecar.metrics import Metrics
from sidecar.registry import Registry
from sidecar.server import SidecarServer
from sidecar.streams import Observer
from vmm.sandbox import Backend
from vmm.wasmtime import WasmtimeBackend


def make_backends(config: SidecarConfig) -> dict[str, Backend]:
    """One backend per isolation tier the configuration uses."""
    return {"wasmtime": WasmtimeBackend(config.cache_dir)}


class Sidecar:
    """Loaded and checked: every plugin compiled, every chain resolved. Nothing listens
    until `start`."""

    def __init__(self, config: SidecarConfig, observers: tuple[Observer, ...] = (),
                 on_plugin: Callable[[PluginEntry], None] = lambda entry: None) -> None:
        self.config = config
        self.metrics = Metrics()
        self.backends = make_backends(config)
        try:
            self.registry = Registry.load(config, self.backends, self.metrics, on_plugin)
        except BaseException:
            self.close()
            raise
        self.observers = (self.metrics, *observers)
        self.server: SidecarServer | None = None
        self.port = 0
        self.metrics_port: int | None = None

    async def start(self, listen: str | None = None) -> int:
        self.server = SidecarServer(self.registry, self.observers)
        self.port = await self.server.start(listen or self.config.listen)
        if self.config.metrics:
            self.metrics_port = self.metrics.serve(self.config.metrics)
        return self.port

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()
        self.close()

    def close(self) -> None:
        for backend in self.backends.values():
            backend.close()
