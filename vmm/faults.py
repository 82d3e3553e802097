"""How a failed call into a plugin becomes a typed SandboxFault that carries its cause."""

from __future__ import annotations

import logging

from vmm.canonical import AbiError
from vmm.capabilities import CapabilityDenied
from vmm.capabilities.state import StoreUnavailable
from vmm.cpu_clock import CpuBudgetSpent
from vmm.errors import (
    CapabilityUnavailable,
    CpuLimitExceeded,
    MemoryLimitExceeded,
    PluginTrap,
    SandboxFault,
)
from vmm.manifest import Limits

log = logging.getLogger(__name__)
WASM_PAGE = 65536


def classify(plugin: str, limits: Limits, message: str, *, interrupted: bool,
             memory_size: int, host_cause: BaseException | None) -> SandboxFault:
    """`memory_size` is the plugin's linear memory size when it stopped (0 when unknown)."""
    if host_cause is not None:
        if isinstance(host_cause, CpuBudgetSpent):
            return CpuLimitExceeded(plugin, f"more than {limits.cpu_ms} ms of CPU time for one "
                                            f"event ({host_cause})")
        if isinstance(host_cause, CapabilityDenied | AbiError):
            return PluginTrap(plugin, f"host call refused: {host_cause}")
        if isinstance(host_cause, StoreUnavailable):
            return CapabilityUnavailable(plugin, f"shared-state: {host_cause}")
        log.error("host call of plugin %s raised", plugin, exc_info=host_cause)
        return PluginTrap(plugin, f"host call failed: {host_cause!r}")
    if interrupted:
        return CpuLimitExceeded(plugin, f"more than {limits.cpu_ms} ms of CPU time for one event")
    headroom = limits.memory_bytes - memory_size
    if memory_size and headroom < max(limits.memory_bytes // 4, WASM_PAGE):
        # A failed memory.grow is not a trap, and no tier hears of it; a trap with less than
        # a quarter of the limit left is, in practice, the plugin giving up after one.
        return MemoryLimitExceeded(
            plugin, f"trapped with {memory_size / 2**20:.1f} of its "
            f"{limits.memory_bytes >> 20} MiB in use ({summary(message)})")
    return PluginTrap(plugin, summary(message))


def summary(message: str) -> str:
    """The cause of a wasmtime error, without the backtrace: what follows "Caused by:"."""
    head, _, causes = message.partition("Caused by:")
    lines = [line.strip() for line in (causes or head).strip().splitlines() if line.strip()]
    if causes:
        lines = [line.split(": ", 1)[1] if line[:1].isdigit() else line for line in lines]
    return "; ".join(lines[-2:]) if lines else "trap"
