"""A plugin on the KVM tier: its snapshot, its host calls by port, and the machines
it has made.

A new sandbox takes an idle machine (one a finished sandbox left, reset to the snapshot) or
makes one; either way its memory is the snapshot's and nothing an earlier stream wrote. A
machine whose sandbox failed is destroyed, never reused.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from vmm.capabilities import HostEnv
from vmm.core_module import CoreModule
from vmm.errors import PluginLoadError, SandboxFault, VmFault
from vmm.host_abi import CoreHostCall, granted_host_calls
from vmm.kvm.data_segments import Segment
from vmm.kvm.glue import HOST_FUNCTION_EXITS, HOST_FUNCTIONS, GuestFunctions, published_globals
from vmm.kvm.layout import EXIT_HOST_CALL, TRAP_UNPROVIDED, TRAPS
from vmm.kvm.machine import Kvm, Machine, VmCrash
from vmm.kvm.sandbox import KvmSandbox
from vmm.kvm.snapshot import take_snapshot
from vmm.kvm.wasi_services import MODULE as GUEST_WASI
from vmm.kvm.watchdog import Watchdog
from vmm.kvm.working_set import WorkingSet
from vmm.manifest import Manifest
from vmm.sandbox import LoadedPlugin
from vmm.wasi_preview1 import WASI_MODULE
from vmm.world import Export

log = logging.getLogger(__name__)
IDLE_MACHINES = 64  # per plugin: enough to absorb a burst of closing streams


class KvmPlugin(LoadedPlugin):
    tier = "kvm"

    def __init__(self, manifest: Manifest, core: CoreModule, image: bytes, env: HostEnv,
                 kvm: Kvm, watchdog: Watchdog, kind: str = "core module",
                 preload: Sequence[Segment] = (), unprovided: Sequence[str] = ()) -> None:
        super().__init__(manifest)
        self.kind = kind
        self.unprovided = tuple(unprovided)  # WASI functions its guest traps on
        self.kvm = kvm
        self.watchdog = watchdog
        functions = GuestFunctions.of(core)
        self.calls: dict[type, tuple[int, Export, int | None]] = {
            event_type: (functions.number(handler.export.core_name), handler.export,
                         functions.number(handler.export.post_return_name)
                         if handler.has_post_return else None)
            for event_type, handler in core.handlers.items()}
        # Only what the manifest grants, and the WASI functions the module imports, have an
        # exit; any other exit stops the guest.
        self.host_calls: dict[int, tuple[CoreHostCall, int]] = {
            HOST_FUNCTION_EXITS[key]: (bound.call, len(bound.function.signature.core_import()[0]))
            for key, bound in granted_host_calls(manifest, env).items()}
        self.wasi_calls = {HOST_FUNCTION_EXITS[function.module, function.name]: function
                           for function in core.wasi}
        self.log = env.log
        self.has_input_area = core.has_input_area
        self.exported_globals = published_globals(core)  # name -> mailbox slot
        self.snapshot = take_snapshot(self.name, kvm, watchdog, image,
                                      manifest.limits.memory_bytes, self.wasi_calls, env.log,
                                      preload)
        self.working_set = WorkingSet(manifest.limits.memory_bytes)
        self._idle: list[Machine] = []
        self.machines_made = 0
        try:
            self.new_sandbox().close()
        except SandboxFault as fault:
            self.close()
            raise PluginLoadError(self.name, f"cannot be instantiated: {fault.detail}") from None

    def describe_trap(self, code: int) -> str:
        unprovided = code - TRAP_UNPROVIDED
        if 0 <= unprovided < len(self.unprovided):
            return f"it called {self.unprovided[unprovided]}, which the sandbox does not provide"
        return TRAPS.get(code, f"trap {code}")

    def describe_exit(self, kind: int) -> str:
        number = kind - EXIT_HOST_CALL
        if 0 <= number < len(HOST_FUNCTIONS):
            interface, name = HOST_FUNCTIONS[number]
            if interface in (WASI_MODULE, GUEST_WASI):
                return f"it asked for {interface}#{name}, which its module does not import"
            return f"it asked for {interface}#{name}, which its manifest does not grant"
        return f"it made exit {kind:#x}, which is no host function"

    def new_sandbox(self) -> KvmSandbox:
        reused = bool(self._idle)
        if reused:
            machine = self._idle.pop()
        else:
            try:
                machine = Machine(self.kvm, self.snapshot.memfd, self.snapshot.size,
                                  code=self.snapshot.code)
                machine.load_state(self.snapshot.cpu)
                machine.restore(self.working_set.runs)
            except OSError as exc:
                raise VmFault(self.name, f"cannot make a VM: {exc}") from None
            self.machines_made += 1
        sandbox = KvmSandbox(self, machine)
        sandbox.reused = reused
        return sandbox

    def release(self, machine: Machine, *, clean: bool) -> None:
        """Take back a finished sandbox's machine: reset for the next sandbox when its guest
        ended cleanly and there is room, destroyed otherwise."""
        if clean and len(self._idle) < IDLE_MACHINES:
            try:
                self.working_set.learn_from(machine)
                machine.reset(self.snapshot.cpu, self.working_set.runs)
                self._idle.append(machine)
                return
            except (OSError, VmCrash) as exc:
                log.warning("could not reset a VM of %s (%s); destroying it", self.name, exc)
        machine.destroy()

    def close(self) -> None:
        for machine in self._idle:
            machine.destroy()
        self._idle.clear()
        self.snapshot.close()

