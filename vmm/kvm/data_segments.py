"""The data segments of a component's main module, put in linear memory by the host before
the guest boots rather than compiled into the guest image.

componentize-py's main module is 12 MB of data segments: the interpreter's heap, initialized
when the component was built, different in every plugin. As C arrays (wasm2c's way) they took
gcc 21 s and 12 MB of image per plugin; placed at their offsets in the boot VM's memory they
take a copy. Instantiation does the same thing in the same order: the memory is made at the
main module's instantiation and nothing runs before it that could see it, and the guest
runtime never clears memory it makes (vmm/kvm/guest/runtime.c). Only active segments at
constant offsets in a module without a data count section (so no instruction names a segment)
are taken; the rest stay in the module.
"""

from __future__ import annotations

from dataclasses import dataclass

from vmm.wasm_sections import DATA, DATA_COUNT, HEADER, assemble, find, sections
from vmm.wasm_types import BinaryReader, WasmFormatError

_I32_CONST, _END = 0x41, 0x0B


@dataclass(frozen=True)
class Segment:
    offset: int  # in linear memory
    data: bytes


def take_segments(wasm: bytes) -> tuple[bytes, tuple[Segment, ...]]:
    """`wasm` without its data segments, and the segments; `wasm` and none when they are not
    all of the form taken."""
    try:
        found = sections(wasm)
        data = find(found, DATA)
        if data is None or find(found, DATA_COUNT) is not None:
            return wasm, ()
        segments = _segments(data.body)
    except WasmFormatError:
        return wasm, ()  # what cannot be read here, wasm2c reads (and refuses) itself
    if segments is None:
        return wasm, ()
    return assemble(wasm[:HEADER], [s for s in found if s.id != DATA]), segments


def _segments(body: bytes) -> tuple[Segment, ...] | None:
    reader = BinaryReader(body)
    segments = []
    for _ in range(reader.uleb()):
        if reader.uleb() != 0 or reader.byte() != _I32_CONST:
            return None  # passive, in another memory, or at an offset not constant
        offset = _sleb32(reader) & 0xFFFFFFFF
        if reader.byte() != _END:
            return None
        length = reader.uleb()
        start = reader.at
        reader.skip(length)
        segments.append(Segment(offset, body[start:reader.at]))
    return tuple(segments)


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
