"""A plugin's pristine VM: its guest memory and vCPU state right after initialisation.

A boot machine maps a fresh memfd shared, gets the system tables and the image copied in, and
runs the runtime's start: data segments copied into linear memory, tables filled, the input
area published, then the runtime exits with EXIT_READY. What it wrote is the snapshot; the memfd
is then sealed, so no one can change it, and every sandbox maps it privately (copy on write).
Initialisation runs once, at load; a plugin's start function therefore cannot call the host.
"""

from __future__ import annotations

import fcntl
import os
import struct
from dataclasses import dataclass

from vmm.errors import PluginLoadError
from vmm.kvm.layout import (
    EXIT_HOST_CALL,
    EXIT_READY,
    EXIT_TRAP,
    IMAGE,
    INPUT_AREA,
    MAILBOX,
    MEMORY_LIMIT,
    TRAPS,
    slot_size,
    system_tables,
)
from vmm.kvm.machine import CpuState, Kvm, Machine, VcpuTimeout, VmCrash
from vmm.kvm.watchdog import Watchdog

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

    def close(self) -> None:
        os.close(self.memfd)


def take_snapshot(plugin: str, kvm: Kvm, watchdog: Watchdog, image: bytes,
                  memory_limit: int) -> Snapshot:
    size = slot_size(memory_limit)
    memfd = os.memfd_create(f"hyperfilter-{plugin}", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        os.ftruncate(memfd, size)
        cpu, input_area = _boot(plugin, kvm, watchdog, memfd, size, image, memory_limit)
        fcntl.fcntl(memfd, fcntl.F_ADD_SEALS, _SEALS)
    except BaseException:
        os.close(memfd)
        raise
    return Snapshot(memfd, size, memory_limit, cpu, input_area)


def _boot(plugin: str, kvm: Kvm, watchdog: Watchdog, memfd: int, size: int, image: bytes,
          memory_limit: int) -> tuple[CpuState, int]:
    machine = Machine(kvm, memfd, size, shared=True)
    try:
        memory = machine.memory
        address, tables = system_tables(size)
        memory[address:address + len(tables)] = tables
        memory[IMAGE:IMAGE + len(image)] = image
        _U64.pack_into(memory, MAILBOX + MEMORY_LIMIT, memory_limit)
        machine.load_state(machine.boot_state())
        watchdog.watch(machine, BOOT_SECONDS)
        try:
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
