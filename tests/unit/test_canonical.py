"""The host's canonical ABI: layouts as the component model specifies them, round trips, and
refusal of what a hostile plugin could hand back."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from vmm.canonical import (
    BYTES,
    S64,
    STRING,
    U32,
    AbiError,
    Enum,
    List,
    Option,
    Result,
    Signature,
    Tuple,
)
from vmm.capabilities.shared_state import STATE_ERROR
from vmm.events import (
    Direction,
    Event,
    HttpBody,
    HttpHeaders,
    HttpOpen,
    HttpTrailers,
    StreamInfo,
    TcpData,
    TcpOpen,
)
from vmm.world import (
    EXPORTS,
    FIELDS,
    HTTP_VERDICT,
    MUTATION,
    STREAM_INFO,
    TCP_VERDICT,
    http_verdict,
)


class FlatMemory:
    """A linear memory in a bytearray, with a bump allocator standing in for cabi_realloc."""

    def __init__(self, size: int = 1 << 16) -> None:
        self.data = bytearray(size)
        self.top = 1024
        self.allocations: list[tuple[int, int]] = []

    def read(self, ptr: int, length: int) -> bytes:
        if ptr < 0 or length < 0 or ptr + length > len(self.data):
            raise AbiError("out of bounds")
        return bytes(self.data[ptr:ptr + length])

    def write(self, ptr: int, data: bytes) -> None:
        self.data[ptr:ptr + len(data)] = data

    def realloc(self, align: int, size: int) -> int:
        self.top = (self.top + align - 1) & ~(align - 1)
        ptr, self.top = self.top, self.top + size
        self.allocations.append((ptr, size))
        return ptr


def test_layouts_follow_the_canonical_abi() -> None:
    # variant: u8 tag, payload at the payload's alignment, size rounded to the alignment
    assert (TCP_VERDICT.size, TCP_VERDICT.align, TCP_VERDICT.payload_offset) == (12, 4, 4)
    # record { list, list, option<list<u8>> }: 8 + 8 + (tag + pad + 8)
    assert (MUTATION.size, MUTATION.align) == (28, 4)
    assert (HTTP_VERDICT.size, HTTP_VERDICT.payload_offset) == (32, 4)
    # result<s64, enum>: 8-byte alignment puts the payload at 8
    increment_result = Result(S64, STATE_ERROR)
    assert (increment_result.size, increment_result.align, increment_result.payload_offset) == \
        (16, 8, 8)
    assert Option(BYTES).size == 12
    assert Tuple(STRING, BYTES).size == FIELDS.stride == 16


def test_flattening_decides_between_flat_values_and_memory() -> None:
    assert STREAM_INFO.flat == ("i32",) * 8
    on_data = EXPORTS[next(t for t in EXPORTS if t.__name__ == "TcpData")]
    assert on_data.signature.core_export() == (["i32"] * 4, ["i32"])
    assert on_data.core_name == "hyperfilter:plugin/tcp-filter@0.1.0#on-data"
    # an import whose result does not fit one core value gets a return pointer
    increment = Signature([STRING, S64, U32], Result(S64, STATE_ERROR))
    assert increment.core_import() == (["i32", "i32", "i64", "i32", "i32"], [])
    # a variant's flat form joins its cases: i32 and i64 slots widen to i64
    assert Result(S64, STATE_ERROR).flat == ("i32", "i64")


def test_values_round_trip_through_memory() -> None:
    mem = FlatMemory()
    forward = (0, ([("x-user", b"alice")], ["x-api-key"], b"new body"))
    respond = (1, (401, [("content-type", b"text/plain")], b"no"))
    for value in (forward, respond):
        HTTP_VERDICT.store(mem, 64, value)
        case, payload = HTTP_VERDICT.load(mem, 64)
        assert case == value[0]
        assert [list(x) if isinstance(x, list) else x for x in payload] == list(value[1])


def test_flat_lowering_allocates_each_string_separately() -> None:
    """A plugin's allocator may free each string on its own; they must not share a block."""
    mem = FlatMemory()
    info = ("10.0.0.1:5000", "10.0.0.2:80", "db.example", [("k", "v")])
    flat = STREAM_INFO.lower_flat(mem, info)
    assert len(flat) == 8
    assert STREAM_INFO.lift_flat(mem, iter(flat)) == info
    assert len(mem.allocations) == 6  # two addresses, the name, the list array, its key, value


def test_empty_lists_are_null_with_zero_length() -> None:
    mem = FlatMemory()
    assert BYTES.lower_flat(mem, b"") == [0, 0]
    assert List(STRING).lower_flat(mem, []) == [0, 0]
    assert mem.allocations == []


def test_hostile_values_raise_abi_errors() -> None:
    mem = FlatMemory()
    mem.write(0, bytes([9]))  # a tag past the last case
    with pytest.raises(AbiError, match="tag 9 is out of range"):
        TCP_VERDICT.load(mem, 0)
    mem.write(100, b"\xff\xfe")
    with pytest.raises(AbiError, match="UTF-8"):
        STRING.lift_flat(mem, iter([100, 2]))
    with pytest.raises(AbiError, match="out of bounds"):
        BYTES.lift_flat(mem, iter([len(mem.data) - 4, 64]))
    with pytest.raises(AbiError, match="out of range"):
        Enum("a", "b").lift_flat(mem, iter([2]))
    with pytest.raises(AbiError, match="does not fit"):
        U32.lower_flat(mem, 1 << 32)


def test_lengths_wider_than_memory_are_refused_before_reading() -> None:
    mem = FlatMemory()
    with pytest.raises(AbiError):
        List(Tuple(STRING, BYTES)).lift_flat(mem, iter([16, 0x0FFFFFFF]))



@pytest.mark.parametrize("fields", [(), ((":method", b"GET"), ("x-\u00e9", b""), ("", b"v" * 7))])
@pytest.mark.parametrize("event", [
    lambda fields: HttpHeaders(Direction.OUTBOUND, fields, False),
    lambda fields: HttpTrailers(Direction.OUTBOUND, fields)])
def test_header_events_lay_fields_out_as_the_generic_lowering_does(fields: tuple,
                                                                   event: Callable) -> None:
    """The world packs a header list in one piece; memory and allocations must be exactly
    what FIELDS' own lowering makes of the same list."""
    generic, packed = FlatMemory(), FlatMemory()
    fields_flat = FIELDS.lower_flat(generic, list(fields))
    lowered = list(EXPORTS[type(event(fields))].lower(packed, event(fields)))
    assert lowered[:3] == [1, *fields_flat]
    assert packed.data == generic.data and packed.allocations == generic.allocations


@pytest.mark.parametrize("layout", [
    bytes(32),  # forward, nothing changed: recognised without lifting it field by field
    b"\0\xaa\xbb\xcc" + bytes(16) + b"\0\xdd\xee\xff" + b"\x07" * 8,  # padding, unused body
    b"\0" + bytes(3) + (2049).to_bytes(4, "little") + bytes(24),  # empty list, odd pointer
    b"\0" + bytes(19) + b"\1" + bytes(3) + (2048).to_bytes(4, "little") + (3).to_bytes(4, "little"),
    b"\1" + bytes(3) + (404).to_bytes(2, "little") + bytes(26),  # respond
    b"\2" + bytes(31),  # no such case
])
def test_http_verdicts_lift_as_the_generic_lifting_does(layout: bytes) -> None:
    memory = FlatMemory()
    memory.data[1000:1000 + len(layout)] = layout
    memory.data[2048:2051] = b"abc"
    lift = EXPORTS[HttpHeaders].lift
    try:
        expected = http_verdict(*HTTP_VERDICT.load(memory, 1000))
    except AbiError as error:
        with pytest.raises(AbiError, match=re.escape(str(error))):
            lift(memory, 1000, len(memory.data))
    else:
        assert lift(memory, 1000, len(memory.data)) == expected


def test_an_http_verdict_at_the_end_of_memory_is_refused_the_same_way() -> None:
    memory = FlatMemory(size=1024)
    with pytest.raises(AbiError):
        EXPORTS[HttpHeaders].lift(memory, 1024 - 8, len(memory.data))


INFO = StreamInfo("10.0.0.1:5000", "", "d\u00e9.example",
                  (("x-hyperfilter-chain", "c"), ("x-t\u00e9", "")))


@pytest.mark.parametrize(("event", "generic"), [
    (TcpData(Direction.INBOUND, b"bytes", True), lambda m: [0, *BYTES.lower_flat(m, b"bytes"), 1]),
    (TcpData(Direction.OUTBOUND, b"", False), lambda m: [1, 0, 0, 0]),
    (HttpBody(Direction.OUTBOUND, b"body", False), lambda m: [1, *BYTES.lower_flat(m, b"body"),
                                                              0]),
    (TcpOpen(INFO), lambda m: STREAM_INFO.lower_flat(m, (INFO.source_address,
                                                         INFO.destination_address,
                                                         INFO.server_name,
                                                         list(INFO.metadata)))),
    (HttpOpen(StreamInfo()), lambda m: STREAM_INFO.lower_flat(m, ("", "", "", []))),
])
def test_events_are_lowered_as_the_generic_lowering_does(event: Event,
                                                         generic: Callable) -> None:
    expected_memory, memory = FlatMemory(), FlatMemory()
    expected = list(generic(expected_memory))
    assert list(EXPORTS[type(event)].lower(memory, event)) == expected
    assert memory.data == expected_memory.data
    assert memory.allocations == expected_memory.allocations
