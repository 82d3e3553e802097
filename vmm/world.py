"""The hyperfilter world (plugins/wit/hyperfilter.wit) in canonical-ABI terms.

Which export serves which event, the canonical types of its parameters and result, and the
conversions between those values and `vmm.events`. Also the checks every verdict passes
before the host acts on it, whichever backend produced it.
"""

from __future__ import annotations

import re
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
    lower_buffer,
)
from vmm.capabilities import interface_id
from vmm.events import (
    CLOSE,
    FORWARD,
    HTTP_FORWARD,
    RESET,
    Close,
    Event,
    Forward,
    HttpBody,
    HttpForward,
    HttpHeaders,
    HttpOpen,
    HttpTrailers,
    HttpVerdict,
    Mutation,
    Replace,
    Reset,
    Respond,
    TcpClose,
    TcpData,
    TcpOpen,
    TcpVerdict,
    Verdict,
)

DIRECTION = Enum("inbound", "outbound")
STREAM_INFO = Record(STRING, STRING, List(Tuple(STRING, STRING)))
FIELDS = List(Tuple(STRING, BYTES))
TCP_VERDICT = Variant(None, BYTES, None, None)
TCP_VERDICT_CASES = ("forward", "replace", "close", "reset")
MUTATION = Record(FIELDS, List(STRING), Option(BYTES))
MUTATION_FIELDS = ("set-headers", "remove-headers", "body")
IMMEDIATE_RESPONSE = Record(U16, FIELDS, BYTES)
IMMEDIATE_RESPONSE_FIELDS = ("status", "headers", "body")
HTTP_VERDICT = Variant(MUTATION, IMMEDIATE_RESPONSE)
HTTP_VERDICT_CASES = ("forward", "respond")
STREAM_INFO_FIELDS = ("source-address", "destination-address", "metadata")

TYPES_INTERFACE = interface_id("types")


Lower = Callable[[Memory, Any], Sequence[int]]
Lift = Callable[[Memory, int | None], Verdict | None]


@dataclass(frozen=True)
class Export:
    """A function of the world's exports, and how an event becomes its core arguments and its
    core result a verdict (`lower`, `lift`: plain functions, as they run on every event)."""

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
assert FIELDS.stride == STREAM_INFO.fields[2].stride == _PAIR_RECORD.size


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


_TCP_VERDICTS: tuple[TcpVerdict | None, ...] = (FORWARD, None, CLOSE, RESET)
# tcp-verdict in memory: tag u8 @0, replace's list<u8> (pointer, length) @4: read as one.
_TCP_VERDICT_LAYOUT = struct.Struct("<B3xII")
assert (TCP_VERDICT.size, TCP_VERDICT.payload_offset) == (_TCP_VERDICT_LAYOUT.size, 4)


def _lift_tcp(mem: Memory, raw: int | None) -> TcpVerdict:
    tag, ptr, length = _TCP_VERDICT_LAYOUT.unpack(mem.read((raw or 0) & 0xFFFFFFFF, 12))
    if tag == 1:
        return Replace(mem.read(ptr, length))
    if tag < len(_TCP_VERDICTS):
        return _TCP_VERDICTS[tag]  # type: ignore[return-value]
    raise AbiError(f"variant tag {tag} is out of range (4 cases)")


# http-verdict in memory: tag u8 @0, forward's mutation @4: set-headers (pointer, length),
# remove-headers (pointer, length), the body option's tag u8 @20. The most common verdict,
# forward with nothing changed, is all zeros there: read in one piece, and recognised.
_HTTP_FORWARD_LAYOUT = struct.Struct("<B3xIIIIB")
_UNCHANGED = (0, 0, 0, 0, 0, 0)
assert (HTTP_VERDICT.payload_offset, MUTATION.offsets) == (4, [0, 8, 16])


def _lift_http(mem: Memory, raw: int | None) -> HttpVerdict:
    ptr = (raw or 0) & 0xFFFFFFFF
    try:
        if _HTTP_FORWARD_LAYOUT.unpack(mem.read(ptr, _HTTP_FORWARD_LAYOUT.size)) == _UNCHANGED:
            return HTTP_FORWARD
    except AbiError:
        pass  # the full lifting below says what is wrong
    return http_verdict(*HTTP_VERDICT.load(mem, ptr))


def _lift_nothing(mem: Memory, raw: int | None) -> None:
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
    if case == 1:
        return Replace(payload)
    return _TCP_VERDICTS[case]  # type: ignore[return-value]


def fields(items: list[tuple[str, bytes]]) -> tuple[tuple[str, bytes], ...]:
    return tuple((name, bytes(value)) for name, value in items)


def http_verdict(case: int, payload: Any) -> HttpVerdict:
    if case == 0:
        set_headers, remove_headers, body = payload
        return HttpForward(Mutation(fields(set_headers), tuple(remove_headers), body))
    status, headers, body = payload
    return Respond(status, fields(headers), body)


# --- verdict checks ---------------------------------------------------------------------------

_HEADER_NAME = re.compile(r":?[a-z0-9!#$%&'*+\-.^_`|~]{1,256}")
_BAD_VALUE = re.compile(rb"[\x00\r\n]")


class VerdictProblem(ValueError):
    """Why a verdict cannot be used."""


def _check_fields(items: tuple[tuple[str, bytes], ...], what: str) -> None:
    for name, value in items:
        if not _HEADER_NAME.fullmatch(name):
            raise VerdictProblem(f"{what}: {name[:64]!r} is not a lower-case header name")
        if _BAD_VALUE.search(value):
            raise VerdictProblem(f"{what}: value of {name!r} contains CR, LF or NUL")


_TCP_EVENTS = (TcpOpen, TcpData)
_VERDICT_PROTOCOL = {Forward: "tcp", Replace: "tcp", Close: "tcp", Reset: "tcp",
                     HttpForward: "http", Respond: "http"}


def check_verdict(event: Event, verdict: Verdict | None) -> Verdict | None:
    """Refuse what a hostile plugin could use to break the protocol: wrong verdict kind for the
    event, malformed header names, header values with line breaks, impossible status codes."""
    event_type = type(event)
    if event_type is TcpClose:
        return None
    protocol = _VERDICT_PROTOCOL.get(type(verdict))
    if protocol != ("tcp" if event_type in _TCP_EVENTS else "http"):
        raise VerdictProblem(
            f"{type(verdict).__name__} is not a verdict for {event_type.__name__}")
    if protocol == "tcp":
        return verdict
    if isinstance(verdict, HttpForward):
        if verdict.mutation.body is not None and event_type in (HttpOpen, HttpTrailers):
            raise VerdictProblem(f"{event_type.__name__} cannot have its verdict replace a body")
        _check_fields(verdict.mutation.set_headers, "set-headers")
        for name in verdict.mutation.remove_headers:
            if not _HEADER_NAME.fullmatch(name):
                raise VerdictProblem(f"remove-headers: {name[:64]!r} is not a header name")
    elif isinstance(verdict, Respond):
        if not 200 <= verdict.status <= 599:
            raise VerdictProblem(f"status {verdict.status} is not between 200 and 599")
        _check_fields(verdict.headers, "respond headers")
    return verdict
