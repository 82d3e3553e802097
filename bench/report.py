"""The benchmark's findings: tables with ratios taken within the run, and the goals with the
figure measured for each."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

LATENCY = ("tcp_round_trip_100B", "tcp_round_trip_64KiB", "tcp_connect_and_round_trip",
           "http_headers_only", "http_64KiB_body")


def row(rows: dict[str, dict[str, Any]], contender: str) -> dict[str, Any] | None:
    return next((r for r in rows.values() if r.get("contender") == contender), None)


def ratio(rows: dict[str, dict[str, Any]], top: str, bottom: str,
          key: str = "p50_us") -> float | None:
    a, b = row(rows, top), row(rows, bottom)
    return round(a[key] / b[key], 2) if a and b and b.get(key) else None


def _goal(name: str, target: str, measured: float | None, met: bool | None,
          note: str = "", unit: str = "") -> dict[str, Any]:
    return {"name": name, "target": target, "measured": measured, "unit": unit, "met": met} | (
        {"note": note} if note else {})


def _at_most(name: str, limit: float, measured: float | None, target: str, note: str = "",
             unit: str = "") -> dict:
    return _goal(name, target, measured, None if measured is None else measured <= limit, note,
                 unit)


def _measured(goal: dict[str, Any]) -> str:
    value = goal["measured"]
    return "" if value is None else f"{value:g}{goal.get('unit', '')}"


def goals(w: dict[str, Any]) -> list[dict[str, Any]]:
    rtt, connect = w["tcp_round_trip_100B"], w["tcp_connect_and_round_trip"]
    tiers = [r["contender"] for r in rtt.values()
             if r["contender"].startswith("hyperfilter-") and r["contender"] != "hyperfilter-path"]
    result = []
    for tier in tiers:
        result += [
            _at_most(f"TCP round trip p50, {tier} / naive unsandboxed ext_proc", 0.8,
                     ratio(rtt, tier, "naive"), "<= 0.8", unit="×"),
            _at_most(f"sandbox tax: TCP round trip p50, {tier} / sandbox call removed", 1.15,
                     ratio(rtt, tier, "hyperfilter-path"), "<= 1.15", unit="×"),
            _at_most(f"new connection + first round trip p50, {tier} / Envoy alone", 2.5,
                     ratio(connect, tier, "envoy"), "<= 2.5", unit="×"),
            _goal(f"TCP round trip p50, {tier} / Envoy's in-process Wasm (V8)", "reported",
                  ratio(rtt, tier, "envoy-wasm"), None, unit="×"),
        ]
        rates = row(w["tcp_throughput_round_trips_per_s"], tier) or {}
        messages = 2 * rates["64"] if "64" in rates else None
        result.append(_goal(f"ext_proc messages/s at 64 connections, {tier}", ">= 20000",
                            messages, None if messages is None else messages >= 20000))
        memory = row(w["memory_per_live_connection_KiB"], tier) or {}
        most = max((int(k) for k in memory if k != "contender"), default=0)
        result.append(_at_most(
            f"resident KiB per live connection at {most:,} live connections (goal: at "
            f"10,000), {tier}", 256, memory.get(str(most)), "< 256",
            "" if most >= 9000 else "fewer connections: a quick run, or kvm, whose VMs this "
                                    "machine's KVM slows past a few thousand"))
    # A kvm sandbox per connection is a VM reset to the snapshot and reused; a brand-new VM
    # (the kvm_new_vm_breakdown_us rows) is made only when none is idle.
    for tier, limit, kind in (("wasmtime", 50, "core module"), ("kvm", 500, "VM reset")):
        creation = next((r for k, r in w["sandbox_creation"].items() if r["tier"] == tier
                         and kind in k), None)
        result.append(_at_most(f"sandbox creation p50, {tier} tier, small core plugin (µs)",
                               limit, creation["p50_us"] if creation else None, f"< {limit}",
                               "" if creation else f"no {tier} tier on this machine"))
    call = next((r for k, r in w["sandbox_event_call"].items() if r["tier"] == "kvm"
                 and "core module" in k), None)
    result.append(_at_most("per-event call p50, kvm tier (µs)", 50,
                           call["p50_us"] if call else None, "< 50",
                           "" if call else "no kvm tier on this machine"))
    return result


def latency_table(name: str, rows: dict[str, dict[str, Any]]) -> Table:
    table = Table(title=name)
    for column in ("contender", "p50 µs", "p99 µs", "n", "÷ Envoy", "÷ naive"):
        table.add_column(column, justify="left" if column == "contender" else "right")
    for label, r in rows.items():
        vs = [ratio(rows, r["contender"], base) for base in ("envoy", "naive")]
        table.add_row(label, f"{r['p50_us']:.0f}", f"{r['p99_us']:.0f}", str(r["n"]),
                      *(f"{v:.2f}×" if v else "" for v in vs))
    return table


TIER_TABLES = {  # workload: columns (key, heading)
    "sandbox_creation": (("p50_us", "p50 µs"), ("p99_us", "p99 µs"), ("n", "n")),
    "sandbox_event_call": (("p50_us", "p50 µs"), ("p99_us", "p99 µs"), ("n", "n")),
    "memory_per_live_sandbox": (("sandboxes", "live sandboxes"),
                                ("process_KiB", "KiB each, sidecar process"),
                                ("machine_KiB", "KiB each, whole machine")),
}


def tier_rows(w: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, headings, rows) for the in-process tier measurements."""
    tables = []
    for name, columns in TIER_TABLES.items():
        rows = [[label, *(_cell(r.get(key)) for key, _ in columns)]
                for label, r in w.get(name, {}).items()]
        tables.append((name, ["tier, plugin", *(h for _, h in columns)], rows))
    breakdown = w.get("kvm_new_vm_breakdown_us")
    if breakdown:
        tables.append(("kvm_new_vm_breakdown_us", ["step", "median µs"],
                       [[step, _cell(us)] for step, us in breakdown.items()]))
    return tables


def print_tables(results: dict[str, Any], console: Console) -> None:
    w = results["workloads"]
    for title, headings, rows in tier_rows(w):
        table = Table(title=title)
        for heading in headings:
            table.add_column(heading)
        for cells in rows:
            table.add_row(*cells)
        console.print(table)
    for name in LATENCY:
        console.print(latency_table(name, w[name]))
    for name, unit in (("tcp_throughput_round_trips_per_s", "round trips/s"),
                       ("memory_per_live_connection_KiB", "KiB per live connection")):
        rows = w[name]
        columns = sorted({k for r in rows.values() for k in r if k != "contender"}, key=int)
        table = Table(title=f"{name} ({unit})")
        table.add_column("contender")
        for column in columns:
            table.add_column(column, justify="right")
        for label, r in rows.items():
            table.add_row(label, *(str(r.get(c, "")) for c in columns))
        console.print(table)
    table = Table(title="goals")
    for column in ("goal", "target", "measured", "met"):
        table.add_column(column)
    for goal in results["goals"]:
        met = {True: "[green]yes[/]", False: "[red]no[/]", None: "-"}[goal["met"]]
        table.add_row(goal["name"], goal["target"], _measured(goal), met)
    console.print(table)


def _ratio_cell(value: Any) -> str:
    return "" if value is None else f"{value:.2f}×" if isinstance(value, float) else str(value)


def _cell(value: Any) -> str:
    return "" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def markdown(results: dict[str, Any]) -> str:
    """The findings as Markdown tables, for the README."""
    w = results["workloads"]
    machine = results["machine"]
    lines = [f"Measured by `{results['command']}` ({results['finished']}; "
             f"{machine['cpus']} cores; KVM: {machine['kvm']}, module "
             f"{machine.get('kvm_module')}). Ratios are taken within this run.", ""]
    for name in LATENCY:
        lines += [f"**{name}**", "", "| contender | p50 µs | p99 µs | ÷ Envoy alone | ÷ naive |",
                  "|---|---:|---:|---:|---:|"]
        for label, r in w[name].items():
            lines.append(f"| {label} | {r['p50_us']:.0f} | {r['p99_us']:.0f} | "
                         f"{_ratio_cell(ratio(w[name], r['contender'], 'envoy'))} | "
                         f"{_ratio_cell(ratio(w[name], r['contender'], 'naive'))} |")
        lines.append("")
    for title, headings, rows in tier_rows(w):
        lines += [f"**{title}**", "", "| " + " | ".join(headings) + " |",
                  "|---" + "|---:" * (len(headings) - 1) + "|"]
        lines += ["| " + " | ".join(cells) + " |" for cells in rows]
        lines.append("")
    lines += ["**goals**", "", "| goal | target | measured | met |", "|---|---|---:|---|"]
    for goal in results["goals"]:
        met = {True: "yes", False: "**no**", None: "-"}[goal["met"]]
        lines.append(f"| {goal['name']} | {goal['target']} | {_measured(goal)} | {met} |")
    return "\n".join(lines) + "\n"
