"""Plots of the benchmark results (PNG, beside latest.json)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt

from bench.report import ATTACKS, CPU, LATENCY, SLOW_NEIGHBOUR


def latency_distribution(name: str, samples: dict[str, list[int]],
                         labels: dict[str, str], path: Path) -> None:
    """One cumulative distribution per contender: how many round trips finished within x."""
    fig, ax = plt.subplots(figsize=(9, 5))
    for contender, values in samples.items():
        ordered = sorted(v / 1000 for v in values)
        if ordered:
            ax.plot(ordered, [(i + 1) / len(ordered) for i in range(len(ordered))],
                    label=labels.get(contender, contender))
    ax.set_xscale("log")
    ax.set_xlabel("µs (log scale)")
    ax.set_ylabel("fraction of samples")
    ax.set_title(name.replace("_", " "))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def throughput(rows: dict[str, dict[str, Any]], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(9, 5))
    for label, r in rows.items():
        points = sorted((int(k), v) for k, v in r.items() if k != "contender")
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("concurrent connections")
    ax.set_ylabel("echo round trips / s (ext_proc: 2 messages each)")
    ax.set_title("TCP throughput")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def bars(rows: dict[str, dict[str, Any]], keys: list[str], unit: str, title: str,
         path: Path, log: bool = False) -> None:
    fig, ax = plt.subplots(figsize=(9, 0.8 * len(rows) + 2))
    labels = list(rows)
    height = 0.8 / len(keys)
    for n, key in enumerate(keys):
        values = [rows[label].get(key) or 0 for label in labels]
        positions = [i + n * height for i in range(len(labels))]
        ax.barh(positions, values, height=height, label=key)
        for y, value in zip(positions, values, strict=True):
            ax.text(value, y, f" {value:g}", va="center", fontsize=8)
    ax.set_yticks([i + height * (len(keys) - 1) / 2 for i in range(len(labels))], labels,
                  fontsize=8)
    ax.invert_yaxis()
    if log:
        ax.set_xscale("log")
    ax.set_xlabel(unit)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_all(results: dict[str, Any], raw: dict[str, dict[str, list[int]]],
             directory: Path) -> None:
    w = results["workloads"]
    labels = {r["contender"]: label for label, r in w["tcp_round_trip_100B"].items()}
    for name in LATENCY:
        latency_distribution(name, raw[name], labels, directory / f"{name}.png")
    throughput(w["tcp_throughput_round_trips_per_s"], directory / "tcp_throughput.png")
    bars(w["sandbox_creation"], ["p50_us", "p99_us"], "µs (log scale)",
         "sandbox creation by tier", directory / "sandbox_creation.png", log=True)
    bars(w["sandbox_event_call"], ["p50_us", "p99_us"], "µs",
         "one TCP data event into a warm sandbox, by tier", directory / "sandbox_event_call.png")
    bars(w["memory_per_live_sandbox"], ["process_KiB", "machine_KiB"], "KiB per live sandbox",
         "memory per live sandbox, by tier", directory / "memory_per_live_sandbox.png")
    if w.get(CPU):
        bars(w[CPU], ["us_per_message"], "µs of user + system CPU per ext_proc message",
             "ext_proc server CPU per message (TCP, 100 B echo)",
             directory / f"{CPU}.png")
    if w.get(ATTACKS):
        bars(w[ATTACKS], ["p99_ratio"], "p99 during ÷ p99 before (goal: at most 2; none: over "
             "before a round trip overlapped it)", "well-behaved client during each attack",
             directory / f"{ATTACKS}.png")
    if w.get(SLOW_NEIGHBOUR):
        p99s = {label: {"p99 before": r["before"]["p99_us"], "p99 during": r["during"]["p99_us"]}
                for label, r in w[SLOW_NEIGHBOUR].items()}
        bars(p99s, ["p99 before", "p99 during"], "µs (goal: during at most 2 × before)",
             "a neighbour's 100 B round trips while a slow plugin is kept busy",
             directory / f"{SLOW_NEIGHBOUR}.png")
    memory = w["memory_per_live_connection_KiB"]
    bars(memory, sorted({k for r in memory.values() for k in r if k != "contender"}, key=int),
         "KiB per live connection", "resident memory per live connection (sidecar process)",
         directory / "memory_per_live_connection.png")
