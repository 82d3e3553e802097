"""A hostile component against the kvm tier's component support: what its shell, its links
and its WASI calls try, and what must stop them. Each shape is crafted in WAT by hand or as
tcp-blocker's component with definitions added; a test that fails names a hole."""

from __future__ import annotations

import contextlib
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import (
    WASM_TOOLS,
    Loader,
    as_component,
    component_of,
    plugin_dir,
)
from tests.vmm.test_kvm import KvmLoader, kvm_only, load_kvm
from tests.vmm.test_kvm_components import parse
from vmm.component_linking import Linking, link
from vmm.component_shell import MAX_DEFINITIONS, ShellError, read_shell
from vmm.component_types import Flags, Record, Variant, component_types
from vmm.errors import (
    NotWasmError,
    PluginLoadError,
    TierMismatchError,
    UngrantedImportError,
    UnlinkableComponentError,
)
from vmm.manifest import load_manifest

__all__ = ["kvm_only", "load_kvm"]  # fixtures
MEMORY_ALIAS = '(alias core export $main "memory" (core memory $memory (;0;)))'


@contextlib.contextmanager
def bounded(seconds: float) -> Iterator[None]:
    """Fail the test if the block is still running after `seconds`: the bound on a load that
    should end at once but may never end (an interrupt, not a measurement)."""
    def stop(_signum: int, _frame: object) -> None:
        pytest.fail(f"still running after {seconds} s: the load does not end")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def link_as_tcp_blocker(wasm: bytes) -> Linking:
    return link(load_manifest(plugin_dir("tcp-blocker")), wasm)


def tcp_blocker_text() -> str:
    return subprocess.run([WASM_TOOLS, "print", "-"], input=component_of("tcp-blocker"),
                          capture_output=True, check=True).stdout.decode()


def tcp_blocker_as(text: str, tmp_path: Path) -> Path:
    copy = as_component("tcp-blocker", tmp_path)
    (copy / "tcp-blocker.wasm").write_bytes(parse(text))
    return copy


def tcp_blocker_with(extra: str, tmp_path: Path) -> Path:
    """tcp-blocker's component with `extra` definitions after all of its own."""
    head, _, _ = tcp_blocker_text().rstrip().rpartition(")")
    return tcp_blocker_as(f"{head}\n{extra})", tmp_path)


def tcp_blocker_with_lifts_memory_of(modules: str, tmp_path: Path) -> Path:
    """tcp-blocker's component with `modules` put right after its main module, whose memory
    they see as `$m0`; they define `$memory`, the memory its lifts and lowers name."""
    text = tcp_blocker_text()
    assert MEMORY_ALIAS in text
    modules = f'(alias core export $main "memory" (core memory $m0)) {modules}'
    return tcp_blocker_as(text.replace(MEMORY_ALIAS, modules), tmp_path)


# ---- the shell reader: every reference followed must end, and soon ------------------------


def test_a_function_that_is_its_own_alias_is_refused_not_followed_forever() -> None:
    """An instance's items are not checked to name earlier definitions: function 0 is the
    instance's "f", which is function 0."""
    wasm = parse("""(component
      (instance $i (export "f" (func 0)))
      (alias export $i "f" (func))
      (export "g" (func 0)))""")
    with bounded(5), pytest.raises(ShellError):
        read_shell(wasm)


def test_instantiating_a_nested_component_counts_what_it_makes() -> None:
    """Each instantiation of a nested component that re-exports one import under many names
    copies all its exports: a 1.5 MB component (100,000 names, 65,000 instantiations) makes
    6.5e9 of them, gigabytes at load. Here 1,000 x 1,000, past the definitions allowed."""
    names = " ".join(f'(export "e{i}" (func 0))' for i in range(1000))
    nested = f'(component (import "f" (func)) {names})'
    instantiations = "(instance (instantiate 0 (with \"f\" (func 0))))" * 1000
    wasm = parse(f"(component {nested} {instantiations})")
    assert len(wasm) < 20_000 and MAX_DEFINITIONS < 1000 * 1000
    with pytest.raises(ShellError):
        read_shell(wasm)


# ---- links: what a module is given must be what it imports ---------------------------------

EXPORTER = """(core module $a (memory (export "memory") 1 2)
  (global (export "g") i32 (i32.const 0)) (func (export "f") (param i32)))
  (core instance $ai (instantiate $a))"""


@pytest.mark.parametrize(("definitions", "imported"), [
    ("", '"a" "f" (func (param i64))'),  # a function of another type
    ("", '"a" "memory" (memory 1 1)'),  # a memory that may grow past what it allows
    ("", '"a" "memory" (memory 3)'),  # a memory smaller than it needs
    ("", '"a" "g" (global (mut i32))'),  # an immutable global to write to
    ('(alias core export $ai "memory" (core table $t)) (core instance $bag (export "t" '
     '(table $t)))', '"bag" "t" (table 1 funcref)'),  # a memory passed off as a table
    ('(alias core export $ai "f" (core memory $m)) (core instance $bag (export "m" '
     '(memory $m)))', '"bag" "m" (memory 1)'),  # a function passed off as a memory
])
def test_an_import_given_something_of_another_type_is_refused(definitions: str,
                                                              imported: str) -> None:
    wasm = parse(f"""(component {EXPORTER} {definitions}
      (core module $b (import {imported}))
      (core instance (instantiate $b (with "a" (instance $ai))
                                     {'(with "bag" (instance $bag))' if definitions else ''})))""")
    with pytest.raises(NotWasmError, match="not a valid component: "):
        link_as_tcp_blocker(wasm)


def test_an_ungranted_capability_lowered_behind_bags_and_aliases_is_refused() -> None:
    """The host call is the capability's however many bags and aliases it is passed through,
    and its grant is what decides."""
    wasm = parse("""(component
      (type $error (enum "quota" "not-a-number"))
      (import "hyperfilter:plugin/shared-state@0.1.0" (instance $s
        (export "state-error" (type $e (eq $error)))
        (export "increment" (func (param "key" string) (param "delta" s64)
                                  (param "ttl-ms" u32) (result (result s64 (error $e)))))))
      (core module $mem (memory (export "memory") 1))
      (core instance $mi (instantiate $mem))
      (alias core export $mi "memory" (core memory $memory))
      (alias export $s "increment" (func $f))
      (core func $lowered (canon lower (func $f) (memory $memory)))
      (core instance $b1 (export "x" (func $lowered)))
      (alias core export $b1 "x" (core func $again))
      (core instance $b2 (export "increment" (func $again)))
      (core module $m (import "env" "increment" (func (param i32 i32 i64 i32 i32))))
      (core instance (instantiate $m (with "env" (instance $b2)))))""")
    with pytest.raises(UngrantedImportError, match="shared-state"):
        link_as_tcp_blocker(wasm)


DROP = """(type $res (resource (rep i32)))
  (core func $drop (canon resource.drop $res))
  (core instance $drops (export "[resource-drop]output-stream" (func $drop)))"""


@pytest.mark.usefixtures("kvm_only")
@pytest.mark.parametrize("imported", [
    "(func (param i64 f64) (result i64))",  # C calls a void(u32) as u64(u64, double)
    "(global i32)",  # the glue assigns the thunk to a global's pointer: gcc fails
])
def test_a_resource_drop_imported_as_another_type_is_refused(
        load_kvm: KvmLoader, tmp_path: Path, imported: str) -> None:
    """resource.drop's core type is (i32) -> (): an import of another type is refused (by
    the validator; the linker checks it too), not bound to the drop thunk."""
    hostile = tcp_blocker_with(f"""{DROP}
      (core module $evil (import "wasi" "[resource-drop]output-stream" {imported}))
      (core instance (instantiate $evil (with "wasi" (instance $drops))))""", tmp_path)
    with pytest.raises(PluginLoadError, match="resource-drop"):
        load_kvm(hostile)


@pytest.mark.usefixtures("kvm_only")
def test_reference_types_between_modules_do_not_break_the_glue(load_kvm: KvmLoader,
                                                               tmp_path: Path) -> None:
    """A valid component: one module gives another a function taking an externref, which
    the glue does not pass: refused, saying so (not gcc's "unknown type name")."""
    hostile = tcp_blocker_with("""
      (core module $refs (func (export "f") (param externref)))
      (core instance $ri (instantiate $refs))
      (core module $user (import "r" "f" (func (param externref))))
      (core instance (instantiate $user (with "r" (instance $ri))))""", tmp_path)
    with pytest.raises(TierMismatchError, match="imports r#f with reference types"):
        load_kvm(hostile)


# ---- WASI answered in the guest ------------------------------------------------------------


@pytest.mark.parametrize(("interface", "name", "function", "core_type"), [
    # exit's answer reads its first argument: a function without one is an IndexError
    ("wasi:cli/exit@0.2.0", "exit", "(func)", "(func)"),
    # wall-clock's now stores through its retptr: one returning a u64 is an AssertionError
    ("wasi:clocks/wall-clock@0.2.0", "now", "(func (result u64))", "(func (result i64))"),
    # poll unpacks (pointer, length, retptr): one u32 in and out is a ValueError
    ("wasi:io/poll@0.2.0", "poll", '(func (param "n" u32) (result u32))',
     "(func (param i32) (result i32))"),
])
def test_a_wasi_function_of_another_type_than_wasis_is_refused_naming_it(
        interface: str, name: str, function: str, core_type: str) -> None:
    """The answers of their own assume WASI's types, but the types are the component's: a
    valid component declaring its own `now` crashes the loader with a Python exception."""
    wasm = parse(f"""(component
      (import "{interface}" (instance $i (export "{name}" {function})))
      (alias export $i "{name}" (func $f))
      (core module $m (import "x" "{name}" {core_type}) (memory (export "memory") 1))
      (core func $lowered (canon lower (func $f)))
      (core instance $b (export "{name}" (func $lowered)))
      (core instance (instantiate $m (with "x" (instance $b)))))""")
    with pytest.raises(UnlinkableComponentError, match=name):
        link_as_tcp_blocker(wasm)


WASI_AT_BOOT = """
  (type $poll-t (instance
    (export "pollable" (type $p (sub resource)))
    (export "[method]pollable.ready" (func (param "self" (borrow $p)) (result bool)))))
  (import "wasi:io/poll@0.2.0" (instance $poll (type $poll-t)))
  (type $stdout-t (instance
    (export "output-stream" (type $o (sub resource)))
    (export "get-stdout" (func (result (own $o))))))
  (import "wasi:cli/stdout@0.2.0" (instance $stdout (type $stdout-t)))
  (type $wall-t (instance
    (type $dt (record (field "seconds" u64) (field "nanoseconds" u32)))
    (export "datetime" (type $dt-x (eq $dt)))
    (export "now" (func (result $dt-x)))))
  (import "wasi:clocks/wall-clock@0.2.0" (instance $wall (type $wall-t)))
  (type $random-t (instance
    (export "get-random-bytes" (func (param "len" u64) (result (list u8))))))
  (import "wasi:random/random@0.2.0" (instance $random (type $random-t)))
  (alias export $poll "[method]pollable.ready" (func $ready))
  (alias export $stdout "get-stdout" (func $get-stdout))
  (alias export $stdout "output-stream" (type $output-stream))
  (alias export $wall "now" (func $now))
  (alias export $random "get-random-bytes" (func $random-bytes))
  (core func $ready-c (canon lower (func $ready)))
  (core func $get-stdout-c (canon lower (func $get-stdout)))
  (core func $drop-c (canon resource.drop $output-stream))
  (core func $now-c (canon lower (func $now) (memory $memory)))
  (core func $random-c (canon lower (func $random-bytes) (memory $memory)
                                    (realloc $cabi_realloc)))
  (core instance $wasi
    (export "memory" (memory $memory))
    (export "ready" (func $ready-c))
    (export "get-stdout" (func $get-stdout-c))
    (export "[resource-drop]output-stream" (func $drop-c))
    (export "now" (func $now-c))
    (export "random" (func $random-c)))
  (core module $hostile
    (import "wasi" "memory" (memory 1))
    (import "wasi" "ready" (func $ready (param i32) (result i32)))
    (import "wasi" "get-stdout" (func $get-stdout (result i32)))
    (import "wasi" "[resource-drop]output-stream" (func $drop (param i32)))
    (import "wasi" "now" (func $now (param i32)))
    (import "wasi" "random" (func $random (param i64 i32)))
    (func $start (local $n i32) START)
    (start $start))
  (core instance (instantiate $hostile (with "wasi" (instance $wasi))))"""
MEMORY_END = "(i32.mul (memory.size) (i32.const 65536))"


def times(count: int, body: str) -> str:
    return (f"(loop {body} (local.set $n (i32.add (local.get $n) (i32.const 1))) "
            f"(br_if 0 (i32.lt_u (local.get $n) (i32.const {count}))))")


@pytest.mark.usefixtures("kvm_only")
@pytest.mark.parametrize(("start", "stopped"), [
    # a handle never made, and one of another resource
    ("(drop (call $ready (i32.const 7)))", "a WASI handle that does not exist"),
    ("(drop (call $ready (call $get-stdout)))", "a WASI handle that does not exist"),
    # dropped twice
    ("(local.set $n (call $get-stdout)) (call $drop (local.get $n)) (call $drop (local.get $n))",
     "a WASI handle that does not exist"),
    # more handles than the table keeps
    (times(1100, "(drop (call $get-stdout))"), "more WASI handles live at once"),
    # a result stored across the end of memory: its seconds fit, its nanoseconds do not
    (f"(call $now (i32.sub {MEMORY_END} (i32.const 8)))", "out of bounds memory access"),
    # more random bytes than a list can hold
    ("(call $random (i64.const 0x100000000) (i32.const 0))", "out of bounds memory access"),
    # the same, within bounds: it loads
    (f"{times(1100, '(call $drop (call $get-stdout))')} "
     f"(call $now (i32.sub {MEMORY_END} (i32.const 16))) "
     "(call $random (i64.const 100) (i32.const 0))", None),
])
def test_hostile_wasi_calls_stop_in_the_guest(load_kvm: KvmLoader, tmp_path: Path,
                                              start: str, stopped: str | None) -> None:
    """Made by a module's start function, so at load: the guest's checks stop each one."""
    hostile = tcp_blocker_with(WASI_AT_BOOT.replace("START", start), tmp_path)
    if stopped is None:
        assert load_kvm(hostile).kind == "component"
        return
    with pytest.raises(PluginLoadError, match=f"trapped while initialising.*{stopped}"):
        load_kvm(hostile)


@pytest.mark.usefixtures("kvm_only")
def test_a_wasi_call_before_the_lifts_memory_is_instantiated_does_not_crash_the_vm(
        load_kvm: KvmLoader, tmp_path: Path) -> None:
    """hf_wasi_memory is set once the module whose export the lifts name is instantiated; a
    module instantiated before it (here the lifts name a re-export of main's memory) whose
    start function calls WASI has the guest dereference a null hf_wasi_memory: a triple
    fault. WASI calls at instantiation are served (vmm/kvm/snapshot.py); this one is a
    deny-all `none` stored in memory that exists."""
    hostile = tcp_blocker_with_lifts_memory_of("""
      (alias core export $main "cabi_realloc" (core func $r0))
      (import "wasi:cli/environment@0.2.0" (instance $env (type 0)))
      (alias export $env "get" (func $env-get))
      (core func $get (canon lower (func $env-get) (memory $m0) (realloc $r0)))
      (core instance $wasi (export "get" (func $get)))
      (core module $early
        (import "wasi" "get" (func $get (param i32 i32 i32)))
        (func $start (call $get (i32.const 0) (i32.const 0) (i32.const 64)))
        (start $start))
      (core instance (instantiate $early (with "wasi" (instance $wasi))))
      (core module $reexport (import "a" "memory" (memory 1)) (export "memory" (memory 0)))
      (core instance $rx (instantiate $reexport (with "a" (instance $main))))
      (alias core export $rx "memory" (core memory $memory))""", tmp_path)
    with contextlib.suppress(TierMismatchError):  # refusing it, naming why, would do too
        assert load_kvm(hostile).kind == "component"


@pytest.mark.usefixtures("kvm_only")
def test_data_preloaded_is_not_seen_before_its_module_is_instantiated(
        load_kvm: KvmLoader, load_wasmtime: Loader, tmp_path: Path) -> None:
    """The host puts the data segments of the module whose memory the lifts name in memory
    before boot. When that module only re-exports the memory, a module instantiated before
    it sees its data: here a start function that traps if it does (wasmtime loads this)."""
    hostile = tcp_blocker_with_lifts_memory_of("""
      (core instance $mem0 (export "memory" (memory $m0)))
      (core module $check (import "a" "memory" (memory 1))
        (func $start (if (i32.load8_u (i32.const 0x118000)) (then unreachable)))
        (start $start))
      (core instance (instantiate $check (with "a" (instance $mem0))))
      (core module $reexport (import "a" "memory" (memory 18)) (export "memory" (memory 0))
        (data (i32.const 0x118000) "late"))
      (core instance $rx (instantiate $reexport (with "a" (instance $mem0))))
      (alias core export $rx "memory" (core memory $memory))""", tmp_path)
    assert load_wasmtime(hostile).kind == "component"
    assert load_kvm(hostile).kind == "component"


# ---- the extended-constant rewrite -----------------------------------------------------------


@pytest.mark.usefixtures("kvm_only")
def test_a_module_writing_a_constant_global_is_refused_after_the_rewrite_too(
        load_kvm: KvmLoader, tmp_path: Path) -> None:
    """`global.set` of an immutable global is invalid (wasmtime refuses the component); the
    rewrite makes the extended-constant global mutable, and then wasm2c takes it: the module
    may change what its original could not. Nothing validates the component before."""
    hostile = tcp_blocker_with("""
      (core module $base (global (export "base") i32 (i32.const 4096)))
      (core instance $bi (instantiate $base))
      (core module $library
        (import "env" "base" (global $base i32))
        (global $got i32 (i32.add (global.get $base) (i32.const 5)))
        (func (export "f") (global.set $got (i32.const 0))))
      (core instance (instantiate $library (with "env" (instance $bi))))""", tmp_path)
    with pytest.raises(PluginLoadError):
        load_kvm(hostile)


# ---- the canonical ABI's layout --------------------------------------------------------------


def test_results_are_laid_out_as_the_canonical_abi_says() -> None:
    """Discriminants of 1 and 2 bytes, flags of 2 and 4, payloads of mixed alignment after
    the discriminant at the largest of their alignments (the spec's elem_size and
    alignment)."""
    cases = " ".join(f'"c{i}"' for i in range(257))
    flags = " ".join(f'"f{i}"' for i in range(17))
    defined = {
        "mixed": '(variant (case "a" u8) (case "b" u64) (case "c"))',
        "wide": f"(enum {cases})",
        "nine": f"(flags {' '.join(flags.split()[:9])})",
        "many": f"(flags {flags})",
        "option": "(option u16)",
        "record": '(record (field "a" u8) (field "s" string) (field "b" u16))',
        "nested": '(variant (case "x" $tuple-x) (case "y" f32) (case "z" $option-x))',
        "tuple": "(tuple u8 u32 u8)",
    }
    order = ["mixed", "wide", "nine", "many", "option", "record", "tuple", "nested"]
    body = "".join(f'(type ${n} {defined[n]}) (export "{n}-t" (type ${n}-x (eq ${n}))) '
                   f'(export "{n}" (func (result ${n}-x)))' for n in order)
    types = component_types(parse(
        f'(component (type $t (instance {body})) (import "wasi:x/y@0.2.0" (instance (type $t))))'))
    result = {name: types.functions["wasi:x/y@0.2.0", name].result for name in order}
    layout = {name: (t.size, t.align) for name, t in result.items() if t is not None}
    assert layout == {"mixed": (16, 8), "wide": (2, 2), "nine": (2, 2), "many": (4, 4),
                      "option": (4, 2), "record": (16, 4), "tuple": (12, 4),
                      "nested": (16, 4)}
    variants = {name: (t.discriminant_size, t.payload_offset) for name, t in result.items()
                if isinstance(t, Variant)}
    assert variants == {"mixed": (1, 8), "wide": (2, 2), "option": (1, 2), "nested": (1, 4)}
    record, tuple_ = result["record"], result["tuple"]
    assert isinstance(record, Record) and isinstance(tuple_, Record)
    assert [offset for *_, offset in record.fields] == [0, 4, 12]
    assert [offset for *_, offset in tuple_.fields] == [0, 4, 8]
    assert isinstance(result["many"], Flags) and result["many"].count == 17
