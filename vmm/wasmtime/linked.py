"""Components on wasmtime, run as their core modules, linked by the host as the kvm tier links
them (vmm/component_linking.py): each module instantiated in the order the component's shell says,
each import given an earlier instance's export, a capability (lowered: vmm/canonical.py) or a
WASI function (vmm/wasmtime/wasi_preview2.py). The host then calls the world's exports and
lifts their verdicts itself, as it does a core module's (vmm/wasmtime/core.py), so a verdict
is checked as it declares itself, before anything is copied, and an event's bytes are one
copy into linear memory: wasmtime's component model lifts into its own values first, 48 bytes
for each byte of a `list<u8>`, beyond the plugin's limits.
"""

from __future__ import annotations

import ctypes
import struct
from collections.abc import Mapping
from ctypes import POINTER, byref

import wasmtime
from wasmtime import _ffi as ffi

from vmm.canonical import AbiError
from vmm.capabilities import HostEnv
from vmm.component_linking import (
    Binding,
    HostImport,
    Linking,
    ModuleExport,
    ResourceDrop,
    WasiImport,
)
from vmm.errors import SandboxFault
from vmm.fault_notes import PluginStderr
from vmm.host_abi import BoundHostFunction, granted_host_calls
from vmm.manifest import Manifest
from vmm.memory_plan import MemoryPlan
from vmm.wasi_preview1 import WasiStreams
from vmm.wasmtime.core import CoreSandbox, Exports, ModulesPlugin, running
from vmm.wasmtime.engine import EpochTicker
from vmm.wasmtime.raw import (
    HostFunction,
    LinearMemory,
    RawFunc,
    WasmTrap,
    address,
    instance_func,
    instance_memory,
)
from vmm.wasmtime.wasi_preview2 import WasiState, drop_function, host_function


def _running_wasi() -> WasiState:
    state: WasiState = running.wasi
    return state


def _running_memory(_caller: ctypes._Pointer, _ctx: ctypes._Pointer) -> LinearMemory:
    """The memory a capability lowers into: the component's, not the calling module's."""
    memory = _running_wasi().memory
    assert isinstance(memory, LinearMemory)
    return memory


# Each import of a module: an earlier instance's export (its number and the export's name),
# or a host function made in each store.
Provider = tuple[int, bytes] | HostFunction
# A module's imports, as instantiation fills them in: exports (where in the imports, from
# which instance, which name), host functions (which import), and how many in all.
Plan = tuple[list[tuple[int, int, int, int]], list[tuple[int, HostFunction]], int]
_STRING = struct.Struct("<II")  # a lifted string's pointer and length
_UTF16 = 1 << 31  # latin1+utf16: the length's top bit says the string is UTF-16
# Called about 2,000 times per sandbox for a Python component: without wasmtime-py's
# conversion of each argument.
_export_get = ctypes.CFUNCTYPE(ctypes.c_bool, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                               ctypes.c_size_t, ctypes.c_void_p)(
    ("wasmtime_instance_export_get", ffi.dll))


def _address(name: bytes) -> int:
    """Where the bytes of `name` are, for as long as `name` lives."""
    return ctypes.cast(ctypes.c_char_p(name), ctypes.c_void_p).value or 0


class LinkedPlugin(ModulesPlugin):
    kind = "component"

    def __init__(self, manifest: Manifest, linking: Linking, modules: list[wasmtime.Module],
                 env: HostEnv, engine: wasmtime.Engine, ticker: EpochTicker,
                 memories: MemoryPlan | None) -> None:
        super().__init__(manifest, linking.core, env, engine, ticker, memories)
        self.linking = linking
        self.modules = modules
        calls = granted_host_calls(manifest, env)
        self._names: list[bytes] = []  # the exports' names, whose addresses the plans hold
        self.plans = [self._plan([self._provider(binding, calls)
                                  for _, binding in instance.bindings])
                      for instance in linking.instances]
        self.check_instantiates()

    def _plan(self, providers: list[Provider]) -> Plan:
        size = ctypes.sizeof(ffi.wasmtime_extern_t)
        self._names += [p[1] for p in providers if not isinstance(p, HostFunction)]
        exported = [(k * size, provider[0], _address(provider[1]), len(provider[1]))
                    for k, provider in enumerate(providers)
                    if not isinstance(provider, HostFunction)]
        hosted = [(k, provider) for k, provider in enumerate(providers)
                  if isinstance(provider, HostFunction)]
        return exported, hosted, len(providers)  # type: ignore[return-value]

    def _provider(self, binding: Binding, calls: Mapping[tuple[str, str], BoundHostFunction]
                  ) -> Provider:
        match binding:
            case ModuleExport(instance=instance, name=name):
                return instance, name.encode()
            case HostImport(capability=capability):
                interface, name = capability.interface, capability.function.name
                return self.host_calls.function(interface, name, *capability.core_types,
                                                calls[interface, name].call, _running_memory)
            case WasiImport(interface=interface, function=function, sig=sig):
                return self.host_calls.function(interface, function.name, sig.params,
                                                sig.results,
                                                host_function(binding, _running_wasi),
                                                _running_memory)
            case ResourceDrop(resource=resource):
                return self.host_calls.function("wasi", f"[resource-drop]{resource}", ("i32",),
                                                (), drop_function(resource, _running_wasi),
                                                _running_memory)

    def instantiate(self, store: wasmtime.Store) -> Exports:
        ctx = store._context()
        ctx_address = address(ctx)
        instances: list[ffi.wasmtime_instance_t] = []
        for module, (exported, hosted, count) in zip(self.modules, self.plans, strict=True):
            externs = (ffi.wasmtime_extern_t * count)()
            base = ctypes.addressof(externs)
            for k, function in hosted:
                function.make(ctx, externs[k])
            sources = [ctypes.addressof(instance) for instance in instances]
            for offset, source, name, length in exported:
                # SAFETY: `source` is an instance of this store made earlier in this loop, the
                # linker checked that it exports `name` with the type imported here, and the
                # extern written at `offset` is inside `externs`.
                if not _export_get(ctx_address, sources[source], name, length, base + offset):
                    raise wasmtime.WasmtimeError(f"module instance {source} lacks an export")
            instance = ffi.wasmtime_instance_t()
            trap = POINTER(ffi.wasm_trap_t)()
            # SAFETY: every import is in `externs`, of the type the linker checked, and of
            # this store: a host function made in it, or an earlier instance's export.
            error = ffi.wasmtime_instance_new(ctx, module.ptr(), externs, count,
                                              byref(instance), byref(trap))
            if error:
                raise wasmtime.WasmtimeError._from_ptr(error)
            if trap:
                raise wasmtime.Trap._from_ptr(trap)
            instances.append(instance)
        return LinkedExports(store, [wasmtime.Instance._from_raw(i) for i in instances],
                             self.linking)

    def new_streams(self) -> WasiStreams:
        return WasiStreams(self.log, PluginStderr(self.log))

    def new_sandbox(self) -> CoreSandbox:
        return LinkedSandbox(self)


class LinkedExports:
    """The contract's names, found in the instances the linker says define them."""

    def __init__(self, store: wasmtime.Store, instances: list[wasmtime.Instance],
                 linking: Linking) -> None:
        self._store = store
        self._instances = instances
        self._linking = linking

    def func(self, name: str) -> ffi.wasmtime_func_t | None:
        export = self._linking.functions.get(name)
        return None if export is None else self.function(export)

    def function(self, export: ModuleExport) -> ffi.wasmtime_func_t | None:
        return instance_func(self._store, self._instances[export.instance], export.name)

    def memory(self) -> ffi.wasmtime_memory_t | None:
        return self.memory_of(self._linking.memory)

    def memory_of(self, export: ModuleExport) -> ffi.wasmtime_memory_t | None:
        return instance_memory(self._store, self._instances[export.instance], export.name)

    def global_i32(self, _name: str) -> int | None:
        return None  # a component has no input area, and exports no globals


class LinkedSandbox(CoreSandbox):
    def __init__(self, plugin: LinkedPlugin) -> None:
        self._wasi = WasiState(self._realloc_of)
        self._reallocs: dict[ModuleExport, RawFunc] = {}
        super().__init__(plugin)
        self._wasi.streams = self._streams
        self._wasi.memory = self._memory

    def _realloc_of(self, export: ModuleExport) -> RawFunc:
        """A WASI lowering's allocator, as the linker found it."""
        realloc = self._reallocs.get(export)
        if realloc is None:
            assert isinstance(self._exports, LinkedExports)
            func = self._exports.function(export)
            assert func is not None  # checked at load
            realloc = self._reallocs[export] = RawFunc(self._ctx, func, ["i32"] * 4, ["i32"])
        return realloc

    def _enter(self) -> None:
        super()._enter()
        running.wasi = self._wasi

    def exported_bytes(self, function: str) -> bytes:
        """What the component's export `function: func() -> string` returns now, as the bytes
        of its Latin-1 encoding (one character a byte), run under the plugin's limits: how a
        tool reads what an instrumented component keeps for it (the fuzzer's coverage
        counters, sidecar/fuzz/coverage.py)."""
        self.settle()
        if self._store is None or self.fault is not None:
            raise SandboxFault(self.plugin, "read from a closed or faulted sandbox")
        assert isinstance(self._plugin, LinkedPlugin) and isinstance(self._exports, LinkedExports)
        found = self._plugin.linking.readable.get(function)
        if found is None:
            raise AbiError(f"the plugin exports no function {function}")
        core, memory_export = found
        func, memory = self._exports.function(core), self._exports.memory_of(memory_export)
        assert func is not None and memory is not None  # found by the linker
        self._enter()
        self._deadline.renew()
        try:
            result = RawFunc(self._ctx, func, [], ["i32"])()
        except WasmTrap as trap:
            raise self._fault(trap) from None
        counters = LinearMemory(self._ctx, memory, None)
        ptr, length = _STRING.unpack(counters.read((result or 0) & 0xFFFFFFFF, _STRING.size))
        if length & _UTF16:
            raise AbiError(f"{function} returned UTF-16, not Latin-1")
        return counters.read(ptr, length)
