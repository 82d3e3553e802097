"""The data segments of a component's main module, put in linear memory by the host before
the guest boots rather than compiled into the guest image.

componentize-py's main module is 12 MB of data segments: the interpreter's heap, initialized
when the component was built, different in every plugin. As C arrays (wasm2c's way) they took
gcc 21 s and 12 MB of image per plugin; placed at their offsets in the boot VM's memory they
take a copy. Instantiation does the same thing in the same order: the memory is made at the
main module's instantiation and nothing runs before it that could see it, and the guest
runtime never clears memory it makes (vmm/kvm/guest/runtime.c). Only a module whose active
segments are all at constant offsets gives them up. What is left of the module is then the
same in every plugin of a toolchain whose programs are data (componentize-js's engine, 12 MB
of code and data, and each plugin's JavaScript among the data): compiled once.
"""

from __future__ import annotations

from dataclasses import dataclass

from vmm.wasm_sections import DATA, HEADER, Section, assemble, find, sections, uleb
from vmm.wasm_types import BinaryReader, WasmFormatError

_I32_CONST, _END = 0x41, 0x0B


@dataclass(frozen=True)
class Segment:
    offset: int  # in linear memory
    data: bytes


def take_segments(wasm: bytes) -> tuple[bytes, tuple[Segment, ...]]:
    """`wasm` with its active segments emptied, and what they held; `wasm` and none when one
    is not at a constant offset in memory 0 (then the order in which they are written could
    change). An emptied segment stays, with no bytes: every segment keeps its index (bulk
    memory's instructions name them), and an active one is dropped at instantiation either
    way."""
    try:
        found = sections(wasm)
        data = find(found, DATA)
        if data is None:
            return wasm, ()
        taken = _taken(data.body)
    except WasmFormatError:
        return wasm, ()  # what cannot be read here, wasm2c reads (and refuses) itself
    if taken is None:
        return wasm, ()
    body, segments = taken
    rewritten = [Section(DATA, body) if s.id == DATA else s for s in found]
    return assemble(wasm[:HEADER], rewritten), segments


def _taken(body: bytes) -> tuple[bytes, tuple[Segment, ...]] | None:
    reader = BinaryReader(body)
    count = reader.uleb()
    out = bytearray(uleb(count))
    segments = []
    for _ in range(count):
        start = reader.at
        flags = reader.uleb()
        if flags == 1:  # passive: kept as it is
            reader.skip(reader.uleb())
            out += body[start:reader.at]
            continue
        if flags not in (0, 2) or (flags == 2 and reader.uleb() != 0):
            return None
        if reader.byte() != _I32_CONST:
            return None
        offset = _sleb32(reader) & 0xFFFFFFFF
        if reader.byte() != _END:
            return None
        head = body[start:reader.at]
        length = reader.uleb()
        data_start = reader.at
        reader.skip(length)
        segments.append(Segment(offset, body[data_start:reader.at]))
        out += head + uleb(0)
    return bytes(out), tuple(segments)
def _sleb32(reader: BinaryReader) -> int:
    value = shift = 0
    while True:
        byte = reader.byte()
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value - (1 << shift) if byte & 0x40 else value
        if shift >= 35:
            raise WasmFormatError("an i32.const too long")
