"""A plugin's pristine VM: its guest memory and vCPU state right after initialisation.

A boot machine maps a fresh memfd shared, gets the system tables and the image copied in, and
runs the runtime's start: data segments copied into linear memory, tables filled, the input
area and where the exported globals live published, a reactor's `_initialize` run (Go's
runtime and package initialisation), then the runtime exits with EXIT_READY. What it wrote is
the snapshot; the memfd is then sealed, so no one can change it, and every sandbox maps it
privately (copy on write). Initialisation runs once, at load; a plugin's start function
therefore cannot call the host, except for the WASI preview 1 functions its module imports
(clocks, random bytes, empty arguments: what Go's runtime asks for at start). What they answer
is in the snapshot, the same for every sandbox of the plugin: Go's runtime seeds its hash maps
and math/rand there once (crypto/rand asks the host on each call).
"""

from __future__ import annotations

import fcntl
import os
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from vmm.canonical import AbiError
from vmm.capabilities import CapabilityDenied, PluginLog
from vmm.errors import PluginLoadError
from vmm.kvm.data_segments import Segment
from vmm.kvm.layout import (
    ARGS,
    EXIT_HOST_CALL,
    EXIT_READY,
    EXIT_TRAP,
    IMAGE,
    INPUT_AREA,
    LINEAR_BASE,
    MAILBOX,
    MEMORY_LIMIT,
    TRAPS,
    ImageError,
    ImageLayout,
    image_layout,
    slot_size,
    system_tables,
)
from vmm.kvm.machine import CpuState, Kvm, Machine, VcpuTimeout, VmCrash
from vmm.kvm.memory import GuestMemory, answer_host_call
from vmm.kvm.watchdog import Watchdog
from vmm.wasi_preview1 import WasiFunction, WasiStreams

BOOT_SECONDS = 1.0
_SEALS = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
_U64 = struct.Struct("<Q")


@dataclass(frozen=True)
class Snapshot:
    memfd: int
    size: int
    memory_limit: int
    cpu: CpuState
    input_area: int  # the value of the plugin's hyperfilter_input global, if it has one
    code: range  # the image's code, read-only in the guest (vmm/kvm/layout.py)

    def close(self) -> None:
        os.close(self.memfd)


def take_snapshot(plugin: str, kvm: Kvm, watchdog: Watchdog, image: bytes,
                  memory_limit: int, wasi: Mapping[int, WasiFunction], log: PluginLog,
                  preload: Sequence[Segment] = ()) -> Snapshot:
    """`wasi`: the WASI functions the module imports, by exit; what they write goes to `log`.
    `preload`: data put in linear memory before the guest runs (vmm/kvm/data_segments.py)."""
    for segment in preload:
        if segment.offset + len(segment.data) > memory_limit:
            raise PluginLoadError(plugin, f"its data at {segment.offset:#x} lies past its "
                                          f"memory limit ({memory_limit >> 20} MiB)")
    try:
        layout = image_layout(image)
    except ImageError as exc:
        raise PluginLoadError(plugin, f"has an unusable guest image: {exc}") from None
    size = slot_size(memory_limit)
    memfd = os.memfd_create(f"hyperfilter-{plugin}", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        os.ftruncate(memfd, size)
        cpu, input_area = _boot(plugin, kvm, watchdog, memfd, size, image, layout, preload,
                                memory_limit, _WasiAtBoot(plugin, wasi, log))
        fcntl.fcntl(memfd, fcntl.F_ADD_SEALS, _SEALS)
    except BaseException:
        os.close(memfd)
        raise
    return Snapshot(memfd, size, memory_limit, cpu, input_area, layout.code)


class _WasiAtBoot:
    """Serves the WASI calls a module makes while it initialises."""

    def __init__(self, plugin: str, functions: Mapping[int, WasiFunction],
                 log: PluginLog) -> None:
        self.plugin = plugin
        self.functions = functions
        self.streams = WasiStreams(log)

    def serve(self, machine: Machine, memory_limit: int, kind: int) -> bool:
        """Answer exit `kind` if it is a WASI call (False if it is not)."""
        function = self.functions.get(kind)
        if function is None:
            return False
        memory = GuestMemory(machine, memory_limit, _no_allocation)
        args = list(struct.unpack_from(f"<{len(function.params)}Q", machine.memory,
                                       MAILBOX + ARGS))
        try:
            result = function.call(self.streams, memory, args)
        except (CapabilityDenied, AbiError) as exc:
            raise PluginLoadError(self.plugin, f"failed while initialising in its VM: "
                                               f"{exc}") from None
        answer_host_call(machine.memory, result)
        return True


def _no_allocation(align: int, size: int) -> int:
    raise AbiError("no WASI function allocates")


def _boot(plugin: str, kvm: Kvm, watchdog: Watchdog, memfd: int, size: int, image: bytes,
          layout: ImageLayout, preload: Sequence[Segment], memory_limit: int,
          wasi: _WasiAtBoot) -> tuple[CpuState, int]:
    machine = Machine(kvm, memfd, size, shared=True)
    try:
        memory = machine.memory
        address, tables = system_tables(size, layout.code)
        memory[address:address + len(tables)] = tables
        memory[IMAGE:IMAGE + len(image)] = image
        for segment in preload:
            start = LINEAR_BASE + segment.offset
            memory[start:start + len(segment.data)] = segment.data
        _U64.pack_into(memory, MAILBOX + MEMORY_LIMIT, memory_limit)
        machine.load_state(machine.boot_state(layout.entry))
        watchdog.watch(machine, BOOT_SECONDS)
        try:
            kind, value = machine.run()
            while wasi.serve(machine, memory_limit, kind):
                kind, value = machine.run()
        except VcpuTimeout:
            raise PluginLoadError(plugin, f"did not initialise within {BOOT_SECONDS:.0f} s "
                                          "in its VM") from None
        except VmCrash as crash:
            raise PluginLoadError(plugin, f"crashed its VM while initialising: {crash}") from None
        finally:
            watchdog.unwatch()
        if kind == EXIT_TRAP:
            raise PluginLoadError(plugin, f"trapped while initialising in its VM: "
                                          f"{TRAPS.get(value, f'trap {value}')}")
        if kind >= EXIT_HOST_CALL:
            raise PluginLoadError(plugin, "calls a host function while initialising, which the "
                                          "kvm tier does not allow (initialisation runs once, "
                                          "at load)")
        if kind != EXIT_READY:
            raise PluginLoadError(plugin, f"made exit {kind:#x} while initialising")
        return machine.save_state(), _U64.unpack_from(memory, MAILBOX + INPUT_AREA)[0]
    finally:
        machine.destroy()
