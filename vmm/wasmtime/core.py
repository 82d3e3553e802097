"""Core-module plugins on wasmtime: the world's canonical-ABI lowering, called directly.

At load the module's imports are checked against the manifest's grants and the world's
capability signatures, and its exports against the world's; only then are raw (unchecked)
calls safe. Each sandbox is a new Store instantiated from a pre-linked InstancePre.
"""

from __future__ import annotations

from ctypes import _Pointer

import wasmtime

from vmm.canonical import AbiError
from vmm.capabilities import BY_INTERFACE, HostEnv
from vmm.errors import (
    InvalidVerdict,
    PluginTrap,
    SandboxFault,
    UngrantedImportError,
    WorldMismatchError,
)
from vmm.events import Event, Verdict, kinds_of
from vmm.host_abi import core_host_call
from vmm.manifest import Manifest
from vmm.sandbox import Sandbox
from vmm.wasmtime.engine import EpochTicker
from vmm.wasmtime.faults import classify
from vmm.wasmtime.plugin import WasmtimePlugin
from vmm.wasmtime.raw import (
    INPUT_AREA_EXPORT,
    REALLOC_TYPES,
    ArgumentArea,
    HostCalls,
    LinearMemory,
    RawFunc,
    WasmTrap,
    core_types,
    instance_func,
    instance_global_i32,
    instance_memory,
    set_epoch_deadline,
)
from vmm.world import EXPORTS, Export

POST_RETURN_TYPES = (["i32"], [])


class CorePlugin(WasmtimePlugin):
    kind = "core module"

    def __init__(self, manifest: Manifest, module: wasmtime.Module, env: HostEnv,
                 engine: wasmtime.Engine, ticker: EpochTicker) -> None:
        super().__init__(manifest, engine, ticker)
        self.host_calls = HostCalls()
        linker = wasmtime.Linker(engine)
        self._link_imports(module, env, linker)
        self.exports = self._check_exports(module)
        self.pre = linker.instantiate_pre(module)
        self.check_instantiates()

    def _link_imports(self, module: wasmtime.Module, env: HostEnv,
                      linker: wasmtime.Linker) -> None:
        hosts: dict[str, object] = {}
        for item in module.imports:
            interface, name = item.module, item.name or ""
            grant_type = BY_INTERFACE.get(interface)
            if grant_type is None:
                raise WorldMismatchError(
                    self.name, f"imports {interface}#{name}, which is not a hyperfilter capability")
            grant = self.manifest.grants.get(grant_type.name)
            if grant is None:
                raise UngrantedImportError(self.name, interface, f"function {name}")
            function = next((f for f in grant_type.functions if f.name == name), None)
            if function is None:
                raise WorldMismatchError(self.name, f"imports {interface}#{name}, "
                                                    f"which {interface} does not define")
            expected = function.signature.core_import()
            if not isinstance(item.type, wasmtime.FuncType) or \
                    core_types(item.type) != (list(expected[0]), list(expected[1])):
                raise WorldMismatchError(self.name, f"imports {interface}#{name} with the wrong "
                                                    f"type; the world's is {expected}")
            if grant.name not in hosts:
                hosts[grant.name] = grant.bind(env)
            method = getattr(hosts[grant.name], function.method)
            self.host_calls.define(linker, interface, name, *expected,
                                   core_host_call(function, method))

    def _check_exports(self, module: wasmtime.Module) -> dict[type, tuple[Export, bool]]:
        types = {item.name: item.type for item in module.exports}
        if not isinstance(types.get("memory"), wasmtime.MemoryType):
            raise WorldMismatchError(self.name, "exports no memory")
        self._check_func(types, "cabi_realloc", REALLOC_TYPES)
        area = types.get(INPUT_AREA_EXPORT)
        if area is not None and not (isinstance(area, wasmtime.GlobalType)
                                     and str(area.content) == "i32"):
            raise WorldMismatchError(self.name, f"exports {INPUT_AREA_EXPORT}, but not as an "
                                                "i32 global (the address of its input area)")
        wanted: dict[type, tuple[Export, bool]] = {}
        for event_type, export in EXPORTS.items():
            if not any(self.manifest.wants(kind) for kind in kinds_of(event_type)):
                continue
            self._check_func(types, export.core_name, export.signature.core_export())
            has_post = export.post_return_name in types
            if has_post:
                self._check_func(types, export.post_return_name, POST_RETURN_TYPES)
            wanted[event_type] = (export, has_post)
        return wanted

    def _check_func(self, types: dict[str, object], name: str,
                    expected: tuple[list[str], list[str]]) -> None:
        ty = types.get(name)
        if ty is None:
            raise WorldMismatchError(self.name, f"does not export {name}")
        if not isinstance(ty, wasmtime.FuncType) or core_types(ty) != expected:
            raise WorldMismatchError(self.name, f"exports {name} with the wrong type; "
                                                f"the world's is {expected}")

    def new_sandbox(self) -> CoreSandbox:
        return CoreSandbox(self)


class CoreSandbox(Sandbox):
    def __init__(self, plugin: CorePlugin) -> None:
        super().__init__(plugin.name)
        self._plugin = plugin
        self._limits = plugin.manifest.limits
        self._store: wasmtime.Store | None = wasmtime.Store(plugin.engine)
        self._store.set_limits(memory_size=self._limits.memory_bytes)
        self._ctx: _Pointer = self._store._context()
        self._calls: dict[type, tuple[Export, RawFunc, RawFunc | None]] = {}
        self._post_return: tuple[RawFunc, int | None] | None = None
        set_epoch_deadline(self._ctx, plugin.deadline_ticks)  # the start function runs now
        try:
            self._instance = plugin.pre.instantiate(self._store)
        except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:
            plugin.host_calls.take_cause()  # a host call's failure is reported here
            self.close()
            raise PluginTrap(self.plugin, f"instantiation failed: {exc}") from None
        memory = instance_memory(self._store, self._instance)
        realloc = instance_func(self._store, self._instance, "cabi_realloc")
        assert memory is not None and realloc is not None  # checked at load
        self._memory = LinearMemory(self._ctx, memory, RawFunc(self._ctx, realloc, *REALLOC_TYPES))
        self._arguments: LinearMemory | ArgumentArea = self._memory
        descriptor = instance_global_i32(self._store, self._instance, INPUT_AREA_EXPORT)
        if descriptor is not None:
            try:
                self._arguments = ArgumentArea(self._memory, descriptor)
            except AbiError as exc:
                self.close()
                raise PluginTrap(self.plugin, f"its input area is unusable: {exc}") from None

    def _bound(self, event_type: type) -> tuple[Export, RawFunc, RawFunc | None]:
        bound = self._calls.get(event_type)
        if bound is None:
            export, has_post = self._plugin.exports[event_type]
            assert self._store is not None
            func = instance_func(self._store, self._instance, export.core_name)
            assert func is not None
            call = RawFunc(self._ctx, func, *export.signature.core_export())
            post = None
            if has_post:
                post_func = instance_func(self._store, self._instance, export.post_return_name)
                assert post_func is not None
                post = RawFunc(self._ctx, post_func, *POST_RETURN_TYPES)
            bound = self._calls[event_type] = (export, call, post)
        return bound

    def _run(self, event: Event) -> Verdict | None:
        if self._store is None:
            raise SandboxFault(self.plugin, "delivered to a closed sandbox")
        export, call, post = self._bound(type(event))
        set_epoch_deadline(self._ctx, self._plugin.deadline_ticks)
        arguments = self._arguments
        arguments.start_arguments()
        try:
            raw = call(*export.lower(arguments, event))
        except WasmTrap as trap:
            raise self._fault(trap) from None
        except AbiError as exc:
            raise PluginTrap(self.plugin, f"broke the canonical ABI: {exc}") from None
        try:
            verdict = export.lift(self._memory, raw)
        except AbiError as exc:
            raise InvalidVerdict(self.plugin, str(exc)) from None
        if post is not None:
            self._post_return = (post, raw)  # off the latency path: see Sandbox.settle
        return verdict

    def _settle(self) -> None:
        if self._post_return is not None and self._store is not None:
            (post, raw), self._post_return = self._post_return, None
            set_epoch_deadline(self._ctx, self._plugin.deadline_ticks)
            try:
                post(raw)
            except WasmTrap as trap:
                raise self._fault(trap) from None

    def _fault(self, trap: WasmTrap) -> SandboxFault:
        return classify(
            self.plugin, self._limits, str(trap),
            interrupted=trap.code == wasmtime.TrapCode.INTERRUPT,
            memory_size=self._memory.size(),
            host_cause=self._plugin.host_calls.take_cause())

    def close(self) -> None:
        self._post_return = None  # a settle still scheduled must find nothing to do
        if self._store is not None:
            self._calls.clear()
            self._store.close()  # frees the instance and unmaps its linear memory now
            self._store = None
