"""What both kinds of wasmtime plugin share: the engine, the CPU deadline, a store bounded by
the plugin's limits, and the check at load that a sandbox can actually be made."""

from __future__ import annotations

import wasmtime

from vmm.cpu_clock import start_event
from vmm.errors import CpuLimitExceeded, PluginLoadError, PluginTrap, SandboxFault
from vmm.faults import summary
from vmm.manifest import Manifest
from vmm.memory_plan import MemoryPlan
from vmm.sandbox import LoadedPlugin
from vmm.wasmtime.engine import EpochTicker

# The canonical ABI lifts and lowers through one linear memory: a plugin whose memories cannot
# be read from its binary gets that one (vmm/memory_plan.py: wasmtime's limit is per memory).
UNPLANNED = MemoryPlan(growable=1)
# wasmtime's element limit is per table: the sandbox's allowance is shared among this many
# (componentize-py's components have two tables, C modules one).
MAX_TABLES = 4


# Each memory reserves the engine's whole reservation of address space, and instantiation work,
# whatever its size: an interpreter's component instrumented by the fuzzer has one a core
# module with code (13 for componentize-py's, 3 for componentize-js's).
MAX_FIXED_MEMORIES = 16


def allowed_memories(plan: MemoryPlan | None) -> MemoryPlan:
    """The memories a plugin's stores allow: its plan, unless it has none, more than one
    memory that may grow (each could take all of memory-mb), or more than MAX_FIXED_MEMORIES
    of fixed size."""
    if plan is None or plan.growable > 1 or plan.fixed > MAX_FIXED_MEMORIES:
        return UNPLANNED
    return plan


class WasmtimePlugin(LoadedPlugin):
    tier = "wasmtime"

    def __init__(self, manifest: Manifest, engine: wasmtime.Engine, ticker: EpochTicker,
                 memories: MemoryPlan | None) -> None:
        """`memories`: what the plugin's instantiation creates (vmm/memory_plan.py)."""
        super().__init__(manifest)
        self.engine = engine
        self.ticker = ticker
        self.deadline_ticks = ticker.ticks_for(manifest.limits.cpu_ms)
        self.memories = allowed_memories(memories)
        if self.memories.fixed_bytes >= manifest.limits.memory_bytes:
            raise PluginLoadError(self.name, f"its fixed-size memories take "
                                             f"{self.memories.fixed_bytes} bytes, all of "
                                             f"memory-mb and more")

    def begin(self, store: wasmtime.Store) -> None:
        """The store's code is about to run for one event (or to instantiate): its CPU time
        from now, for the epoch deadline and for host calls (check_event_budget)."""
        store.set_epoch_deadline(self.deadline_ticks)
        start_event(self.manifest.limits.cpu_ms / 1000)

    def new_store(self) -> wasmtime.Store:
        """A store for one sandbox: its linear memory within memory-mb less its fixed-size
        memories, no memory more than it declares, its tables within the elements its limits
        allow (vmm/manifest.py): a table.grow past them fails."""
        limits = self.manifest.limits
        store = wasmtime.Store(self.engine)
        store.set_limits(memory_size=limits.memory_bytes - self.memories.fixed_bytes,
                         table_elements=limits.table_elements // MAX_TABLES,
                         tables=MAX_TABLES, memories=self.memories.memories)
        return store

    def instantiation_fault(self, error: wasmtime.Trap | wasmtime.WasmtimeError) -> SandboxFault:
        """Why a sandbox could not be made: its start function out of CPU time, or the cause
        wasmtime gives (not the first line of its backtrace)."""
        message = str(error)
        if (error.trap_code == wasmtime.TrapCode.INTERRUPT if isinstance(error, wasmtime.Trap)
                else "wasm trap: interrupt" in message):
            return CpuLimitExceeded(self.name, f"its start function ran past its "
                                               f"{self.manifest.limits.cpu_ms} ms of CPU time")
        return PluginTrap(self.name, f"instantiation failed: {summary(message)}")

    def check_instantiates(self) -> None:
        """A plugin that cannot start (too much initial memory or too large a table, a
        trapping or looping start function) fails now, at load, not on every stream."""
        try:
            self.new_sandbox().close()
        except SandboxFault as fault:
            raise PluginLoadError(self.name, f"cannot be instantiated: {fault.detail}") from None
