"""The hyperfilter world (plugins/wit/hyperfilter.wit) in canonical-ABI terms.

Which export serves which event, the canonical types of its parameters and result, and the
conversions between those values and `vmm.events`. Also the checks every verdict passes
before the host acts on it, whichever backend produced it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from vmm.canonical import (
    BOOL,
    BYTES,
    STRING,
    U16,
    Enum,
    List,
    Option,
    Record,
    Signature,
    Tuple,
    Variant,
)
from vmm.capabilities import interface_id
from vmm.events import (
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
    StreamInfo,
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


@dataclass(frozen=True)
class Export:
    """A function of the world's exports."""

    interface: str
    function: str
    signature: Signature

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


EXPORTS: dict[type, Export] = {
    TcpOpen: Export("tcp-filter", "on-open", Signature([STREAM_INFO], TCP_VERDICT)),
    TcpData: Export("tcp-filter", "on-data", Signature([DIRECTION, BYTES, BOOL], TCP_VERDICT)),
    TcpClose: Export("tcp-filter", "on-close", Signature([], None)),
    HttpOpen: Export("http-filter", "on-open", Signature([STREAM_INFO], HTTP_VERDICT)),
    HttpHeaders: Export(
        "http-filter", "on-headers", Signature([DIRECTION, FIELDS, BOOL], HTTP_VERDICT)
    ),
    HttpBody: Export("http-filter", "on-body", Signature([DIRECTION, BYTES, BOOL], HTTP_VERDICT)),
    HttpTrailers: Export(
        "http-filter", "on-trailers", Signature([DIRECTION, FIELDS], HTTP_VERDICT)
    ),
}


def info_value(info: StreamInfo) -> tuple[str, str, list[tuple[str, str]]]:
    return (info.source_address, info.destination_address, list(info.metadata))


def event_args(event: Event) -> tuple[Any, ...]:
    """The export's arguments for `event`, as canonical values."""
    match event:
        case TcpOpen(info) | HttpOpen(info):
            return (info_value(info),)
        case TcpData(direction, data, eos):
            return (int(direction), data, eos)
        case TcpClose():
            return ()
        case HttpHeaders(direction, headers, eos):
            return (int(direction), list(headers), eos)
        case HttpBody(direction, body, eos):
            return (int(direction), body, eos)
        case HttpTrailers(direction, trailers):
            return (int(direction), list(trailers))
    raise TypeError(f"not an event: {event!r}")


_TCP_VERDICTS: tuple[type[TcpVerdict], ...] = (Forward, Replace, Close, Reset)


def tcp_verdict(case: int, payload: Any) -> TcpVerdict:
    cls = _TCP_VERDICTS[case]
    return Replace(payload) if cls is Replace else cls()


def fields(items: list[tuple[str, bytes]]) -> tuple[tuple[str, bytes], ...]:
    return tuple((name, bytes(value)) for name, value in items)


def http_verdict(case: int, payload: Any) -> HttpVerdict:
    if case == 0:
        set_headers, remove_headers, body = payload
        return HttpForward(Mutation(fields(set_headers), tuple(remove_headers), body))
    status, headers, body = payload
    return Respond(status, fields(headers), body)


def verdict_from_value(event: Event, value: Any) -> Verdict | None:
    """The verdict for `event` from the export's canonical result `(case, payload)`."""
    if value is None:
        return None
    case, payload = value
    if isinstance(event, TcpOpen | TcpData):
        return tcp_verdict(case, payload)
    return http_verdict(case, payload)


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


def check_verdict(event: Event, verdict: Verdict | None) -> Verdict | None:
    """Refuse what a hostile plugin could use to break the protocol: wrong verdict kind for the
    event, malformed header names, header values with line breaks, impossible status codes."""
    if isinstance(event, TcpClose):
        return None
    tcp = isinstance(event, TcpOpen | TcpData)
    if tcp != isinstance(verdict, _TCP_VERDICTS):
        raise VerdictProblem(
            f"{type(verdict).__name__} is not a verdict for {type(event).__name__}")
    if isinstance(verdict, HttpForward):
        if verdict.mutation.body is not None and isinstance(event, HttpOpen | HttpTrailers):
            raise VerdictProblem(f"{type(event).__name__} cannot have its verdict replace a body")
        _check_fields(verdict.mutation.set_headers, "set-headers")
        for name in verdict.mutation.remove_headers:
            if not _HEADER_NAME.fullmatch(name):
                raise VerdictProblem(f"remove-headers: {name[:64]!r} is not a header name")
    elif isinstance(verdict, Respond):
        if not 200 <= verdict.status <= 599:
            raise VerdictProblem(f"status {verdict.status} is not between 200 and 599")
        _check_fields(verdict.headers, "respond headers")
    return verdict
