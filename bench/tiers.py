"""The isolation tiers measured in this process, with the same small core plugin on each:
making a sandbox (and, on kvm, where that time goes), one event's call, and the memory a live
sandbox holds. The wasmtime rows include a Python component for scale."""

from __future__ import annotations

import math
import os
import statistics
import struct
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from rich.progress import Progress

from bench.stats import summarize
from bench.workloads import timed
from sidecar.metrics import Metrics
from vmm.errors import SandboxFault
from vmm.events import Direction, Event, TcpData
from vmm.kvm import backend as kvm
from vmm.kvm.layout import EXIT_DONE, EXIT_WINDOW, IMAGE, LARGE_PAGE, slot_size, system_tables
from vmm.kvm.machine import Kvm, Machine
from vmm.kvm.sandbox import KvmSandbox
from vmm.loader import load_plugin
from vmm.sandbox import Backend, LoadedPlugin, Sandbox
from vmm.wasmtime import WasmtimeBackend

EXAMPLES = Path(__file__).resolve().parent.parent / "plugins" / "examples"
CORE, COMPONENT = "pass-through", "http-auth"
EVENT = TcpData(Direction.INBOUND, b"x" * 100, False)


def backends() -> dict[str, Backend]:
    cache = Path(tempfile.mkdtemp(prefix="hyperfilter-bench-cache-"))
    made: dict[str, Backend] = {"wasmtime": WasmtimeBackend(cache)}
    if kvm.unavailable() is None:
        made["kvm"] = kvm.KvmBackend(cache)
    return made


def load(backend: Backend, name: str) -> LoadedPlugin:
    return load_plugin(EXAMPLES / name, backend, Metrics())


def _made_then_closed(plugin: LoadedPlugin, count: int) -> list[int]:
    """Making only: every sandbox stays open until all are timed."""
    made: list[Sandbox] = []
    samples = timed(lambda: made.append(plugin.new_sandbox()), count)
    for sandbox in made:
        sandbox.close()
    return samples


def reused(plugin: LoadedPlugin, count: int, event: Event = EVENT) -> list[int]:
    """A stream's sandbox closed after its event and the next one made: on kvm, the VM reset
    to the snapshot and handed out again, which is what a busy sidecar does for each
    connection."""
    sandbox = plugin.new_sandbox()
    sandbox.deliver(event)

    def cycle() -> None:
        nonlocal sandbox
        sandbox.close()
        sandbox = plugin.new_sandbox()

    samples = timed(cycle, count)
    sandbox.close()
    return samples


def sandbox_creation(made: dict[str, Backend], count: int, component_count: int,
                     progress: Progress) -> dict[str, dict[str, Any]]:
    rows: list[tuple[str, str, str, Callable[[LoadedPlugin, int], list[int]], int]] = [
        ("wasmtime, core module (pass-through, C)", "wasmtime", CORE, _made_then_closed, count),
        ("wasmtime, component (http-auth, Python)", "wasmtime", COMPONENT, _made_then_closed,
         component_count)]
    if "kvm" in made:
        rows += [("kvm, core module (pass-through, C): VM reset and reused", "kvm", CORE,
                  reused, count),
                 ("kvm, core module (pass-through, C): new VM", "kvm", CORE, _made_then_closed,
                  count // 3)]
    task = progress.add_task("sandbox creation", total=len(rows))
    results = {}
    for label, tier, name, measure, n in rows:
        results[label] = summarize(measure(load(made[tier], name), n)) | {"tier": tier}
        progress.advance(task)
    return results


def _median_us(values: list[float]) -> float:
    return round(statistics.median(values) * 1e6, 1)


def kvm_breakdown(backend: Backend, count: int) -> dict[str, float]:
    """Where a new VM's time goes (medians, µs), and what its first event costs more than a
    later one: the guest's first touch of each page it uses."""
    plugin = load(backend, CORE)
    for _ in range(20):  # streams enough for the plugin to learn its working set
        sandbox = plugin.new_sandbox()
        sandbox.deliver(EVENT)
        sandbox.close()
    spare = plugin.new_sandbox()  # takes the VM left idle: every one below is new
    steps: dict[str, list[float]] = {}
    first_event: list[float] = []
    later_event: list[float] = []
    live: list[Sandbox] = []
    for _ in range(count):
        start = time.perf_counter()
        sandbox = plugin.new_sandbox()
        steps.setdefault("total", []).append(time.perf_counter() - start)
        assert isinstance(sandbox, KvmSandbox) and sandbox.machine is not None
        for step, seconds in sandbox.machine.timings.items():
            steps.setdefault(step, []).append(seconds)
        for samples in (first_event, later_event):
            start = time.perf_counter()
            sandbox.deliver(EVENT)
            samples.append(time.perf_counter() - start)
        live.append(sandbox)
    for sandbox in [spare, *live]:
        sandbox.close()
    breakdown = {step: _median_us(values) for step, values in steps.items()}
    breakdown["first event, beyond a later one"] = round(
        _median_us(first_event) - _median_us(later_event), 1)
    return breakdown


def event_calls(made: dict[str, Backend], count: int,
                progress: Progress) -> dict[str, dict[str, Any]]:
    """One TCP data event (100 bytes) delivered and its verdict read, in a warm sandbox."""
    task = progress.add_task("per-event call", total=len(made))
    results = {}
    for tier, backend in made.items():
        sandbox = load(backend, CORE).new_sandbox()
        for _ in range(100):
            sandbox.deliver(EVENT)
        results[f"{tier}, core module (pass-through, C)"] = summarize(
            timed(partial(sandbox.deliver, EVENT), count)) | {"tier": tier}
        sandbox.close()
        progress.advance(task)
    if "kvm" in made:
        results["kvm: one VM exit and re-entry, nothing else"] = summarize(
            vm_exit_round_trips(count)) | {"tier": "kvm"}
    return results


def vm_exit_round_trips(count: int) -> list[int]:
    """The floor under every kvm call: a guest that only exits (`mov $EXIT_DONE, %eax;
    mov %eax, exit-address; jmp back`), run again and again."""
    code = (b"\xb8" + struct.pack("<I", EXIT_DONE) + b"\x89\x04\x25"
            + struct.pack("<I", EXIT_WINDOW + 8 * EXIT_DONE) + b"\xeb\xf2")
    system = Kvm()
    size = slot_size(2 << 20)
    memfd = os.memfd_create("hyperfilter-bench")
    os.ftruncate(memfd, size)
    machine = Machine(system, memfd, size, shared=True)
    try:
        address, tables = system_tables(size, range(IMAGE, LARGE_PAGE))
        machine.memory[address:address + len(tables)] = tables
        machine.memory[IMAGE:IMAGE + len(code)] = code
        machine.load_state(machine.boot_state(IMAGE))
        machine.cpu_until = math.inf  # no watchdog: `count` bounds the loop
        return timed(machine.run, count)
    finally:
        machine.destroy()
        os.close(memfd)
        system.close()


def _resident() -> int:
    return _field("/proc/self/status", "VmRSS:")


def _available() -> int:
    return _field("/proc/meminfo", "MemAvailable:")


def _field(path: str, name: str) -> int:
    with open(path) as lines:
        return next(int(line.split()[1]) for line in lines if line.startswith(name)) * 1024


def live_sandboxes(made: dict[str, Backend], count: int,
                   progress: Progress) -> dict[str, dict[str, Any]]:
    """Memory per live sandbox, each having handled one event: this process's resident set
    (what `ps` shows), and the machine's (MemAvailable: also what the kernel holds for a VM)."""
    task = progress.add_task(f"{count} live sandboxes", total=len(made))
    results = {}
    for tier, backend in made.items():
        results[f"{tier}, core module (pass-through, C)"] = {
            "tier": tier, **live_memory(load(backend, CORE), count, EVENT)}
        progress.advance(task)
    return results


def live_memory(plugin: LoadedPlugin, count: int, event: Event) -> dict[str, Any]:
    """Memory per live sandbox, each having handled `event`. A sandbox that faults in its
    event is kept live (its memory is what is measured); one whose making faults (a start
    function past its CPU bound on a loaded machine) is counted and not kept."""
    resident, available = _resident(), _available()
    live, faults = [], 0
    for _ in range(count):
        try:
            sandbox = plugin.new_sandbox()
        except SandboxFault:
            faults += 1
            continue
        try:
            sandbox.deliver(event)
        except SandboxFault:
            faults += 1
        live.append(sandbox)
    kept = max(1, len(live))
    measured = {"sandboxes": len(live), "faults": faults,
                "process_KiB": round((_resident() - resident) / kept / 1024, 1),
                "machine_KiB": round((available - _available()) / kept / 1024, 1)}
    for sandbox in live:
        sandbox.close()
    return measured
