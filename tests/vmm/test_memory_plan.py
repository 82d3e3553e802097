"""What instantiating a plugin creates in memories (vmm/memory_plan.py), read from hand-written
modules and components, and what a wasmtime store then allows: a shape it cannot read, or
two memories that may grow, gets one memory, as every plugin did before."""

from __future__ import annotations

import subprocess

import pytest
import wasmtime

from sidecar.fuzz.coverage import WASM_TOOLS
from tests.conftest import Loader, plugin_dir
from vmm.memory_plan import MAX_NESTING, PAGE, MemoryPlan, memory_plan
from vmm.wasmtime.plugin import (
    MAX_FIXED_MEMORIES,
    UNPLANNED,
    WasmtimePlugin,
    allowed_memories,
)


def wasm(text: str) -> bytes:
    return subprocess.run([WASM_TOOLS, "parse", "-"], input=text.encode(), capture_output=True,
                          check=True).stdout


@pytest.mark.parametrize("text, plan", [
    ("(module (memory 1))", MemoryPlan(growable=1)),
    ("(module (memory 1 8))", MemoryPlan(growable=1)),  # a maximum above its size: it grows
    ("(module (memory 2 2))", MemoryPlan(fixed=1, fixed_bytes=2 * PAGE)),
    ('(module (import "env" "memory" (memory 1)) (memory 3 3))',
     MemoryPlan(fixed=1, fixed_bytes=3 * PAGE)),  # an import is its instantiator's
    ("(module)", MemoryPlan()),
    ("(module (memory 0 0))", MemoryPlan(fixed=1, fixed_bytes=PAGE)),  # no memory is free
    # a component counts each core instance of a module
    ("(component (core module $m (memory 1) (memory 1 1)) (core instance (instantiate $m)))",
     MemoryPlan(growable=1, fixed=1, fixed_bytes=PAGE)),
    ("(component (core module $m (memory 1 1)) (core instance (instantiate $m))"
     " (core instance (instantiate $m)))", MemoryPlan(fixed=2, fixed_bytes=2 * PAGE)),
    # an instance made of other instances' exports creates nothing
    ('(component (core module $m (memory (export "mem") 1)) (core instance $i (instantiate $m))'
     ' (core instance (export "mem" (memory $i "mem"))))', MemoryPlan(growable=1)),
    # a module defined but never instantiated creates nothing
    ("(component (core module (memory 1)))", MemoryPlan()),
])
def test_memories_are_counted_per_instance(text: str, plan: MemoryPlan) -> None:
    assert memory_plan(wasm(text)) == plan


@pytest.mark.parametrize("text", [
    # a core module from elsewhere: the sections' order no longer numbers the modules
    '(component (import "m" (core module $m)) (core instance (instantiate $m)))',
    # an exported one has an index too: instantiating the export is instantiating $g, growable
    '(component (core module $g (memory 1)) (export $e "m" (core module $g))'
    ' (core module $f (memory 1 1)) (core instance (instantiate $e)))',
    # a nested component may be instantiated any number of times
    "(component (component (core module $m (memory 1)) (core instance (instantiate $m))))",
])
def test_shapes_it_does_not_read_have_no_plan(text: str) -> None:
    assert memory_plan(wasm(text)) is None


def test_components_nested_too_deep_have_no_plan() -> None:
    text = "(component)"
    for _ in range(MAX_NESTING + 2):
        text = f"(component {text})"
    assert memory_plan(wasm(text)) is None
    assert memory_plan(wasm("(component (component (component)))")) == MemoryPlan()


def test_not_wasm_has_no_plan() -> None:
    assert memory_plan(b"\0asm\x01\0\0\0\x05\x03\x01") is None  # a section cut short
    assert memory_plan(b"hello") is None


def test_a_store_allows_the_plan_and_takes_fixed_bytes_from_memory_mb(
        load_wasmtime: Loader) -> None:
    plugin = load_wasmtime(plugin_dir("tcp-blocker"))
    assert isinstance(plugin, WasmtimePlugin) and plugin.memories == MemoryPlan(growable=1)
    limit = plugin.manifest.limits.memory_bytes
    plugin.memories = MemoryPlan(growable=1, fixed=1, fixed_bytes=4 * PAGE)
    store = plugin.new_store()
    grown = wasmtime.Memory(store, wasmtime.MemoryType(wasmtime.Limits(1, None)))
    grown.grow(store, limit // PAGE - 4 - 1)
    with pytest.raises(wasmtime.WasmtimeError):
        grown.grow(store, 1)


@pytest.mark.parametrize("plan, allowed", [
    (MemoryPlan(growable=1, fixed=2, fixed_bytes=PAGE), MemoryPlan(growable=1, fixed=2,
                                                                   fixed_bytes=PAGE)),
    (MemoryPlan(growable=2), UNPLANNED),  # each could take all of memory-mb
    (MemoryPlan(growable=1, fixed=MAX_FIXED_MEMORIES + 1, fixed_bytes=PAGE), UNPLANNED),
    (None, UNPLANNED),
])
def test_a_store_allows_one_memory_unless_the_plan_says_otherwise(
        plan: MemoryPlan | None, allowed: MemoryPlan) -> None:
    assert MemoryPlan(growable=1) == UNPLANNED
    assert allowed_memories(plan) == allowed
