"""One HTTP request: its headers, body and trailers, both ways, through the plugins of its chain.

Mutations compose: each plugin sees the headers and body as the plugins before it left them,
and Envoy gets the net effect. The first plugin to answer the request ends the chain.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sidecar.streams import StreamFailed, StreamPlugins
from vmm.events import (
    Direction,
    Event,
    Fields,
    HttpBody,
    HttpForward,
    HttpHeaders,
    HttpOpen,
    HttpTrailers,
    Mutation,
    Respond,
    StreamInfo,
)

FAILURE_RESPONSE = Respond(500, (("content-type", b"text/plain"),),
                           b"request refused: a filter failed\n")
NO_CHANGE = Mutation()


@dataclass(frozen=True, slots=True)
class HttpResult:
    """What Envoy should do with one message: apply `mutation`, or answer with `respond`."""

    mutation: Mutation = NO_CHANGE
    respond: Respond | None = None
    details: str = ""  # for Envoy's response code details, when responding


class NetMutation:
    """The net effect of several mutations, in order."""

    def __init__(self) -> None:
        self._set: dict[str, bytes] = {}
        self._removed: dict[str, None] = {}
        self._body: bytes | None = None

    def add(self, mutation: Mutation) -> None:
        for name in mutation.remove_headers:
            self._set.pop(name, None)
            self._removed[name] = None
        for name, value in mutation.set_headers:
            self._removed.pop(name, None)
            self._set[name] = value
        if mutation.body is not None:
            self._body = mutation.body

    def result(self) -> Mutation:
        if not self._set and not self._removed and self._body is None:
            return NO_CHANGE
        return Mutation(tuple(self._set.items()), tuple(self._removed), self._body)


def apply_headers(fields: Fields, mutation: Mutation) -> Fields:
    """The headers as the next plugin sees them."""
    if not mutation.set_headers and not mutation.remove_headers:
        return fields
    gone = set(mutation.remove_headers) | {name for name, _ in mutation.set_headers}
    return tuple(f for f in fields if f[0] not in gone) + tuple(mutation.set_headers)


class HttpSession:
    def __init__(self, plugins: StreamPlugins, info: StreamInfo) -> None:
        self.plugins = plugins
        self._info = info
        self._opened = False
        # What a plugin's on-open set for the request headers, by chain position.
        self._open_mutations: dict[int, Mutation] = {}

    def headers(self, direction: Direction, headers: Fields, end_of_stream: bool) -> HttpResult:
        return self._run(direction, headers, None,
                         lambda fields, _: HttpHeaders(direction, fields, end_of_stream),
                         request_headers=direction is Direction.INBOUND)

    def body(self, direction: Direction, body: bytes, end_of_stream: bool) -> HttpResult:
        return self._run(direction, (), body,
                         lambda _, chunk: HttpBody(direction, chunk or b"", end_of_stream))

    def trailers(self, direction: Direction, trailers: Fields) -> HttpResult:
        return self._run(direction, trailers, None,
                         lambda fields, _: HttpTrailers(direction, fields))

    def _run(self, direction: Direction, fields: Fields, body: bytes | None,
             event: Callable[[Fields, bytes | None], Event],
             request_headers: bool = False) -> HttpResult:
        try:
            if not self._opened:
                answered = self._open()
                if answered is not None:
                    return answered
            net = NetMutation()
            for link in self.plugins.in_order(direction):
                opened = self._open_mutations.pop(link.position, None)
                if opened is not None and request_headers:
                    net.add(opened)
                    fields = apply_headers(fields, opened)
                verdict = self.plugins.deliver(link, event(fields, body))
                if isinstance(verdict, Respond):
                    return HttpResult(respond=verdict, details=f"hyperfilter_{link.name}")
                if isinstance(verdict, HttpForward) and not verdict.mutation.is_empty:
                    net.add(verdict.mutation)
                    fields = apply_headers(fields, verdict.mutation)
                    if verdict.mutation.body is not None:
                        body = verdict.mutation.body
            self._open_mutations.clear()  # they only ever apply to the request headers
            return HttpResult(net.result())
        except StreamFailed:
            return HttpResult(respond=FAILURE_RESPONSE, details="hyperfilter_filter_failed")

    def _open(self) -> HttpResult | None:
        self._opened = True
        if self.plugins.failure is not None:
            raise self.plugins.failure
        for link in self.plugins.links:
            verdict = self.plugins.deliver(link, HttpOpen(self._info))
            if isinstance(verdict, Respond):
                return HttpResult(respond=verdict, details=f"hyperfilter_{link.name}")
            if isinstance(verdict, HttpForward) and not verdict.mutation.is_empty:
                self._open_mutations[link.position] = verdict.mutation
        return None

    def close(self) -> None:
        self.plugins.close()
