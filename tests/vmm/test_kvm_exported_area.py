"""`exported_area` on every tier, the kvm tier's above all (its VM publishes where the runtime
keeps each exported i32 global: vmm/kvm/glue.py): the bytes of linear memory at the address
a global holds now, bounds-checked however the plugin sets it, as the memory grows; a new
sandbox (on kvm, a VM reset to the snapshot and reused) sees the module's state again."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
import wasmtime

from sidecar.fuzz.coverage import ExportedAreas
from tests.conftest import Loader, RecordingMetrics, loader_for
from vmm.canonical import AbiError
from vmm.errors import SandboxFault
from vmm.events import Direction, Replace, TcpData, Verdict
from vmm.kvm.backend import KvmBackend
from vmm.kvm.layout import EXPORTED_GLOBALS, LINEAR_BASE, MAILBOX
from vmm.kvm.sandbox import KvmSandbox
from vmm.sandbox import LoadedPlugin, Sandbox

ON_DATA = "hyperfilter:plugin/tcp-filter@0.1.0#on-data"
# Its on-data answers with the 8 bytes at `area` (a replace verdict, at 32), then points `area`
# at the data's first four bytes (little-endian) and copies the rest there; with end-of-stream
# it first grows its memory by a page.
MODULE = f"""(module
  (memory (export "memory") 1)
  (global $area (export "area") (mut i32) (i32.const 256))
  (global (export "wide") i64 (i64.const 256))
  (data (i32.const 256) "snapshot")
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) i32.const 1024)
  (func (export "{ON_DATA}") (param $direction i32) (param $data i32) (param $length i32)
        (param $end i32) (result i32)
    (i32.store8 (i32.const 32) (i32.const 1))
    (i32.store (i32.const 36) (global.get $area))
    (i32.store (i32.const 40) (i32.const 8))
    (if (local.get $end) (then (drop (memory.grow (i32.const 1)))))
    (global.set $area (i32.load (local.get $data)))
    (if (i32.gt_u (local.get $length) (i32.const 4))
      (then (memory.copy (global.get $area) (i32.add (local.get $data) (i32.const 4))
                         (i32.sub (local.get $length) (i32.const 4)))))
    i32.const 32))"""
PAGE = 65536


def area_plugin(directory: Path, load: Loader) -> LoadedPlugin:
    (directory / "manifest.toml").write_text(
        'name = "area"\nversion = "0"\nevents = ["tcp.data"]\n')
    (directory / "area.wasm").write_bytes(wasmtime.wat2wasm(MODULE))
    return load(directory)


@pytest.fixture
def plugin(tmp_path: Path, load: Loader) -> LoadedPlugin:
    return area_plugin(tmp_path, load)


def area(sandbox: Sandbox, length: int = 8, name: str = "area") -> memoryview:
    assert isinstance(sandbox, ExportedAreas)
    return sandbox.exported_area(name, length)


def point(sandbox: Sandbox, address: int, payload: bytes = b"", grow: bool = False) -> Verdict:
    """Have the plugin point `area` at `address` (and write `payload` there); its verdict:
    what `area` held before."""
    data = struct.pack("<I", address) + payload
    verdict = sandbox.deliver(TcpData(Direction.INBOUND, data, grow))
    assert verdict is not None
    return verdict


def test_it_reads_the_bytes_the_global_points_at_now(plugin: LoadedPlugin) -> None:
    sandbox = plugin.new_sandbox()
    assert bytes(area(sandbox)) == b"snapshot"
    point(sandbox, 4096, b"moved")
    assert bytes(area(sandbox, 5)) == b"moved"
    # past the memory it started with
    assert point(sandbox, PAGE + 16, b"grown!!!", grow=True) == Replace(b"moved\0\0\0")
    assert bytes(area(sandbox)) == b"grown!!!"


def test_what_the_host_writes_through_the_view_the_plugin_sees(plugin: LoadedPlugin) -> None:
    sandbox = plugin.new_sandbox()
    area(sandbox)[:] = b"written!"
    assert point(sandbox, 4096) == Replace(b"written!")


def test_a_new_sandbox_sees_the_modules_state_again(plugin: LoadedPlugin, tier: str) -> None:
    """On kvm the second sandbox gets the first one's VM, reset to the snapshot."""
    first = plugin.new_sandbox()
    point(first, 4096, b"moved")
    first.close()
    second = plugin.new_sandbox()
    if tier == "kvm":
        assert second.reused
    assert bytes(area(second)) == b"snapshot"


@pytest.mark.parametrize(("address", "length"), [
    (PAGE - 2, 4),    # straddles the end
    (PAGE, 1),        # just past it
    (0xFFFFFFFF, 2),  # past 4 GiB once the length is added
    (0, PAGE + 1),    # longer than the memory
])
def test_an_area_outside_linear_memory_is_refused(plugin: LoadedPlugin, address: int,
                                                  length: int) -> None:
    sandbox = plugin.new_sandbox()
    point(sandbox, address)
    with pytest.raises(AbiError, match="outside linear memory"):
        area(sandbox, length)


@pytest.mark.parametrize("name", ["nothing", "wide", "memory"])
def test_only_an_exported_i32_global_has_an_area(plugin: LoadedPlugin, name: str) -> None:
    with pytest.raises(AbiError, match=f"exports no i32 global {name}"):
        area(plugin.new_sandbox(), 1, name)


def test_a_closed_sandbox_has_no_area(plugin: LoadedPlugin) -> None:
    sandbox = plugin.new_sandbox()
    sandbox.close()
    with pytest.raises(SandboxFault, match="closed sandbox"):
        area(sandbox, 1)


@pytest.mark.parametrize("published", [0, MAILBOX, LINEAR_BASE, 2**64 - 1])
def test_a_global_published_outside_the_runtime_is_refused(
        tmp_path: Path, kvm_backend: KvmBackend, metrics: RecordingMetrics,
        published: int) -> None:
    """What a guest that escaped wasm could write into its mailbox: the host reads no global
    from linear memory, the mailbox, or outside the VM."""
    sandbox = area_plugin(tmp_path, loader_for(kvm_backend, metrics)).new_sandbox()
    assert isinstance(sandbox, KvmSandbox) and sandbox.machine is not None
    struct.pack_into("<Q", sandbox.machine.memory, MAILBOX + EXPORTED_GLOBALS, published)
    with pytest.raises(AbiError, match=r"published global area at .* outside its runtime"):
        sandbox.exported_area("area", 1)
