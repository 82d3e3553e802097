"""Plots of the benchmark results (PNG, beside latest.json)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt


def bars(ax: Any, title: str, rows: dict[str, dict[str, float]]) -> None:
    labels = list(rows)
    p50 = [rows[label]["p50_us"] for label in labels]
    p99 = [rows[label]["p99_us"] for label in labels]
    y = range(len(labels))
    ax.barh([i + 0.2 for i in y], p50, height=0.4, label="p50")
    ax.barh([i - 0.2 for i in y], p99, height=0.4, label="p99", alpha=0.6)
    for i, value in zip(y, p50, strict=True):
        ax.text(value, i + 0.2, f" {value:.0f}", va="center", fontsize=8)
    ax.set_yticks(list(y), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("µs")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)


def plot_all(results: dict[str, Any], directory: Path) -> list[Path]:
    written = []
    for name, rows in results["workloads"].items():
        fig, ax = plt.subplots(figsize=(9, 0.7 * len(rows) + 1.5))
        bars(ax, name.replace("_", " "), rows)
        fig.tight_layout()
        path = directory / f"{name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
