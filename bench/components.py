"""The same Python plugin (a componentize-py component) on each tier, in one run: what its
build costs (the first plugin of a toolchain, with an empty cache, and a later one, the
toolchain's interpreter already compiled), making a sandbox, one event's call, and the memory
a live sandbox holds with many live."""

from __future__ import annotations

import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

from rich.progress import Progress

from bench.stats import summarize
from bench.tiers import EXAMPLES, live_memory, reused
from bench.workloads import timed
from sidecar.metrics import Metrics
from sidecar.tiers import BACKENDS
from vmm.events import Direction, HttpHeaders
from vmm.loader import load_plugin
from vmm.sandbox import Backend, LoadedPlugin

FIRST, LATER = "jwt-auth", "http-auth"  # two Python plugins: one interpreter, two programs
EVENT = HttpHeaders(Direction.INBOUND, ((":method", b"GET"), (":path", b"/account")), True)


def component_rows(tiers: tuple[str, ...], sandboxes: int, calls: int, live: int,
                   progress: Progress) -> dict[str, dict[str, Any]]:
    task = progress.add_task("a Python component on each tier", total=len(tiers))
    rows = {}
    for tier in tiers:
        with tempfile.TemporaryDirectory(prefix="hyperfilter-bench-cache-") as cache:
            backend = BACKENDS[tier](Path(cache))
            try:
                rows[f"{tier}, component ({LATER}, Python)"] = _row(backend, sandboxes,
                                                                      calls, live)
            finally:
                backend.close()
        progress.advance(task)
    return rows


def _row(backend: Backend, sandboxes: int, calls: int, live: int) -> dict[str, Any]:
    first = _load_seconds(backend, FIRST)
    start = time.perf_counter()
    plugin = load_plugin(EXAMPLES / LATER, backend, Metrics())
    later = time.perf_counter() - start
    made = summarize(reused(plugin, sandboxes, EVENT))
    opening = summarize(_first_events(plugin, sandboxes))
    sandbox = plugin.new_sandbox()
    for _ in range(20):
        sandbox.deliver(EVENT)
    call = summarize(timed(partial(sandbox.deliver, EVENT), calls))
    sandbox.close()
    return {"tier": backend.tier, "first_build_s": round(first, 1),
            "later_build_s": round(later, 1), "sandbox_p50_us": made["p50_us"],
            "sandbox_p99_us": made["p99_us"], "first_event_p50_us": opening["p50_us"],
            "event_p50_us": call["p50_us"],
            "event_p99_us": call["p99_us"], **live_memory(plugin, live, EVENT)}


def _first_events(plugin: LoadedPlugin, count: int) -> list[int]:
    """Each event the first of a sandbox just made (on kvm, a VM just reset): what a reset
    leaves the guest to do again, beyond a later event's call."""
    samples = []
    for _ in range(count):
        sandbox = plugin.new_sandbox()
        samples += timed(partial(sandbox.deliver, EVENT), 1)
        sandbox.close()
    return samples


def _load_seconds(backend: Backend, name: str) -> float:
    start = time.perf_counter()
    load_plugin(EXAMPLES / name, backend, Metrics())
    return time.perf_counter() - start
