"""One HTTP request: its headers, body and trailers, both ways, through the plugins of its chain.

Mutations compose: each plugin sees the headers and body as the plugins before it left them,
and Envoy gets the net effect. The first plugin to answer the request ends the chain.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from sidecar.streams import StreamFailed, StreamPlugins
from vmm.events import (
    Direction,
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

log = logging.getLogger(__name__)


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


HttpMessage = HttpHeaders | HttpBody | HttpTrailers


def as_next_plugin_sees(message: HttpMessage, mutation: Mutation) -> HttpMessage:
    """`message` after `mutation`: what the next plugin of the chain is given."""
    match message:
        case HttpHeaders():
            return replace(message, headers=apply_headers(message.headers, mutation))
        case HttpTrailers():
            return replace(message, trailers=apply_headers(message.trailers, mutation))
        case HttpBody():
            return message if mutation.body is None else replace(message, body=mutation.body)


class HttpSession:
    def __init__(self, plugins: StreamPlugins, info: StreamInfo) -> None:
        self.plugins = plugins
        self._info = info
        self._opened = False
        # What a plugin's on-open set for the request headers, by chain position.
        self._open_mutations: dict[int, Mutation] = {}

    def handle(self, message: HttpMessage) -> HttpResult:
        """`message` through the chain, in its direction's order; the verdicts composed."""
        try:
            if not self._opened:
                answered = self._open()
                if answered is not None:
                    return answered
            opened = self._take_open_mutations(message)
            net = NetMutation()
            for link in self.plugins.in_order(message.direction):
                from_open = opened.pop(link.position, None)
                if from_open is not None:
                    net.add(from_open)
                    message = as_next_plugin_sees(message, from_open)
                verdict = self.plugins.deliver(link, message)
                if isinstance(verdict, Respond):
                    return HttpResult(respond=verdict, details=f"hyperfilter_{link.name}")
                if isinstance(verdict, HttpForward) and not verdict.mutation.is_empty:
                    net.add(verdict.mutation)
                    message = as_next_plugin_sees(message, verdict.mutation)
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

    def _take_open_mutations(self, message: HttpMessage) -> dict[int, Mutation]:
        """The on-open mutations, for the request headers: a request's first message unless
        Envoy skips them (`request_header_mode: SKIP`). Then nothing can carry them: Envoy
        applies a body response's header mutation only to headers it sent, and a trailers
        response's only to the trailers. So they are dropped, with one warning."""
        opened, self._open_mutations = self._open_mutations, {}
        if opened and not (isinstance(message, HttpHeaders)
                           and message.direction is Direction.INBOUND):
            names = ", ".join(link.name for link in self.plugins.links if link.position in opened)
            log.warning("on-open mutation of %s not applied: Envoy skipped the request headers, "
                        "the only message that can carry it", names,
                        extra={"stream": self.plugins.id})
            return {}
        return opened

    def close(self) -> None:
        """The stream ended: its sandboxes go. The WIT world has no HTTP close event to tell
        the plugins first (`on-close` is TCP's)."""
        self.plugins.close()
