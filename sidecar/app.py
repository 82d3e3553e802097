"""A sidecar assembled from its configuration: backends, plugins, metrics, the gRPC server;
and how it serves: SIGTERM drains, SIGHUP reloads, SIGINT stops at once."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import signal
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from sidecar.admission import Admission
from sidecar.config import Address, ConfigError, PluginEntry, SidecarConfig, TcpAddress
from sidecar.metrics import Metrics
from sidecar.offload import GIL_SWITCH_SECONDS
from sidecar.registry import Registry
from sidecar.runtime import Runtime
from sidecar.server import SidecarServer
from sidecar.streams import Observer
from sidecar.tiers import Tiers
from vmm.errors import PluginLoadError
from vmm.sandbox import Backend

log = logging.getLogger("hyperfilter")
ConfigSource = Callable[[], SidecarConfig]
# Read once, at start: a reload that changes one of these says it keeps the old value.
RESTART_ONLY = {"listen": "listen", "workers": "workers", "metrics": "metrics",
                "cache_dir": "cache-dir", "pid_file": "pid-file", "log_format": "log-format",
                "tls": "tls", "slow_plugin_cores": "slow-plugin-cores",
                "shared_state": "shared-state"}


def log_plugins(registry: Registry) -> None:
    for plugin in registry.plugins:
        m = plugin.manifest
        grants = ", ".join(grant.describe() for grant in m.grants.values()) or "none"
        events = ", ".join(sorted(kind.value for kind in m.events))
        policy = registry.chains[plugin.name].links[0].policy.value
        log.info("plugin %s %s: %s on %s; events %s; grants %s; %s; %d MiB, %d ms per event",
                 plugin.name, m.version, plugin.kind, plugin.tier, events, grants, policy,
                 m.limits.memory_bytes >> 20, m.limits.cpu_ms)
    for chain in registry.chains.values():
        if len(chain.links) > 1:
            log.info("chain %s: %s", chain.name, " → ".join(link.name for link in chain.links))


class Sidecar:
    """Loaded and checked: every plugin compiled, every chain resolved. Nothing listens
    until `start`."""

    def __init__(self, config: SidecarConfig, observers: tuple[Observer, ...] = (),
                 on_plugin: Callable[[PluginEntry], None] = lambda entry: None,
                 runtime: Runtime | None = None) -> None:
        """`runtime`: what this worker shares with the other workers (sidecar/runtime.py);
        by default (one process) its own."""
        self.config = config
        self._own_runtime: Runtime | None = None
        if runtime is None:
            runtime = self._own_runtime = Runtime.create(config.slow_plugin_cores)
        self.runtime = runtime
        self.state = self.runtime.state_backend(config.shared_state)
        self.metrics = Metrics()
        self.tiers = Tiers(config)
        try:
            self.registry = Registry.load(config, self.tiers.backends_for, self.metrics,
                                          self.state, on_plugin)
        except BaseException:
            self.tiers.close()
            self._close_runtime()
            raise
        self.observers = (self.metrics, *observers)
        self.server: SidecarServer | None = None
        self.address: Address | None = None
        self.port = 0  # the TCP port bound; 0 on a Unix socket
        self.metrics_port: int | None = None
        # Reloads load on this thread, one at a time: compiling must not stall serving.
        self._loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hyperfilter-load")

    async def start(self, listen: str | None = None) -> int:
        admission = Admission(self.config.max_streams, self.config.max_sandboxes,
                              lambda bound: self.metrics.refused.labels(bound).inc())
        self.server = SidecarServer(self.registry, admission, self.runtime.lanes,
                                    self.observers)
        self.metrics.start(admission, self.server.offload, self.server.quiet_work.defer)
        self.address = await self.server.start(listen or self.config.listen, self.config.tls)
        self.port = self.address.port if isinstance(self.address, TcpAddress) else 0
        if self.config.metrics:
            self.metrics_port = self.metrics.serve(self.config.metrics)
        return self.port

    async def reload(self, read_config: ConfigSource) -> bool:
        """The configuration and its plugins loaded again, off the event loop; new streams
        get the new set, open ones keep the sandboxes they have. A load that fails keeps the
        old set and logs why; False then."""
        try:
            config, registry = await asyncio.wrap_future(
                self._loader.submit(self._load, read_config))
        except (ConfigError, PluginLoadError) as exc:
            log.error("reload failed; the plugins loaded before go on serving: %s", exc)
            return False
        except Exception:  # a reload must never take the serving sidecar down
            log.exception("reload failed; the plugins loaded before go on serving")
            return False
        for name, key in RESTART_ONLY.items():
            if getattr(config, name) != getattr(self.config, name):
                log.warning("reload: %s changed; it takes effect when the sidecar restarts", key)
        self.config = dataclasses.replace(
            config, **{name: getattr(self.config, name) for name in RESTART_ONLY})
        old, self.registry = self.registry, registry
        if self.server is not None:
            self.server.setup.registry = registry
            admission = self.server.setup.admission
            admission.max_streams, admission.max_sandboxes = (config.max_streams,
                                                              config.max_sandboxes)
        old.retire()  # closed once the streams still running on it have ended
        log_plugins(registry)
        log.info("reloaded: %d plugins, %d chains; new streams run them", len(registry.plugins),
                 len(registry.chains))
        gc.freeze()  # as at start: what was just loaded lives on
        return True

    def _load(self, read_config: ConfigSource) -> tuple[SidecarConfig, Registry]:
        """On the loader thread. The backends' loading is thread-safe: wasmtime compiles on
        its shared (thread-safe) Engine and releases the GIL while it does; a kvm load runs
        its snapshot VM on the loading thread, which the watchdog tracks per thread."""
        config = read_config()
        return config, Registry.load(config, self._backends_for_reload, self.metrics,
                                     self.state)

    def _backends_for_reload(self, entry: PluginEntry) -> list[Backend]:
        """The backends made at start serve reloaded plugins too (open streams still run on
        them); a tier the sidecar did not start with needs a restart."""
        known = self.tiers.backends.keys() | self.tiers.unavailable.keys()
        needed = [entry.tier]
        if entry.tier not in self.tiers.backends and entry.fallback_tier is not None:
            needed.append(entry.fallback_tier)
        for tier in needed:
            if tier not in known:
                raise PluginLoadError(entry.name, f"asks for the {tier} tier, which this "
                                                  "sidecar did not start with; restart it to "
                                                  "add a tier")
        return self.tiers.backends_for(entry)

    async def drain(self) -> None:
        """No new connections or streams; open streams run until they end or `drain-seconds`
        pass; then everything is closed."""
        if self.server is not None:
            await self.server.drain(self.config.drain_seconds)
        self.close()

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()
        self.close()

    def close(self) -> None:
        self._loader.shutdown(wait=True)  # a reload still loading uses the backends
        self.metrics.close()
        self.registry.close()
        self.tiers.close()
        self._close_runtime()

    def _close_runtime(self) -> None:
        self.state.close()
        if self._own_runtime is not None:
            self._own_runtime.remove()


class EarlyReload:
    """SIGHUP before the event loop serves (while plugins load): remembered rather than fatal,
    and done once serving begins. Made first thing in a process that will serve."""

    def __init__(self) -> None:
        self.requested = False
        signal.signal(signal.SIGHUP, self._remember)

    def _remember(self, signum: int, frame: object) -> None:
        self.requested = True


async def _reload_when_asked(sidecar: Sidecar, asked: asyncio.Event,
                             read_config: ConfigSource) -> None:
    while True:
        await asked.wait()
        asked.clear()  # SIGHUPs during this reload make one more after it
        log.info("SIGHUP: loading the configuration and plugins again")
        await sidecar.reload(read_config)


async def serve(sidecar: Sidecar, listen: str | None, ready: Callable[[str, int | None], None],
                read_config: ConfigSource, early: EarlyReload) -> None:
    """Serve until SIGTERM (drain: open streams finish within drain-seconds, then return) or
    SIGINT (stop at once, also during a drain); SIGHUP reloads from `read_config()`.
    `ready(address, metrics_port)` once listening."""
    # A process setting, so set by the process that serves (not by the sidecars tests run
    # in their own interpreter): see sidecar/offload.py.
    sys.setswitchinterval(GIL_SWITCH_SECONDS)
    loop = asyncio.get_running_loop()
    reload_asked, drain_asked, stop_asked = asyncio.Event(), asyncio.Event(), asyncio.Event()
    loop.add_signal_handler(signal.SIGHUP, reload_asked.set)
    loop.add_signal_handler(signal.SIGTERM, drain_asked.set)
    loop.add_signal_handler(signal.SIGINT, stop_asked.set)
    await sidecar.start(listen)
    # Everything loaded so far (plugins, protos, modules) lives as long as the process: keep
    # it out of the cyclic collector's way, so its passes stay short on the request path.
    gc.freeze()
    ready(str(sidecar.address), sidecar.metrics_port)
    if early.requested:
        reload_asked.set()
    reloader = asyncio.create_task(_reload_when_asked(sidecar, reload_asked, read_config))
    stop_wait = asyncio.create_task(stop_asked.wait())
    await asyncio.wait([asyncio.create_task(drain_asked.wait()), stop_wait],
                       return_when=asyncio.FIRST_COMPLETED)
    reloader.cancel()
    if not stop_asked.is_set():
        assert sidecar.server is not None
        log.info("SIGTERM: draining; %d open streams may run for up to %g s (SIGINT stops at "
                 "once)", sidecar.server.open_streams, sidecar.config.drain_seconds)
        draining = asyncio.create_task(sidecar.drain())
        await asyncio.wait([draining, stop_wait], return_when=asyncio.FIRST_COMPLETED)
        if draining.done():
            draining.result()
            log.info("drained")
            return
        draining.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await draining
        log.info("SIGINT: stopping at once")
    await sidecar.stop()
