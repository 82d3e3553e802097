"""Components on the kvm tier: the shell read from the binary, resolved into module instances
whose imports are earlier modules' exports or host calls, instantiated by the guest, and
refused at load, naming why, where the generator does not go. (That components decide as
their core modules do, on both tiers, is tests/vmm/test_sandboxes.py's `load_either`.)"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import (
    WASM_TOOLS,
    RecordingMetrics,
    as_component,
    component_of,
    kvm_refused_component,
    plugin_dir,
)
from tests.vmm.test_kvm import KvmLoader, data, kvm_only, load_kvm
from vmm.cache import CompileCache
from vmm.component_linking import HostImport, ModuleExport, link
from vmm.component_shell import (
    CORE_FUNC,
    Instantiation,
    Lifted,
    ShellError,
    read_shell,
)
from vmm.errors import TierMismatchError, UnlinkableComponentError
from vmm.events import FORWARD, Close, Replace
from vmm.kvm import image, split_c
from vmm.kvm.backend import KvmBackend
from vmm.loader import load_plugin
from vmm.manifest import load_manifest

__all__ = ["kvm_only", "load_kvm"]  # fixtures
pytestmark = pytest.mark.usefixtures("kvm_only")


def parse(wat: str) -> bytes:
    return subprocess.run([WASM_TOOLS, "parse", "-"], input=wat.encode(), capture_output=True,
                          check=True).stdout


def test_the_shell_of_a_toolchains_component_is_read() -> None:
    """wit-component's shape: the module, a shim whose table the fixup fills with the lowered
    imports once memory exists, exports lifted from the module."""
    shell = read_shell(component_of("caps"))
    assert len(shell.modules) == 3
    assert [type(i) for i in shell.core_instances].count(Instantiation) == 3
    exported = shell.exports["hyperfilter:plugin/tcp-filter@0.1.0"]
    _, index = shell.instance_item(exported[1], "on-data")
    lifted = shell.function(index)
    assert isinstance(lifted, Lifted) and lifted.options.realloc is not None
    assert lifted.core_function < len(shell.core[CORE_FUNC])


def test_a_component_is_linked_as_its_shell_says() -> None:
    linking = link(load_manifest(plugin_dir("caps")), component_of("caps"))
    shim, main, fixup = linking.instances
    # main calls the imports that take memory through the shim's table, the others directly
    through_shim = {(item.module, item.name) for item, b in main.bindings
                    if isinstance(b, ModuleExport) and b.instance == shim.number}
    direct = {(item.module, item.name) for item, b in main.bindings
              if isinstance(b, HostImport)}
    assert ("hyperfilter:plugin/shared-state@0.1.0", "increment") in through_shim
    assert ("hyperfilter:plugin/clock@0.1.0", "now") in direct
    assert len(through_shim) + len(direct) == len(main.bindings)
    lowered = {b.capability.interface for _, b in fixup.bindings + main.bindings
               if isinstance(b, HostImport)}
    assert lowered == {item.interface for item in linking.core.imports}
    assert {f.instance for f in linking.functions.values()} == {main.number}
    assert linking.memory == ModuleExport(main.number, "memory", linking.core.memory)


def test_a_component_gets_a_fresh_vm_per_stream_from_its_snapshot(
        load_kvm: KvmLoader, tmp_path: Path) -> None:
    plugin = load_kvm(as_component("counter", tmp_path))
    assert plugin.kind == "component"
    sandbox = plugin.new_sandbox()
    assert [sandbox.deliver(data(b"x")) for _ in range(3)][-1] == Replace(b"3:x")
    sandbox.close()
    again = plugin.new_sandbox()
    assert again.reused and again.deliver(data(b"y")) == Replace(b"1:y")


def test_a_components_modules_are_compiled_once_each(
        tmp_path: Path, metrics: RecordingMetrics) -> None:
    """Each core module is compiled and cached on its own, by content: an image linked again
    (here: its cache entry gone) compiles none of them."""
    component = as_component("tcp-blocker", tmp_path)
    backend = KvmBackend(tmp_path / "cache")
    try:
        load_plugin(component, backend, metrics)
        images, modules = backend.cache, backend.module_cache
        for entry in images.directory.glob("*.kvm-component-image"):
            entry.unlink()
        before = modules.hits, modules.misses, images.misses
        load_plugin(component, backend, metrics).new_sandbox().close()
        after = modules.hits, modules.misses, images.misses
    finally:
        backend.close()
    assert [b - a for a, b in zip(before, after, strict=True)] == [3, 0, 1]  # one link


@pytest.mark.parametrize(("wat", "refusal", "reason"), [
    ("""(component (core module $m (memory (export "memory") 1))
          (core instance (instantiate $m)) (core instance (instantiate $m)))""",
     UnlinkableComponentError, "the host cannot link: core module 0 is instantiated twice"),
    ("""(component (core module $a (memory (export "memory") 1))
          (core module $b (memory (export "memory") 1))
          (core instance (instantiate $a)) (core instance (instantiate $b)))""",
     TierMismatchError, "cannot run yet: its modules define 2 linear memories"),
    ("""(component (component (core module)))""", UnlinkableComponentError,
     "it has a nested component that does more than re-export functions"),
    ("""(component (import "f" (func)))""", UnlinkableComponentError,
     "it imports 'f' as a function, not an instance"),
])
def test_shapes_the_generator_does_not_handle_are_refused_naming_them(
        load_kvm: KvmLoader, tmp_path: Path, wat: str, refusal: type[Exception],
        reason: str) -> None:
    copy = as_component("tcp-blocker", tmp_path)
    (copy / "tcp-blocker.wasm").write_bytes(parse(wat))
    with pytest.raises(refusal, match=reason):
        load_kvm(copy)


def test_a_component_only_the_kvm_guest_cannot_run_is_refused_naming_the_wasmtime_tier(
        load_kvm: KvmLoader, tmp_path: Path) -> None:
    with pytest.raises(TierMismatchError, match=r'2 linear memories.*\(run it on the '
                                                r'wasmtime tier: tier = "wasmtime"\)'):
        load_kvm(kvm_refused_component(tmp_path))


def test_reading_a_shell_stops_at_what_it_does_not_know() -> None:
    with pytest.raises(ShellError, match="cannot be read"):
        read_shell(component_of("tcp-blocker")[:-3])


def test_a_module_cut_into_units_decides_as_it_whole(
        tmp_path: Path, metrics: RecordingMetrics, monkeypatch: pytest.MonkeyPatch) -> None:
    """A large module's C is compiled in units, on every core (vmm/kvm/split_c.py); here a
    small one is cut too, and the plugin decides as before."""
    cut: list[int] = []
    split = split_c.split

    def counted(source: str, units: int) -> list[str] | None:
        parts = split(source, units)
        cut.append(0 if parts is None else len(parts))
        return parts

    monkeypatch.setattr(image, "CODE_PER_UNIT", 1 << 10)
    monkeypatch.setattr(image.split_c, "split", counted)
    backend = KvmBackend(tmp_path / "cache")
    try:
        plugin = load_plugin(as_component("tcp-blocker", tmp_path), backend, metrics)
        sandbox = plugin.new_sandbox()
        assert sandbox.deliver(data(b"SELECT 1; DROP")) == FORWARD
        assert sandbox.deliver(data(b" TABLE users")) == Close()
    finally:
        backend.close()
    assert max(cut) > 2  # the C module's own code, in several units


UNITS_MODULE = """(module (type $i32 (func (param i32))) (type $i64 (func (param i64)))
    (import "a" "b" (func $f (type $i32))) (import "a" "unused" (func (type $i32)))
    (func (type $i64)) (memory 1) {functions}
    (func (export "g") (call $f (i32.const 1))) (data "closing the connection"))"""


@pytest.mark.parametrize(("old", "new", "compiled_again"), [
    # as a JavaScript plugin edited differs: the unit holding the data
    ("closing the connection", "closing the CONNECTION", 1),
    # as two JavaScript plugins' engines differ in what they import: none (by position)
    ('(import "a" "b"', '(import "c" "d"', 0),
    # in the type of one no unit calls: none
    ('"unused" (func (type $i32))', '"unused" (func (type $i64))', 0),
    # and in the bindings calling them: the unit holding the caller
    ("(call $f (i32.const 1))", "(call $f (i32.const 2))", 1),
])
def test_a_module_changed_in_one_place_compiles_only_the_units_it_reaches(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, old: str, new: str,
        compiled_again: int) -> None:
    """Each unit's object is kept by its text: the module again, changed in one place,
    compiles only the units that place reaches, and is byte for byte the module a build from
    nothing gives."""
    monkeypatch.setattr(image, "CODE_PER_UNIT", 1 << 7)
    toolchain = image.find_toolchain()
    assert isinstance(toolchain, image.Toolchain), toolchain
    text = UNITS_MODULE.format(functions="".join(
        f"""(func (export "f{n}") (param i32) (result i32)
            (i32.add (i32.mul (local.get 0) (i32.const {n})) (i32.load (i32.const {4 * n}))))"""
        for n in range(40)))

    def compiled(module: str, cache: str) -> tuple[image.CompiledModule, int]:
        directory = CompileCache(tmp_path / cache, toolchain.module_fingerprint)
        return (image._compiled_module("units", parse(module), toolchain, directory),
                len(list(directory.directory.glob("*.kvm-unit"))))

    first, units = compiled(text, "shared")
    again, more = compiled(text.replace(old, new), "shared")
    alone, _ = compiled(text.replace(old, new), "alone")
    assert units > 2 and more == units + compiled_again
    assert again == alone and again.object != first.object


def test_output_not_of_wasm2cs_shape_is_not_cut() -> None:
    assert split_c.split("int main(void) { return 0; }\n", 4) is None
