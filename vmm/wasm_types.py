"""The imports and exports of a core module, read from its binary without compiling it.

Every tier checks a core module against the world before it compiles or links anything, and
the KVM tier has no wasm engine to ask. Only the sections that name types are read (type,
import, function, memory, global, export); validating the rest is the compiler's job.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vmm.wasm_kind import MAGIC

VALTYPES = {0x7F: "i32", 0x7E: "i64", 0x7D: "f32", 0x7C: "f64", 0x7B: "v128",
            0x70: "funcref", 0x6F: "externref"}
_SECTIONS = {1: "type", 2: "import", 3: "function", 4: "table", 5: "memory", 6: "global",
             7: "export"}
_FUNC, _TABLE, _MEMORY, _GLOBAL, _TAG = range(5)
_END = 0x0B


class WasmFormatError(ValueError):
    """The binary is not a core module this reader understands."""


@dataclass(frozen=True)
class FuncSig:
    params: tuple[str, ...]
    results: tuple[str, ...]

    def matches(self, expected: tuple[list[str], list[str]]) -> bool:
        return (list(self.params), list(self.results)) == (list(expected[0]), list(expected[1]))

    def __str__(self) -> str:
        return f"func({', '.join(self.params)}) -> ({', '.join(self.results)})"


@dataclass(frozen=True)
class GlobalSig:
    valtype: str
    mutable: bool


@dataclass(frozen=True)
class MemorySig:
    minimum: int  # pages
    maximum: int | None
    memory64: bool


@dataclass(frozen=True)
class TableSig:
    element: str  # "funcref" or "externref"


@dataclass(frozen=True)
class OtherSig:
    kind: str  # "tag"


ExternSig = FuncSig | GlobalSig | MemorySig | TableSig | OtherSig


@dataclass(frozen=True)
class Import:
    module: str
    name: str
    sig: ExternSig


@dataclass
class ModuleTypes:
    imports: list[Import] = field(default_factory=list)
    exports: dict[str, ExternSig] = field(default_factory=dict)
    memories: list[MemorySig] = field(default_factory=list)  # imported and defined
    tables: list[TableSig] = field(default_factory=list)  # imported and defined


class BinaryReader:
    """Reads LEB128 integers, names and types from `data[at:end]`; past `end` is an error."""

    def __init__(self, data: bytes, at: int = 0, end: int | None = None) -> None:
        self.data = data
        self.at = at
        self.end = len(data) if end is None else end

    def byte(self) -> int:
        if self.at >= self.end:
            raise WasmFormatError("unexpected end of section")
        self.at += 1
        return self.data[self.at - 1]

    def uleb(self) -> int:
        value = shift = 0
        while True:
            byte = self.byte()
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
            shift += 7
            if shift > 63:
                raise WasmFormatError("integer encoding too long")

    def skip(self, count: int) -> None:
        if self.at + count > self.end:
            raise WasmFormatError("unexpected end of section")
        self.at += count

    def name(self) -> str:
        length = self.uleb()
        start = self.at
        self.skip(length)
        try:
            return self.data[start:self.at].decode()
        except UnicodeDecodeError:
            raise WasmFormatError("a name is not UTF-8") from None

    def valtype(self) -> str:
        code = self.byte()
        if code not in VALTYPES:
            raise WasmFormatError(f"value type {code:#x} is not supported")
        return VALTYPES[code]

    def limits(self) -> tuple[int, int, int | None]:
        flags = self.byte()
        minimum = self.uleb()
        return flags, minimum, self.uleb() if flags & 1 else None

    def global_sig(self) -> GlobalSig:
        valtype = self.valtype()
        return GlobalSig(valtype, self.byte() == 1)

    def constant_expression(self) -> None:
        """Skip a global's initializer: constants, global.get, ref.null, ref.func."""
        while (opcode := self.byte()) != _END:
            if opcode in (0x41, 0x42, 0x23, 0xD2):  # i32/i64.const, global.get, ref.func
                self.uleb()
            elif opcode in (0x43, 0x44):  # f32.const, f64.const
                self.skip(4 if opcode == 0x43 else 8)
            elif opcode == 0xD0:  # ref.null
                self.byte()
            elif opcode not in (0x6A, 0x6B, 0x6C, 0x7C, 0x7D, 0x7E):  # extended constants
                raise WasmFormatError(f"a global initializer uses opcode {opcode:#x}")


def read_module_types(wasm: bytes) -> ModuleTypes:
    """The module's imports, exports and memories, with their types."""
    if wasm[:4] != MAGIC or wasm[4:8] != b"\x01\0\0\0":
        raise WasmFormatError("not a core WebAssembly module (version 1)")
    reader = BinaryReader(wasm, 8)
    types: list[FuncSig] = []
    functions: list[FuncSig] = []
    globals_: list[GlobalSig] = []
    result = ModuleTypes()
    while reader.at < reader.end:
        section_id = reader.byte()
        size = reader.uleb()
        section = BinaryReader(wasm, reader.at, reader.at + size)
        reader.skip(size)
        kind = _SECTIONS.get(section_id)
        if kind is None:
            continue
        for _ in range(section.uleb()):
            if kind == "type":
                if section.byte() != 0x60:
                    raise WasmFormatError("only function types are supported in the type section")
                params = tuple(section.valtype() for _ in range(section.uleb()))
                types.append(FuncSig(params, tuple(section.valtype()
                                                   for _ in range(section.uleb()))))
            elif kind == "import":
                module, name = section.name(), section.name()
                sig = _extern_sig(section, section.byte(), types)
                result.imports.append(Import(module, name, sig))
                for space, of_kind in ((functions, FuncSig), (globals_, GlobalSig),
                                       (result.memories, MemorySig),
                                       (result.tables, TableSig)):
                    if isinstance(sig, of_kind):
                        space.append(sig)  # type: ignore[arg-type]
            elif kind == "function":
                functions.append(_type_at(types, section.uleb()))
            elif kind == "table":
                result.tables.append(_table_sig(section))
            elif kind == "memory":
                result.memories.append(_memory_sig(section))
            elif kind == "global":
                globals_.append(section.global_sig())
                section.constant_expression()
            else:
                name, extern_kind, index = section.name(), section.byte(), section.uleb()
                result.exports[name] = _exported(extern_kind, index, functions, globals_,
                                                 result.memories, result.tables)
    return result


def _type_at(types: list[FuncSig], index: int) -> FuncSig:
    if index >= len(types):
        raise WasmFormatError(f"type index {index} is out of range")
    return types[index]


def _table_sig(reader: BinaryReader) -> TableSig:
    element = reader.valtype()
    if element not in ("funcref", "externref"):
        raise WasmFormatError(f"a table of {element}")
    reader.limits()
    return TableSig(element)


def _memory_sig(reader: BinaryReader) -> MemorySig:
    flags, minimum, maximum = reader.limits()
    return MemorySig(minimum, maximum, bool(flags & 4))


def _extern_sig(reader: BinaryReader, kind: int, types: list[FuncSig]) -> ExternSig:
    if kind == _FUNC:
        return _type_at(types, reader.uleb())
    if kind == _TABLE:
        return _table_sig(reader)
    if kind == _MEMORY:
        return _memory_sig(reader)
    if kind == _GLOBAL:
        return reader.global_sig()
    if kind == _TAG:
        reader.byte()
        reader.uleb()
        return OtherSig("tag")
    raise WasmFormatError(f"import kind {kind:#x} is not supported")


def _exported(kind: int, index: int, functions: list[FuncSig], globals_: list[GlobalSig],
              memories: list[MemorySig], tables: list[TableSig]) -> ExternSig:
    spaces: dict[int, list[Any]] = {_FUNC: functions, _GLOBAL: globals_, _MEMORY: memories,
                                    _TABLE: tables}
    space = spaces.get(kind)
    if space is None:
        return OtherSig("tag")
    if index >= len(space):
        raise WasmFormatError(f"an export refers to index {index}, which does not exist")
    return space[index]
