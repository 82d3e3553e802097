"""`make bench`: every contender started here, every workload interleaved across contenders in
one run (the machine is shared and noisy: only ratios within one run mean anything), results
in bench/results/latest.json with plots beside it.

    python -m bench [--quick]
"""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from rich.console import Console
from rich.progress import Progress

from bench import components, fuzzing, languages, state, tiers
from bench.attacks import ATTACKS, FULL_WINDOW, QUICK_WINDOW
from bench.contenders import (
    SLOW_NEIGHBOURS,
    Contender,
    Direct,
    EnvoyAlone,
    EnvoyWasm,
    ExtProcContender,
    GrpcAio,
    Hyperfilter,
    Naive,
    ServerProcess,
    Upstreams,
    before_containment,
    previous_framing,
)
from bench.plots import plot_all
from bench.report import SANDBOXED, SLOW_NEIGHBOUR, goals, markdown, print_tables
from bench.stats import summarize
from bench.workloads import (
    HttpRequests,
    RoundTrips,
    SidecarCpu,
    attack_trial,
    connect_and_round_trip,
    integrity,
    memory_per_connection,
    round_trips_per_second,
    slow_neighbour,
)
from sidecar.envoy import Upstream
from vmm.kvm import backend as kvm

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
Samples = dict[str, list[int]]


class Scale:
    def __init__(self, quick: bool) -> None:
        self.quick = quick
        self.sandboxes = 300 if quick else 3000
        self.component_sandboxes = 20 if quick else 200
        self.event_calls = 1000 if quick else 10000
        self.blocks = 3 if quick else 10  # rounds of interleaving
        self.round_trips = 100 if quick else 300  # per block and contender
        self.big_round_trips = 20 if quick else 50
        self.connects = 15 if quick else 40
        self.requests = 50 if quick else 150
        self.body_requests = 15 if quick else 40
        self.throughput_seconds = 1.0 if quick else 4.0
        self.cpu_round_trips = 500 if quick else 600  # per block and contender
        self.busy_connections = 50
        self.slow_neighbour_seconds = 2.0 if quick else 8.0  # before, then as long during
        self.integrity_connections = 100 if quick else 500
        self.integrity_max_size = (256 << 10) if quick else (1 << 20)
        self.integrity_seconds = 60.0 if quick else 240.0  # then what is still open dies
        self.concurrency = (1, 16, 64, 256)
        self.live = (1000,) if quick else (1000, 10000)
        self.fuzz_seconds = 5.0 if quick else 20.0  # a plugin, tier and coverage each


def tier_workloads(scale: Scale, progress: Progress) -> dict[str, Any]:
    """The isolation tiers in this process, before any contender runs (bench/tiers.py)."""
    made = tiers.backends()
    try:
        results: dict[str, Mapping[str, object]] = {  # each workload's rows, by label
            "sandbox_creation": tiers.sandbox_creation(made, scale.sandboxes,
                                                       scale.component_sandboxes, progress),
            "sandbox_event_call": tiers.event_calls(made, scale.event_calls, progress),
            "memory_per_live_sandbox": tiers.live_sandboxes(made, scale.live[0], progress),
        }
        results["shared_state_increment"] = state.increment_costs(scale.event_calls, progress)
        results["plugin_languages"] = languages.language_rows(
            made, scale.component_sandboxes, scale.event_calls, progress)
        results["fuzzing"] = fuzzing.fuzz_rows(tuple(made), scale.fuzz_seconds, progress)
        results["python_component"] = components.component_rows(
            tuple(made), scale.component_sandboxes, scale.event_calls // 10, scale.live[0],
            progress)
        if "kvm" in made:
            results["kvm_new_vm_breakdown_us"] = tiers.kvm_breakdown(made["kvm"],
                                                                     scale.sandboxes // 6)
        return results
    finally:
        for backend in made.values():
            backend.close()


def interleaved(contenders: list[Contender], progress: Progress, workload: str,
                measure: Callable[[Contender], list[int]], blocks: int,
                samples: Samples) -> dict[str, dict[str, Any]]:
    for contender in contenders:
        samples[contender.name] = []
    task = progress.add_task(workload, total=blocks * len(contenders))
    for _ in range(blocks):
        for contender in contenders:
            samples[contender.name].extend(measure(contender))
            progress.advance(task)
    return {c.label: summarize(samples[c.name]) | {"contender": c.name} for c in contenders}


class Client(Protocol):
    def run(self, count: int) -> list[int]: ...

    def close(self) -> None: ...


def with_clients(contenders: list[Contender], progress: Progress, name: str,
                 open_client: Callable[[Contender], Client], count: int, blocks: int,
                 raw: dict[str, Samples]) -> dict[str, dict[str, Any]]:
    """One persistent client per contender, warmed up, then measured interleaved."""
    clients = {c.name: open_client(c) for c in contenders}
    try:
        for client in clients.values():
            client.run(10)  # warm up: first streams, sandboxes, caches
        raw[name] = {}
        return interleaved(contenders, progress, name, lambda c: clients[c.name].run(count),
                           blocks, raw[name])
    finally:
        for client in clients.values():
            client.close()


def latency_workloads(contenders: list[Contender], scale: Scale, progress: Progress,
                      raw: dict[str, Samples]) -> dict[str, Any]:
    def run(name: str, open_client: Callable[[Contender], Client], count: int) -> None:
        results[name] = with_clients(contenders, progress, name, open_client, count,
                                     scale.blocks, raw)

    results: dict[str, Any] = {}
    run("tcp_round_trip_100B", lambda c: RoundTrips(c.ports["tcp"], 100), scale.round_trips)
    run("tcp_round_trip_64KiB", lambda c: RoundTrips(c.ports["tcp"], 65536),
        scale.big_round_trips)
    raw["tcp_connect_and_round_trip"] = {}
    results["tcp_connect_and_round_trip"] = interleaved(
        contenders, progress, "tcp_connect_and_round_trip",
        lambda c: connect_and_round_trip(c.ports["tcp"], scale.connects), scale.blocks,
        raw["tcp_connect_and_round_trip"])
    run("http_headers_only", lambda c: HttpRequests(c.ports["http"]), scale.requests)
    run("http_64KiB_body", lambda c: HttpRequests(c.ports["http_body"], b"b" * 65536),
        scale.body_requests)
    return results


def throughput(contenders: list[Contender], scale: Scale,
               progress: Progress) -> dict[str, dict[str, Any]]:
    """Echo round trips per second with N concurrent connections; for ext_proc contenders each
    round trip is two ext_proc messages (the bytes there, and back)."""
    task = progress.add_task("throughput", total=len(scale.concurrency) * len(contenders))
    results: dict[str, dict[str, Any]] = {c.label: {"contender": c.name} for c in contenders}
    for connections in scale.concurrency:
        for contender in contenders:
            rate = round_trips_per_second(contender.ports["tcp"], connections,
                                          scale.throughput_seconds)
            results[contender.label][str(connections)] = round(rate)
            progress.advance(task)
    return results


def sidecar_cpu(contenders: list[Contender], scale: Scale,
                progress: Progress) -> dict[str, dict[str, Any]]:
    """CPU time of the ext_proc server's processes (user + system) per ext_proc message, over
    100-byte echo round trips on one warm connection, interleaved across contenders."""
    measured = [c for c in contenders if isinstance(c, ExtProcContender)]
    clients = {c.name: SidecarCpu(c.ports["tcp"], c.sidecar_pids) for c in measured}
    try:
        for client in clients.values():
            client.warm_up(50)
        task = progress.add_task("sidecar CPU per message", total=scale.blocks * len(measured))
        for _ in range(scale.blocks):
            for contender in measured:
                clients[contender.name].run(scale.cpu_round_trips)
                progress.advance(task)
    finally:
        for client in clients.values():
            client.close()
    return {c.label: {"contender": c.name, "messages": clients[c.name].messages,
                      "cpu_s": round(clients[c.name].seconds, 3),
                      "us_per_message": round(
                          clients[c.name].seconds / clients[c.name].messages * 1e6, 1)}
            for c in measured}


def slow_neighbours(contenders: list[Contender], scale: Scale,
                    progress: Progress) -> dict[str, dict[str, Any]]:
    """On each sidecar that also runs the slow plugins: the pass-through neighbour's round
    trips before and while a slow plugin's own connections keep it busy (bench/workloads.py),
    for each slow plugin in turn."""
    measured = [(c, busy) for c in contenders for busy in SLOW_NEIGHBOURS if busy.name in c.ports]
    task = progress.add_task("slow neighbour", total=len(measured))
    results = {}
    for contender, busy in measured:
        results[f"{contender.label}; {busy.name}: {busy.what}"] = {
            "contender": contender.name, "plugin": busy.name} | slow_neighbour(
            contender.ports["tcp"], contender.ports[busy.name], scale.busy_connections,
            scale.slow_neighbour_seconds)
        progress.advance(task)
    return results


def data_integrity(contenders: list[Contender], scale: Scale,
                   progress: Progress) -> dict[str, dict[str, Any]]:
    """Concurrent connections of random sizes through each sandboxed tier's pass-through:
    every byte must come back, once and in order."""
    measured = [c for c in contenders if c.name in SANDBOXED]
    task = progress.add_task("data integrity", total=len(measured))
    results = {}
    for contender in measured:
        results[contender.label] = {"contender": contender.name} | integrity(
            contender.ports["tcp"], scale.integrity_connections, scale.integrity_max_size,
            scale.integrity_seconds)
        progress.advance(task)
    return results


def attack_trials(contenders: list[Contender], scale: Scale,
                  progress: Progress) -> dict[str, dict[str, Any]]:
    """Every attack of bench/attacks.py on one worker of the first sandboxed tier's sidecar,
    a well-behaved client timing its round trips before and during each. Run last: an attack
    may leave the server worse off."""
    target = next((c for c in contenders if c.name in SANDBOXED), None)
    if not isinstance(target, Hyperfilter):
        return {}
    task = progress.add_task("attacks", total=len(ATTACKS))
    results = {}
    for name, attack in ATTACKS.items():
        results[name] = {"contender": target.name} | attack_trial(
            target.sidecar_ports[0], target.sidecar_pids[0], attack,
            QUICK_WINDOW if scale.quick else FULL_WINDOW)
        progress.advance(task)
    return results


def live_memory(contenders: list[Contender], scale: Scale, descriptors: int,
                progress: Progress) -> dict[str, dict[str, Any]]:
    """Resident memory of the sidecar per live connection: its stream, and its sandbox (the
    contender without a sandbox call shows what the stream alone costs). The unsandboxed servers
    are not measured: no sandbox to count, and the naive one, a thread per stream, cannot hold
    thousands of streams."""
    measured: list[Hyperfilter] = [c for c in contenders
                                   if isinstance(c, Hyperfilter) and c.measure_live_memory]
    task = progress.add_task("memory per live connection", total=len(scale.live) * len(measured))
    results: dict[str, dict[str, Any]] = {}
    for contender in measured:
        row: dict[str, Any] = {"contender": contender.name}
        counts = live_counts(scale, contender, descriptors)
        for connections in counts:
            try:
                per = memory_per_connection(contender.sidecar_pids, contender.ports["tcp"],
                                            connections)
            except RuntimeError as error:
                raise RuntimeError(f"{contender.label}: {error}") from None
            row[str(connections)] = round(per / 1024, 1)  # KiB
            progress.advance(task)
        progress.advance(task, len(scale.live) - len(counts))
        results[contender.label] = row
    return results


def allow_many_connections() -> int:
    """10,000 live connections need more descriptors than the default 1024 (children inherit).
    The limit reached: without CAP_SYS_RESOURCE, no more than the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 1 << 17
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), max(hard, wanted)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def live_counts(scale: Scale, contender: Hyperfilter, descriptors: int) -> list[int]:
    """How many live connections to hold: Envoy keeps two descriptors per connection, so the
    largest count is what the descriptor limit allows; a live kvm connection is a live VM, and
    this machine's KVM (PVM) slows down past a few thousand."""
    if contender.tier == "kvm":
        return list(scale.live[:1])
    return [min(count, descriptors // 2 - 250) for count in scale.live]


def contenders_here() -> tuple[list[Contender], dict[str, str]]:
    """The contenders this machine and clone can run, and why any other is left out."""
    skipped: dict[str, str] = {}
    extra: list[Contender] = []
    for at_commit in (previous_framing(), before_containment()):
        if (reason := at_commit.unavailable()) is None:
            extra.append(at_commit)
        else:
            skipped[at_commit.label] = reason
    kvm_tier = Hyperfilter(tier="kvm", neighbours=SLOW_NEIGHBOURS)
    if (reason := kvm.unavailable()) is None:
        extra.append(kvm_tier)
    else:
        skipped[kvm_tier.label] = reason
    return [Direct(), EnvoyAlone(), Naive(), GrpcAio(), Hyperfilter(plugin=None),
            Hyperfilter(neighbours=SLOW_NEIGHBOURS), *extra, EnvoyWasm()], skipped


def kvm_module() -> str | None:
    """Which KVM this is: the vendor module (kvm_intel, kvm_amd) or another (kvm_pvm)."""
    return next((name for name in ("kvm_intel", "kvm_amd", "kvm_pvm")
                 if Path("/sys/module", name).exists()), None)


def main(argv: list[str]) -> int:
    quick = "--quick" in argv
    scale = Scale(quick)
    console = Console()
    descriptors = allow_many_connections()
    results: dict[str, Any] = {
        "finished": None, "quick": quick, "command": "make bench" + (" QUICK=1" if quick else ""),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "kvm": kvm.unavailable() or "yes", "kvm_module": kvm_module(),
                    "descriptors": descriptors},
    }
    raw: dict[str, Samples] = {}
    workloads: dict[str, Any] = {}
    echo, web = ServerProcess("echo"), ServerProcess("http")
    upstreams = Upstreams(Upstream("127.0.0.1", echo.port), Upstream("127.0.0.1", web.port))
    contenders, results["skipped"] = contenders_here()
    started: list[Contender] = []
    try:
        with Progress(console=console, transient=True) as progress:
            workloads.update(tier_workloads(scale, progress))
            task = progress.add_task("starting contenders", total=len(contenders))
            for contender in contenders:
                contender.start(upstreams)
                started.append(contender)
                progress.advance(task)
            workloads.update(latency_workloads(contenders, scale, progress, raw))
            workloads["sidecar_cpu_per_ext_proc_message"] = sidecar_cpu(contenders, scale,
                                                                         progress)
            workloads["tcp_throughput_round_trips_per_s"] = throughput(contenders, scale,
                                                                       progress)
            workloads[SLOW_NEIGHBOUR] = slow_neighbours(contenders, scale, progress)
            workloads["tcp_integrity"] = data_integrity(contenders, scale, progress)
            workloads["memory_per_live_connection_KiB"] = live_memory(
                contenders, scale, descriptors, progress)
            workloads["attacks_well_behaved_p99"] = attack_trials(contenders, scale, progress)
    finally:
        for contender in started:
            contender.stop()
        echo.stop()
        web.stop()
    results["workloads"] = workloads
    results["goals"] = goals(workloads)
    results["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / "latest.md").write_text(markdown(results))
    plot_all(results, raw, RESULTS)
    print_tables(results, console)
    console.print(f"results: {RESULTS / 'latest.json'}, latest.md and plots beside them")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
