"""Globals whose initializer is an extended constant expression, computed at instantiation
instead, for the wasm2c the kvm tier uses (1.0.32), which refuses those expressions.

A shared library linked dynamically (libpython in a componentize-py component) has globals
like `GOT.data.internal.x = __memory_base + 3152988`: its data's addresses, known once the
library's memory base is. Each becomes a mutable global initialized to 0, and the module
gains an exported function (`INITIALIZER`) that sets them all from the same expressions; the
guest's glue calls it right after instantiating the module, before any of the module's code
runs. Only `global.get` of an imported global plus or minus an `i32.const` is rewritten, and
only in a module whose other constant expressions (data and element offsets, other globals)
do not read a rewritten global and which has no start function. What the rewrite depends on
is the module alone, so the result is the same in every plugin that has that module.
"""

from __future__ import annotations

from dataclasses import dataclass

from vmm.wasm_sections import (
    CODE,
    DATA,
    ELEMENT,
    EXPORT,
    FUNCTION,
    GLOBAL,
    IMPORT,
    START,
    TYPE,
    Section,
    find,
    sections,
    uleb,
)
from vmm.wasm_types import BinaryReader, WasmFormatError

INITIALIZER = "hyperfilter:extended-constants"
_GLOBAL_GET, _GLOBAL_SET, _I32_CONST, _I32_ADD, _I32_SUB, _END = 0x23, 0x24, 0x41, 0x6A, 0x6B, 0x0B
_GLOBAL_KIND, _FUNC_KIND = 3, 0


class ExtendedConstantError(Exception):
    """The module's extended constants are of a form not rewritten here."""


@dataclass(frozen=True)
class _Computed:
    index: int  # the rewritten global
    expression: bytes  # its initializer, without the end


def compute_at_instantiation(wasm: bytes) -> bytes:
    """`wasm` with its extended-constant globals set by INITIALIZER (the module docstring);
    `wasm` itself when it has none."""
    try:
        found = sections(wasm)
        rewritten, computed = _rewrite_globals(found)
        if not computed:
            return wasm
        _check_unread(found, {c.index for c in computed})
        return _with_initializer(wasm[:8], found, rewritten, computed)
    except WasmFormatError as exc:
        raise ExtendedConstantError(f"cannot be read: {exc}") from None


def _imported(found: list[Section]) -> tuple[int, int]:
    """How many functions and globals the module imports."""
    imports = find(found, IMPORT)
    counts = {_FUNC_KIND: 0, _GLOBAL_KIND: 0}
    if imports is None:
        return 0, 0
    reader = BinaryReader(imports.body)
    for _ in range(reader.uleb()):
        reader.name()
        reader.name()
        kind = reader.byte()
        if kind == _FUNC_KIND:
            reader.uleb()
        elif kind == 1:  # table
            reader.valtype()
            reader.limits()
        elif kind == 2:  # memory
            reader.limits()
        elif kind == _GLOBAL_KIND:
            reader.global_sig()
        else:
            raise ExtendedConstantError(f"it imports a kind {kind:#x}")
        counts[kind] = counts.get(kind, 0) + 1
    return counts[_FUNC_KIND], counts[_GLOBAL_KIND]


def _expression(reader: BinaryReader) -> bytes:
    """A constant expression's bytes up to and without its end (skipped)."""
    start = reader.at
    reader.constant_expression()
    return reader.data[start:reader.at - 1]


def _rewrite_globals(found: list[Section]) -> tuple[bytes, list[_Computed]]:
    section = find(found, GLOBAL)
    if section is None:
        return b"", []
    imported = _imported(found)[1]
    reader = BinaryReader(section.body)
    count = reader.uleb()
    out = bytearray(uleb(count))
    computed = []
    for number in range(count):
        start = reader.at
        valtype = reader.byte()
        mutable = reader.byte()
        expression = _expression(reader)
        if _single(expression):
            out += section.body[start:reader.at]
            continue
        if valtype != 0x7F or mutable or not _is_offset(expression, imported):
            raise ExtendedConstantError(f"global {imported + number} has an extended constant "
                                        "initializer of a form not computed at instantiation")
        computed.append(_Computed(imported + number, expression))
        out += bytes([valtype, 1, _I32_CONST, 0, _END])
    return bytes(out), computed


def _single(expression: bytes) -> bool:
    """One instruction: what wasm2c 1.0.32 translates."""
    reader = BinaryReader(expression + bytes([_END]))
    op = reader.byte()
    if op in (_I32_CONST, 0x42, _GLOBAL_GET, 0xD2):
        reader.uleb()
    elif op == 0x43:
        reader.skip(4)
    elif op == 0x44:
        reader.skip(8)
    elif op == 0xD0:
        reader.byte()
    else:
        return False
    return reader.byte() == _END


def _is_offset(expression: bytes, imported: int) -> bool:
    """`global.get g; i32.const k; i32.add|sub` (or the constant first, for add), g imported."""
    reader = BinaryReader(expression)
    operands = []
    for _ in range(2):
        op = reader.byte()
        if op not in (_GLOBAL_GET, _I32_CONST):
            return False
        value = reader.uleb()
        operands.append((op, value))
    operator = reader.byte()
    if reader.at != len(expression) or {op for op, _ in operands} != {_GLOBAL_GET, _I32_CONST}:
        return False
    if operator == _I32_SUB and operands[0][0] != _GLOBAL_GET:
        return False
    source = next(value for op, value in operands if op == _GLOBAL_GET)
    return operator in (_I32_ADD, _I32_SUB) and source < imported


def _check_unread(found: list[Section], rewritten: set[int]) -> None:
    if find(found, START) is not None:
        raise ExtendedConstantError("it has a start function, which would run before its "
                                    "extended constants are computed")
    for expression in _offsets(found):
        reader = BinaryReader(expression + bytes([_END]))
        while (op := reader.byte()) != _END:
            if op == _GLOBAL_GET and reader.uleb() in rewritten:
                raise ExtendedConstantError("a data or element offset reads a global computed "
                                            "at instantiation")
            if op in (_I32_CONST, 0x42, 0xD2):
                reader.uleb()


def _offsets(found: list[Section]) -> list[bytes]:
    """The offset expressions of active data and element segments."""
    offsets = []
    data = find(found, DATA)
    if data is not None:
        reader = BinaryReader(data.body)
        for _ in range(reader.uleb()):
            flags = reader.uleb()
            if flags == 2:
                reader.uleb()
            if flags in (0, 2):
                offsets.append(_expression(reader))
            reader.skip(reader.uleb())
    elements = find(found, ELEMENT)
    if elements is not None:
        reader = BinaryReader(elements.body)
        for _ in range(reader.uleb()):
            flags = reader.uleb()
            if flags & 2 and not flags & 1:
                reader.uleb()  # table index
            if not flags & 1:
                offsets.append(_expression(reader))
            if flags & 3:
                reader.byte()  # element kind or reference type
            for _ in range(reader.uleb()):
                if flags & 4:
                    offsets.append(_expression(reader))
                else:
                    reader.uleb()
    return offsets


def _with_initializer(header: bytes, found: list[Section], globals_: bytes,
                      computed: list[_Computed]) -> bytes:
    """The module with the rewritten global section, and INITIALIZER: a new type () -> ()
    and a new function, last in their index spaces (no index before them moves)."""
    types = _count(find(found, TYPE))
    functions = _imported(found)[0] + _count(find(found, FUNCTION))
    body = bytearray(b"\0")  # no locals
    for item in computed:
        body += item.expression + bytes([_GLOBAL_SET]) + uleb(item.index)
    body.append(_END)
    additions = {
        TYPE: b"\x60\x00\x00",
        FUNCTION: uleb(types),
        EXPORT: _name(INITIALIZER) + bytes([_FUNC_KIND]) + uleb(functions),
        CODE: uleb(len(body)) + bytes(body),
    }
    out = bytearray(header)
    for section in found:
        content = globals_ if section.id == GLOBAL else section.body
        if section.id in additions:
            if section.id == EXPORT and INITIALIZER.encode() in section.body:
                raise ExtendedConstantError(f"it already exports {INITIALIZER}")
            content = _appended(content, additions.pop(section.id))
        out += bytes([section.id]) + uleb(len(content)) + content
    if additions:
        missing = ", ".join(str(section_id) for section_id in additions)
        raise ExtendedConstantError(f"it lacks sections {missing}")
    return bytes(out)


def _appended(body: bytes, entry: bytes) -> bytes:
    reader = BinaryReader(body)
    count = reader.uleb()
    return uleb(count + 1) + body[reader.at:] + entry


def _count(section: Section | None) -> int:
    return 0 if section is None else BinaryReader(section.body).uleb()


def _name(text: str) -> bytes:
    data = text.encode()
    return uleb(len(data)) + data
