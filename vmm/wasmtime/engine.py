"""The wasmtime Engines (one per linear-memory reservation), and the epoch ticker that bounds
each event's CPU time."""

from __future__ import annotations

import math
import threading
from importlib.metadata import version

import wasmtime

from vmm.cpu_clock import BusiestThread, start_event
from vmm.wasmtime.raw import set_epoch_deadline

TICK_SECONDS = 0.005
CATCH_UP = 2  # epochs the ticker may count at one look
WASMTIME_VERSION = version("wasmtime")
# Past the end of each reservation: offsets up to this need no bounds check of their own.
GUARD_BYTES = 64 << 10
SMALLEST_RESERVATION = 1 << 20


def reservation_for(memory_limit: int) -> int:
    """Address space a sandbox's linear memory reserves: its plugin's limit, rounded up to a
    power of two (so that plugins share few engines). wasmtime's default, 4 GiB each plus
    guards, ran out of address space at about 20,000 live sandboxes; this is in proportion
    to memory-mb, at the cost of explicit bounds checks in the compiled code."""
    return max(SMALLEST_RESERVATION, 1 << (memory_limit - 1).bit_length())


def new_engine(reservation: int) -> wasmtime.Engine:
    config = wasmtime.Config()
    config.epoch_interruption = True  # cheaper than fuel, and needs no per-call bookkeeping
    config.cranelift_opt_level = "speed"
    # Linear memories stay at one address for their life (vmm/wasmtime/raw.py reads it once)
    # and grow within their reservation, which covers the plugin's whole limit.
    config.memory_may_move = False
    config.memory_reservation = reservation
    config.memory_reservation_for_growth = 0
    config.memory_guard_size = GUARD_BYTES
    return wasmtime.Engine(config)


def runtime_fingerprint() -> str:
    """What compiled code depends on, so the compile cache never serves stale artifacts (the
    reservation, too, names the artifact: see WasmtimeBackend)."""
    return f"wasmtime-{WASMTIME_VERSION}-epoch-fixed-memory-guard-{GUARD_BYTES}"


class EpochTicker:
    """Advances every engine's epoch once per tick of CPU time; a store whose deadline passes
    traps with INTERRUPT. Wasm runs with the GIL released, so the ticker runs while a plugin
    loops, and a host call returns into wasm code that checks the epoch.

    An epoch is a tick of CPU time of the process's busiest thread, looked at every tick of
    wall time. For the thread running a sandbox that is at least its own CPU time, so no event
    runs much past its `cpu-ms`, and a thread waiting for a core is not charged for the wait.
    (While another thread of the process is busier, the sandbox is charged that thread's time
    and stops sooner.)"""

    def __init__(self, tick: float = TICK_SECONDS) -> None:
        self._engines: list[wasmtime.Engine] = []
        self.tick = tick
        self.epoch = 0  # the engine's epoch, counted after each increment (see EpochDeadline)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wasm-epoch", daemon=True)
        self._thread.start()

    def add(self, engine: wasmtime.Engine) -> None:
        self._engines = [*self._engines, engine]  # a new list: the thread iterates the old

    def _run(self) -> None:
        busiest = BusiestThread()
        owed = 0.0  # CPU time not yet counted as an epoch
        while not self._stop.wait(self.tick):
            # At most CATCH_UP epochs per look: after the ticker itself waited for a core, a
            # burst of epochs would end whichever event happens to run then (under load, a
            # pass-through plugin's open event was stopped so); fewer, and a starved ticker
            # lets a looping event run on past twice its bound.
            owed = min(owed + busiest.used_since_last_look(), CATCH_UP * self.tick)
            while owed >= self.tick:
                owed -= self.tick
                for engine in self._engines:
                    engine.increment_epoch()
                self.epoch += 1

    def ticks_for(self, cpu_ms: int) -> int:
        """Deadline in ticks for at least `cpu_ms`, and at most two ticks more: when it is
        set, the current tick is partly gone, and the CPU time used since the ticker last
        looked (up to a tick) is yet to be counted."""
        return math.ceil(cpu_ms / 1000 / self.tick) + 2

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


class EpochDeadline:
    """One store's CPU deadline: `ticks` epochs past the current one, renewed before each call.

    Set within one tick, the deadline is the same absolute epoch wherever in the tick it is
    set; so it is set again only once the ticker has counted a new epoch, and most calls cost
    no foreign call for it. The ticker counts after incrementing, so a count that lags by one
    leaves a deadline set in the previous tick, which still grants `ticks - 1` whole ticks,
    less what the ticker has yet to count: the CPU time asked for, as `ticks_for` promises."""

    __slots__ = ("_cpu_seconds", "_ctx_address", "_set_at", "_ticker", "_ticks")

    def __init__(self, ctx_address: int, ticker: EpochTicker, cpu_ms: int) -> None:
        self._ctx_address = ctx_address
        self._ticker = ticker
        self._ticks = ticker.ticks_for(cpu_ms)
        self._cpu_seconds = cpu_ms / 1000  # also checked at host calls (check_event_budget)
        self._set_at = -1

    def renew(self) -> None:
        """The store's code is about to run for one event (or a start function)."""
        start_event(self._cpu_seconds)
        epoch = self._ticker.epoch
        if epoch != self._set_at:
            set_epoch_deadline(self._ctx_address, self._ticks)
            self._set_at = epoch
