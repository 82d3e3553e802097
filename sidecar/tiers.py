"""Which isolation tier runs each plugin: the backends the configuration needs, made once, and
the fallback a plugin entry allows when its tier cannot run on this machine, or cannot run the
plugin (sidecar/registry.py tries them in order)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from sidecar.config import PluginEntry, SidecarConfig
from vmm.errors import PluginLoadError, TierUnavailableError
from vmm.kvm.backend import KvmBackend
from vmm.sandbox import Backend
from vmm.wasmtime import WasmtimeBackend

log = logging.getLogger(__name__)


BACKENDS: dict[str, Callable[[Path], Backend]] = {"wasmtime": WasmtimeBackend, "kvm": KvmBackend}


class Tiers:
    def __init__(self, config: SidecarConfig) -> None:
        self.backends: dict[str, Backend] = {}
        self.unavailable: dict[str, TierUnavailableError] = {}
        wanted = {entry.tier for entry in config.plugins.values()} | {
            entry.fallback_tier for entry in config.plugins.values() if entry.fallback_tier}
        for tier in sorted(wanted or {"wasmtime"}):
            try:
                self.backends[tier] = BACKENDS[tier](config.cache_dir)
            except TierUnavailableError as exc:
                self.unavailable[tier] = exc

    def backends_for(self, entry: PluginEntry) -> list[Backend]:
        """The backends to load the entry on, in order: its tier's and its fallback's, or its
        fallback's alone where its tier cannot run (said in the log)."""
        if entry.tier in self.backends:
            fallback = self.backends.get(entry.fallback_tier or "")
            return [self.backends[entry.tier], *([fallback] if fallback else [])]
        return [self._fallback(entry)]

    def _fallback(self, entry: PluginEntry) -> Backend:
        reason = self.unavailable[entry.tier]
        fallback = entry.fallback_tier
        if fallback is None:
            raise PluginLoadError(entry.name, f"asks for the {entry.tier} tier, but {reason}; "
                                              'set fallback-tier = "wasmtime" to run it there '
                                              "instead")
        if fallback not in self.backends:
            raise PluginLoadError(entry.name, f"{reason}, and {self.unavailable[fallback]}")
        log.warning("plugin %s: %s; running it on its fallback tier, %s", entry.name, reason,
                    fallback)
        return self.backends[fallback]

    def close(self) -> None:
        for backend in self.backends.values():
            backend.close()
        self.backends.clear()
