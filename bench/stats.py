"""Summaries of latency samples: medians and tails, in microseconds."""

from __future__ import annotations

import statistics


def percentile(sorted_samples: list[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted samples."""
    index = min(len(sorted_samples) - 1, max(0, round(fraction * len(sorted_samples)) - 1))
    return sorted_samples[index]


def summarize(samples_ns: list[int]) -> dict[str, float]:
    ordered = sorted(ns / 1000 for ns in samples_ns)
    return {"n": len(ordered), "p50_us": round(percentile(ordered, 0.50), 1),
            "p90_us": round(percentile(ordered, 0.90), 1),
            "p99_us": round(percentile(ordered, 0.99), 1),
            "mean_us": round(statistics.fmean(ordered), 1)}
