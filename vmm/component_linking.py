"""A component plugin resolved into its core modules, for every tier: the modules in the
order its shell instantiates them, every import of each bound to an earlier module's export
or to a host function (a capability, WASI), and the world's exports found in the modules.

Each tier then instantiates the modules (the kvm guest with generated glue:
vmm/kvm/component_glue.py; wasmtime in the host: vmm/wasmtime/linked.py) and the host talks
to the component as to a core-module plugin: the same contract (`CoreModule`), its names
(cabi_realloc, the handlers, their post-returns) bound to the modules that define them. So
the canonical ABI of the world's exports and capability imports stays the host's
(vmm/canonical.py), with the memory and realloc the component's lifts and lowers name, which
must be one each; WASI is answered deny-all (vmm/kvm/wasi_glue.py says how).

What is not handled is refused, naming it: resources other than WASI's, a module
instantiated twice, lifts or lowers with other memories or allocators, string encodings other
than UTF-8. The kvm guest also needs one linear memory, no reference types between modules,
and extended constants it can compute at instantiation.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from vmm.component_shell import (
    CORE_FUNC,
    CORE_MEMORY,
    FUNC,
    INSTANCE,
    CoreBag,
    CoreExport,
    ImportedFunction,
    ImportedInstance,
    Instantiation,
    Lifted,
    Lowered,
    Options,
    ResourceOp,
    Shell,
    ShellError,
    read_shell,
)
from vmm.component_types import ComponentTypes, ComponentTypesError, WitFunction, component_types
from vmm.core_module import (
    POST_RETURN_TYPES,
    REALLOC,
    REALLOC_TYPES,
    CapabilityImport,
    CoreModule,
    Handler,
    check_capability_import,
)
from vmm.errors import (
    NotWasmError,
    PluginLoadError,
    TierMismatchError,
    UnlinkableComponentError,
    WorldMismatchError,
)
from vmm.events import kinds_of
from vmm.kvm import wasi_glue
from vmm.kvm.data_segments import Segment, take_segments
from vmm.kvm.extended_constants import (
    INITIALIZER,
    ExtendedConstantError,
    compute_at_instantiation,
)
from vmm.kvm.wasi_glue import NoAnswer, WasiLowering, WasiUnsupported
from vmm.kvm.wasi_services import PROC_EXIT, RANDOM_GET, SERVICES
from vmm.manifest import Manifest
from vmm.memory_plan import PAGE
from vmm.wasm_tools import WasmToolsError, wasm_tools
from vmm.wasm_types import (
    ExternSig,
    FuncSig,
    GlobalSig,
    Import,
    MemorySig,
    ModuleTypes,
    WasmFormatError,
    read_module_types,
)
from vmm.world import EXPORTS

WASI_PREFIX = "wasi:"


class Unsupported(Exception):
    """The component does something the host's linking does not handle, on any tier."""


class GuestUnsupported(Unsupported):
    """What only the kvm guest's generator does not handle (wasm2c's limits, one memory)."""


@dataclass(frozen=True)
class ModuleExport:
    """What module instance `instance` exports as `name`."""

    instance: int
    name: str
    sig: ExternSig


@dataclass(frozen=True)
class HostImport:
    """A capability function lowered: a host call."""

    capability: CapabilityImport
    sig: FuncSig


@dataclass(frozen=True)
class WasiImport:
    """A WASI function lowered: answered in the guest (vmm/kvm/wasi_glue.py)."""

    interface: str
    function: WitFunction
    sig: FuncSig
    realloc: ModuleExport | None
    unprovided: int | None = None  # without a deny-all answer: its index in `unprovided`


@dataclass(frozen=True)
class ResourceDrop:
    resource: str  # the resource's name, e.g. "pollable"


Binding = ModuleExport | HostImport | WasiImport | ResourceDrop
_DROP = "[resource-drop]"
_DROP_SIG = FuncSig(("i32",), ())
_READ_SIG = FuncSig((), ("i32",))  # func() -> string, lifted: a pointer to (pointer, length)


@dataclass(frozen=True)
class _Lowering:
    """An imported component function, lowered."""

    interface: str
    function: str
    options: Options


@dataclass(frozen=True)
class ModuleInstance:
    number: int
    module: bytes  # as compiled: its extended constants computed at instantiation
    types: ModuleTypes
    bindings: tuple[tuple[Import, Binding], ...]  # each import, what gives it
    initializer: str | None  # the export the glue calls right after instantiating it


@dataclass(frozen=True)
class Linking:
    instances: tuple[ModuleInstance, ...]
    core: CoreModule  # the contract the host sees
    functions: dict[str, ModuleExport]  # the contract's function names -> where they are
    memory: ModuleExport
    preload: tuple[Segment, ...] = ()  # the main module's data (vmm/kvm/data_segments.py)
    unprovided: tuple[str, ...] = ()  # WASI functions the guest traps on, by trap index
    # The component's own exports `func() -> string` that a tool reads (the fuzzer's
    # coverage counters: sidecar/fuzz/coverage.py): the core function and the memory.
    readable: dict[str, tuple[ModuleExport, ModuleExport]] = field(default_factory=dict)


def link(manifest: Manifest, wasm: bytes, *, guest: bool = True) -> Linking:
    """The component `wasm` resolved; UnlinkableComponentError naming what the host does not
    handle, TierMismatchError what only the kvm guest does not, WorldMismatchError (and the
    grant errors) as for a core module. `guest`: for the kvm guest, its modules rewritten as
    wasm2c needs them (extended constants computed at instantiation, the main module's data
    preloaded) and one linear memory in all; otherwise (the wasmtime tier) its modules as
    the component has them."""
    try:  # a component no validator accepts is not made runnable by the rewrites below
        wasm_tools("validate", given=wasm)
    except WasmToolsError as exc:
        raise NotWasmError(manifest.name, f"is not a valid component: {exc}") from None
    try:
        return _Linker(manifest, read_shell(wasm), wasm, guest).link()
    except GuestUnsupported as exc:
        raise TierMismatchError(manifest.name, f"is a component the kvm tier cannot run yet: "
                                               f"{exc} (run it on the wasmtime tier: tier = "
                                               f'"wasmtime")') from None
    except (ShellError, Unsupported, WasmFormatError, ComponentTypesError) as exc:
        raise UnlinkableComponentError(manifest.name, f"is a component the host cannot link: "
                                                      f"{exc}") from None


class _Linker:
    def __init__(self, manifest: Manifest, shell: Shell, wasm: bytes, guest: bool) -> None:
        self.manifest = manifest
        self.guest = guest
        self.shell = shell
        self.numbers: dict[int, int] = {}  # core instance -> module instance number
        self.instances: list[ModuleInstance] = []
        self.capabilities: dict[tuple[str, str], CapabilityImport] = {}
        self.lowered_options: list[Options] = []
        self.found: dict[tuple[int, str], ModuleExport | _Lowering | ResourceOp] = {}
        self.unprovided: dict[str, int] = {}  # WASI functions calling which traps
        self.wasm = wasm
        self.types: ComponentTypes | None = None

    def link(self) -> Linking:
        instantiated: set[int] = set()
        for index, instance in enumerate(self.shell.core_instances):
            if not isinstance(instance, Instantiation):
                continue
            if instance.module in instantiated:
                raise Unsupported(f"core module {instance.module} is instantiated twice")
            instantiated.add(instance.module)
            number = len(self.instances)
            given = module = self.shell.modules[instance.module]
            try:
                if self.guest:
                    module = compute_at_instantiation(given)
            except ExtendedConstantError as exc:
                raise GuestUnsupported(f"core module {instance.module}: {exc}") from None
            types = read_module_types(module)
            bindings = tuple((item, self._bind(number, instance, item))
                             for item in types.imports)
            self.numbers[index] = number
            self.instances.append(ModuleInstance(number, module, types, bindings,
                                                 None if module is given else INITIALIZER))
        defined = sum(len(i.types.memories) - sum(isinstance(item.sig, MemorySig)
                                                  for item in i.types.imports)
                      for i in self.instances)
        if defined != 1 and self.guest:
            raise GuestUnsupported(f"its modules define {defined} linear memories; the kvm tier "
                              "runs one")
        return self._contract()

    def _bind(self, number: int, instance: Instantiation, item: Import) -> Binding:
        given = instance.args.get(item.module)
        if given is None:
            raise Unsupported(f"module instance {number} is given no {item.module!r}")
        found = self._export_of(given, item.name)
        if _has_references(item.sig) and self.guest:
            raise GuestUnsupported(f"module instance {number} imports {item.module}#{item.name} "
                              "with reference types")
        if isinstance(found, ResourceOp):
            if found.op != "resource.drop" or not item.name.startswith(_DROP):
                raise Unsupported(f"it uses {found.op} (only WASI's resources are supported)")
            if item.sig != _DROP_SIG:
                raise Unsupported(f"it imports {item.module}#{item.name} as {item.sig}")
            return ResourceDrop(item.name.removeprefix(_DROP))
        if isinstance(found, _Lowering) and found.interface.startswith(WASI_PREFIX):
            return self._wasi(found, item)
        if isinstance(found, _Lowering):
            key = (found.interface, found.function)
            capability = check_capability_import(self.manifest, *key, item.sig)
            self.capabilities.setdefault(key, capability)
            return HostImport(capability, item.sig)  # type: ignore[arg-type]
        if found.instance >= number:
            raise Unsupported(f"module instance {number} imports {item.name!r} from a module "
                              "instantiated after it")
        if not _satisfies(found.sig, item.sig):
            raise Unsupported(f"module instance {number} imports {item.module}#{item.name} as "
                              f"{item.sig}, but is given {found.sig}")
        return found

    def _wasi(self, lowering: _Lowering, item: Import) -> WasiImport:
        if self.types is None:
            self.types = component_types(self.wasm)
        function = self.types.functions.get((lowering.interface, lowering.function))
        if function is None:
            raise Unsupported(f"its types do not declare {lowering.interface}#"
                              f"{lowering.function}")
        if FuncSig(*function.lowered()) != item.sig:
            raise Unsupported(f"it imports {lowering.interface}#{lowering.function} as "
                              f"{item.sig}, which is not its type lowered")
        realloc = lowering.options.realloc
        found = WasiImport(lowering.interface, function, item.sig,  # type: ignore[arg-type]
                           None if realloc is None else
                           self._module_export(CORE_FUNC, realloc, "a WASI lower's realloc"))
        try:  # its answer, generated now: what is refused is refused before anything compiles
            wasi_glue.thunk("check", WasiLowering(found.interface, function, found.sig,
                                                  None if realloc is None else "realloc("))
        except NoAnswer:
            name = f"{found.interface}#{function.name}"
            return replace(found, unprovided=self.unprovided.setdefault(
                name, len(self.unprovided)))
        except WasiUnsupported as exc:
            raise Unsupported(str(exc)) from None
        return found

    def _export_of(self, core_instance: int,
                   name: str) -> ModuleExport | _Lowering | ResourceOp:
        """Follow core instance `core_instance`'s export `name` to where it is defined. Each
        step goes to an earlier instance, so it ends; each chain is followed once (every pair
        on it remembers the end), however many imports name it."""
        path = []
        while (core_instance, name) not in self.found:
            path.append((core_instance, name))
            instance = self.shell.core_instances[core_instance]
            if isinstance(instance, Instantiation):
                number = self.numbers.get(core_instance)
                if number is None:
                    raise Unsupported(f"core instance {core_instance} is used before it exists")
                sig = self.instances[number].types.exports.get(name)
                if sig is None:
                    raise Unsupported(f"module instance {number} exports no {name!r}")
                end: ModuleExport | _Lowering | ResourceOp = ModuleExport(number, name, sig)
                break
            assert isinstance(instance, CoreBag)
            if name not in instance.items:
                raise Unsupported(f"core instance {core_instance} has no {name!r}")
            sort, index = instance.items[name]
            item = self.shell.core[sort][index]
            if not isinstance(item, CoreExport):
                end = item if isinstance(item, ResourceOp) else self._lowering(item)
                break
            core_instance, name = item.instance, item.name
        else:
            end = self.found[core_instance, name]
        for pair in path:
            self.found[pair] = end
        return end

    def _module_export(self, sort: int, index: int, what: str) -> ModuleExport:
        """Core item `index` of `sort`, which must be a module's export."""
        item = self.shell.core[sort][index]
        found = (self._export_of(item.instance, item.name) if isinstance(item, CoreExport)
                 else item)
        if not isinstance(found, ModuleExport):
            raise Unsupported(f"{what} is a lowered import")
        return found

    def _lowering(self, item: Lowered) -> _Lowering:
        function = self.shell.function(item.function)
        if not isinstance(function, ImportedFunction):
            raise Unsupported("it lowers one of its own lifted functions")
        interface = self.shell.instances[function.instance]
        assert isinstance(interface, ImportedInstance)
        if not interface.name.startswith(WASI_PREFIX):  # the host's: its memory and realloc
            self.lowered_options.append(item.options)
        return _Lowering(interface.name, function.name, item.options)

    def _contract(self) -> Linking:
        functions: dict[str, ModuleExport] = {}
        handlers: dict[type, Handler] = {}
        memories: set[ModuleExport] = set()
        reallocs: set[ModuleExport] = set()
        for event_type, export in EXPORTS.items():
            if not any(self.manifest.wants(kind) for kind in kinds_of(event_type)):
                continue
            lifted = self._lifted(export.interface_id, export.function)
            core = self._function(
                self._module_export(CORE_FUNC, lifted.core_function, export.core_name),
                export.signature.core_export(), export.core_name)
            functions[export.core_name] = core
            options = lifted.options
            if options.post_return is not None:
                functions[export.post_return_name] = self._function(
                    self._module_export(CORE_FUNC, options.post_return,
                                        export.post_return_name),
                    POST_RETURN_TYPES, export.post_return_name)
            handlers[event_type] = Handler(export, options.post_return is not None)
            self._options(options, memories, reallocs)
        for options in self.lowered_options:
            self._options(options, memories, reallocs)
        if len(memories) != 1 or len(reallocs) != 1:
            raise Unsupported(f"its lifts and lowers name {len(memories)} memories and "
                              f"{len(reallocs)} allocators; the host needs one of each")
        functions[REALLOC] = self._function(reallocs.pop(), REALLOC_TYPES, "its realloc")
        memory = memories.pop()
        if not isinstance(memory.sig, MemorySig) or memory.sig.memory64:
            raise Unsupported("its lifts' memory is not a 32-bit linear memory")
        uses_wasi = any(isinstance(binding, WasiImport) for instance in self.instances
                        for _, binding in instance.bindings)
        wasi = (RANDOM_GET, PROC_EXIT, *SERVICES.values()) if uses_wasi else ()
        contract = CoreModule(tuple(self.capabilities.values()), handlers, memory.sig, False,
                              wasi)
        instances, preload = (self._preloaded(memory) if self.guest
                              else (tuple(self.instances), ()))
        return Linking(instances, contract, functions, memory, preload,
                       tuple(self.unprovided), self._readable())

    def _readable(self) -> dict[str, tuple[ModuleExport, ModuleExport]]:
        found = {}
        for name, (sort, index) in self.shell.exports.items():
            function = self.shell.function(index) if sort == FUNC else None
            if not isinstance(function, Lifted) or function.options.memory is None:
                continue
            try:
                core = self._module_export(CORE_FUNC, function.core_function, name)
                memory = self._module_export(CORE_MEMORY, function.options.memory, name)
            except Unsupported:
                continue  # not a module's function, so not one a tool reads
            if core.sig == _READ_SIG:
                found[name] = (core, memory)
        return found

    def _preloaded(self, memory: ModuleExport
                   ) -> tuple[tuple[ModuleInstance, ...], tuple[Segment, ...]]:
        """The instances, the memory's module without its data segments, and those."""
        main = self.instances[memory.instance]
        if any(isinstance(item.sig, MemorySig) for item in main.types.imports):
            return tuple(self.instances), ()  # it passes on a memory made before it
        module, segments = take_segments(main.module)
        assert isinstance(memory.sig, MemorySig)
        initial = memory.sig.minimum * PAGE
        for segment in segments:
            if segment.offset + len(segment.data) > initial:
                raise PluginLoadError(self.manifest.name, f"cannot be instantiated: a data "
                                                          f"segment at {segment.offset:#x} "
                                                          "ends past its initial memory")
        instances = list(self.instances)
        instances[memory.instance] = replace(main, module=module)
        return tuple(instances), segments

    def _options(self, options: Options, memories: set[ModuleExport],
                 reallocs: set[ModuleExport]) -> None:
        if options.encoding != "utf8":
            raise Unsupported(f"it uses string encoding {options.encoding}")
        for index, into, sort in ((options.memory, memories, CORE_MEMORY),
                                  (options.realloc, reallocs, CORE_FUNC)):
            if index is not None:
                into.add(self._module_export(sort, index, "a lift's memory or realloc"))

    def _lifted(self, interface: str, name: str) -> Lifted:
        sort, index = self.shell.exports.get(interface, (None, 0))
        if sort != INSTANCE:
            raise WorldMismatchError(self.manifest.name, f"does not export {interface}#{name}")
        sort, index = self.shell.instance_item(index, name)
        function = self.shell.function(index) if sort == FUNC else None
        if not isinstance(function, Lifted):
            raise WorldMismatchError(self.manifest.name, f"does not export {interface}#{name} "
                                                         "as a lifted function")
        return function

    def _function(self, binding: ModuleExport, expected: tuple[list[str], list[str]],
                  what: str) -> ModuleExport:
        if not isinstance(binding.sig, FuncSig) or not binding.sig.matches(expected):
            raise WorldMismatchError(self.manifest.name, f"lifts {what} from a core function "
                                                         f"of the wrong type; the world's is "
                                                         f"{expected}")
        return binding



def _satisfies(given: ExternSig, wanted: ExternSig) -> bool:
    """Whether an export of type `given` may be an import of type `wanted` (core wasm's
    import matching: a memory at least as large, with a maximum no larger)."""
    if isinstance(given, MemorySig) and isinstance(wanted, MemorySig):
        return (given.memory64 == wanted.memory64 and given.minimum >= wanted.minimum and
                (wanted.maximum is None or
                 (given.maximum is not None and given.maximum <= wanted.maximum)))
    return given == wanted


def _has_references(sig: ExternSig) -> bool:
    """Whether a value of this type passes funcref or externref, which the glue does not."""
    if isinstance(sig, FuncSig):
        return any(t in ("funcref", "externref") for t in (*sig.params, *sig.results))
    return isinstance(sig, GlobalSig) and sig.valtype in ("funcref", "externref")
