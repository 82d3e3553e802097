"""A component's shell read from its binary: its core modules, and how instantiating it wires
them: which core instance each module's imports come from, what the canonical ABI lowers (the
component's imports made core functions) and lifts (core functions made the component's
exports), and what the component exports.

The kvm tier runs a component by instantiating its core modules itself, in the guest, as the
shell says (vmm/component_linking.py). Only the shape the component toolchains produce is read (a
flat component: core modules, core instances, aliases, canonical functions, imported
instances, exported instances of lifted functions); anything else raises ShellError naming
it. Types are not read: the core functions' types come from the core modules, and what a
lifted or lowered function means, from the world.

Each index space only grows, and every definition names earlier ones only, so following a
reference always ends.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vmm.wasm_kind import MAGIC
from vmm.wasm_types import BinaryReader, WasmFormatError

# Sections of the component binary format.
_CUSTOM, _CORE_MODULE, _CORE_INSTANCE, _CORE_TYPE, _COMPONENT, _INSTANCE = range(6)
_ALIAS, _TYPE, _CANON, _START, _IMPORT, _EXPORT, _VALUE = range(6, 13)
# Sorts: a core sort follows 0x00; these are the ones a shell links.
CORE_FUNC, CORE_TABLE, CORE_MEMORY, CORE_GLOBAL = 0x00, 0x01, 0x02, 0x03
_CORE_TYPE_SORT, _CORE_MODULE_SORT, _CORE_INSTANCE_SORT = 0x10, 0x11, 0x12
_CORE_SORTS = {CORE_FUNC: "func", CORE_TABLE: "table", CORE_MEMORY: "memory",
               CORE_GLOBAL: "global", _CORE_TYPE_SORT: "type", _CORE_MODULE_SORT: "module",
               _CORE_INSTANCE_SORT: "instance"}
_SORT_CORE, FUNC, _VALUE_SORT, _TYPE_SORT, _COMPONENT_SORT, INSTANCE = range(6)
# Canonical options.
_UTF8, _UTF16, _LATIN1_UTF16, _MEMORY_OPT, _REALLOC_OPT, _POST_RETURN_OPT = range(6)
_ENCODINGS = {_UTF8: "utf8", _UTF16: "utf16", _LATIN1_UTF16: "latin1+utf16"}
_CANON_LIFT, _CANON_LOWER = 0x00, 0x01
_RESOURCE_OPS = {0x02: "resource.new", 0x03: "resource.drop", 0x04: "resource.rep"}
# A shell is a few hundred definitions; more than this is no shell a toolchain made.
MAX_DEFINITIONS = 1 << 16


class ShellError(Exception):
    """The component is not of the shape read here; the message says what it has instead."""


@dataclass(frozen=True)
class Options:
    """A lift's or lower's canonical options: core memory and function indices."""

    encoding: str = "utf8"
    memory: int | None = None
    realloc: int | None = None
    post_return: int | None = None


@dataclass(frozen=True)
class CoreExport:
    """An export of a core instance, by name (an alias)."""

    instance: int
    name: str


@dataclass(frozen=True)
class Lowered:
    """A component function made a core function."""

    function: int
    options: Options


@dataclass(frozen=True)
class ResourceOp:
    op: str  # "resource.new", "resource.drop", "resource.rep"
    resource_type: int


CoreItem = CoreExport | Lowered | ResourceOp


@dataclass(frozen=True)
class Instantiation:
    """A core instance of module `module`, each import module name given by a core instance."""

    module: int
    args: dict[str, int]


@dataclass(frozen=True)
class CoreBag:
    """A core instance made of other definitions: name -> (core sort, index)."""

    items: dict[str, tuple[int, int]]


@dataclass(frozen=True)
class ImportedFunction:
    """A function of an imported instance: the component's import by name."""

    instance: int
    name: str


@dataclass(frozen=True)
class InstanceExport:
    """A function of an instance the shell defines, by name (an alias)."""

    instance: int
    name: str


@dataclass(frozen=True)
class Lifted:
    """A core function made a component function."""

    core_function: int
    options: Options


@dataclass(frozen=True)
class ImportedInstance:
    name: str  # the interface, e.g. "hyperfilter:plugin/log@0.1.0"


@dataclass(frozen=True)
class InstanceBag:
    """A component instance made of other definitions: name -> (sort, index)."""

    items: dict[str, tuple[int, int]]


@dataclass(frozen=True)
class Reexport:
    """A nested component that only gives functions it imports new types (wit-component's
    shim for an exported interface): export name -> the import it is."""

    exports: dict[str, str]


@dataclass
class Shell:
    modules: list[bytes] = field(default_factory=list)
    components: list[Reexport] = field(default_factory=list)
    core_instances: list[Instantiation | CoreBag] = field(default_factory=list)
    # the core sorts a shell links, each its index space
    core: dict[int, list[CoreItem]] = field(
        default_factory=lambda: {sort: [] for sort in
                                 (CORE_FUNC, CORE_TABLE, CORE_MEMORY, CORE_GLOBAL)})
    functions: list[ImportedFunction | Lifted | InstanceExport] = field(default_factory=list)
    instances: list[ImportedInstance | InstanceBag] = field(default_factory=list)
    exports: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (sort, index)

    definitions: int = 0  # what reading it has made so far, against MAX_DEFINITIONS
    _resolved: dict[int, ImportedFunction | Lifted] = field(default_factory=dict)

    def spend(self, count: int) -> None:
        self.definitions += count
        if self.definitions > MAX_DEFINITIONS:
            raise ShellError(f"it has more than {MAX_DEFINITIONS} definitions")

    def function(self, index: int) -> ImportedFunction | Lifted:
        """Component function `index`, through the exports it aliases (each chain followed
        once: every index on it remembers where it ends; a chain that comes back to where it
        was is refused)."""
        path: dict[int, None] = {}  # in order, and quick to look in
        item = _at(self.functions, index, "function")
        while isinstance(item, InstanceExport) and index not in self._resolved:
            if index in path:
                raise ShellError(f"function {index} is an alias of itself")
            path[index] = None
            sort, index = self.instance_item(item.instance, item.name)
            if sort != FUNC:
                raise ShellError(f"{item.name!r} is not a function")
            item = _at(self.functions, index, "function")
        found = self._resolved.get(index, item)
        assert not isinstance(found, InstanceExport)
        for on_path in path:
            self._resolved[on_path] = found
        return found

    def check(self, sort: int, index: int) -> tuple[int, int]:
        """A (sort, index) an instance names, which must exist (types are not kept)."""
        if sort == FUNC:
            _at(self.functions, index, "function")
        elif sort == INSTANCE:
            _at(self.instances, index, "instance")
        elif sort != _TYPE_SORT:
            raise ShellError(f"an instance of a {_sort_name(sort, None)}")
        return sort, index

    def instance_item(self, instance: int, name: str) -> tuple[int, int]:
        bag = _at(self.instances, instance, "instance")
        if not isinstance(bag, InstanceBag) or name not in bag.items:
            raise ShellError(f"instance {instance} has no {name!r} the shell defines")
        return bag.items[name]


def _at(space: list, index: int, what: str):  # type: ignore[no-untyped-def, type-arg]
    if index >= len(space):
        raise ShellError(f"{what} {index} does not exist")
    return space[index]


def read_shell(wasm: bytes) -> Shell:
    """The shell of component `wasm`; ShellError if it is not of the shape read here."""
    if wasm[:4] != MAGIC:
        raise ShellError("not WebAssembly")
    try:
        return _read(wasm)
    except WasmFormatError as exc:
        raise ShellError(f"it cannot be read: {exc}") from None


def _read(wasm: bytes) -> Shell:
    shell = Shell()
    reader = BinaryReader(wasm, 8)
    while reader.at < reader.end:
        section_id, size = reader.byte(), reader.uleb()
        section = BinaryReader(wasm, reader.at, reader.at + size)
        reader.skip(size)
        if section_id in (_CUSTOM, _CORE_TYPE, _TYPE):
            continue  # names and types: what things mean comes from the modules and the world
        if section_id == _CORE_MODULE:
            shell.modules.append(wasm[section.at:section.end])
            continue
        if section_id == _COMPONENT:
            shell.components.append(_reexport(wasm[section.at:section.end]))
            continue
        read = _SECTION_READERS.get(section_id)
        if read is None:
            raise ShellError(f"it has a {_UNREAD.get(section_id, f'section {section_id}')}, "
                             "which no component toolchain's shell has")
        count = section.uleb()
        shell.spend(count)
        for _ in range(count):
            read(section, shell)
        if section.at != section.end:
            raise ShellError(f"its section {section_id} says more than it declares")
    return shell


_UNREAD = {_START: "start function", _VALUE: "value"}


def _reexport(wasm: bytes) -> Reexport:
    """A nested component: only imports, type definitions and exports of imported functions
    are read."""
    reader = BinaryReader(wasm, 8)
    functions: list[str] = []  # its function index space: the imports' names, or exports'
    exports = {}
    while reader.at < reader.end:
        section_id, size = reader.byte(), reader.uleb()
        section = BinaryReader(wasm, reader.at, reader.at + size)
        reader.skip(size)
        if section_id in (_CUSTOM, _TYPE):
            continue
        if section_id not in (_IMPORT, _EXPORT, _ALIAS):
            raise ShellError("it has a nested component that does more than re-export "
                             "functions")
        for _ in range(section.uleb()):
            if section_id == _ALIAS:
                _alias(section, Shell())  # only an outer type is allowed there
                continue
            name = _extern_name(section)
            if section_id == _IMPORT:
                if _extern_desc(section) == FUNC:
                    functions.append(name)
                continue
            sort, index = _sort_index(section)
            if section.byte() == 0x01:
                _extern_desc(section)
            if sort == FUNC:
                exports[name] = _at(functions, index, "function")
                functions.append(exports[name])
            elif sort != _TYPE_SORT:
                raise ShellError("a nested component exports something other than functions")
    return Reexport(exports)


def _core_instance(section: BinaryReader, shell: Shell) -> None:
    if section.byte() == 0x00:
        module = section.uleb()
        _at(shell.modules, module, "core module")
        args = {}
        for _ in range(section.uleb()):
            name = section.name()
            if section.byte() != _CORE_INSTANCE_SORT:
                raise ShellError("a module is instantiated with something other than instances")
            args[name] = _index(section, shell.core_instances, "core instance")
        shell.core_instances.append(Instantiation(module, args))
        return
    items = {}
    for _ in range(section.uleb()):
        name = section.name()
        sort = _linked_core_sort(section.byte())
        items[name] = (sort, _index(section, shell.core[sort], f"core {_CORE_SORTS[sort]}"))
    shell.core_instances.append(CoreBag(items))


def _instance(section: BinaryReader, shell: Shell) -> None:
    if section.byte() == 0x00:
        component = _at(shell.components, section.uleb(), "component")
        args = {}
        for _ in range(section.uleb()):
            name = section.name()
            args[name] = shell.check(*_sort_index(section))
        shell.spend(len(component.exports))  # each instantiation makes them all again
        items = {}
        for export, imported in component.exports.items():
            if imported not in args or args[imported][0] != FUNC:
                raise ShellError(f"a nested component's {imported!r} is not given a function")
            items[export] = args[imported]
        shell.instances.append(InstanceBag(items))
        return
    items = {}
    for _ in range(section.uleb()):
        name = _extern_name(section)
        items[name] = shell.check(*_sort_index(section))
    shell.instances.append(InstanceBag(items))


def _alias(section: BinaryReader, shell: Shell) -> None:
    sort = section.byte()
    core_sort = section.byte() if sort == _SORT_CORE else None
    target = section.byte()
    if target == 0x02:  # outer: only types may be aliased from outside
        section.uleb()
        section.uleb()
        if sort != _TYPE_SORT and core_sort != _CORE_TYPE_SORT:
            raise ShellError("it aliases a definition of an enclosing component")
        return
    instance, name = section.uleb(), section.name()
    if target == 0x01:  # a core instance's export
        if core_sort is None:
            raise ShellError("a core instance's export aliased as a component definition")
        _at(shell.core_instances, instance, "core instance")
        _add_core(shell, _linked_core_sort(core_sort), CoreExport(instance, name))
    elif target == 0x00:
        _at(shell.instances, instance, "instance")
        if sort == FUNC:
            imported = isinstance(shell.instances[instance], ImportedInstance)
            shell.functions.append(ImportedFunction(instance, name) if imported
                                   else InstanceExport(instance, name))
        elif sort == INSTANCE:
            raise ShellError("it aliases an instance's instance")
        elif sort != _TYPE_SORT:
            raise ShellError(f"it aliases an instance's {_sort_name(sort, core_sort)}")
    else:
        raise ShellError(f"alias target {target:#x}")


def _canon(section: BinaryReader, shell: Shell) -> None:
    kind = section.byte()
    if kind in (_CANON_LIFT, _CANON_LOWER):
        if section.byte() != 0x00:
            raise ShellError("a canonical function of an unknown form")
        function = section.uleb()
        options = _options(section, shell)
        if kind == _CANON_LIFT:
            section.uleb()  # its type
            _at(shell.core[CORE_FUNC], function, "core func")
            shell.functions.append(Lifted(function, options))
        else:
            _at(shell.functions, function, "function")
            _add_core(shell, CORE_FUNC, Lowered(function, options))
    elif kind in _RESOURCE_OPS:
        _add_core(shell, CORE_FUNC, ResourceOp(_RESOURCE_OPS[kind], section.uleb()))
    else:
        raise ShellError(f"canonical function {kind:#x} (async, threads or others not read)")


def _options(section: BinaryReader, shell: Shell) -> Options:
    values: dict[str, object] = {}
    for _ in range(section.uleb()):
        option = section.byte()
        if option in _ENCODINGS:
            values["encoding"] = _ENCODINGS[option]
        elif option == _MEMORY_OPT:
            values["memory"] = _index(section, shell.core[CORE_MEMORY], "core memory")
        elif option in (_REALLOC_OPT, _POST_RETURN_OPT):
            values["realloc" if option == _REALLOC_OPT else "post_return"] = _index(
                section, shell.core[CORE_FUNC], "core func")
        else:
            raise ShellError(f"canonical option {option:#x} (async or callback)")
    return Options(**values)  # type: ignore[arg-type]


def _import(section: BinaryReader, shell: Shell) -> None:
    name = _extern_name(section)
    kind = _extern_desc(section)
    if kind == INSTANCE:
        shell.instances.append(ImportedInstance(name))
    elif kind != _TYPE_SORT:
        raise ShellError(f"it imports {name!r} as a {_sort_name(kind, None)}, not an instance")


def _export(section: BinaryReader, shell: Shell) -> None:
    name = _extern_name(section)
    sort, index = _sort_index(section)
    if section.byte() == 0x01:  # an ascribed type
        _extern_desc(section)
    shell.exports[name] = (sort, index)
    # An export is also a new index of its sort.
    if sort == FUNC:
        shell.functions.append(shell.function(index))
    elif sort == INSTANCE:
        shell.instances.append(_at(shell.instances, index, "instance"))
    elif sort != _TYPE_SORT:
        raise ShellError(f"it exports a {_sort_name(sort, None)} ({name!r})")


def _extern_desc(section: BinaryReader) -> int:
    """Read an import's or export's type; its sort (a core module's is refused)."""
    kind = section.byte()
    if kind == _SORT_CORE:
        raise ShellError("it imports or exports a core module")
    if kind in (_VALUE_SORT, _TYPE_SORT):  # a bound: 0x00 and an index, or a value's type
        if section.byte() == 0x00 or kind == _VALUE_SORT:
            section.uleb()
    elif kind in (FUNC, _COMPONENT_SORT, INSTANCE):
        section.uleb()
    else:
        raise ShellError(f"an import or export of kind {kind:#x}")
    return kind


def _sort_index(section: BinaryReader) -> tuple[int, int]:
    sort = section.byte()
    if sort == _SORT_CORE:
        raise ShellError("a component instance or export of a core definition")
    return sort, section.uleb()


def _extern_name(section: BinaryReader) -> str:
    if section.byte() not in (0x00, 0x01):
        raise ShellError("an import or export name of an unknown form")
    return section.name()


def _linked_core_sort(sort: int) -> int:
    if sort not in (CORE_FUNC, CORE_TABLE, CORE_MEMORY, CORE_GLOBAL):
        raise ShellError(f"a core {_CORE_SORTS.get(sort, hex(sort))} is aliased or bundled")
    return sort


def _sort_name(sort: int, core_sort: int | None) -> str:
    if sort == _SORT_CORE:
        return f"core {_CORE_SORTS.get(core_sort or 0, hex(core_sort or 0))}"
    return {FUNC: "function", _VALUE_SORT: "value", _TYPE_SORT: "type",
            _COMPONENT_SORT: "component", INSTANCE: "instance"}.get(sort, hex(sort))


def _index(section: BinaryReader, space: list, what: str) -> int:  # type: ignore[type-arg]
    index = section.uleb()
    _at(space, index, what)
    return index


def _add_core(shell: Shell, sort: int, item: CoreItem) -> None:
    shell.core[sort].append(item)


_SECTION_READERS = {_CORE_INSTANCE: _core_instance, _INSTANCE: _instance, _ALIAS: _alias,
                    _CANON: _canon, _IMPORT: _import, _EXPORT: _export}
