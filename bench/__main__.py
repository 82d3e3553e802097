"""`make bench`: every contender started here, every workload interleaved across contenders in
one run (the machine is shared and noisy), results in bench/results/latest.json with plots.

    python -m bench [--quick]
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.progress import Progress

from bench.contenders import TCP_CONTENDERS, Contender, ServerProcess
from bench.plots import plot_all
from bench.report import print_tables
from bench.stats import summarize
from bench.workloads import RoundTrips, connect_and_round_trip, timed
from sidecar.envoy import Upstream
from sidecar.metrics import Metrics
from vmm.loader import load_plugin
from vmm.sandbox import LoadedPlugin, Sandbox
from vmm.wasmtime import WasmtimeBackend

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


class Scale:
    def __init__(self, quick: bool) -> None:
        self.sandboxes = 300 if quick else 3000
        self.component_sandboxes = 30 if quick else 200
        self.blocks = 4 if quick else 20  # rounds of interleaving
        self.round_trips = 100 if quick else 250  # per block and contender
        self.connects = 20 if quick else 50


def creation_samples(plugin: LoadedPlugin, count: int) -> list[int]:
    """Creating only: the sandboxes are closed after the timing."""
    created: list[Sandbox] = []
    samples = timed(lambda: created.append(plugin.new_sandbox()), count)
    for sandbox in created:
        sandbox.close()
    return samples


def sandbox_creation(scale: Scale, progress: Progress) -> dict[str, dict[str, float]]:
    """Time to create one sandbox (close not counted), per plugin kind, in this process."""
    task = progress.add_task("sandbox creation", total=2)
    backend = WasmtimeBackend(Path(tempfile.mkdtemp(prefix="hyperfilter-bench-cache-")))
    results = {}
    try:
        for label, plugin_name, count in (
                ("wasmtime core module (pass-through, C)", "pass-through", scale.sandboxes),
                ("wasmtime component (http-auth, Python)", "http-auth",
                 scale.component_sandboxes)):
            plugin = load_plugin(ROOT / "plugins" / "examples" / plugin_name, backend,
                                 Metrics())
            results[label] = summarize(creation_samples(plugin, count))
            progress.advance(task)
    finally:
        backend.close()
    return results


def interleaved(contenders: list[Contender], scale: Scale, progress: Progress,
                workload: str, measure: Callable[[Contender], list[int]],
                blocks: int) -> dict[str, dict[str, float]]:
    samples: dict[str, list[int]] = {c.name: [] for c in contenders}
    task = progress.add_task(workload, total=blocks * len(contenders))
    for _ in range(blocks):
        for contender in contenders:
            samples[contender.name].extend(measure(contender))
            progress.advance(task)
    return {c.label: summarize(samples[c.name]) | {"contender": c.name} for c in contenders}


def tcp_workloads(scale: Scale, progress: Progress) -> dict[str, dict[str, dict[str, float]]]:
    echo = ServerProcess("echo")
    contenders = [kind() for kind in TCP_CONTENDERS]
    started: list[Contender] = []
    task = progress.add_task("starting contenders", total=len(contenders))
    try:
        for contender in contenders:
            contender.start(Upstream("127.0.0.1", echo.port))
            started.append(contender)
            progress.advance(task)
        connections = {c.name: RoundTrips(c.port, 100) for c in contenders}
        for connection in connections.values():
            connection.run(200)  # warm up: first streams, sandboxes, caches
        results = {"tcp_round_trip_100B": interleaved(
            contenders, scale, progress, "TCP round trip, 100 B",
            lambda c: connections[c.name].run(scale.round_trips), scale.blocks)}
        for connection in connections.values():
            connection.close()
        results["tcp_connect_and_round_trip"] = interleaved(
            contenders, scale, progress, "new connection + first round trip",
            lambda c: connect_and_round_trip(c.port, scale.connects), scale.blocks)
        return results
    finally:
        for contender in started:
            contender.stop()
        echo.stop()


def main(argv: list[str]) -> int:
    quick = "--quick" in argv
    scale = Scale(quick)
    console = Console()
    results: dict[str, object] = {
        "finished": None, "quick": quick,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "kvm": os.path.exists("/dev/kvm")},
        "command": "make bench" + (" QUICK=1" if quick else ""),
        "workloads": {},
    }
    workloads: dict[str, object] = {}
    with Progress(console=console, transient=True) as progress:
        workloads["sandbox_creation"] = sandbox_creation(scale, progress)
        workloads.update(tcp_workloads(scale, progress))
    results["workloads"] = workloads
    results["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    plot_all(results, RESULTS)
    print_tables(results, console)
    console.print(f"results: {RESULTS / 'latest.json'} and plots beside it")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
