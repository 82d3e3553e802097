"""What a core-module plugin must be: the world's canonical-ABI lowering, importing nothing but
granted capabilities and the WASI preview 1 functions that vmm/wasi_preview1.py answers (all
denying). Every tier runs this check before it compiles or links anything; after it, calls
with the world's core types are safe without per-call type checks."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from vmm.capabilities import HostFunction
from vmm.errors import NotWasmError, WorldMismatchError
from vmm.events import kinds_of
from vmm.grants import grant_for
from vmm.input_area import INPUT_AREA_EXPORT
from vmm.manifest import Manifest
from vmm.wasi_preview1 import COMMAND_START, FUNCTIONS, INITIALIZE, WASI_MODULE, WasiFunction
from vmm.wasm_types import FuncSig, GlobalSig, MemorySig, WasmFormatError, read_module_types
from vmm.world import EXPORTS, Export

REALLOC = "cabi_realloc"
REALLOC_TYPES = (["i32", "i32", "i32", "i32"], ["i32"])
POST_RETURN_TYPES: tuple[list[str], list[str]] = (["i32"], [])
NO_TYPES: tuple[list[str], list[str]] = ([], [])


@dataclass(frozen=True)
class CapabilityImport:
    """An imported capability function, granted by the manifest."""

    interface: str
    function: HostFunction
    grant: str

    @property
    def core_types(self) -> tuple[list[str], list[str]]:
        return self.function.signature.core_import()


@dataclass(frozen=True)
class Handler:
    """An event handler the plugin exports, and whether it has a post-return to call."""

    export: Export
    has_post_return: bool


@dataclass(frozen=True)
class CoreModule:
    imports: tuple[CapabilityImport, ...]
    handlers: dict[type, Handler]  # by event type, only for the events the manifest wants
    memory: MemorySig
    has_input_area: bool
    wasi: tuple[WasiFunction, ...] = ()  # the WASI preview 1 functions it imports
    initialize: bool = False  # a reactor: `_initialize` runs once per instance, first
    i32_globals: tuple[str, ...] = ()  # the names of the i32 globals it exports, in order


def check_core_module(manifest: Manifest, wasm: bytes) -> CoreModule:
    """Raise a PluginLoadError naming the first thing that keeps `wasm` from being a plugin
    with `manifest`."""
    name = manifest.name
    try:
        types = read_module_types(wasm)
    except WasmFormatError as exc:
        raise NotWasmError(name, f"{manifest.wasm} cannot be read: {exc}") from None
    imports = tuple(check_capability_import(manifest, item.module, item.name, item.sig)
                    for item in types.imports if item.module != WASI_MODULE)
    # Go imports some WASI functions more than once (from its runtime and its syscall package).
    wasi = tuple(dict.fromkeys(_check_wasi_import(name, item.name, item.sig)
                               for item in types.imports if item.module == WASI_MODULE))
    exports = types.exports
    memory = exports.get("memory")
    if not isinstance(memory, MemorySig):
        raise WorldMismatchError(name, "exports no memory")
    check_func(name, exports, REALLOC, REALLOC_TYPES)
    area = exports.get(INPUT_AREA_EXPORT)
    if area is not None and area != GlobalSig("i32", False) and area != GlobalSig("i32", True):
        raise WorldMismatchError(name, f"exports {INPUT_AREA_EXPORT}, but not as an i32 "
                                       "global (the address of its input area)")
    handlers = {}
    for event_type, export in EXPORTS.items():
        if not any(manifest.wants(kind) for kind in kinds_of(event_type)):
            continue
        check_func(name, exports, export.core_name, export.signature.core_export())
        has_post = export.post_return_name in exports
        if has_post:
            check_func(name, exports, export.post_return_name, POST_RETURN_TYPES)
        handlers[event_type] = Handler(export, has_post)
    i32_globals = tuple(extern for extern, sig in exports.items()
                        if isinstance(sig, GlobalSig) and sig.valtype == "i32")
    return CoreModule(imports, handlers, memory, area is not None, wasi,
                      _is_reactor(name, exports), i32_globals)


def _check_wasi_import(plugin: str, name: str, sig: object) -> WasiFunction:
    function = FUNCTIONS.get(name)
    if function is None:
        raise WorldMismatchError(plugin, f"imports {WASI_MODULE}#{name}, which is no WASI "
                                         "preview 1 function the host provides")
    expected = (list(function.params), list(function.results))
    if not isinstance(sig, FuncSig) or not sig.matches(expected):
        raise WorldMismatchError(plugin, f"imports {WASI_MODULE}#{name} with the wrong type; "
                                         f"WASI's is {expected}")
    return function


def _is_reactor(plugin: str, exports: Mapping[str, object]) -> bool:
    """Whether the module has a reactor's `_initialize`; a command's `_start` is refused."""
    if INITIALIZE in exports:
        check_func(plugin, exports, INITIALIZE, NO_TYPES)
        return True
    if COMMAND_START in exports:
        raise WorldMismatchError(plugin, f"exports {COMMAND_START}: a WASI command, which runs "
                                         "once and exits; a plugin is a reactor, called for "
                                         "each event (Go: build with -buildmode=c-shared)")
    return False


def check_capability_import(manifest: Manifest, interface: str, name: str,
                  sig: object) -> CapabilityImport:
    grant = grant_for(manifest, interface, name)
    function = next((f for f in grant.functions if f.name == name), None)
    if function is None:
        raise WorldMismatchError(manifest.name, f"imports {interface}#{name}, "
                                                f"which {interface} does not define")
    expected = function.signature.core_import()
    if not isinstance(sig, FuncSig) or not sig.matches(expected):
        raise WorldMismatchError(manifest.name, f"imports {interface}#{name} with the wrong "
                                                f"type; the world's is {expected}")
    return CapabilityImport(interface, function, grant.name)


def check_func(plugin: str, exports: Mapping[str, object], name: str,
                expected: tuple[list[str], list[str]]) -> None:
    sig = exports.get(name)
    if sig is None:
        raise WorldMismatchError(plugin, f"does not export {name}")
    if not isinstance(sig, FuncSig) or not sig.matches(expected):
        raise WorldMismatchError(plugin, f"exports {name} with the wrong type; "
                                         f"the world's is {expected}")
