"""Coverage instrumentation for the fuzzer (sidecar/fuzz/coverage.py), through real wasmtime:
the project's C plugins instrumented, validated and loaded with the normal loader behave as
before, and their counters tell inputs apart, alike on the kvm tier; hand-written modules pin
down the memory the counters hide in (start functions, imported memories, declared maxima,
growth)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path

import pytest
import wasmtime

from sidecar.fuzz.coverage import (
    COVERAGE_EXPORT,
    PAGE,
    WASM_TOOLS,
    CounterSite,
    Edge,
    Instrumented,
    InstrumentError,
    instrument,
    read_counters,
    reset_counters,
)
from tests.conftest import (
    EXAMPLES,
    TEST_PLUGINS,
    Loader,
    RecordingMetrics,
    loader_for,
    plugin_dir,
)
from vmm.canonical import AbiError
from vmm.errors import SandboxFault
from vmm.events import (
    Direction,
    Event,
    HttpBody,
    HttpHeaders,
    HttpOpen,
    HttpTrailers,
    StreamInfo,
    TcpClose,
    TcpData,
    TcpOpen,
)
from vmm.kvm.backend import KvmBackend
from vmm.manifest import load_manifest
from vmm.sandbox import LoadedPlugin, Sandbox

IN, OUT = Direction.INBOUND, Direction.OUTBOUND
C_PLUGINS = sorted(d.name for d in [*EXAMPLES.iterdir(), *TEST_PLUGINS.iterdir()]
                   if any(d.glob("*.c")))


@cache
def instrumented(name: str) -> Instrumented:
    return instrument(load_manifest(plugin_dir(name)).wasm.read_bytes())


def instrumented_copy(directory: Path, name: str) -> Path:
    """A copy of the plugin in `directory`, its module instrumented."""
    copy = directory / name
    shutil.copytree(plugin_dir(name), copy)
    load_manifest(copy).wasm.write_bytes(instrumented(name).wasm)
    return copy


@pytest.fixture
def load_instrumented(tmp_path: Path, load_wasmtime: Loader) -> Callable[..., LoadedPlugin]:
    """The normal loader, on a copy of the plugin whose module is instrumented."""
    def load(name: str, **overrides: object) -> LoadedPlugin:
        return load_wasmtime(instrumented_copy(tmp_path, name), **overrides)

    return load


@pytest.mark.parametrize("name", C_PLUGINS)
def test_every_c_plugin_instruments_into_a_valid_module(name: str) -> None:
    original = load_manifest(plugin_dir(name)).wasm.read_bytes()
    result = instrumented(name)
    subprocess.run([WASM_TOOLS, "validate", "-"], input=result.wasm, check=True)
    engine = wasmtime.Engine()
    exports = {e.name for e in wasmtime.Module(engine, result.wasm).exports}
    assert exports == {e.name for e in wasmtime.Module(engine, original).exports} | {
        COVERAGE_EXPORT}
    assert result.counters == len(result.sites) > 0 and result.pages == 1
    # every function is counted on entry, and calls, branches and blocks have theirs
    assert {site.edge for site in result.sites} >= {Edge.ENTRY, Edge.BLOCK, Edge.JOIN,
                                                    Edge.FALL_THROUGH, Edge.RETURN}


def outcomes(sandbox: Sandbox, events: Sequence[Event]) -> list[object]:
    """Each event's verdict, or the kind of fault it ended in (the detail names code offsets,
    which instrumenting moves)."""
    seen: list[object] = []
    for event in events:
        try:
            seen.append(sandbox.deliver(event))
        except SandboxFault as fault:
            seen.append(type(fault).__name__)
    return seen


def data(text: bytes, direction: Direction = IN, eos: bool = False) -> TcpData:
    return TcpData(direction, text, eos)


HEADERS = (("host", b"example.com"), ("x-auth-user", b"alice"), (":path", b"/"))
CARD = b"card 4111 1111 1111 1111 ok"
STREAMS: dict[str, list[Event]] = {
    "pass-through": [TcpOpen(StreamInfo()), data(b"hello"), data(b"bye", OUT, True),
                     TcpClose(), HttpOpen(StreamInfo()), HttpHeaders(IN, HEADERS, False),
                     HttpBody(IN, b"body", True), HttpTrailers(OUT, (("x-t", b"1"),))],
    "tcp-blocker": [data(b"SELECT 1"), data(b"x; DROP "), data(b"TABLE users")],
    "redis-firewall": [data(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"), data(b"PING\r\n"),
                       data(b"*1\r\n$8\r\nFLUSHALL\r\n")],
    "body-redactor": [HttpBody(OUT, CARD, False), HttpBody(IN, CARD, True),
                      HttpBody(OUT, b"no digits", True)],
    "http-rate-limit": [HttpHeaders(IN, HEADERS, True)] * 3,
    "counter": [data(b"one"), data(b"two"), HttpHeaders(IN, HEADERS, True)],
    # a body past the memory the module starts with: its arena grows, the counters move
    "rewrite": [HttpBody(IN, b"abc" * 200_000, False), HttpBody(OUT, b"EEe", True),
                HttpTrailers(IN, (("x-verdict", b"deny"),))],
    "faulty": [data(b"fine"), data(b"oob")],
}


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_instrumented_plugins_decide_as_before(
        name: str, load_wasmtime: Loader, load_instrumented: Callable[..., LoadedPlugin]) -> None:
    overrides = {"config": {"limit": "2"}} if name == "http-rate-limit" else {}
    plain = load_wasmtime(name, **overrides).new_sandbox()
    covered = load_instrumented(name, **overrides).new_sandbox()
    expected = outcomes(plain, STREAMS[name])
    assert outcomes(covered, STREAMS[name]) == expected
    assert len(set(map(repr, expected))) > 1  # the stream takes more than one path


def hits(sandbox: Sandbox, result: Instrumented) -> set[int]:
    return {i for i, count in enumerate(read_counters(sandbox, result)) if count}


def test_different_inputs_reach_different_counters(
        load_instrumented: Callable[..., LoadedPlugin]) -> None:
    plugin, result = load_instrumented("tcp-blocker"), instrumented("tcp-blocker")
    passed, blocked, passed_again = (plugin.new_sandbox() for _ in range(3))
    passed.deliver(data(b"SELECT * FROM users"))
    blocked.deliver(data(b"DROP TABLE users"))
    passed_again.deliver(data(b"SELECT * FROM users"))
    assert hits(passed, result) == hits(passed_again, result)  # the same input, the same edges
    only_blocked = hits(blocked, result) - hits(passed, result)
    assert only_blocked
    # blocking logs and counts a metric: host calls that passing makes none of
    assert any(result.sites[i].edge is Edge.RETURN for i in only_blocked)


def test_reset_counters_between_streams(load_instrumented: Callable[..., LoadedPlugin]) -> None:
    plugin, result = load_instrumented("tcp-blocker"), instrumented("tcp-blocker")
    sandbox = plugin.new_sandbox()
    assert read_counters(sandbox, result) == bytes(result.counters)  # no start function here
    sandbox.deliver(data(b"hello"))
    first = read_counters(sandbox, result)
    assert any(first)
    reset_counters(sandbox, result)
    assert read_counters(sandbox, result) == bytes(result.counters)
    sandbox.deliver(data(b"hello"))
    assert any(read_counters(sandbox, result))
    sandbox.close()
    with pytest.raises(SandboxFault):
        read_counters(sandbox, result)


def test_the_kvm_tier_counts_what_wasmtime_counts(
        tmp_path: Path, kvm_backend: KvmBackend, metrics: RecordingMetrics,
        load_instrumented: Callable[..., LoadedPlugin]) -> None:
    """The same instrumented module, the same streams: the same counters on both tiers, each
    stream in a new sandbox (on kvm, after the first, a VM reset to the snapshot: zeros)."""
    result = instrumented("tcp-blocker")
    on_kvm = loader_for(kvm_backend, metrics)(instrumented_copy(tmp_path / "kvm", "tcp-blocker"))
    on_wasmtime = load_instrumented("tcp-blocker")
    streams: list[list[Event]] = [[data(b"SELECT * FROM users")], [data(b"DROP TABLE users")],
                                  STREAMS["tcp-blocker"]]
    counted: dict[str, list[bytes]] = {}
    for plugin in (on_wasmtime, on_kvm):
        for stream in streams:
            sandbox = plugin.new_sandbox()
            assert read_counters(sandbox, result) == bytes(result.counters)
            outcomes(sandbox, stream)
            counted.setdefault(plugin.tier, []).append(read_counters(sandbox, result))
            sandbox.close()
    assert counted["kvm"] == counted["wasmtime"]
    assert len(set(counted["kvm"])) == len(streams)  # and they tell the streams apart
    sandbox = on_kvm.new_sandbox()
    assert sandbox.reused
    sandbox.deliver(data(b"hello"))
    reset_counters(sandbox, result)
    assert read_counters(sandbox, result) == bytes(result.counters)
    sandbox.deliver(data(b"hello"))
    assert any(read_counters(sandbox, result))


def test_an_uninstrumented_sandbox_has_no_counters(load_wasmtime: Loader) -> None:
    with pytest.raises(AbiError):
        read_counters(load_wasmtime("tcp-blocker").new_sandbox(), instrumented("tcp-blocker"))


# Hand-written modules: what the plugin loader does not show.

BRANCHES = """
  (func $classify (export "classify") (param i32) (result i32)
    local.get 0
    if (result i32)
      i32.const 1
    else
      i32.const 2
    end)
  (func $bump (export "bump") (param i32) (result i32)
    i32.const 10
    local.get 0
    if (param i32) (result i32)
      i32.const 1
      i32.add
    end)
  (func $spin (export "spin") (param i32)
    loop
      local.get 0
      i32.const 1
      i32.sub
      local.tee 0
      br_if 0
    end)
"""
MEMORY_USE = """
  (global $seen_at_start (export "seen_at_start") (mut i32) (i32.const -1))
  (func $start
    memory.size
    global.set $seen_at_start)
  (start $start)
  (func (export "size") (result i32) memory.size)
  (func (export "grow") (param i32) (result i32) local.get 0 memory.grow)
  (func (export "load") (param i32) (result i32) local.get 0 i32.load8_u)
  (func (export "store") (param i32 i32) local.get 0 local.get 1 i32.store8)
"""


class Instance:
    """A hand-written module instantiated in wasmtime, its exports called by name."""

    def __init__(self, wasm: bytes, memory_limits: tuple[int, int] | None = None) -> None:
        self.store = wasmtime.Store()
        module = wasmtime.Module(self.store.engine, wasm)
        imports = []
        if memory_limits is not None:
            self.memory = wasmtime.Memory(self.store, wasmtime.MemoryType(
                wasmtime.Limits(*memory_limits)))
            imports.append(self.memory)
        self.instance = wasmtime.Instance(self.store, module, imports)
        self.exports = self.instance.exports(self.store)
        if memory_limits is None:
            memory = self.exports["memory"]
            assert isinstance(memory, wasmtime.Memory)
            self.memory = memory

    def __call__(self, name: str, *args: int) -> object:
        func = self.exports[name]
        assert isinstance(func, wasmtime.Func)
        return func(self.store, *args)

    def value(self, name: str) -> object:
        item = self.exports[name]
        assert isinstance(item, wasmtime.Global)
        return item.value(self.store)

    def counters(self, result: Instrumented) -> bytes:
        area = self.value(result.export)
        assert isinstance(area, int)
        return bytes(self.memory.read(self.store, area, area + result.counters))


def module(memory: str, body: str) -> bytes:
    return wasmtime.wat2wasm(f"(module {memory} {body})")


def counter(result: Instrumented, function: str, edge: Edge) -> int:
    return result.sites.index(CounterSite(function, edge))


def test_branches_are_counted_each_way_and_counters_saturate() -> None:
    result = instrument(module('(memory (export "memory") 1)', BRANCHES))
    plain, covered = Instance(module('(memory (export "memory") 1)', BRANCHES)), Instance(
        result.wasm)
    for args in [("classify", 0), ("classify", 7), ("bump", 0), ("bump", 1), ("spin", 1000)]:
        assert covered(*args) == plain(*args)
    counts = covered.counters(result)
    assert counts[counter(result, "$classify", Edge.THEN)] == 1
    assert counts[counter(result, "$classify", Edge.ELSE)] == 1
    assert counts[counter(result, "$bump", Edge.ELSE)] == 1  # the else added to count it
    assert counts[counter(result, "$bump", Edge.THEN)] == 1
    assert counts[counter(result, "$spin", Edge.LOOP)] == 255  # 1000 turns, saturated
    assert counts[counter(result, "$spin", Edge.FALL_THROUGH)] == 1


@pytest.mark.parametrize("memory, imported", [
    ('(memory (export "memory") 2 8)', None),
    ('(import "env" "memory" (memory 2 8)) (export "memory" (memory 0))', (2, 8)),
])
def test_the_module_sees_its_memory_as_it_was(memory: str, imported: tuple[int, int] | None,
                                              ) -> None:
    wasm = module(memory, MEMORY_USE)
    result = instrument(wasm)
    plain = Instance(wasm, imported)
    # an imported memory must allow the counters' page on top of the module's maximum
    covered = Instance(result.wasm, imported and (imported[0], imported[1] + result.pages))
    assert covered.value("seen_at_start") == plain.value("seen_at_start") == 2
    assert covered.counters(result)[counter(result, "$start", Edge.ENTRY)] == 1
    top = 2 * PAGE - 1
    for instance in (plain, covered):
        instance("store", top, 7)
    counts_before = covered.counters(result)
    # grown, the module finds its byte, then zeros where the counters were; then up to its
    # maximum, and not past it
    calls: list[tuple[str, tuple[int, ...]]] = [
        ("size", ()), ("grow", (1,)), ("size", ()), ("load", (top,)), ("load", (top + 1,)),
        ("grow", (5,)), ("grow", (1,)), ("size", ())]
    for name, args in calls:
        assert covered(name, *args) == plain(name, *args), (name, args)
    assert covered.value(result.export) == 8 * PAGE  # the counters moved up to the new top
    after = covered.counters(result)
    assert all(a >= b for a, b in zip(after, counts_before, strict=True)) and after != counts_before


@pytest.mark.parametrize("wat, problem", [
    ('(memory 65536 65536)', "no room"),
    ('(memory 1) (memory 1)', "2 memories"),
    ("", "0 memories"),
])
def test_modules_it_cannot_instrument_are_refused(wat: str, problem: str) -> None:
    with pytest.raises(InstrumentError, match=problem):
        instrument(module(wat, "(func)"))


def test_instrumented_modules_and_what_is_not_wasm_are_refused() -> None:
    with pytest.raises(InstrumentError, match="not a WebAssembly"):
        instrument(b"hello")
    with pytest.raises(InstrumentError, match="already"):
        instrument(instrumented("pass-through").wasm)
