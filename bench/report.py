"""The benchmark results as tables, with each contender's ratio to the workload's baseline."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

# The contender each workload's ratios are taken against.
BASELINES = {"tcp_round_trip_100B": "envoy", "tcp_connect_and_round_trip": "envoy"}


def workload_table(name: str, rows: dict[str, dict[str, Any]]) -> Table:
    baseline = next((r for r in rows.values() if r.get("contender") == BASELINES.get(name)), None)
    table = Table(title=name)
    for column in ("contender", "p50 µs", "p99 µs", "n", "p50 ratio"):
        table.add_column(column, justify="left" if column == "contender" else "right")
    for label, row in rows.items():
        ratio = f"{row['p50_us'] / baseline['p50_us']:.2f}×" if baseline else ""
        table.add_row(label, f"{row['p50_us']:.1f}", f"{row['p99_us']:.1f}", str(row["n"]),
                      ratio)
    return table


def print_tables(results: dict[str, Any], console: Console) -> None:
    for name, rows in results["workloads"].items():
        console.print(workload_table(name, rows))
