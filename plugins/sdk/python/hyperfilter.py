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
"""

from __future__ import annotations

from wit_world import exports
from wit_world.imports import types

Direction = types.Direction
Fields = list[tuple[str, bytes]]


def forward() -> types.TcpVerdict:
    """Pass the bytes on unchanged."""
    return types.TcpVerdict_Forward()


def replace(data: bytes) -> types.TcpVerdict:
    """Pass `data` instead of the bytes received."""
    return types.TcpVerdict_Replace(data)


def close() -> types.TcpVerdict:
    """Drop the bytes and close the connection (FIN)."""
    return types.TcpVerdict_Close()


def reset() -> types.TcpVerdict:
    """Drop the bytes and reset the connection (RST)."""
    return types.TcpVerdict_Reset()


def forward_http(set_headers: Fields = (), remove_headers: list[str] = (),  # type: ignore[assignment]
                 body: bytes | None = None) -> types.HttpVerdict:
    """Continue, setting and removing headers and, if `body` is given, replacing the body."""
    return types.HttpVerdict_Forward(types.Mutation(list(set_headers), list(remove_headers), body))


def respond(status: int, body: bytes = b"", headers: Fields = ()) -> types.HttpVerdict:  # type: ignore[assignment]
    """Answer the client now instead of forwarding."""
    return types.HttpVerdict_Respond(types.ImmediateResponse(status, list(headers), body))


def header(fields: Fields, name: str) -> bytes | None:
    """The value of header `name` (lower-case), or None."""
    for key, value in fields:
        if key == name:
            return value
    return None


class TcpFilter(exports.TcpFilter):
    def on_open(self, info: types.StreamInfo) -> types.TcpVerdict:
        return forward()

    def on_data(self, direction: Direction, data: bytes, end_of_stream: bool) -> types.TcpVerdict:
        return forward()

    def on_close(self) -> None:
        return None


class HttpFilter(exports.HttpFilter):
    def on_open(self, info: types.StreamInfo) -> types.HttpVerdict:
        return forward_http()

    def on_headers(self, direction: Direction, headers: Fields,
                   end_of_stream: bool) -> types.HttpVerdict:
        return forward_http()

    def on_body(self, direction: Direction, body: bytes, end_of_stream: bool) -> types.HttpVerdict:
        return forward_http()

    def on_trailers(self, direction: Direction, trailers: Fields) -> types.HttpVerdict:
        return forward_http()
