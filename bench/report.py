"""The benchmark's findings: tables with ratios taken within the run, and the goals with the
figure measured for each."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bench.contenders import BEFORE_CONTAINMENT, BUSY

LATENCY = ("tcp_round_trip_100B", "tcp_round_trip_64KiB", "tcp_connect_and_round_trip",
           "http_headers_only", "http_64KiB_body")
CPU = "sidecar_cpu_per_ext_proc_message"
INTEGRITY = "tcp_integrity"
ATTACKS = "attacks_well_behaved_p99"
ATTACK_P99_LIMIT = 2.0  # a well-behaved client's p99 during an attack, ÷ before it
SLOW_NEIGHBOUR = "slow_neighbour_tcp_round_trip_100B"
SLOW_NEIGHBOUR_LIMIT = 2.0  # a neighbour's p99 while a slow plugin is kept busy, ÷ before
SANDBOXED = ("hyperfilter-wasmtime", "hyperfilter-kvm")  # the goals are theirs
BASELINES = (("envoy", "÷ Envoy"), ("naive", "÷ naive"), ("grpc-aio", "÷ grpc.aio"))


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
    tiers = [r["contender"] for r in rtt.values() if r["contender"] in SANDBOXED]
    result = []
    for tier in tiers:
        result += [
            _at_most(f"TCP round trip p50, {tier} / naive unsandboxed ext_proc", 0.8,
                     ratio(rtt, tier, "naive"), "<= 0.8", unit="×"),
            _at_most(f"sandbox tax: TCP round trip p50, {tier} / sandbox call removed", 1.15,
                     ratio(rtt, tier, "hyperfilter-path"), "<= 1.15", unit="×"),
            _at_most(f"new connection + first round trip p50, {tier} / Envoy alone", 2.5,
                     ratio(connect, tier, "envoy"), "<= 2.5", unit="×"),
            _goal(f"TCP round trip p50, {tier} / grpc.aio ext_proc (uvloop, no sandbox)",
                  "reported", ratio(rtt, tier, "grpc-aio"), None, unit="×"),
            _goal(f"TCP round trip p50, {tier} / Envoy's in-process Wasm (V8)", "reported",
                  ratio(rtt, tier, "envoy-wasm"), None, unit="×"),
        ]
        rates = row(w["tcp_throughput_round_trips_per_s"], tier) or {}
        messages = 2 * rates["64"] if "64" in rates else None
        result.append(_goal(f"ext_proc messages/s at 64 connections, {tier}", ">= 20000",
                            messages, None if messages is None else messages >= 20000))
        checked = row(w.get(INTEGRITY, {}), tier)
        if checked:
            lost = checked["connections"] - checked["intact"]
            result.append(_goal(
                f"integrity: connections not intact of {checked['connections']} concurrent "
                f"({checked['bytes_sent'] >> 20} MiB), {tier}", "0", lost, lost == 0))
        for neighbour in w.get(SLOW_NEIGHBOUR, {}).values():
            if neighbour["contender"] != tier:
                continue
            computing = neighbour["plugin"] == BUSY.name  # the goal's; the other is reported
            result.append(_goal(
                f"slow neighbour: TCP round trip p99 while {neighbour['connections']} "
                f"connections keep a slow plugin ({neighbour['plugin']}) of the same sidecar "
                f"busy ÷ before, {tier}",
                f"<= {SLOW_NEIGHBOUR_LIMIT:g}" if computing else "reported",
                neighbour["p99_ratio"],
                neighbour["p99_ratio"] <= SLOW_NEIGHBOUR_LIMIT if computing else None, unit="×"))
        memory = row(w["memory_per_live_connection_KiB"], tier) or {}
        most = max((int(k) for k in memory if k != "contender"), default=0)
        result.append(_at_most(
            f"resident KiB per live connection at {most:,} live connections (goal: at "
            f"10,000), {tier}", 256, memory.get(str(most)), "< 256",
            "" if most >= 9000 else "fewer connections: a quick run, or kvm, whose VMs this "
                                    "machine's KVM slows past a few thousand"))
    result.append(_goal(
        f"TCP round trip p50, hyperfilter-wasmtime ÷ before containment ({BEFORE_CONTAINMENT})",
        "reported", ratio(rtt, "hyperfilter-wasmtime", "hyperfilter-before-containment"), None,
        unit="×"))
    result += attack_goals(w.get(ATTACKS, {}))
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


def attack_goals(rows: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The worst attack for the well-behaved client; attacks over before any of its round
    trips overlapped them are left out, and said so."""
    timed = {name: r for name, r in rows.items() if r["p99_ratio"] is not None}
    if not timed:
        return []
    worst = max(timed, key=lambda name: timed[name]["p99_ratio"])
    untimed = len(rows) - len(timed)
    return [_at_most(
        f"well-behaved client p99 during an attack / before it, worst of {len(timed)} "
        f"({worst}), {timed[worst]['contender']}", ATTACK_P99_LIMIT, timed[worst]["p99_ratio"],
        f"<= {ATTACK_P99_LIMIT:g}", f"{untimed} attacks were over before any well-behaved "
        "round trip overlapped them" if untimed else "", unit="×")]


def latency_table(name: str, rows: dict[str, dict[str, Any]]) -> Table:
    table = Table(title=name)
    for column in ("contender", "p50 µs", "p99 µs", "n", *(h for _, h in BASELINES)):
        table.add_column(column, justify="left" if column == "contender" else "right")
    for label, r in rows.items():
        vs = [ratio(rows, r["contender"], base) for base, _ in BASELINES]
        table.add_row(label, f"{r['p50_us']:.0f}", f"{r['p99_us']:.0f}", str(r["n"]),
                      *(f"{v:.2f}×" if v else "" for v in vs))
    return table


_LATENCY_COLUMNS = (("p50_us", "p50 µs"), ("p99_us", "p99 µs"), ("n", "n"))
TIER_TABLES = {  # workload: what a row is, columns (key, heading)
    "sandbox_creation": ("tier, plugin", _LATENCY_COLUMNS),
    "sandbox_event_call": ("tier, plugin", _LATENCY_COLUMNS),
    "memory_per_live_sandbox": ("tier, plugin", (
        ("sandboxes", "live sandboxes"), ("process_KiB", "KiB each, sidecar process"),
        ("machine_KiB", "KiB each, whole machine"))),
    "shared_state_increment": ("shared-state backend", _LATENCY_COLUMNS),
    "plugin_languages": ("language, tier", (
        ("build_s", "build s"), ("wasm_KiB", ".wasm KiB"), ("load_s", "first load s"),
        ("sandbox_p50_us", "new sandbox p50 µs"),
        ("sandbox_p99_us", "p99 µs"), ("event_p50_us", "event call p50 µs"),
        ("event_p99_us", "p99 µs"), ("not_measured", "not measured"))),
    "python_component": ("tier, plugin (the same on each)", (
        ("first_build_s", "first plugin of the toolchain, s"), ("later_build_s", "a later one, s"),
        ("sandbox_p50_us", "new sandbox p50 µs"), ("sandbox_p99_us", "p99 µs"),
        ("first_event_p50_us", "its first event p50 µs"),
        ("event_p50_us", "event call p50 µs"), ("event_p99_us", "p99 µs"),
        ("sandboxes", "live"), ("process_KiB", "KiB each, process"),
        ("machine_KiB", "KiB each, machine"))),
    "fuzzing": ("tier, plugin, coverage", (
        ("streams_s", "streams/s"), ("events_s", "events/s"), ("corpus", "corpus"),
        ("sites", "counters reached"), ("not_measured", "not measured"))),
}


def cpu_rows(w: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, headings, rows) for the ext_proc servers' CPU per message."""
    rows = w.get(CPU, {})
    bases = (("hyperfilter-previous-framing", "÷ previous framing"),
             ("hyperfilter-before-containment", "÷ before containment"), *BASELINES[1:])
    return [(f"{CPU} (µs of user + system CPU)",
             ["contender", "messages", "CPU s", "µs per message", *(h for _, h in bases)],
             [[label, str(r["messages"]), _cell(r["cpu_s"]), _cell(r["us_per_message"]),
               *(_ratio_cell(ratio(rows, r["contender"], base, "us_per_message"))
                 for base, _ in bases)]
              for label, r in rows.items()])] if rows else []


def by_count_rows(w: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, headings, rows) for the workloads measured at several connection counts."""
    tables = []
    for name, unit in (("tcp_throughput_round_trips_per_s", "round trips/s"),
                       ("memory_per_live_connection_KiB", "KiB per live connection")):
        rows = w[name]
        columns = sorted({k for r in rows.values() for k in r if k != "contender"}, key=int)
        tables.append((f"{name} ({unit})", ["contender", *columns],
                       [[label, *(_cell(r.get(c)) for c in columns)]
                        for label, r in rows.items()]))
    return tables


def integrity_rows(w: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, headings, rows) for the data integrity runs."""
    columns = (("connections", "connections"), ("intact", "intact"), ("died", "died"),
               ("corrupted", "corrupted"), ("bytes_sent", "bytes sent"),
               ("bytes_lost", "bytes lost"), ("seconds", "s"), ("MiB_per_s", "MiB/s back"))
    rows = w.get(INTEGRITY, {})
    return [(f"{INTEGRITY} (concurrent echo flows, every byte checked)",
             ["contender", *(h for _, h in columns)],
             [[label, *(_cell(r[key]) for key, _ in columns)] for label, r in rows.items()])
            ] if rows else []


def integrity_failures(w: dict[str, Any]) -> list[str]:
    """What broke in each integrity run that lost anything: totals, the first few flows."""
    return [f"{label}: {r['failures']}" for label, r in w.get(INTEGRITY, {}).items()
            if "failures" in r]


def slow_neighbour_rows(w: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, headings, rows) for a neighbour's round trips beside a busy plugin."""
    rows = w.get(SLOW_NEIGHBOUR, {})
    if not rows:
        return []
    columns = (("before", "p50_us", "p50 before µs"), ("before", "p99_us", "p99 before µs"),
               ("during", "p50_us", "p50 during µs"), ("during", "p99_us", "p99 during µs"),
               ("during", "n", "n during"))
    return [(f"{SLOW_NEIGHBOUR} (the pass-through neighbour while busy connections keep a slow "
             f"plugin of the same sidecar busy; goal: p99 ÷ before <= {SLOW_NEIGHBOUR_LIMIT:g} "
             f"beside {BUSY.name}, {BUSY.what})",
             ["contender", "busy connections", *(h for _, _, h in columns), "p99 ÷ before",
              "busy round trips/s", "busy connections failed"],
             [[label, str(r["connections"]), *(_cell(r[part][key]) for part, key, _ in columns),
               _ratio_cell(r["p99_ratio"]), _cell(r["busy_round_trips_per_s"]),
               _cell(r["busy_failed_connections"])] for label, r in rows.items()])]


def attack_rows(w: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, headings, rows) for the attacks and what they cost a well-behaved client."""
    rows = w.get(ATTACKS, {})
    if not rows:
        return []
    target = next(iter(rows.values()))["contender"]
    columns = (("server", "server did"), ("p99_before_us", "p99 before µs"),
               ("p99_during_us", "p99 during µs"), ("n_during", "n during"),
               ("p99_ratio", "÷ before"), ("failed_round_trips", "failed round trips"),
               ("new_connection", "new connection"), ("peak_rss_growth_MiB", "peak RSS + MiB"))
    return [(f"{ATTACKS} (on one {target} worker; goal: ÷ before <= {ATTACK_P99_LIMIT:g})",
             ["attack", *(h for _, h in columns)],
             [[name, *(_cell(r[key]) for key, _ in columns)] for name, r in rows.items()])]


def plain_tables(w: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    return [*tier_rows(w), *cpu_rows(w), *by_count_rows(w), *slow_neighbour_rows(w),
            *integrity_rows(w), *attack_rows(w)]


def tier_rows(w: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, headings, rows) for the in-process tier measurements."""
    tables = []
    for name, (row_heading, columns) in TIER_TABLES.items():
        rows = [[label, *(_cell(r.get(key)) for key, _ in columns)]
                for label, r in w.get(name, {}).items()]
        tables.append((name, [row_heading, *(h for _, h in columns)], rows))
    breakdown = w.get("kvm_new_vm_breakdown_us")
    if breakdown:
        tables.append(("kvm_new_vm_breakdown_us", ["step", "median µs"],
                       [[step, _cell(us)] for step, us in breakdown.items()]))
    return tables


def print_tables(results: dict[str, Any], console: Console) -> None:
    w = results["workloads"]
    for label, reason in results.get("skipped", {}).items():
        console.print(f"[yellow]not run:[/] {label}: {reason}")
    for name in LATENCY:
        console.print(latency_table(name, w[name]))
    for title, headings, rows in plain_tables(w):
        table = Table(title=title)
        for n, heading in enumerate(headings):
            table.add_column(heading, justify="right" if n else "left")
        for cells in rows:
            table.add_row(*cells)
        console.print(table)
    for failure in integrity_failures(w):
        console.print(f"[red]integrity:[/] {escape(failure)}", highlight=False)
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
    lines += [f"Not run: {label}: {reason}." for label, reason in
              results.get("skipped", {}).items()]
    lines += [""] if results.get("skipped") else []
    for name in LATENCY:
        lines += [f"**{name}**", "",
                  "| contender | p50 µs | p99 µs | " + " | ".join(h for _, h in BASELINES) + " |",
                  "|---|---:|---:" + "|---:" * len(BASELINES) + "|"]
        for label, r in w[name].items():
            lines.append(f"| {label} | {r['p50_us']:.0f} | {r['p99_us']:.0f} | " + " | ".join(
                _ratio_cell(ratio(w[name], r["contender"], base)) for base, _ in BASELINES)
                + " |")
        lines.append("")
    for title, headings, rows in plain_tables(w):
        lines += [f"**{title}**", "", "| " + " | ".join(headings) + " |",
                  "|---" + "|---:" * (len(headings) - 1) + "|"]
        lines += ["| " + " | ".join(cells) + " |" for cells in rows]
        lines.append("")
    for failure in integrity_failures(w):
        lines += ["Integrity run that lost data:", "", "```", failure, "```", ""]
    lines += ["**goals**", "", "| goal | target | measured | met |", "|---|---|---:|---|"]
    for goal in results["goals"]:
        met = {True: "yes", False: "**no**", None: "-"}[goal["met"]]
        lines.append(f"| {goal['name']} | {goal['target']} | {_measured(goal)} | {met} |")
    return "\n".join(lines) + "\n"
