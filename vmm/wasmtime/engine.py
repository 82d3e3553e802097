"""The shared wasmtime Engine, and the epoch ticker that bounds each event's CPU time."""

from __future__ import annotations

import math
import threading
from importlib.metadata import version

import wasmtime

TICK_SECONDS = 0.005
WASMTIME_VERSION = version("wasmtime")


def new_engine() -> wasmtime.Engine:
    config = wasmtime.Config()
    config.epoch_interruption = True  # cheaper than fuel, and needs no per-call bookkeeping
    config.cranelift_opt_level = "speed"
    # Linear memories stay at one address for their life (vmm/wasmtime/raw.py reads it once);
    # they may still grow within their reservation, which is far above any plugin's limit.
    config.memory_may_move = False
    return wasmtime.Engine(config)


def runtime_fingerprint() -> str:
    """What compiled code depends on, so the compile cache never serves stale artifacts."""
    return f"wasmtime-{WASMTIME_VERSION}-epoch-fixed-memory"


class EpochTicker:
    """Advances the engine's epoch every tick; a store whose deadline passes traps with
    INTERRUPT. Wasm runs with the GIL released, so the ticker runs while a plugin loops."""

    def __init__(self, engine: wasmtime.Engine, tick: float = TICK_SECONDS) -> None:
        self._engine = engine
        self.tick = tick
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wasm-epoch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.tick):
            self._engine.increment_epoch()

    def ticks_for(self, cpu_ms: int) -> int:
        """Deadline in ticks for `cpu_ms`; one more because the current tick is partly gone."""
        return math.ceil(cpu_ms / 1000 / self.tick) + 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
