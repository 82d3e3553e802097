"""What only the kvm tier does: a VM per sandbox reset and reused, its working set learned
and capped, exits the host checks against the grants, a guest that crashes its VM, the image
cache and its build, and what it refuses."""

from __future__ import annotations

import contextlib
import os
import re
import struct
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from sidecar.plugin.build import build_plugin
from tests.conftest import RecordingMetrics, loader_for, plugin_dir, skip_unless_tier_runs
from vmm.capabilities import HostEnv, PluginLog
from vmm.capabilities.state.memory import MemoryBackend
from vmm.core_module import check_core_module
from vmm.errors import (
    PluginLoadError,
    PluginTrap,
    SandboxFault,
    SandboxPoisoned,
    VmFault,
)
from vmm.events import FORWARD, Direction, Replace, TcpData
from vmm.kvm.backend import KvmBackend
from vmm.kvm.glue import GuestFunctions
from vmm.kvm.image import CFLAGS, GUEST_SOURCES, build_image, run_build_step
from vmm.kvm.layout import IMAGE, LINEAR_BASE, MAILBOX, MEMORY_LIMIT, PAGE
from vmm.kvm.machine import MAX_DROPPED_RUNS, Machine
from vmm.kvm.page_runs import pages_of
from vmm.kvm.plugin import KvmPlugin
from vmm.kvm.working_set import LEARNING_STREAMS
from vmm.manifest import load_manifest

pytestmark = pytest.mark.usefixtures("kvm_only")


@pytest.fixture
def kvm_only() -> None:
    skip_unless_tier_runs("kvm")


KvmLoader = Callable[..., KvmPlugin]


@pytest.fixture
def load_kvm(kvm_backend: KvmBackend, metrics: RecordingMetrics) -> KvmLoader:
    load = loader_for(kvm_backend, metrics)

    def loader(name: str | Path, **overrides: object) -> KvmPlugin:
        plugin = load(name, **overrides)
        assert isinstance(plugin, KvmPlugin)  # what the kvm backend loads
        return plugin

    return loader


def data(text: bytes) -> TcpData:
    return TcpData(Direction.INBOUND, text, False)


def test_a_reused_vm_starts_from_the_snapshot(load_kvm: KvmLoader) -> None:
    plugin = load_kvm("counter")
    sandbox = plugin.new_sandbox()
    assert [sandbox.deliver(data(b"x")) for _ in range(3)][-1] == Replace(b"3:x")
    sandbox.close()
    made = plugin.machines_made
    again = plugin.new_sandbox()
    assert plugin.machines_made == made  # the same VM, reset
    assert again.reused
    assert again.deliver(data(b"y")) == Replace(b"1:y")


def test_a_fresh_vm_gets_its_working_set_before_the_guest_runs(load_kvm: KvmLoader) -> None:
    """Pages the plugin's streams write are learned, and copied from the snapshot into each
    new or reset VM ahead of its first event: still the snapshot's content."""
    plugin = load_kvm("counter")
    for _ in range(3):
        sandbox = plugin.new_sandbox()
        sandbox.deliver(data(b"x"))
        sandbox.close()
    assert plugin.working_set.pages
    fresh = plugin.new_sandbox()
    assert fresh.machine is not None
    assert plugin.working_set.pages <= pages_of(fresh.machine.written_runs())
    assert fresh.deliver(data(b"y")) == Replace(b"1:y")


def stream(plugin: KvmPlugin, command: bytes) -> None:
    """One stream of one event, which may fault; closed either way."""
    sandbox = plugin.new_sandbox()
    with contextlib.suppress(SandboxFault):
        sandbox.deliver(data(command))
    sandbox.close()


def test_only_clean_streams_within_the_cap_teach_the_working_set(load_kvm: KvmLoader) -> None:
    plugin = load_kvm("host-loop")
    stream(plugin, b"write 2")  # 512 pages, past the cap
    stream(plugin, b"log")  # stopped at its CPU bound
    assert plugin.working_set.pages == set()
    stream(plugin, b"pass")
    assert 0 < len(plugin.working_set.pages) <= plugin.working_set.max_pages


def test_streams_writing_much_memory_do_not_grow_later_vms(load_kvm: KvmLoader) -> None:
    """A plugin's first streams each writing megabytes leave every VM made or reset after them,
    idle ones too, with no more private pages than the cap."""
    plugin = load_kvm("host-loop")
    for _ in range(LEARNING_STREAMS):
        stream(plugin, b"write 2")
    opened = [plugin.new_sandbox() for _ in range(8)]  # most of them new VMs
    for sandbox in opened:
        sandbox.close()  # reset and kept idle
    made = plugin.machines_made
    idle = [plugin.new_sandbox() for _ in range(8)]
    assert plugin.machines_made == made
    for sandbox in idle:
        assert sandbox.machine is not None
        assert len(pages_of(sandbox.machine.written_runs())) <= plugin.working_set.max_pages
        assert sandbox.deliver(data(b"pass")) == FORWARD


def snapshot_bytes(plugin: KvmPlugin) -> bytes:
    return os.pread(plugin.snapshot.memfd, plugin.snapshot.size, 0)


@pytest.mark.parametrize("how", ["page scan", "no page scan", "scattered writes"])
def test_a_reset_vm_holds_the_snapshot_and_only_its_working_set_as_copies(
        load_kvm: KvmLoader, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    """After a stream that wrote pages in and out of the working set (the guest 2 MiB past
    it; the host, for the scattered case, every other page of the memory's top MiB too), the
    reset VM's memory is the snapshot's, byte for byte, whichever way it was reset: written
    pages dropped one by one (the kernel's page scan), or the snapshot mapped again over all
    of it (no scan, or too many runs to drop)."""
    plugin = load_kvm("host-loop")
    if how == "no page scan":
        monkeypatch.setattr(plugin.kvm, "scans_pages", False)
    for _ in range(3):
        stream(plugin, b"pass")
    assert plugin.working_set.pages
    sandbox = plugin.new_sandbox()
    machine = sandbox.machine
    assert machine is not None
    assert sandbox.deliver(data(b"write 2")) == FORWARD
    if how == "scattered writes":
        top = machine.size - 4 * MAX_DROPPED_RUNS * PAGE
        for page in range(2 * MAX_DROPPED_RUNS):
            machine.memory[top + 2 * page * PAGE] ^= 0xFF
    assert len(pages_of(machine.written_runs())) > 512  # the 2 MiB written
    sandbox.close()
    again = plugin.new_sandbox()
    assert again.machine is machine  # reset, and handed out again
    assert bytes(machine.memory) == snapshot_bytes(plugin)
    assert pages_of(machine.written_runs()) == plugin.working_set.pages
    assert again.deliver(data(b"pass")) == FORWARD


def test_a_forked_process_scans_its_own_pages(load_kvm: KvmLoader) -> None:
    """A VM made in a child of the process that opened KVM: the pages written in it are found
    by the child's page scan, not looked for in the parent's address space."""
    plugin = load_kvm("counter")
    assert plugin.kvm.pagemap >= 0  # opened by this process
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports by its exit code alone
        found = False
        with contextlib.suppress(BaseException):
            machine = Machine(plugin.kvm, plugin.snapshot.memfd, plugin.snapshot.size)
            machine.memory[LINEAR_BASE] ^= 0xFF
            found = LINEAR_BASE // PAGE in pages_of(machine.written_runs())
        os._exit(0 if found else 1)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_a_guest_asking_for_an_ungranted_host_function_is_stopped(
        load_kvm: KvmLoader, kvm_backend: KvmBackend, metrics: RecordingMetrics) -> None:
    """A compromised guest (here: the caps plugin's image, run under a manifest that grants
    only `log`) exits for `clock`; the host refuses, and that sandbox alone stops."""
    manifest = load_manifest(plugin_dir("caps"))
    wasm = manifest.wasm.read_bytes()
    core = check_core_module(manifest, wasm)
    image = build_image(manifest.name, wasm, core, GuestFunctions.of(core),
                        kvm_backend.toolchain, kvm_backend.cache)
    only_log = type(manifest)(**{**manifest.__dict__,
                                 "grants": {"log": manifest.grants["log"]}})
    env = HostEnv(manifest.name, {}, PluginLog(manifest.name, 10), metrics, MemoryBackend())
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
    # a write to an unused entry of its page directory, or of its GDT, then that exit: the
    # first faults (supervisor pages), so the exit is never reached
    (NOP * 0xFFE0 + b"\x89\x04\x25\xf0\x4f\x00\x00\x89\x04\x25\x04\x00\xe0\x3f" + UD2,
     "shutdown"),
    (NOP * 0xFFE0 + b"\x89\x04\x25\x40\x10\x00\x00\x89\x04\x25\x04\x00\xe0\x3f" + UD2,
     "shutdown"),
])
def test_a_guest_crashing_its_vm_is_a_typed_fault(load_kvm: KvmLoader, code: bytes,
                                                  detail: str) -> None:
    """Code the runtime never runs, written over a live guest's image: whatever the VM exit,
    the sandbox fails with VmFault; the snapshot, and so every other sandbox, is untouched."""
    plugin = load_kvm("counter")
    victim, neighbour = plugin.new_sandbox(), plugin.new_sandbox()
    assert victim.machine is not None
    memory = victim.machine.memory
    memory[IMAGE:IMAGE + 0x10000] = (code * 0x10000)[:0x10000]
    with pytest.raises(VmFault, match=detail):
        victim.deliver(data(b"x"))
    victim.close()
    assert neighbour.deliver(data(b"x")) == Replace(b"1:x")
    assert plugin.new_sandbox().deliver(data(b"z")) == Replace(b"1:z")


WRITE_EAX_TO = b"\x89\x04\x25"  # movl %eax, (disp32)
BAD_EXIT = WRITE_EAX_TO + b"\x04\x00\xe0\x3f"  # to EXIT_WINDOW + 4: no exit's address


def test_a_guest_can_neither_write_its_code_nor_run_its_data(load_kvm: KvmLoader) -> None:
    """W^X in the guest's page tables: a write to the image's code faults before the exit
    after it; a jump into the image's data (where that exit is written) faults too. Either
    would end in the bad exit were the page writable or executable."""
    plugin = load_kvm("counter")
    writable = plugin.snapshot.code.stop
    writes_code = WRITE_EAX_TO + struct.pack("<I", IMAGE) + BAD_EXIT + UD2
    runs_data = b"\xb8" + struct.pack("<I", writable) + b"\xff\xe0"  # mov $data, %eax; jmp *%rax
    for code in (writes_code, runs_data):
        victim = plugin.new_sandbox()
        assert victim.machine is not None
        memory = victim.machine.memory
        memory[writable:writable + len(BAD_EXIT)] = BAD_EXIT
        sled = NOP * (0x10000 - len(code))
        memory[IMAGE:IMAGE + 0x10000] = sled + code
        with pytest.raises(VmFault, match="shutdown"):
            victim.deliver(data(b"x"))
        victim.close()
    assert plugin.new_sandbox().deliver(data(b"z")) == Replace(b"1:z")


def test_a_reset_looks_for_written_pages_outside_the_code_only(load_kvm: KvmLoader) -> None:
    """The page scan skips the code, which no guest can write: a page written there by the
    host goes unseen, one in the data is found."""
    plugin = load_kvm("counter")
    sandbox = plugin.new_sandbox()
    assert sandbox.machine is not None
    code = plugin.snapshot.code
    memory = sandbox.machine.memory
    memory[code.start + PAGE] ^= 0xFF
    memory[code.stop] ^= 0xFF
    written = pages_of(sandbox.machine.written_runs())
    assert code.stop // PAGE in written
    assert not any(page * PAGE in code for page in written)
    sandbox.close()


def test_the_memory_limit_is_the_guests(load_kvm: KvmLoader) -> None:
    plugin = load_kvm("faulty")
    sandbox = plugin.new_sandbox()
    assert sandbox.machine is not None
    limit = int.from_bytes(sandbox.machine.memory[MAILBOX + MEMORY_LIMIT:][:8], "little")
    assert limit == plugin.manifest.limits.memory_bytes == 4 << 20
    assert sandbox.deliver(data(b"fine")) == FORWARD


def test_a_plugin_too_large_for_its_vm_is_refused_before_it_is_compiled(
        tmp_path: Path, load_kvm: KvmLoader) -> None:
    (tmp_path / "manifest.toml").write_text(
        'name = "oversized"\nversion = "0.1.0"\nevents = ["tcp.data"]\n')
    (tmp_path / "oversized.c").write_text(
        '#include "hyperfilter.h"\n'
        "static const volatile char data[64 << 20] = {1};  /* a 64 MiB data segment */\n"
        "hf_tcp_verdict hf_tcp_data(hf_direction d, hf_bytes b, bool eos) {\n"
        "    (void)d; (void)eos; return data[b.len] ? hf_forward() : hf_forward();\n}\n")
    build_plugin(tmp_path)
    with pytest.raises(PluginLoadError, match=r"its data segments take 64\.0 MiB; a kvm guest "
                                              r"image has 63 MiB for its code and data"):
        load_kvm(tmp_path)


def test_a_link_failure_names_the_linkers_reason(tmp_path: Path,
                                                 kvm_backend: KvmBackend) -> None:
    """gcc sums up any failure of ld as "collect2: error: ld returned 1 exit status"; the load
    error says what ld said. Here the guest's own linker script refuses an image that does
    not fit below linear memory."""
    (tmp_path / "large.c").write_text(
        "static volatile char data[64 << 20] = {1};\n"
        '__attribute__((section(".text.start"))) void hf_start(void) { data[0]++; }\n')
    with pytest.raises(PluginLoadError) as refused:
        run_build_step("large", "gcc", [
            kvm_backend.toolchain.cc, *CFLAGS, f"-Wl,--defsym=HF_LINEAR_BASE={LINEAR_BASE}",
            "-T", str(GUEST_SOURCES / "guest.ld"), "-o", "image.bin", "large.c"], tmp_path)
    assert "ld: the plugin is too large for the space below linear memory" in str(refused.value)
    assert "collect2" not in str(refused.value)


def test_a_build_step_past_its_time_bound_is_stopped_with_its_children(tmp_path: Path) -> None:
    """As gcc leaves the work to cc1 and ld, the step here leaves it to a child: both go."""
    with pytest.raises(PluginLoadError, match=r"slow-tool did not finish within 0\.2 s"):
        run_build_step("slow", "slow-tool", ["sh", "-c", "sleep 60 & echo $! > child; wait"],
                       tmp_path, timeout=0.2)
    child = Path(f"/proc/{(tmp_path / 'child').read_text().strip()}/stat")
    for _ in range(100):  # until it is reaped, or seen dead
        try:
            if child.read_text().rpartition(") ")[2].startswith("Z"):
                break
        except FileNotFoundError:
            break
        time.sleep(0.01)
    else:
        pytest.fail("the step's child outlived it")
