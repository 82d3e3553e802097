"""Component plugins (wasm32-wasip2 from componentize-py, componentize-js, cargo component) on
wasmtime's component model.

WASI is linked because these toolchains import all of it, but each sandbox's WASI context
grants nothing: no preopened directories, no sockets (wasmtime denies every address unless
told otherwise), empty environment, arguments and stdin; stdout and stderr go to the plugin's
rate-limited log. WASI clocks and random stay wasmtime's own: CPython calls `wasi:random` on
every entry into a componentize-py component, and neither reaches outside the sandbox.

A plugin whose SDK catches its errors (plugins/sdk/python) writes a fault note saying why in
one line to stderr, then the traceback, then exits or traps (vmm/fault_notes.py).

A component's verdict is lifted by wasmtime itself, into C values, before the host sees any
of it: its sizes are checked there (vmm/verdicts.py), before wasmtime-py makes Python objects
of it. wasmtime's own copy is bounded by wasmtime alone, not by the plugin's limits: at most
128 MiB of its values a call (`HOSTCALL_FUEL_SPENT`), in which a `list<u8>` takes 48 bytes an
element, and entries pointing at the same bytes are each copied.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Iterator
from typing import Any

import wasmtime
import wasmtime.component as wc
from wasmtime import _ffi as ffi
from wasmtime.component._enter import enter_wasm

from vmm.canonical import AbiError, Enum, Result
from vmm.capabilities import CapabilityError, HostEnv, HostFunction, OutputLines
from vmm.cpu_clock import check_event_budget
from vmm.errors import (
    InvalidVerdict,
    SandboxFault,
    WorldMismatchError,
)
from vmm.events import (
    Event,
    HttpBody,
    HttpHeaders,
    HttpOpen,
    HttpTrailers,
    StreamInfo,
    TcpClose,
    TcpData,
    TcpOpen,
    Verdict,
    kinds_of,
)
from vmm.fault_notes import PluginStderr
from vmm.faults import classify
from vmm.grants import grant_for
from vmm.manifest import Manifest
from vmm.memory_plan import MemoryPlan
from vmm.sandbox import Sandbox
from vmm.verdicts import TooLarge, VerdictProblem, check_entries, check_size
from vmm.wasmtime.engine import EpochTicker
from vmm.wasmtime.plugin import WasmtimePlugin
from vmm.world import (
    DIRECTION,
    EXPORTS,
    HTTP_VERDICT_CASES,
    IMMEDIATE_RESPONSE_FIELDS,
    MUTATION_FIELDS,
    STREAM_INFO_FIELDS,
    TCP_VERDICT_CASES,
    TYPES_INTERFACE,
    http_verdict,
    tcp_verdict,
)

WASI_PREFIX = "wasi:"
UNLINKED_WASI = "wasi:http/"  # the WASI that add_wasip2 does not link
LOG_INFO = 1


class ComponentPlugin(WasmtimePlugin):
    kind = "component"

    def __init__(self, manifest: Manifest, component: wc.Component, env: HostEnv,
                 engine: wasmtime.Engine, ticker: EpochTicker,
                 memories: MemoryPlan | None) -> None:
        super().__init__(manifest, engine, ticker, memories)
        self.component = component
        self.log = env.log
        imports = component.type.imports(engine)
        self.linker = wc.Linker(engine)
        self.linker.add_wasip2()
        with self.linker.root() as root:
            for name in imports:
                self._link_import(root, name, env)
        # What else the component imports is WASI that add_wasip2 does not cover (wasi:http,
        # which componentize-js imports unless built without fetch()): each call traps. Only
        # then: the traps take every import add_wasip2 links under another 0.2.x version
        # (componentize-py's wasi:cli/environment@0.2.9), which instantiation would match.
        if any(name.startswith(UNLINKED_WASI) for name in imports):
            self.linker.define_unknown_imports_as_traps(component)
        self.functions = self._check_exports()
        self.check_instantiates()

    def _link_import(self, root: wc.LinkerInstance, name: str, env: HostEnv) -> None:
        if name.startswith(WASI_PREFIX):
            return  # add_wasip2 links it; the store's WasiConfig denies what reaches outside
        if name == TYPES_INTERFACE:
            with root.add_instance(name):
                return
        grant = grant_for(self.manifest, name)  # WASI is linked above, denying
        host = grant.bind(env)
        with root.add_instance(name) as instance:
            for function in grant.functions:
                instance.add_func(function.name,
                                  component_host_call(function, getattr(host, function.method)))

    def _check_exports(self) -> dict[type, wc.ExportIndex]:
        functions = {}
        for event_type, export in EXPORTS.items():
            if not any(self.manifest.wants(kind) for kind in kinds_of(event_type)):
                continue
            interface = self.component.get_export_index(export.interface_id)
            index = interface and self.component.get_export_index(export.function, interface)
            if index is None:
                raise WorldMismatchError(self.name, f"does not export {export.core_name}")
            functions[event_type] = index
        return functions

    def new_sandbox(self) -> ComponentSandbox:
        return ComponentSandbox(self)


def component_host_call(fn: HostFunction, method: Callable[..., Any]) -> Callable[..., Any]:
    """A host function as wasmtime-py's component linker calls it: enums arrive as case names,
    and a `result` is returned untagged (its ok and error types differ)."""
    enum_params = [i for i, p in enumerate(fn.signature.params) if isinstance(p, Enum)]
    returns_result = isinstance(fn.signature.result, Result)

    def call(_store: Any, *args: Any) -> Any:
        check_event_budget()
        values = list(args)
        for i in enum_params:
            names = fn.signature.params[i].names  # type: ignore[attr-defined]
            values[i] = names.index(values[i])
        if not returns_result:
            return method(*values)
        try:
            return method(*values)
        except CapabilityError as error:
            return error.case

    return call


def _record(names: tuple[str, ...], values: tuple[Any, ...]) -> wc.Record:
    record = wc.Record()
    for name, value in zip(names, values, strict=True):
        setattr(record, name, value)
    return record


def _info(info: StreamInfo) -> wc.Record:
    return _record(STREAM_INFO_FIELDS, (info.source_address, info.destination_address,
                                        info.server_name, list(info.metadata)))


def component_args(event: Event) -> list[Any]:
    match event:
        case TcpOpen(info) | HttpOpen(info):
            return [_info(info)]
        case TcpData(direction, data, eos) | HttpBody(direction, data, eos):
            return [DIRECTION.names[direction], data, eos]
        case TcpClose():
            return []
        case HttpHeaders(direction, headers, eos):
            return [DIRECTION.names[direction], list(headers), eos]
        case HttpTrailers(direction, trailers):
            return [DIRECTION.names[direction], list(trailers)]
    raise TypeError(f"not an event: {event!r}")


def _declared(value: ffi.wasmtime_component_val_t, field: str = "") -> tuple[int, int]:
    """(bytes, list entries) of a lifted verdict's strings and lists, each counted as often
    as it appears; a header list's length is checked before its entries are looked at.
    `field` is the record field holding `value`, to name a list as vmm/verdicts.py does."""
    kind = value.kind
    if kind == ffi.WASMTIME_COMPONENT_STRING.value:
        return value.of.string.size, 0
    if kind == ffi.WASMTIME_COMPONENT_LIST.value:
        items = value.of.list
        if not items.size or items.data[0].kind == ffi.WASMTIME_COMPONENT_U8.value:
            return items.size, 0
        # The verdicts' only lists of records are header lists.
        check_entries(items.size, "respond headers" if field == "headers" else field)
        return _sum(((items.data[i], "") for i in range(items.size)), items.size)
    if kind == ffi.WASMTIME_COMPONENT_RECORD.value:
        entries = value.of.record
        return _sum(((entries.data[i].val, _string(entries.data[i].name))
                     for i in range(entries.size)), 0)
    if kind == ffi.WASMTIME_COMPONENT_TUPLE.value:
        items = value.of.tuple
        return _sum(((items.data[i], "") for i in range(items.size)), 0)
    if kind == ffi.WASMTIME_COMPONENT_VARIANT.value and value.of.variant.val:
        return _declared(value.of.variant.val.contents)
    if kind == ffi.WASMTIME_COMPONENT_OPTION.value and value.of.option:
        return _declared(value.of.option.contents)
    return 0, 0


def _string(name: ffi.wasm_name_t) -> str:
    return ctypes.string_at(name.data, name.size).decode()


def _sum(values: Iterator[tuple[ffi.wasmtime_component_val_t, str]],
         entries: int) -> tuple[int, int]:
    total_bytes, total_entries = 0, entries
    for item, field in values:
        size, count = _declared(item, field)
        total_bytes += size
        total_entries += count
    return total_bytes, total_entries


# wasmtime's own bound on what it lifts out of a component in one call (its "hostcall fuel",
# 128 MiB, which its C API cannot change): entries aliasing one buffer each count, so 3,000
# headers pointing at 1 MiB end here after about 150 MiB, not at 144 GB of values.
HOSTCALL_FUEL_SPENT = "fuel allocated for hostcalls has been exhausted"


def call_checked(func: wc.Func, store: wasmtime.Store, args: list[Any], max_bytes: int) -> Any:
    """`func(store, *args)` as wasmtime-py makes it, except that the result's sizes are
    checked against `max_bytes` (VerdictProblem) before it becomes Python values: converting
    a hundred thousand headers took 1.7 s."""
    func_type = func.type(store)
    params = (ffi.wasmtime_component_val_t * len(args))()
    lowered = 0
    try:
        for (_param, param_type), arg in zip(func_type.params, args, strict=True):
            param_type.convert_to_c(store, arg, ctypes.pointer(params[lowered]))
            lowered += 1
        result_type = func_type.result
        result = ffi.wasmtime_component_val_t()
        try:
            enter_wasm(lambda: ffi.wasmtime_component_func_call(
                ctypes.byref(func._func), store._context(), params, lowered,
                ctypes.byref(result) if result_type is not None else None,
                int(result_type is not None)))
        except wasmtime.WasmtimeError as exc:
            if HOSTCALL_FUEL_SPENT in str(exc):
                raise TooLarge("it hands out more than wasmtime copies out of a component in "
                               "one call (128 MiB of wasmtime's values, 48 bytes for each "
                               "byte of a list<u8>)") from None
            raise
        if result_type is None:
            return None
        try:
            size, entries = _declared(result)
            check_size(size, entries, max_bytes)
        except VerdictProblem:
            ffi.wasmtime_component_val_delete(ctypes.byref(result))
            raise
        return result_type.convert_from_c(result)
    finally:
        for i in range(lowered):
            ffi.wasmtime_component_val_delete(ctypes.byref(params[i]))


def component_verdict(event: Event, value: Any) -> Verdict | None:
    if isinstance(event, TcpClose):
        return None
    if not isinstance(value, wc.Variant):
        raise ValueError(f"expected a variant, got {type(value).__name__}")
    if isinstance(event, TcpOpen | TcpData):
        return tcp_verdict(TCP_VERDICT_CASES.index(value.tag), value.payload)
    case = HTTP_VERDICT_CASES.index(value.tag)
    names = MUTATION_FIELDS if case == 0 else IMMEDIATE_RESPONSE_FIELDS
    return http_verdict(case, tuple(getattr(value.payload, name) for name in names))


class ComponentSandbox(Sandbox):
    def __init__(self, plugin: ComponentPlugin) -> None:
        super().__init__(plugin.name, plugin.verdict_rules)
        self._plugin = plugin
        self._funcs: dict[type, wc.Func] = {}
        self._post_return: wc.Func | None = None
        self._store: wasmtime.Store | None = plugin.new_store()
        wasi = wasmtime.WasiConfig()
        wasi.stdout_custom = OutputLines(plugin.log, LOG_INFO).write
        self._stderr = PluginStderr(plugin.log)
        wasi.stderr_custom = self._stderr.write
        self._store.set_wasi(wasi)
        plugin.begin(self._store)  # instantiation runs guest code
        try:
            self._instance = plugin.linker.instantiate(self._store, plugin.component)
        except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:
            self.close()
            raise plugin.instantiation_fault(exc) from None

    def _run(self, event: Event) -> Verdict | None:
        store = self._store
        if store is None:
            raise SandboxFault(self.plugin, "delivered to a closed sandbox")
        func = self._funcs.get(type(event))
        if func is None:
            func = self._instance.get_func(store, self._plugin.functions[type(event)])
            assert func is not None
            self._funcs[type(event)] = func
        self._plugin.begin(store)
        self._stderr.begin_event()
        try:
            value = call_checked(func, store, component_args(event), self.verdict_rules.max_bytes)
        except VerdictProblem:
            raise  # Sandbox.deliver reports it
        except wasmtime.WasmtimeError as exc:  # an exit or a trap (JS cannot exit)
            raise self._stderr.explained(self.plugin, self._fault(str(exc), None)) from None
        except Exception as exc:  # noqa: BLE001 - a host call's exception, re-raised by wasmtime
            raise self._fault("host call failed", exc) from None
        self._post_return = func  # off the latency path: see Sandbox.settle
        try:
            return component_verdict(event, value)
        except (ValueError, TypeError, AttributeError) as exc:
            raise InvalidVerdict(self.plugin, str(exc)) from None

    def exported_bytes(self, function: str) -> bytes:
        """What the export `function: func() -> string` returns now, as the bytes of its
        Latin-1 encoding (one character a byte), run under the plugin's limits: how a tool
        reads what an instrumented component keeps for it (the fuzzer's coverage counters,
        sidecar/fuzz/coverage.py)."""
        self.settle()
        store = self._store
        if store is None or self.fault is not None:
            raise SandboxFault(self.plugin, "read from a closed or faulted sandbox")
        index = self._plugin.component.get_export_index(function)
        func = self._instance.get_func(store, index) if index is not None else None
        if func is None:
            raise AbiError(f"the plugin exports no function {function}")
        self._plugin.begin(store)
        try:
            value = func(store)
            func.post_return(store)
        except wasmtime.WasmtimeError as exc:
            raise self._fault(str(exc), None) from None
        try:
            return value.encode("latin-1")  # type: ignore[no-any-return]
        except (AttributeError, UnicodeEncodeError):
            raise AbiError(f"{function} returned no Latin-1 string") from None

    @property
    def unsettled(self) -> bool:
        return self._post_return is not None

    def _settle(self) -> None:
        func, self._post_return = self._post_return, None
        if func is not None and self._store is not None:
            self._plugin.begin(self._store)
            try:
                func.post_return(self._store)
            except wasmtime.WasmtimeError as exc:
                raise self._fault(str(exc), None) from None

    def _fault(self, message: str, host_cause: BaseException | None) -> SandboxFault:
        return classify(self.plugin, self._plugin.manifest.limits, message,
                        interrupted="wasm trap: interrupt" in message,
                        memory_size=0, host_cause=host_cause)

    def close(self) -> None:
        self._post_return = None  # a settle still scheduled must find nothing to do
        if self._store is not None:
            self._funcs.clear()
            self._store.close()
            self._store = None
