"""Extended constant globals (a dynamically linked library's `__memory_base + k`) computed at
instantiation instead: the rewritten module, run by wasmtime with its initializer called,
sees the same values as the original, whose initializers wasmtime evaluates itself."""

from __future__ import annotations

import pytest
import wasmtime

from vmm.kvm.extended_constants import (
    INITIALIZER,
    ExtendedConstantError,
    compute_at_instantiation,
)

LIBRARY = """(module
  (import "env" "__memory_base" (global $memory_base i32))
  (import "env" "__table_base" (global $table_base i32))
  (import "env" "memory" (memory 1))
  (global $data (mut i32) (i32.const 7))
  (global $got_data i32 (i32.add (global.get $memory_base) (i32.const 3152988)))
  (global $got_func i32 (i32.add (i32.const 11) (global.get $table_base)))
  (global $below i32 (i32.sub (global.get $memory_base) (i32.const 16)))
  (global $plain (export "plain") i32 (i32.const 5))
  (data (global.get $memory_base) "hi")
  (func (export "values") (result i32 i32 i32 i32)
    global.get $got_data global.get $got_func global.get $below global.get $data))
"""


def run(wasm: bytes, initialize: bool) -> tuple[int, ...]:
    store = wasmtime.Store()
    module = wasmtime.Module(store.engine, wasm)
    imports = {"__memory_base": 1 << 20, "__table_base": 40}
    memory = wasmtime.Memory(store, wasmtime.MemoryType(wasmtime.Limits(32, None)))
    given: list[wasmtime.Memory | wasmtime.Global] = [
        memory if i.name == "memory" else wasmtime.Global(
            store, wasmtime.GlobalType(wasmtime.ValType.i32(), False),
            wasmtime.Val.i32(imports[str(i.name)]))
        for i in module.imports]
    exports = wasmtime.Instance(store, module, given).exports(store)
    if initialize:
        call(exports[INITIALIZER], store)
    assert memory.read(store, 1 << 20, (1 << 20) + 2) == b"hi"
    values = call(exports["values"], store)
    assert isinstance(values, list)
    return tuple(values)


def call(export: object, store: wasmtime.Store) -> object:
    assert isinstance(export, wasmtime.Func)
    return export(store)


def test_the_rewritten_module_sees_the_values_the_original_does() -> None:
    original = wasmtime.wat2wasm(LIBRARY)
    rewritten = compute_at_instantiation(original)
    assert rewritten != original
    assert run(rewritten, initialize=True) == run(original, initialize=False) == (
        (1 << 20) + 3152988, 51, (1 << 20) - 16, 7)
    assert run(rewritten, initialize=False)[:3] == (0, 0, 0)  # computed by the initializer


def test_a_module_without_extended_constants_is_left_as_it_is() -> None:
    plain = wasmtime.wat2wasm('(module (global (export "g") i32 (i32.const 1)))')
    assert compute_at_instantiation(plain) is plain


@pytest.mark.parametrize(("wat", "reason"), [
    ('(global i32 (i32.mul (global.get $base) (i32.const 2)))', "of a form not computed"),
    ('(global $g i32 (i32.add (global.get $base) (i32.const 2))) (func $s) (start $s)',
     "start function"),
    ('(global $g i32 (i32.add (global.get $base) (i32.const 2))) (memory 1) '
     '(data (global.get $g) "x")', "offset reads a global computed at instantiation"),
])
def test_forms_it_does_not_compute_are_refused_naming_why(wat: str, reason: str) -> None:
    module = wasmtime.wat2wasm(f'(module (import "env" "b" (global $base i32)) {wat})')
    with pytest.raises(ExtendedConstantError, match=reason):
        compute_at_instantiation(module)
