"""The linear memories instantiating a plugin creates, read from its binary before anything
compiles it, so that a sandbox's store allows exactly those and no more.

wasmtime bounds each memory of a store by the same byte limit, so a plugin allowed two
memories could use twice its memory-mb. The rule: one memory that may grow (the canonical
ABI's), under memory-mb less the rest, and any memories of fixed size (maximum = minimum),
whose bytes are taken from memory-mb. A fuzzer's instrumented component keeps its coverage
counters in such memories.

For a component only the shape the component toolchains produce is read: core modules and
their instances at the top level, nested components without core modules. Anything else (a
core module imported or aliased, a nested component with core modules, a module this reader
cannot read) has no plan: such a plugin gets one memory, as before."""

from __future__ import annotations

from dataclasses import dataclass

from vmm.wasm_kind import MAGIC, WasmKind, wasm_kind
from vmm.wasm_types import BinaryReader, MemorySig, WasmFormatError, read_module_types

PAGE = 65536
# Component sections (the component model's binary format); any other id is not read.
_CORE_MODULE, _CORE_INSTANCE, _COMPONENT, _ALIAS, _IMPORT, _EXPORT = 1, 2, 4, 6, 10, 11
_SECTIONS = frozenset(range(13))
_CORE_SORT, _CORE_MODULE_SORT = 0x00, 0x11
_INSTANTIATE = 0x00
# Components nested deeper are not read (a hostile binary nests a few bytes a level).
MAX_NESTING = 32


@dataclass(frozen=True)
class MemoryPlan:
    growable: int = 0     # memories that may grow
    fixed: int = 0        # memories of fixed size ...
    fixed_bytes: int = 0  # ... and their bytes together

    def __add__(self, other: MemoryPlan) -> MemoryPlan:
        return MemoryPlan(self.growable + other.growable, self.fixed + other.fixed,
                          self.fixed_bytes + other.fixed_bytes)

    @property
    def memories(self) -> int:
        return self.growable + self.fixed


def memory_plan(wasm: bytes) -> MemoryPlan | None:
    """What instantiating `wasm` (a core module or a component) creates; None when its shape
    is not one this reads (the module docstring)."""
    try:
        if wasm_kind(wasm) is WasmKind.CORE:
            return _module_plan(wasm)
        if wasm_kind(wasm) is WasmKind.COMPONENT:
            return _component_plan(wasm, depth=0)
    except (WasmFormatError, _Unplanned):
        pass
    return None


class _Unplanned(Exception):
    """A shape `memory_plan` does not read."""


def _module_plan(wasm: bytes) -> MemoryPlan:
    types = read_module_types(wasm)
    imported = sum(isinstance(item.sig, MemorySig) for item in types.imports)
    plan = MemoryPlan()
    for memory in types.memories[imported:]:
        fixed = memory.maximum == memory.minimum and not memory.memory64
        # An empty one costs a page: every memory costs address space and instantiation.
        plan += MemoryPlan(0, 1, max(memory.minimum, 1) * PAGE) if fixed else MemoryPlan(1)
    return plan


def _component_plan(wasm: bytes, depth: int) -> MemoryPlan:
    if wasm[:4] != MAGIC or depth > MAX_NESTING:
        raise _Unplanned
    reader = BinaryReader(wasm, 8)
    modules: list[MemoryPlan] = []
    plan = MemoryPlan()
    while reader.at < reader.end:
        section_id, size = reader.byte(), reader.uleb()
        section = BinaryReader(wasm, reader.at, reader.at + size)
        reader.skip(size)
        if section_id not in _SECTIONS:
            raise _Unplanned
        if section_id == _CORE_MODULE:
            if depth:
                raise _Unplanned  # a nested component's may be instantiated any number of times
            modules.append(_module_plan(wasm[section.at:section.end]))
            continue
        if section_id == _COMPONENT:
            if _component_plan(wasm[section.at:section.end], depth + 1).memories:
                raise _Unplanned
            continue
        if section_id == _CORE_INSTANCE:
            for _ in range(section.uleb()):
                plan += _instance_plan(section, modules)
        elif section_id in (_ALIAS, _IMPORT, _EXPORT):
            # each of these can give a core module an index: then the sections' order no
            # longer numbers the modules
            read = {_ALIAS: _alias_sort, _IMPORT: _import_sort, _EXPORT: _export_sort}
            for _ in range(section.uleb()):
                if read[section_id](section) == _CORE_MODULE_SORT:
                    raise _Unplanned
        else:
            continue
        if section.at != section.end:
            raise _Unplanned  # not the shape read: the section says more
    return plan


def _instance_plan(section: BinaryReader, modules: list[MemoryPlan]) -> MemoryPlan:
    """One core instance: the memories of the module it instantiates, none if it is made of
    exports."""
    if section.byte() == _INSTANTIATE:
        module = section.uleb()
        for _ in range(section.uleb()):  # its arguments: a name and an instance each
            section.name()
            section.skip(1)
            section.uleb()
        if module >= len(modules):
            raise _Unplanned
        return modules[module]
    for _ in range(section.uleb()):  # exports of other instances' items
        section.name()
        section.skip(1)
        section.uleb()
    return MemoryPlan()


def _sort(section: BinaryReader) -> int:
    """A sort: a component sort's byte, or a core sort's (0x10 and up)."""
    sort = section.byte()
    return section.byte() if sort == _CORE_SORT else sort


def _alias_sort(section: BinaryReader) -> int:
    """Read one alias; its sort."""
    sort = _sort(section)
    target = section.byte()
    if target in (0x00, 0x01):  # an export of an instance, of a core instance
        section.uleb()
        section.name()
    elif target == 0x02:  # outer
        section.uleb()
        section.uleb()
    else:
        raise _Unplanned
    return sort


def _extern_name(section: BinaryReader) -> None:
    """An import's or export's name: plain (0x00) or an interface's (0x01), as wasmparser
    reads both."""
    if section.byte() not in (0x00, 0x01):
        raise _Unplanned
    section.name()


def _extern_sort(section: BinaryReader) -> int:
    """Read an import's or export's type; the sort it describes."""
    kind = section.byte()
    if kind == _CORE_SORT:
        if section.byte() != _CORE_MODULE_SORT:
            raise _Unplanned
        section.uleb()
        return _CORE_MODULE_SORT
    if kind in (0x02, 0x03):  # a value's bound, a type's bound
        if section.byte() == 0x00 or kind == 0x02:
            section.uleb()
    elif kind in (0x01, 0x04, 0x05):
        section.uleb()
    else:
        raise _Unplanned
    return kind


def _import_sort(section: BinaryReader) -> int:
    """Read one import; its sort."""
    _extern_name(section)
    return _extern_sort(section)


def _export_sort(section: BinaryReader) -> int:
    """Read one export; its sort (a core module's if its type says so)."""
    _extern_name(section)
    sort = _sort(section)
    section.uleb()
    ascribed = section.byte()
    if ascribed == 0x01:
        return _CORE_MODULE_SORT if _extern_sort(section) == _CORE_MODULE_SORT else sort
    if ascribed != 0x00:
        raise _Unplanned
    return sort
