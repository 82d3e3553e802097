"""hyperfilter's Python SDK for plugins built with componentize-py.

A plugin module defines `TcpFilter` and `HttpFilter` classes (componentize-py looks for these
names); subclass the ones here, which forward everything, and override the hooks you need:

    from hyperfilter import HttpFilter as Base, TcpFilter, respond, forward_http, header

    class HttpFilter(Base):
        def on_headers(self, direction, headers, end_of_stream):
            if header(headers, "x-api-key") != b"secret":
                return respond(401, b"unauthorized")
            return forward_http()

Capabilities are imported from `wit_world.imports` (e.g. `from wit_world.imports import log`);
`hyperfilter plugin build` puts exactly the manifest's grants into the plugin's world.

Errors: a hook that raises, or returns something that is not a verdict the world can carry
(None, a str where bytes belong), fails its event under the plugin's failure policy; the
Python traceback goes to the sidecar's log and the fault says why in one line, with the file
and line (hyperfilter_errors.py). The helpers here check their arguments when called, so the
line is the plugin's call.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from hyperfilter_errors import guard_hooks, keep_sources
from hyperfilter_verdicts import (
    VerdictError,
    as_bytes,
    http_verdict,
    immediate_response,
    mutation,
    nothing,
    tcp_verdict,
)
from wit_world import exports
from wit_world.imports import types

__all__ = [
    "Direction", "Fields", "HttpFilter", "HttpVerdict", "StreamInfo", "TcpFilter", "TcpVerdict",
    "VerdictError", "answer", "answer_and_close", "close", "forward", "forward_http", "header",
    "header_values", "metadata", "replace", "replace_body", "reset", "respond",
]

Direction = types.Direction
StreamInfo = types.StreamInfo
TcpVerdict = types.TcpVerdict
HttpVerdict = types.HttpVerdict
Fields = list[tuple[str, bytes]]
# Headers as a verdict takes them: (name, value) pairs or a dict, values bytes.
HeaderInput = Iterable[tuple[str, bytes]] | Mapping[str, bytes]

keep_sources()


def forward() -> types.TcpVerdict:
    """Pass the bytes on unchanged."""
    return types.TcpVerdict_Forward()


def replace(data: bytes) -> types.TcpVerdict:
    """Pass `data` instead of the bytes received."""
    return types.TcpVerdict_Replace(as_bytes(data, "replace data"))


def close() -> types.TcpVerdict:
    """Drop the bytes and close the connection (FIN)."""
    return types.TcpVerdict_Close()


def reset() -> types.TcpVerdict:
    """Drop the bytes and reset the connection (RST)."""
    return types.TcpVerdict_Reset()


def answer(data: bytes) -> types.TcpVerdict:
    """Drop the bytes and send `data` toward the client; the connection stays open. From
    `on_open`: sent to the client before anything else (a banner)."""
    return types.TcpVerdict_Answer(as_bytes(data, "answer data"))


def answer_and_close(data: bytes) -> types.TcpVerdict:
    """Drop the bytes, send `data` toward the client, then close the connection (FIN)."""
    return types.TcpVerdict_AnswerAndClose(as_bytes(data, "answer_and_close data"))


def forward_http(set_headers: HeaderInput = (), remove_headers: Iterable[str] = (),
                 body: bytes | None = None) -> types.HttpVerdict:
    """Continue, setting and removing headers and, if `body` is given, replacing the body
    (when the body is streamed: this chunk)."""
    return types.HttpVerdict_Forward(mutation(set_headers, remove_headers, body))


def replace_body(body: bytes) -> types.HttpVerdict:
    """Continue with `body` instead of the body (or the chunk) received."""
    return forward_http(body=body)


def respond(status: int, body: bytes = b"", headers: HeaderInput = ()) -> types.HttpVerdict:
    """Answer the client now instead of forwarding."""
    return types.HttpVerdict_Respond(immediate_response(status, headers, body))


def header(fields: Fields, name: str) -> bytes | None:
    """The first value of header `name` (any case), or None."""
    name = name.lower()
    for key, value in fields:
        if key == name:
            return value
    return None


def header_values(fields: Fields, name: str) -> list[bytes]:
    """Every value of header `name` (any case), in order."""
    name = name.lower()
    return [value for key, value in fields if key == name]


def metadata(info: types.StreamInfo, key: str) -> str | None:
    """The stream's gRPC metadata entry `key` (set by the Envoy filter), or None."""
    return next((value for name, value in info.metadata if name == key), None)


class TcpFilter(exports.TcpFilter):
    """One instance per connection; the hooks a subclass defines are guarded (see Errors)."""

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        guard_hooks(cls, {"on_open": tcp_verdict, "on_data": tcp_verdict, "on_close": nothing})

    def on_open(self, info: types.StreamInfo) -> types.TcpVerdict:
        return forward()

    def on_data(self, direction: Direction, data: bytes, end_of_stream: bool) -> types.TcpVerdict:
        return forward()

    def on_close(self) -> None:
        return None


class HttpFilter(exports.HttpFilter):
    """One instance per request; the hooks a subclass defines are guarded (see Errors)."""

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        guard_hooks(cls, dict.fromkeys(("on_open", "on_headers", "on_body", "on_trailers"),
                                       http_verdict))

    def on_open(self, info: types.StreamInfo) -> types.HttpVerdict:
        return forward_http()

    def on_headers(self, direction: Direction, headers: Fields,
                   end_of_stream: bool) -> types.HttpVerdict:
        return forward_http()

    def on_body(self, direction: Direction, body: bytes, end_of_stream: bool) -> types.HttpVerdict:
        return forward_http()

    def on_trailers(self, direction: Direction, trailers: Fields) -> types.HttpVerdict:
        return forward_http()
