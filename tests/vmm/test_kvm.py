"""What only the kvm tier does: a VM per sandbox reset and reused, exits the host checks
against the grants, a guest that crashes its VM, the image cache, and what it refuses."""

from __future__ import annotations

import re

import pytest

from tests.conftest import Loader, RecordingMetrics, plugin_dir, skip_unless_tier_runs
from vmm.capabilities import HostEnv, PluginLog
from vmm.core_module import check_core_module
from vmm.errors import PluginTrap, SandboxPoisoned, TierMismatchError, VmFault
from vmm.events import FORWARD, Direction, Replace, TcpData
from vmm.kvm import KvmBackend
from vmm.kvm.glue import GuestFunctions
from vmm.kvm.image import build_image
from vmm.kvm.layout import IMAGE, MAILBOX, MEMORY_LIMIT
from vmm.kvm.plugin import KvmPlugin
from vmm.kvm.sandbox import KvmSandbox
from vmm.loader import load_plugin
from vmm.manifest import load_manifest

pytestmark = pytest.mark.usefixtures("kvm_only")


@pytest.fixture
def kvm_only() -> None:
    skip_unless_tier_runs("kvm")


@pytest.fixture
def load_kvm(kvm_backend: KvmBackend, metrics: RecordingMetrics) -> Loader:
    def loader(name: str, **overrides: object) -> KvmPlugin:
        return load_plugin(plugin_dir(name), kvm_backend, metrics, **overrides)  # type: ignore[arg-type, return-value]

    return loader


def data(text: bytes) -> TcpData:
    return TcpData(Direction.INBOUND, text, False)


def test_a_reused_vm_starts_from_the_snapshot(load_kvm: Loader) -> None:
    plugin = load_kvm("counter")
    sandbox = plugin.new_sandbox()
    assert [sandbox.deliver(data(b"x")) for _ in range(3)][-1] == Replace(b"3:x")
    sandbox.close()
    made = plugin.machines_made
    again = plugin.new_sandbox()
    assert plugin.machines_made == made  # the same VM, reset
    assert again.deliver(data(b"y")) == Replace(b"1:y")


def test_a_fresh_vm_gets_its_working_set_before_the_guest_runs(load_kvm: Loader) -> None:
    """Pages the plugin's streams write are learned, and copied from the snapshot into each
    new or reset VM ahead of its first event: still the snapshot's content."""
    plugin = load_kvm("counter")
    for _ in range(3):
        sandbox = plugin.new_sandbox()
        sandbox.deliver(data(b"x"))
        sandbox.close()
    assert plugin.working_set.pages
    fresh: KvmSandbox = plugin.new_sandbox()  # type: ignore[assignment]
    assert plugin.working_set.pages <= fresh.machine.written_pages()
    assert fresh.deliver(data(b"y")) == Replace(b"1:y")


def test_a_guest_asking_for_an_ungranted_host_function_is_stopped(
        load_kvm: Loader, kvm_backend: KvmBackend, metrics: RecordingMetrics) -> None:
    """A compromised guest (here: the caps plugin's image, run under a manifest that grants
    only `log`) exits for `clock`; the host refuses, and that sandbox alone stops."""
    manifest = load_manifest(plugin_dir("caps"))
    wasm = manifest.wasm.read_bytes()
    core = check_core_module(manifest, wasm)
    image = build_image(manifest.name, wasm, core, GuestFunctions.of(core),
                        kvm_backend.toolchain, kvm_backend.cache)
    only_log = type(manifest)(**{**manifest.__dict__,
                                 "grants": {"log": manifest.grants["log"]}})
    env = HostEnv(manifest.name, {}, PluginLog(manifest.name, 10), metrics)
    plugin = KvmPlugin(only_log, core, image, env, kvm_backend.kvm, kvm_backend.watchdog)
    try:
        victim, neighbour = plugin.new_sandbox(), plugin.new_sandbox()
        with pytest.raises(PluginTrap, match=re.escape(
                "clock@0.1.0#now, which its manifest does not grant")):
            victim.deliver(data(b"clock"))
        with pytest.raises(SandboxPoisoned):
            victim.deliver(data(b"log"))
        assert neighbour.deliver(data(b"log")) == Replace(b"ok")
    finally:
        plugin.close()


NOP = b"\x90"
UD2 = b"\x0f\x0b"  # an exception with no handler is a triple fault


@pytest.mark.parametrize(("code", "detail"), [
    (UD2, "shutdown"),
    (b"\xf4", "shutdown"),  # hlt: privileged in user mode
    # after a sled, movl %eax, (EXIT_WINDOW + 4): not the address of any exit
    (NOP * 0xFFF0 + b"\x89\x04\x25\x04\x00\xe0\x3f" + UD2,
     "a 4-byte write to 0x3fe00004, neither its memory nor an exit"),
])
def test_a_guest_crashing_its_vm_is_a_typed_fault(load_kvm: Loader, code: bytes,
                                                  detail: str) -> None:
    """Code the runtime never runs, written over a live guest's image: whatever the VM exit,
    the sandbox fails with VmFault; the snapshot, and so every other sandbox, is untouched."""
    plugin = load_kvm("counter")
    victim: KvmSandbox = plugin.new_sandbox()  # type: ignore[assignment]
    neighbour = plugin.new_sandbox()
    memory = victim.machine.memory  # type: ignore[union-attr]
    memory[IMAGE:IMAGE + 0x10000] = (code * 0x10000)[:0x10000]
    with pytest.raises(VmFault, match=detail):
        victim.deliver(data(b"x"))
    victim.close()
    assert neighbour.deliver(data(b"x")) == Replace(b"1:x")
    assert plugin.new_sandbox().deliver(data(b"z")) == Replace(b"1:z")


def test_the_memory_limit_is_the_guests(load_kvm: Loader) -> None:
    plugin = load_kvm("faulty")
    sandbox: KvmSandbox = plugin.new_sandbox()  # type: ignore[assignment]
    limit = int.from_bytes(sandbox.machine.memory[MAILBOX + MEMORY_LIMIT:][:8], "little")  # type: ignore[union-attr]
    assert limit == plugin.manifest.limits.memory_bytes == 4 << 20
    assert sandbox.deliver(data(b"fine")) == FORWARD


def test_components_are_refused_naming_the_wasmtime_tier(load_kvm: Loader) -> None:
    with pytest.raises(TierMismatchError, match=r'kvm tier runs core modules only.*"wasmtime"'):
        load_kvm("http-auth")
