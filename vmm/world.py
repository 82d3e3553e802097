"""The hyperfilter world (plugins/wit/hyperfilter.wit) in canonical-ABI terms.

Which export serves which event, the canonical types of its parameters and result, and the
conversions between those values and `vmm.events`. A core module's verdict is lifted here,
its declared sizes checked against the plugin's limit (vmm/verdicts.py) before anything is
copied; what the host may then do with it is vmm/verdicts.py's to say.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from vmm.canonical import (
    BOOL,
    BYTES,
    STRING,
    U16,
    AbiError,
    Enum,
    List,
    Memory,
    Option,
    Record,
    Signature,
    Tuple,
    Variant,
    lift_text,
    lower_buffer,
)
from vmm.capabilities import interface_id
from vmm.events import (
    CLOSE,
    FORWARD,
    HTTP_FORWARD,
    RESET,
    Answer,
    AnswerAndClose,
    HttpBody,
    HttpForward,
    HttpHeaders,
    HttpOpen,
    HttpTrailers,
    HttpVerdict,
    Mutation,
    Replace,
    Respond,
    TcpClose,
    TcpData,
    TcpOpen,
    TcpVerdict,
    Verdict,
)
from vmm.verdicts import check_entries, check_header_bytes, check_size

DIRECTION = Enum("inbound", "outbound")
STREAM_INFO = Record(STRING, STRING, STRING, List(Tuple(STRING, STRING)))
FIELDS = List(Tuple(STRING, BYTES))
TCP_VERDICT = Variant(None, BYTES, None, None, BYTES, BYTES)
TCP_VERDICT_CASES = ("forward", "replace", "close", "reset", "answer", "answer-and-close")
MUTATION = Record(FIELDS, List(STRING), Option(BYTES))
MUTATION_FIELDS = ("set-headers", "remove-headers", "body")
IMMEDIATE_RESPONSE = Record(U16, FIELDS, BYTES)
IMMEDIATE_RESPONSE_FIELDS = ("status", "headers", "body")
HTTP_VERDICT = Variant(MUTATION, IMMEDIATE_RESPONSE)
HTTP_VERDICT_CASES = ("forward", "respond")
STREAM_INFO_FIELDS = ("source-address", "destination-address", "server-name", "metadata")

TYPES_INTERFACE = interface_id("types")


Lower = Callable[[Memory, Any], Sequence[int]]
Lift = Callable[[Memory, int | None, int], Verdict | None]  # memory, core result, max bytes


@dataclass(frozen=True)
class Export:
    """A function of the world's exports, and how an event becomes its core arguments and its
    core result a verdict (`lower`, `lift`: plain functions, as they run on every event).
    `lift` refuses a verdict declaring more than the bytes it is given (VerdictProblem)."""

    interface: str
    function: str
    signature: Signature
    lower: Lower
    lift: Lift

    @property
    def interface_id(self) -> str:
        return interface_id(self.interface)

    @property
    def core_name(self) -> str:
        """The export's name in a core module (the canonical-ABI name mangling)."""
        return f"{self.interface_id}#{self.function}"

    @property
    def post_return_name(self) -> str:
        return f"cabi_post_{self.core_name}"


# The lowerings below are what STREAM_INFO, BYTES and FIELDS.lower_flat do, written out: the
# same allocations in the same order, the same bytes (tests/unit/test_canonical.py checks),
# without the generic layers on every event. A list of pairs is an array of records (first
# pointer, first length, second pointer, second length), allocated before the strings, packed
# here and written in one piece instead of four writes a pair.
_PAIR_RECORD = struct.Struct("<IIII")
_METADATA = STREAM_INFO.fields[3]
assert isinstance(_METADATA, List) and FIELDS.stride == _METADATA.stride == _PAIR_RECORD.size


def _lower_pairs(mem: Memory, pairs: Sequence[tuple[str, Any]], text_values: bool
                 ) -> tuple[int, int]:
    if not pairs:
        return 0, 0
    records = bytearray(len(pairs) * _PAIR_RECORD.size)
    array = mem.realloc(FIELDS.element.align, len(records))
    for i, (name, value) in enumerate(pairs):
        _PAIR_RECORD.pack_into(records, i * _PAIR_RECORD.size,
                               *lower_buffer(mem, name.encode("utf-8")),
                               *lower_buffer(mem, value.encode("utf-8") if text_values
                                             else bytes(value)))
    mem.write(array, bytes(records))
    return array, len(pairs)


def _lower_open(mem: Memory, event: TcpOpen | HttpOpen) -> Sequence[int]:
    info = event.info
    return (*lower_buffer(mem, info.source_address.encode("utf-8")),
            *lower_buffer(mem, info.destination_address.encode("utf-8")),
            *lower_buffer(mem, info.server_name.encode("utf-8")),
            *_lower_pairs(mem, info.metadata, text_values=True))


def _lower_data(mem: Memory, event: TcpData) -> Sequence[int]:
    return (event.direction, *lower_buffer(mem, bytes(event.data)), event.end_of_stream)


def _lower_body(mem: Memory, event: HttpBody) -> Sequence[int]:
    return (event.direction, *lower_buffer(mem, bytes(event.body)), event.end_of_stream)


def _lower_fields(mem: Memory, fields: Sequence[tuple[str, bytes]]) -> tuple[int, int]:
    return _lower_pairs(mem, fields, text_values=False)


def _lower_headers(mem: Memory, event: HttpHeaders) -> Sequence[int]:
    return (event.direction, *_lower_fields(mem, event.headers), event.end_of_stream)


def _lower_trailers(mem: Memory, event: HttpTrailers) -> Sequence[int]:
    return (event.direction, *_lower_fields(mem, event.trailers))


def _lower_nothing(mem: Memory, event: TcpClose) -> Sequence[int]:
    return ()


# tcp-verdict cases by tag: the verdict itself, or the type that wraps the case's bytes.
_TCP_VERDICTS: tuple[TcpVerdict | type[Replace | Answer | AnswerAndClose], ...] = (
    FORWARD, Replace, CLOSE, RESET, Answer, AnswerAndClose)
assert len(_TCP_VERDICTS) == len(TCP_VERDICT_CASES) == len(TCP_VERDICT.cases)
# tcp-verdict in memory: tag u8 @0, a case's list<u8> (pointer, length) @4: read as one.
_TCP_VERDICT_LAYOUT = struct.Struct("<B3xII")
assert (TCP_VERDICT.size, TCP_VERDICT.payload_offset) == (_TCP_VERDICT_LAYOUT.size, 4)


def _lift_tcp(mem: Memory, raw: int | None, max_bytes: int) -> TcpVerdict:
    tag, ptr, length = _TCP_VERDICT_LAYOUT.unpack(mem.read((raw or 0) & 0xFFFFFFFF, 12))
    if tag >= len(_TCP_VERDICTS):
        raise AbiError(f"variant tag {tag} is out of range ({len(_TCP_VERDICTS)} cases)")
    verdict = _TCP_VERDICTS[tag]
    if isinstance(verdict, type):
        check_size(length, 0, max_bytes)
        return verdict(mem.read(ptr, length))
    return verdict


# http-verdict in memory, 32 bytes: tag u8 @0, then forward's mutation @4: set-headers
# (pointer, length), remove-headers (pointer, length), the body option's tag u8 @20 and its
# list<u8> @24; or respond's immediate-response @4: status u16, headers @8, body @16. The most
# common verdict, forward with nothing changed, is all zeros up to the body's payload.
_HTTP_FORWARD_LAYOUT = struct.Struct("<B3xIIIIB3xII")
_RESPOND_LAYOUT = struct.Struct("<4xH2xIIII")
_STRING_RECORD = struct.Struct("<II")
_UNCHANGED = (0, 0, 0, 0, 0, 0)
assert _HTTP_FORWARD_LAYOUT.size == HTTP_VERDICT.size and HTTP_VERDICT.payload_offset == 4
assert MUTATION.offsets == [0, 8, 16] and IMMEDIATE_RESPONSE.offsets == [0, 4, 12]
assert List(STRING).stride == _STRING_RECORD.size


def _records(mem: Memory, ptr: int, count: int, record: struct.Struct,
             what: str) -> list[tuple[int, ...]]:
    """A list's (pointer, length) records, its length checked before anything is read."""
    check_entries(count, what)
    if ptr % FIELDS.element.align:
        raise AbiError("list pointer is misaligned")
    return list(record.iter_unpack(mem.read(ptr, count * record.size)))


def _declared(records: list[tuple[int, ...]]) -> int:
    """The bytes a list's records point at, each counted as often as it is named."""
    return sum(length for record in records for length in record[1::2])


def _fields(mem: Memory, records: list[tuple[int, ...]]) -> tuple[tuple[str, bytes], ...]:
    return tuple((lift_text(mem, name, name_length), mem.read(value, value_length))
                 for name, name_length, value, value_length in records)


def _lift_http(mem: Memory, raw: int | None, max_bytes: int) -> HttpVerdict:
    head = mem.read((raw or 0) & 0xFFFFFFFF, _HTTP_FORWARD_LAYOUT.size)
    tag, *mutation = _HTTP_FORWARD_LAYOUT.unpack(head)
    if tag == 0:
        set_ptr, set_count, remove_ptr, remove_count, body_tag, body_ptr, body_length = mutation
        if (tag, *mutation[:5]) == _UNCHANGED:
            return HTTP_FORWARD
        if body_tag > 1:
            raise AbiError(f"variant tag {body_tag} is out of range (2 cases)")
        sets = _records(mem, set_ptr, set_count, _PAIR_RECORD, "set-headers")
        removes = _records(mem, remove_ptr, remove_count, _STRING_RECORD, "remove-headers")
        body_length *= body_tag
        set_bytes = _declared(sets)
        check_size(set_bytes + _declared(removes) + body_length, set_count + remove_count,
                   max_bytes)
        check_header_bytes(set_bytes, "the headers it sets")
        return HttpForward(Mutation(
            _fields(mem, sets), tuple(lift_text(mem, *record) for record in removes),
            mem.read(body_ptr, body_length) if body_tag else None))
    if tag == 1:
        status, headers_ptr, count, body_ptr, body_length = _RESPOND_LAYOUT.unpack_from(head)
        headers = _records(mem, headers_ptr, count, _PAIR_RECORD, "respond headers")
        header_bytes = _declared(headers)
        check_size(header_bytes + body_length, count, max_bytes)
        check_header_bytes(header_bytes, "respond headers")
        return Respond(status, _fields(mem, headers), mem.read(body_ptr, body_length))
    raise AbiError(f"variant tag {tag} is out of range (2 cases)")


def _lift_nothing(mem: Memory, raw: int | None, max_bytes: int) -> None:
    return None


EXPORTS: dict[type, Export] = {
    TcpOpen: Export("tcp-filter", "on-open", Signature([STREAM_INFO], TCP_VERDICT),
                    _lower_open, _lift_tcp),
    TcpData: Export("tcp-filter", "on-data", Signature([DIRECTION, BYTES, BOOL], TCP_VERDICT),
                    _lower_data, _lift_tcp),
    TcpClose: Export("tcp-filter", "on-close", Signature([], None), _lower_nothing, _lift_nothing),
    HttpOpen: Export("http-filter", "on-open", Signature([STREAM_INFO], HTTP_VERDICT),
                     _lower_open, _lift_http),
    HttpHeaders: Export("http-filter", "on-headers",
                        Signature([DIRECTION, FIELDS, BOOL], HTTP_VERDICT),
                        _lower_headers, _lift_http),
    HttpBody: Export("http-filter", "on-body", Signature([DIRECTION, BYTES, BOOL], HTTP_VERDICT),
                     _lower_body, _lift_http),
    HttpTrailers: Export("http-filter", "on-trailers",
                         Signature([DIRECTION, FIELDS], HTTP_VERDICT),
                         _lower_trailers, _lift_http),
}


def tcp_verdict(case: int, payload: Any) -> TcpVerdict:
    verdict = _TCP_VERDICTS[case]
    return verdict(bytes(payload)) if isinstance(verdict, type) else verdict


def fields(items: list[tuple[str, bytes]]) -> tuple[tuple[str, bytes], ...]:
    return tuple((name, bytes(value)) for name, value in items)


def http_verdict(case: int, payload: Any) -> HttpVerdict:
    if case == 0:
        set_headers, remove_headers, body = payload
        return HttpForward(Mutation(fields(set_headers), tuple(remove_headers), body))
    status, headers, body = payload
    return Respond(status, fields(headers), body)
