"""A core module as its list of sections, to rewrite some and put it back together (the kvm
tier's rewrites before wasm2c: vmm/kvm/extended_constants.py, vmm/kvm/data_segments.py)."""

from __future__ import annotations

from dataclasses import dataclass

from vmm.wasm_types import BinaryReader

TYPE, IMPORT, FUNCTION, TABLE, MEMORY, GLOBAL, EXPORT, START, ELEMENT, CODE, DATA = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11)
DATA_COUNT = 12
HEADER = 8  # the magic and version


@dataclass(frozen=True)
class Section:
    id: int
    body: bytes


def sections(wasm: bytes) -> list[Section]:
    """The module's sections, in order (WasmFormatError if they do not parse)."""
    reader = BinaryReader(wasm, HEADER)
    found = []
    while reader.at < reader.end:
        section_id, size = reader.byte(), reader.uleb()
        start = reader.at
        reader.skip(size)
        found.append(Section(section_id, wasm[start:reader.at]))
    return found


def find(found: list[Section], section_id: int) -> Section | None:
    return next((s for s in found if s.id == section_id), None)


def assemble(header: bytes, found: list[Section]) -> bytes:
    out = bytearray(header)
    for section in found:
        out += bytes([section.id]) + uleb(len(section.body)) + section.body
    return bytes(out)


def uleb(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)
