"""A sandbox on the KVM tier: one micro-VM, spoken to through the mailbox.

A call: the host writes CALL, the function's number and its arguments into the mailbox and
runs the vCPU. The guest exits with EXIT_DONE and the result, with EXIT_TRAP, or with
EXIT_HOST_CALL + n to ask for host function n, which the host serves only if the plugin's
manifest grants it; the host then writes RESUME and the result, and runs the vCPU again.
While serving a host call the host may call the plugin (cabi_realloc): that CALL nests.

An event with a C SDK plugin is one exit: arguments go straight into the plugin's input area,
and the last event's post-return rides on the next CALL (the mailbox's POST_RETURN). WASI
preview 1 calls are host calls too, answered with the sandbox's own stdout and stderr.

An exported i32 global is read where the runtime keeps it (its address published in the
mailbox at boot, so in the snapshot: vmm/kvm/glue.py), with no exit.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import TYPE_CHECKING

from vmm.canonical import AbiError
from vmm.errors import InvalidVerdict, PluginTrap, SandboxFault, VmFault
from vmm.events import Event, Verdict
from vmm.fault_notes import PluginStderr
from vmm.faults import classify
from vmm.input_area import ArgumentArea
from vmm.kvm.layout import (
    ARGS,
    CALL,
    COMMAND,
    EXIT_DONE,
    EXIT_TRAP,
    EXPORTED_GLOBALS,
    IMAGE,
    LINEAR_BASE,
    MAILBOX,
    MAX_EXPORTED_GLOBALS,
    RESULT,
    TRAP_OOB,
)
from vmm.kvm.machine import Machine, MachineState, VcpuTimeout, VmCrash
from vmm.kvm.memory import GuestMemory, answer_host_call
from vmm.sandbox import Sandbox
from vmm.wasi_preview1 import WasiStreams

if TYPE_CHECKING:
    from vmm.kvm.plugin import KvmPlugin

# command, function, post-return (its number + 1, or 0), its argument, n arguments
_CALLS = [struct.Struct(f"<4Q{n}Q") for n in range(17)]
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
_U64S = [struct.Struct(f"<{n}Q") for n in range(17)]
_REALLOC = 0  # every image's function 0


class GuestTrap(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class UngrantedHostCall(Exception):
    """The guest asked for a host function its manifest does not grant."""


class HostCallFailed(Exception):
    def __init__(self, cause: Exception) -> None:
        super().__init__(str(cause))
        self.cause = cause


class KvmSandbox(Sandbox):
    def __init__(self, plugin: KvmPlugin, machine: Machine) -> None:
        super().__init__(plugin.name, plugin.verdict_rules)
        self._plugin = plugin
        self.machine: Machine | None = machine
        self._mailbox = machine.memory
        self._cpu_seconds = plugin.manifest.limits.cpu_ms / 1000
        self._memory = GuestMemory(machine, plugin.snapshot.memory_limit, self._realloc)
        self._arguments: GuestMemory | ArgumentArea = self._memory
        self._post_return = (0, 0)  # for the next CALL: function number + 1, argument
        self._host_calls = plugin.host_calls
        self._streams: WasiStreams | None = None
        if plugin.wasi_calls:
            notes = PluginStderr(plugin.log) if plugin.kind == "component" else None
            self._streams = streams = WasiStreams(plugin.log, notes)
            self._host_calls = plugin.host_calls | {
                kind: (function.host_call(lambda: streams), len(function.params))
                for kind, function in plugin.wasi_calls.items()}
        if plugin.has_input_area:
            try:
                self._arguments = ArgumentArea(self._memory, plugin.snapshot.input_area)
            except AbiError as exc:
                self.close()
                raise PluginTrap(self.plugin, f"its input area is unusable: {exc}") from None

    def _run(self, event: Event) -> Verdict | None:
        machine = self.machine
        if machine is None:
            raise SandboxFault(self.plugin, "delivered to a closed sandbox")
        number, export, post_return = self._plugin.calls[type(event)]
        watchdog = self._plugin.watchdog
        if self._streams is not None:
            self._streams.start_event()
        watchdog.watch(machine, self._cpu_seconds)
        try:
            arguments = self._arguments
            arguments.start_arguments()
            raw = self._call(number, export.lower(arguments, event))
        except AbiError as exc:
            raise PluginTrap(self.plugin, f"broke the canonical ABI: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - every failure is this sandbox's fault
            raise self._fault(exc) from None
        finally:
            watchdog.unwatch()
        try:
            verdict = export.lift(self._memory, raw, self.verdict_rules.max_bytes)
        except AbiError as exc:
            raise InvalidVerdict(self.plugin, str(exc)) from None
        if post_return is not None:
            self._post_return = (post_return + 1, raw)
        return verdict

    def _settle(self) -> None:
        """Nothing: the post-return runs at the start of the next call, in the same exit."""

    def exported_area(self, address_global: str, length: int) -> memoryview:
        """The `length` bytes of linear memory at the address the exported i32 global
        `address_global` holds now (as vmm/wasmtime/core.py's: the fuzzer's coverage counters,
        sidecar/fuzz/coverage.py). The view must not outlive the sandbox: a machine destroyed
        unmaps it."""
        machine = self.machine
        if machine is None:
            raise SandboxFault(self.plugin, "read from a closed sandbox")
        slot = self._plugin.exported_globals.get(address_global)
        if slot is None:
            raise AbiError(f"the plugin exports no i32 global {address_global} among its "
                           f"first {MAX_EXPORTED_GLOBALS}")
        where = _U64.unpack_from(machine.memory, MAILBOX + EXPORTED_GLOBALS + 8 * slot)[0]
        # The runtime wrote it, but the host trusts no guest memory: in the image, or refused.
        if not IMAGE <= where <= LINEAR_BASE - _U32.size:
            raise AbiError(f"the guest published global {address_global} at {where:#x}, "
                           "outside its runtime's memory")
        return self._memory.view(_U32.unpack_from(machine.memory, where)[0], length)

    def _call(self, number: int, args: Sequence[int]) -> int:
        machine = self.machine
        assert machine is not None
        mailbox = self._mailbox
        # The world's export parameters are all unsigned: they pack as they are.
        _CALLS[len(args)].pack_into(mailbox, MAILBOX + COMMAND, CALL, number,
                                    *self._post_return, *args)
        self._post_return = (0, 0)
        host_calls = self._host_calls
        while True:
            kind, value = machine.run()
            if kind == EXIT_DONE:
                return _U64.unpack_from(mailbox, MAILBOX + RESULT)[0]
            host_call = host_calls.get(kind)
            if host_call is None:
                machine.state = MachineState.BROKEN  # it stopped mid-call; never resume it
                if kind == EXIT_TRAP:
                    raise GuestTrap(value, self._plugin.describe_trap(value))
                raise UngrantedHostCall(self._plugin.describe_exit(kind))
            call, count = host_call
            flat = list(_U64S[count].unpack_from(mailbox, MAILBOX + ARGS))
            try:
                result = call(self._memory, flat)
            except Exception as exc:
                machine.state = MachineState.BROKEN
                raise HostCallFailed(exc) from exc
            answer_host_call(mailbox, result)

    def _realloc(self, align: int, size: int) -> int:
        return self._call(_REALLOC, (0, 0, align, size))

    def _fault(self, exc: Exception) -> SandboxFault:
        fault = self._classified(exc)
        notes = None if self._streams is None else self._streams.notes
        return fault if notes is None else notes.explained(self.plugin, fault)

    def _classified(self, exc: Exception) -> SandboxFault:
        limits = self._plugin.manifest.limits
        if isinstance(exc, VcpuTimeout):
            return classify(self.plugin, limits, "", interrupted=True, memory_size=0,
                            host_cause=None)
        if isinstance(exc, VmCrash):
            return VmFault(self.plugin, str(exc))
        if isinstance(exc, UngrantedHostCall):
            return PluginTrap(self.plugin, f"host call refused: {exc}")
        if isinstance(exc, GuestTrap):
            memory_size = self._memory.size() if exc.code != TRAP_OOB else 0
            message = str(exc) if self._streams is None else self._streams.explain(str(exc))
            return classify(self.plugin, limits, message, interrupted=False,
                            memory_size=memory_size, host_cause=None)
        cause = exc.cause if isinstance(exc, HostCallFailed) else exc
        return classify(self.plugin, limits, "", interrupted=False, memory_size=0,
                        host_cause=cause)

    def close(self) -> None:
        if self.machine is not None:
            machine, self.machine = self.machine, None
            self._plugin.release(machine, clean=self.fault is None)
