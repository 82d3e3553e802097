"""What both kinds of wasmtime plugin share: the engine, the CPU deadline, and the check at
load that a sandbox can actually be made."""

from __future__ import annotations

import wasmtime

from vmm.errors import PluginLoadError, SandboxFault
from vmm.manifest import Manifest
from vmm.sandbox import LoadedPlugin
from vmm.wasmtime.engine import EpochTicker


class WasmtimePlugin(LoadedPlugin):
    tier = "wasmtime"

    def __init__(self, manifest: Manifest, engine: wasmtime.Engine, ticker: EpochTicker) -> None:
        super().__init__(manifest)
        self.engine = engine
        self.ticker = ticker
        self.deadline_ticks = ticker.ticks_for(manifest.limits.cpu_ms)

    def check_instantiates(self) -> None:
        """A plugin that cannot start (too much initial memory, a trapping start function)
        fails now, at load, not on every stream."""
        try:
            self.new_sandbox().close()
        except SandboxFault as fault:
            raise PluginLoadError(self.name, f"cannot be instantiated: {fault.detail}") from None
