"""What the pod's scenario showed: a summary table (the client's view, and the sidecar's own
counts scraped from its Prometheus endpoint, every worker's summed), summary.json, and a plot
of latency over the scenario."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.table import Table

from sidecar.pod.clients import Sample
from sidecar.pod.scenario import Observations
from sidecar.pod.stack import (
    CHAINS,
    CHAINS_WITH_HOSTILE,
    PROTOCOL_OF_CHAIN,
    WORKERS,
    SidecarMetrics,
    sandboxes_per_stream,
)

STREAMS = "hyperfilter_streams_total"
VERDICTS = "hyperfilter_verdicts_total"
FAULTS = "hyperfilter_plugin_faults_total"


def percentile(values: Sequence[float], share: float) -> float | None:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))] if ordered else None


def latency(samples: Iterable[Sample]) -> dict[str, float | None]:
    good = [s.ms for s in samples if s.ok]
    return {"p50_ms": percentile(good, 0.50), "p99_ms": percentile(good, 0.99)}


def _total(metrics: SidecarMetrics, name: str, **labels: str) -> int:
    return round(metrics.total(name, **labels))


def _by_label(metrics: SidecarMetrics, name: str, key: str, **where: str) -> dict[str, int]:
    """Sample `name` by the value of its label `key`."""
    return {value: _total(metrics, name, **where, **{key: value})
            for value in sorted(metrics.labels(name, key, **where))}


def sidecar_counts(seen: Observations) -> dict[str, Any]:
    """The sidecar's counts (every worker's); sandboxes from each chain's streams times the
    plugins that chain had when they began (before the reload and after)."""
    end = seen.metrics_at_end or SidecarMetrics({})
    before = seen.metrics_at_reload or end
    streams_before = {chain: _total(before, STREAMS, chain=chain) for chain in CHAINS}
    streams_end = {chain: _total(end, STREAMS, chain=chain) for chain in CHAINS}
    per_stream_before = sandboxes_per_stream(CHAINS)
    per_stream_after = sandboxes_per_stream(CHAINS_WITH_HOSTILE)
    plugins = sorted(_by_label(end, VERDICTS, "plugin") | _by_label(end, FAULTS, "plugin"))
    return {
        "connections": sum(streams_end[c] for c in CHAINS if PROTOCOL_OF_CHAIN[c] == "tcp"),
        "requests": sum(streams_end[c] for c in CHAINS if PROTOCOL_OF_CHAIN[c] == "http"),
        "sandboxes": sum(streams_before[c] * per_stream_before[c]
                         + (streams_end[c] - streams_before[c]) * per_stream_after[c]
                         for c in CHAINS),
        "verdicts": {plugin: _by_label(end, VERDICTS, "verdict", plugin=plugin)
                     for plugin in plugins},
        "faults": {plugin: _by_label(end, FAULTS, "cause", plugin=plugin) for plugin in plugins},
    }


def summary(seen: Observations) -> dict[str, Any]:
    """Everything the report shows, as JSON data (summary.json)."""
    samples = seen.samples.items
    start = seen.hostile_from if seen.hostile_from is not None else float("inf")
    until = seen.hostile_until if seen.hostile_until is not None else start
    return {
        "seconds": seen.seconds,
        "workers": WORKERS,
        "checks": {check.key: {"ok": check.ok, "title": check.title, "detail": check.detail}
                   for check in seen.checks},
        "client": {kind: {"ok": sum(s.ok for s in samples if s.kind == kind),
                          "failed": sum(not s.ok for s in samples if s.kind == kind),
                          "latency": latency(s for s in samples if s.kind == kind),
                          "latency_with_hostile_plugin": latency(
                              s for s in samples if s.kind == kind and start <= s.at <= until)}
                   for kind in ("redis", "http")},
        "rate_limit": asdict(seen.rate_limit) if seen.rate_limit else None,
        "attacks": dict(seen.attacks),
        "contained": seen.contained,
        "worker_restarts": seen.restarts,
        "sidecar": sidecar_counts(seen),
    }


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _counts(counts: dict[str, int]) -> str:
    return " · ".join(f"{name} {count:,}" for name, count in counts.items()) or "-"


def table(result: dict[str, Any]) -> Table:
    client, sidecar = result["client"], result["sidecar"]
    view = Table(title=f"hyperfilter pod: {result['seconds']:g} s, {result['workers']} sidecar "
                       "workers")
    view.add_column("what")
    view.add_column("seen", overflow="fold")
    for kind, name in (("redis", "Redis commands"), ("http", "HTTP requests")):
        view.add_row(f"{name} (steady traffic, client side)", f"{client[kind]['ok']:,} ok, "
                                         f"{client[kind]['failed']:,} failed")
    view.add_row("TCP connections (sidecar streams)", f"{sidecar['connections']:,}")
    view.add_row("HTTP requests (sidecar streams)", f"{sidecar['requests']:,}")
    view.add_row("sandboxes made", f"{sidecar['sandboxes']:,} (each stream × the plugins of "
                                   "its chain)")
    for plugin, counts in sidecar["verdicts"].items():
        view.add_row(f"verdicts: {plugin}", _counts(counts))
    for plugin, counts in sidecar["faults"].items():
        if counts:
            view.add_row(f"faults: {plugin}", _counts(counts))
    for kind, name in (("redis", "Redis command"), ("http", "HTTP request")):
        whole, hostile = client[kind]["latency"], client[kind]["latency_with_hostile_plugin"]
        view.add_row(f"{name} p50 / p99 ms",
                     f"{_ms(whole['p50_ms'])} / {_ms(whole['p99_ms'])} (while the hostile "
                     f"plugin misbehaved: {_ms(hostile['p50_ms'])} / {_ms(hostile['p99_ms'])})")
    limit = result["rate_limit"]
    if limit is not None:
        view.add_row("rate limit (bob's burst)",
                     f"{limit['passed']} passed, {limit['limited']} got 429")
    faults = sum(sum(counts.values()) for counts in sidecar["faults"].values())
    view.add_row("faults contained", f"{faults} faults; {result['contained']} of "
                                     f"{sum(result['attacks'].values())} misbehaviours ended "
                                     "only their own stream; worker restarts: "
                                     f"{result['worker_restarts']}")
    checks = result["checks"].values()
    view.add_row("checks", f"{sum(check['ok'] for check in checks)} of {len(checks)} passed")
    return view


def write_json(result: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(result, indent=2) + "\n")


def plot(seen: Observations, path: Path) -> str | None:
    """Latency of every command and request over the scenario, the phases marked; None when
    written, else why not."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install 'hyperfilter[bench]')"
    figure, axes = plt.subplots(figsize=(11, 5))
    for kind, colour in (("redis", "tab:red"), ("http", "tab:blue")):
        good = [s for s in seen.samples.items if s.kind == kind and s.ok]
        axes.scatter([s.at for s in good], [s.ms for s in good], s=4, color=colour, alpha=0.5,
                     label=f"{'Redis command' if kind == 'redis' else 'HTTP request'}")
    failed = [s for s in seen.samples.items if not s.ok]
    if failed:
        axes.scatter([s.at for s in failed], [max(s.ms, 0.01) for s in failed], marker="x",
                     color="black", label="failed")
    for at, phase in seen.marks:
        axes.axvline(at, color="grey", linestyle="--", linewidth=0.8)
        axes.annotate(phase, (at, 1), xycoords=("data", "axes fraction"), rotation=90,
                      va="top", ha="right", fontsize=8, color="dimgrey")
    if seen.hostile_from is not None:
        axes.axvspan(seen.hostile_from, seen.hostile_until or seen.hostile_from,
                     color="orange", alpha=0.12, label="hostile plugin loaded, misbehaving")
    if seen.attack_times:
        axes.scatter(seen.attack_times, [0.02] * len(seen.attack_times), marker="^",
                     color="darkorange", transform=axes.get_xaxis_transform(),
                     label="one misbehaviour (its stream ended)")
    axes.set_yscale("log")
    axes.set_xlabel("seconds into the scenario")
    axes.set_ylabel("latency through Envoy, ms (client side)")
    axes.set_title("hyperfilter pod: every Redis command and HTTP request")
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=5, fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return None
