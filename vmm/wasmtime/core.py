"""Core-module plugins on wasmtime: the world's canonical-ABI lowering, called directly.

At load the module's imports are checked against the manifest's grants and the world's
capability signatures, and its exports against the world's; only then are raw (unchecked)
calls safe. Each sandbox is a new Store instantiated from a pre-linked InstancePre (and, for
a reactor, initialised: `_initialize` runs before anything else).

WASI preview 1 imports are linked to vmm/wasi_preview1.py's answers. What they write to stdout
and stderr goes to the log line by line, per sandbox: the linker's functions are the plugin's,
so the sandbox running on the calling thread is the one whose output it is.
"""

from __future__ import annotations

import threading
from ctypes import _Pointer
from typing import Protocol

import wasmtime
from wasmtime import _ffi as ffi

from vmm.canonical import AbiError
from vmm.capabilities import HostEnv
from vmm.core_module import (
    NO_TYPES,
    POST_RETURN_TYPES,
    REALLOC,
    REALLOC_TYPES,
    CoreModule,
    Handler,
)
from vmm.errors import InvalidVerdict, PluginTrap, SandboxFault
from vmm.events import Event, Verdict
from vmm.faults import classify
from vmm.host_abi import granted_host_calls
from vmm.input_area import INPUT_AREA_EXPORT, ArgumentArea
from vmm.manifest import Manifest
from vmm.memory_plan import MemoryPlan
from vmm.sandbox import Sandbox
from vmm.wasi_preview1 import INITIALIZE, WASI_MODULE, WasiStreams
from vmm.wasmtime.engine import EpochDeadline, EpochTicker
from vmm.wasmtime.plugin import WasmtimePlugin
from vmm.wasmtime.raw import (
    HostCalls,
    LinearMemory,
    RawFunc,
    WasmTrap,
    address,
    instance_func,
    instance_global_i32,
    instance_memory,
)
from vmm.world import Export

# What the host functions of the sandbox whose code runs on this thread work with (set on every
# entry): its WASI output (`streams`), a linked component's WASI (`wasi`, vmm/wasmtime/linked.py).
running = threading.local()


def _running_streams() -> WasiStreams:
    streams: WasiStreams = running.streams
    return streams


class Exports(Protocol):
    """What a sandbox's instantiation made, by the names of the plugin's contract."""

    def func(self, name: str) -> ffi.wasmtime_func_t | None: ...

    def memory(self) -> ffi.wasmtime_memory_t | None: ...

    def global_i32(self, name: str) -> int | None: ...


class InstanceExports:
    """A core module's exports: its one instance's."""

    def __init__(self, store: wasmtime.Store, instance: wasmtime.Instance) -> None:
        self._store = store
        self._instance = instance

    def func(self, name: str) -> ffi.wasmtime_func_t | None:
        return instance_func(self._store, self._instance, name)

    def memory(self) -> ffi.wasmtime_memory_t | None:
        return instance_memory(self._store, self._instance)

    def global_i32(self, name: str) -> int | None:
        return instance_global_i32(self._store, self._instance, name)


class ModulesPlugin(WasmtimePlugin):
    """A plugin whose sandboxes the host calls as core wasm, through the world's canonical
    ABI: a core module, or a component's core modules linked by the host."""

    def __init__(self, manifest: Manifest, core: CoreModule, env: HostEnv,
                 engine: wasmtime.Engine, ticker: EpochTicker,
                 memories: MemoryPlan | None) -> None:
        super().__init__(manifest, engine, ticker, memories)
        self.handlers = core.handlers
        self.host_calls = HostCalls()
        self.log = env.log
        self.uses_wasi = bool(core.wasi)
        self.initialize = core.initialize

    def instantiate(self, store: wasmtime.Store) -> Exports:
        """A sandbox's instances in `store`: wasmtime.Trap or WasmtimeError if they fail."""
        raise NotImplementedError

    def new_streams(self) -> WasiStreams | None:
        """A sandbox's stdout and stderr, if it has WASI."""
        return WasiStreams(self.log) if self.uses_wasi else None

    def new_sandbox(self) -> CoreSandbox:
        return CoreSandbox(self)


class CorePlugin(ModulesPlugin):
    kind = "core module"

    def __init__(self, manifest: Manifest, core: CoreModule, module: wasmtime.Module,
                 env: HostEnv, engine: wasmtime.Engine, ticker: EpochTicker,
                 memories: MemoryPlan | None) -> None:
        super().__init__(manifest, core, env, engine, ticker, memories)
        linker = wasmtime.Linker(engine)
        calls = granted_host_calls(manifest, env)
        for item in core.imports:
            self.host_calls.define(linker, item.interface, item.function.name, *item.core_types,
                                   calls[item.interface, item.function.name].call)
        for function in core.wasi:
            self.host_calls.define(linker, WASI_MODULE, function.name, function.params,
                                   function.results, function.host_call(_running_streams))
        self.pre = linker.instantiate_pre(module)
        self.check_instantiates()

    def instantiate(self, store: wasmtime.Store) -> Exports:
        return InstanceExports(store, self.pre.instantiate(store))


class CoreSandbox(Sandbox):
    def __init__(self, plugin: ModulesPlugin) -> None:
        super().__init__(plugin.name, plugin.verdict_rules)
        self._plugin = plugin
        self._limits = plugin.manifest.limits
        self._max_verdict = self.verdict_rules.max_bytes
        self._store: wasmtime.Store | None = plugin.new_store()
        self._ctx: _Pointer = self._store._context()
        self._deadline = EpochDeadline(address(self._ctx), plugin.ticker, self._limits.cpu_ms)
        self._calls: dict[type, tuple[Export, RawFunc, RawFunc | None]] = {}
        self._post_return: tuple[RawFunc, int] | None = None
        self._streams = plugin.new_streams()
        self._enter()
        self._deadline.renew()  # the start function runs now
        try:
            self._exports = plugin.instantiate(self._store)
        except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:
            plugin.host_calls.take_cause()  # a host call's failure is reported here
            self.close()
            raise plugin.instantiation_fault(exc) from None
        if plugin.initialize:
            self._initialize()
        memory = self._exports.memory()
        realloc = self._exports.func(REALLOC)
        assert memory is not None and realloc is not None  # checked at load
        self._memory = LinearMemory(self._ctx, memory, RawFunc(self._ctx, realloc, *REALLOC_TYPES))
        self._arguments: LinearMemory | ArgumentArea = self._memory
        descriptor = self._exports.global_i32(INPUT_AREA_EXPORT)
        if descriptor is not None:
            try:
                self._arguments = ArgumentArea(self._memory, descriptor)
            except AbiError as exc:
                self.close()
                raise PluginTrap(self.plugin, f"its input area is unusable: {exc}") from None

    def _enter(self) -> None:
        """This sandbox's code is about to run on this thread."""
        if self._streams is not None:
            running.streams = self._streams

    def _initialize(self) -> None:
        """A reactor's initialisation (Go's runtime and package init), within the CPU bound of
        one event; a trap or exit there means no sandbox."""
        func = self._exports.func(INITIALIZE)
        assert func is not None  # checked at load
        try:
            RawFunc(self._ctx, func, *NO_TYPES)()
        except WasmTrap as trap:
            fault = classify(self.plugin, self._limits, self._explained(trap),
                             interrupted=trap.code == wasmtime.TrapCode.INTERRUPT,
                             memory_size=0, host_cause=self._plugin.host_calls.take_cause())
            self.close()
            raise fault from None

    def _bound(self, event_type: type) -> tuple[Export, RawFunc, RawFunc | None]:
        bound = self._calls.get(event_type)
        if bound is None:
            handler: Handler = self._plugin.handlers[event_type]
            export = handler.export
            func = self._exports.func(export.core_name)
            assert func is not None
            call = RawFunc(self._ctx, func, *export.signature.core_export())
            post = None
            if handler.has_post_return:
                post_func = self._exports.func(export.post_return_name)
                assert post_func is not None
                post = RawFunc(self._ctx, post_func, *POST_RETURN_TYPES)
            bound = self._calls[event_type] = (export, call, post)
        return bound

    def _run(self, event: Event) -> Verdict | None:
        if self._store is None:
            raise SandboxFault(self.plugin, "delivered to a closed sandbox")
        export, call, post = self._bound(type(event))
        self._enter()
        if self._streams is not None:
            self._streams.start_event()
        self._deadline.renew()
        arguments = self._arguments
        arguments.start_arguments()
        try:
            raw = call(*export.lower(arguments, event))
        except WasmTrap as trap:
            raise self._fault(trap) from None
        except AbiError as exc:
            raise PluginTrap(self.plugin, f"broke the canonical ABI: {exc}") from None
        try:
            verdict = export.lift(self._memory, raw, self._max_verdict)
        except AbiError as exc:
            raise InvalidVerdict(self.plugin, str(exc)) from None
        if post is not None and raw is not None:  # a post-return takes the export's result
            self._post_return = (post, raw)  # off the latency path: see Sandbox.settle
        return verdict

    def exported_area(self, address_global: str, length: int) -> memoryview:
        """The `length` bytes of linear memory at the address the exported i32 global
        `address_global` holds now: how a tool reads what an instrumented module keeps for it
        (the fuzzer's coverage counters, sidecar/fuzz/coverage.py). The view must not outlive
        the sandbox."""
        if self._store is None:
            raise SandboxFault(self.plugin, "read from a closed sandbox")
        area = self._exports.global_i32(address_global)
        if area is None:
            raise AbiError(f"the plugin exports no i32 global {address_global}")
        return self._memory.view(area, length)

    @property
    def unsettled(self) -> bool:
        return self._post_return is not None

    def _settle(self) -> None:
        if self._post_return is not None and self._store is not None:
            (post, raw), self._post_return = self._post_return, None
            self._enter()
            self._deadline.renew()
            try:
                post(raw)
            except WasmTrap as trap:
                raise self._fault(trap) from None

    def _explained(self, trap: WasmTrap) -> str:
        """The trap's message, with what the event wrote to stderr first (a Go panic's)."""
        return self._streams.explain(str(trap)) if self._streams is not None else str(trap)

    def _fault(self, trap: WasmTrap) -> SandboxFault:
        cause = self._plugin.host_calls.take_cause()
        if isinstance(cause, WasmTrap):
            # The plugin's own code, called back by a host function (its realloc, for a list
            # the host returns), trapped: that is the fault, out of CPU time as often as not.
            trap, cause = cause, None
        fault = classify(
            self.plugin, self._limits, self._explained(trap),
            interrupted=trap.code == wasmtime.TrapCode.INTERRUPT,
            memory_size=self._memory.size(), host_cause=cause)
        notes = None if self._streams is None else self._streams.notes
        return fault if notes is None else notes.explained(self.plugin, fault)

    def close(self) -> None:
        self._post_return = None  # a settle still scheduled must find nothing to do
        if self._store is not None:
            self._calls.clear()
            self._store.close()  # frees the instance and unmaps its linear memory now
            self._store = None
