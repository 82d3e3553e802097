"""Events delivered to a plugin and the verdicts it returns: the Python face of the WIT world.

Names follow plugins/wit/hyperfilter.wit one to one, so a reader can hold the two side by side.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

Fields = tuple[tuple[str, bytes], ...]
"""HTTP header or trailer fields: lower-case name, raw value."""


class Direction(enum.IntEnum):
    """Which way bytes travel; the values are the WIT enum's discriminants."""

    INBOUND = 0  # client → upstream: TCP read data, the HTTP request
    OUTBOUND = 1  # upstream → client: TCP write data, the HTTP response


@dataclass(frozen=True, slots=True)
class StreamInfo:
    source_address: str = ""
    destination_address: str = ""
    server_name: str = ""  # the TLS SNI, where Envoy knows it
    metadata: tuple[tuple[str, str], ...] = ()


# --- TCP -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TcpOpen:
    info: StreamInfo


@dataclass(frozen=True, slots=True)
class TcpData:
    direction: Direction
    data: bytes
    end_of_stream: bool


@dataclass(frozen=True, slots=True)
class TcpClose:
    pass


@dataclass(frozen=True, slots=True)
class Forward:
    """Pass the bytes on unchanged."""


@dataclass(frozen=True, slots=True)
class Replace:
    """Pass these bytes instead (from on-open: send them upstream first)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Close:
    """Drop the bytes and close the connection with FIN."""


@dataclass(frozen=True, slots=True)
class Reset:
    """Drop the bytes and reset the connection."""


@dataclass(frozen=True, slots=True)
class Answer:
    """Drop the bytes and send these toward the client; the connection stays open."""

    data: bytes


@dataclass(frozen=True, slots=True)
class AnswerAndClose:
    """Drop the bytes, send these toward the client, then close the connection with FIN."""

    data: bytes


TcpVerdict = Forward | Replace | Close | Reset | Answer | AnswerAndClose

# --- HTTP ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HttpOpen:
    info: StreamInfo


@dataclass(frozen=True, slots=True)
class HttpHeaders:
    direction: Direction
    headers: Fields
    end_of_stream: bool


@dataclass(frozen=True, slots=True)
class HttpBody:
    direction: Direction
    body: bytes
    end_of_stream: bool


@dataclass(frozen=True, slots=True)
class HttpTrailers:
    direction: Direction
    trailers: Fields


@dataclass(frozen=True, slots=True)
class Mutation:
    set_headers: Fields = ()
    remove_headers: tuple[str, ...] = ()
    body: bytes | None = None

    @property
    def is_empty(self) -> bool:
        return not self.set_headers and not self.remove_headers and self.body is None


@dataclass(frozen=True, slots=True)
class HttpForward:
    """Continue, applying the mutation."""

    mutation: Mutation = field(default_factory=Mutation)


@dataclass(frozen=True, slots=True)
class Respond:
    """Stop processing and answer the client."""

    status: int
    headers: Fields = ()
    body: bytes = b""


HttpVerdict = HttpForward | Respond

TcpEvent = TcpOpen | TcpData | TcpClose
HttpEvent = HttpOpen | HttpHeaders | HttpBody | HttpTrailers
Event = TcpEvent | HttpEvent
Verdict = TcpVerdict | HttpVerdict

FORWARD = Forward()
CLOSE = Close()
RESET = Reset()
HTTP_FORWARD = HttpForward()


class EventKind(enum.Enum):
    """The names a manifest uses to say which events a plugin wants."""

    TCP_OPEN = "tcp.open"
    TCP_DATA = "tcp.data"
    TCP_CLOSE = "tcp.close"
    HTTP_OPEN = "http.open"
    HTTP_REQUEST_HEADERS = "http.request-headers"
    HTTP_REQUEST_BODY = "http.request-body"
    HTTP_REQUEST_TRAILERS = "http.request-trailers"
    HTTP_RESPONSE_HEADERS = "http.response-headers"
    HTTP_RESPONSE_BODY = "http.response-body"
    HTTP_RESPONSE_TRAILERS = "http.response-trailers"

    # Members are singletons compared by identity; hashing by identity keeps the set and dict
    # lookups made for every event in C (Enum's own __hash__ is Python code).
    __hash__ = object.__hash__

    @property
    def protocol(self) -> str:
        return self.value.split(".", 1)[0]


_BY_DIRECTION = {
    HttpHeaders: (EventKind.HTTP_REQUEST_HEADERS, EventKind.HTTP_RESPONSE_HEADERS),
    HttpBody: (EventKind.HTTP_REQUEST_BODY, EventKind.HTTP_RESPONSE_BODY),
    HttpTrailers: (EventKind.HTTP_REQUEST_TRAILERS, EventKind.HTTP_RESPONSE_TRAILERS),
}
_FIXED = {TcpOpen: EventKind.TCP_OPEN, TcpData: EventKind.TCP_DATA,
          TcpClose: EventKind.TCP_CLOSE, HttpOpen: EventKind.HTTP_OPEN}


def kind_of(event: Event) -> EventKind:
    fixed = _FIXED.get(type(event))
    if fixed is not None:
        return fixed
    return _BY_DIRECTION[type(event)][event.direction]  # type: ignore[union-attr]


def kinds_of(event_type: type) -> tuple[EventKind, ...]:
    """The manifest event names an event type can stand for (HTTP ones per direction)."""
    fixed = _FIXED.get(event_type)
    return (fixed,) if fixed is not None else _BY_DIRECTION[event_type]
