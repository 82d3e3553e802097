"""A core module's imports renamed by their position: module IMPORTS_NAME, field "0", "1", ...

wasm2c names an import after its module and field, and its header declares every import.
Two modules that differ in what they import by name (componentize-js's engine bound to two
plugins' capabilities: `config.get` here, `metrics.add` there) would then differ in their C
everywhere the header is included; renamed, they differ only where the imports are called,
and the rest of their C compiles once (vmm/kvm/image.py). The glue binds each import by its
number (vmm/kvm/component_glue.py); a module's names are its own once compiled, renamed for
it.
"""

from __future__ import annotations

from vmm.wasm_sections import HEADER, IMPORT, Section, assemble, find, sections, uleb
from vmm.wasm_types import BinaryReader, WasmFormatError

IMPORTS_NAME = "hfimports"
_FUNC, _TABLE, _MEMORY, _GLOBAL = 0, 1, 2, 3


def positional(wasm: bytes) -> bytes:
    """`wasm` with import number N renamed IMPORTS_NAME#N, its types as they were."""
    found = sections(wasm)
    section = find(found, IMPORT)
    if section is None:
        return wasm
    reader = BinaryReader(section.body)
    count = reader.uleb()
    out = bytearray(uleb(count))
    for index in range(count):
        reader.name()
        reader.name()
        start = reader.at
        _skip_description(reader)
        out += _name(IMPORTS_NAME) + _name(str(index)) + section.body[start:reader.at]
    if reader.at != len(section.body):
        raise WasmFormatError("the import section goes on past its imports")
    return assemble(wasm[:HEADER], [Section(IMPORT, bytes(out)) if s.id == IMPORT else s
                                    for s in found])


def _skip_description(reader: BinaryReader) -> None:
    kind = reader.byte()
    if kind == _FUNC:
        reader.uleb()
    elif kind == _TABLE:
        reader.byte()
        reader.limits()
    elif kind == _MEMORY:
        reader.limits()
    elif kind == _GLOBAL:
        reader.skip(2)
    else:
        raise WasmFormatError(f"an import of kind {kind:#x}")


def _name(text: str) -> bytes:
    encoded = text.encode()
    return uleb(len(encoded)) + encoded
