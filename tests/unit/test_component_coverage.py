"""Coverage instrumentation of components (sidecar/fuzz/coverage.py), through real wasmtime and
real wit-component: the project's C plugins made components by `wasm-tools component new`
(several core modules, a shim and a fixup, as the component toolchains make them),
instrumented, validated and loaded with the normal loader, decide as before; their counters,
read through the exports instrumenting adds, tell inputs apart; the counters' memories count
against memory-mb (vmm/memory_plan.py)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from functools import cache
from pathlib import Path

import pytest
import wasmtime
import wasmtime.component as wc

from sidecar.fuzz.coverage import (
    COMPONENT_EXPORT,
    WASM_TOOLS,
    Instrumented,
    InstrumentError,
    instrument,
    instrument_cached,
    read_counters,
    reset_counters,
)
from tests.conftest import Loader, component_of, plugin_dir
from tests.unit.test_coverage import STREAMS, data, outcomes
from vmm.canonical import AbiError
from vmm.errors import SandboxFault
from vmm.manifest import load_manifest
from vmm.memory_plan import PAGE, MemoryPlan, memory_plan
from vmm.sandbox import LoadedPlugin
from vmm.wasmtime.plugin import UNPLANNED, WasmtimePlugin

PLUGINS = ["tcp-blocker", "body-redactor", "http-rate-limit"]


@cache
def instrumented(name: str) -> Instrumented:
    return instrument(component_of(name))


def copy_with(directory: Path, name: str, wasm: bytes) -> Path:
    copy = directory / name
    shutil.copytree(plugin_dir(name), copy)
    load_manifest(copy).wasm.write_bytes(wasm)
    return copy


@pytest.fixture
def load_component(tmp_path: Path, load_wasmtime: Loader) -> Callable[..., LoadedPlugin]:
    """The normal loader, on a copy of the plugin made a component, instrumented or not."""
    def load(name: str, covered: bool, **overrides: object) -> LoadedPlugin:
        wasm = instrumented(name).wasm if covered else component_of(name)
        where = tmp_path / ("covered" if covered else "plain")
        return load_wasmtime(copy_with(where, name, wasm), **overrides)

    return load


def test_a_component_instruments_into_a_valid_one_with_an_export_per_core_instance() -> None:
    result = instrumented("tcp-blocker")
    subprocess.run([WASM_TOOLS, "validate", "-"], input=result.wasm, check=True)
    engine = wasmtime.Engine()
    exports = set(wc.Component(engine, result.wasm).type.exports(engine))
    plain = set(wc.Component(engine, component_of("tcp-blocker")).type.exports(engine))
    names = [function for function, _ in result.functions]
    assert exports == plain | set(names)
    assert all(name.startswith(f"{COMPONENT_EXPORT}-i") for name in names)
    # the C module and wit-component's shim have code; the fixup module, none, stays as it was
    assert len(names) == 2
    assert sum(count for _, count in result.functions) == result.counters == len(result.sites)
    assert {site.module for site in result.sites} == {"$main", "$wit-component-shim-module"}
    with pytest.raises(InstrumentError, match="already"):
        instrument(result.wasm)


@pytest.mark.parametrize("name", PLUGINS)
def test_instrumented_components_decide_as_before(
        name: str, load_component: Callable[..., LoadedPlugin]) -> None:
    overrides = {"config": {"limit": "2"}} if name == "http-rate-limit" else {}
    expected = outcomes(load_component(name, False, **overrides).new_sandbox(), STREAMS[name])
    covered = load_component(name, True, **overrides).new_sandbox()
    assert outcomes(covered, STREAMS[name]) == expected
    assert len(set(map(repr, expected))) > 1
    assert any(read_counters(covered, instrumented(name)))


def test_their_counters_tell_inputs_apart(load_component: Callable[..., LoadedPlugin]) -> None:
    plugin, result = load_component("tcp-blocker", True), instrumented("tcp-blocker")
    passed, blocked, passed_again = (plugin.new_sandbox() for _ in range(3))
    for sandbox, text in ((passed, b"SELECT 1"), (blocked, b"DROP TABLE t"),
                          (passed_again, b"SELECT 1")):
        assert read_counters(sandbox, result) == bytes(result.counters)  # fresh: zeros
        sandbox.deliver(data(text))
    counted = [read_counters(sandbox, result) for sandbox in (passed, blocked, passed_again)]
    assert counted[0] == counted[2] != counted[1]
    with pytest.raises(TypeError, match="read through its exports, never written"):
        reset_counters(passed, result)
    passed.close()
    with pytest.raises(SandboxFault):
        read_counters(passed, result)


def test_an_uninstrumented_component_has_no_counters(
        load_component: Callable[..., LoadedPlugin]) -> None:
    with pytest.raises(AbiError, match="exports no function"):
        read_counters(load_component("tcp-blocker", False).new_sandbox(),
                      instrumented("tcp-blocker"))


def test_the_counters_memories_come_out_of_memory_mb(
        load_component: Callable[..., LoadedPlugin]) -> None:
    """Each instrumented core module's counters are a memory of fixed size: allowed, and
    taken from what the plugin's own memory may grow to."""
    result = instrumented("body-redactor")
    assert memory_plan(component_of("body-redactor")) == MemoryPlan(growable=1)
    assert memory_plan(result.wasm) == MemoryPlan(growable=1, fixed=2,
                                                  fixed_bytes=result.pages * PAGE)
    plugin = load_component("body-redactor", True)
    assert isinstance(plugin, WasmtimePlugin) and plugin.memories == memory_plan(result.wasm)
    store = plugin.new_store()
    memory = wasmtime.Memory(store, wasmtime.MemoryType(wasmtime.Limits(1, None)))
    room = plugin.manifest.limits.memory_bytes // PAGE - result.pages  # the plugin's own
    memory.grow(store, room - 1)
    with pytest.raises(wasmtime.WasmtimeError):
        memory.grow(store, 1)
    plugin.memories = UNPLANNED  # what any plugin had: the counters' memories are refused
    with pytest.raises(SandboxFault, match="memory count"):
        plugin.new_sandbox()


def test_instrumenting_is_kept_in_the_compile_cache(tmp_path: Path) -> None:
    first = instrument_cached(component_of("tcp-blocker"), tmp_path)
    assert first == instrumented("tcp-blocker")
    (entry,) = tmp_path.iterdir()
    again = instrument_cached(component_of("tcp-blocker"), tmp_path)
    assert again == first and list(tmp_path.iterdir()) == [entry]
    entry.write_bytes(b"garbage")  # an unusable entry is made again
    assert instrument_cached(component_of("tcp-blocker"), tmp_path) == first
    entry.write_bytes(entry.read_bytes()[:-100])  # so is one cut short
    assert instrument_cached(component_of("tcp-blocker"), tmp_path) == first


def test_a_component_whose_counters_a_sandbox_would_refuse_is_not_instrumented() -> None:
    """A core module inside a nested component: its memories cannot be read from the binary,
    so a sandbox allows one memory, and the counters' would not fit: refused at once, and the
    fuzzer runs without counters, saying why."""
    composed = subprocess.run([WASM_TOOLS, "parse", "-"], capture_output=True, check=True,
                              input=b"""(component
      (component $inner
        (core module $im (func (export "h") (result i32) i32.const 1))
        (core instance $ii (instantiate $im))
        (func $h (result u32) (canon lift (core func $ii "h")))
        (export "h" (func $h)))
      (instance (instantiate $inner))
      (core module $m (memory 1) (func (export "f") (param i32) (result i32) local.get 0))
      (core instance $a (instantiate $m))
      (func $f (param "n" u32) (result u32) (canon lift (core func $a "f")))
      (export "f" (func $f)))""").stdout
    with pytest.raises(InstrumentError, match="would not allow its counters' memories"):
        instrument(composed)
