"""What a plugin's verdict may be before the host acts on it: one set of rules, every tier and
every module kind (`Sandbox.deliver` applies them; the core-module lifting in vmm/world.py
applies the size rules to the sizes a verdict declares, before it copies anything).

Two kinds of rule:

- The plugin's limits. Lifting, copying and sending a verdict on is work the host does for
  the plugin, so a verdict holds at most `verdict-kb` (by default `memory-mb`) bytes, each list
  entry costing `ENTRY_BYTES` besides its own bytes. The sizes are summed as declared, entry by
  entry: a thousand headers whose values all point at one 1 MiB buffer count as 1,000 MiB.
- Envoy's. Envoy 1.40's ext_proc filter answers 500 (whatever `failure_mode_allow` says) to a
  header mutation with a name or value its header validation refuses, with more set or
  removed headers than the HTTP connection manager's header count, or that leaves more
  headers, or more bytes of them, than that manager allows. It silently ignores changes to
  `x-envoy-*` headers, to the routing headers, and removals of pseudo-headers and `host`; and
  it passes on framing headers that then disagree with the body it sends. Each of these is
  refused here with its reason, so the plugin's failure policy applies and the log says why.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from vmm.capabilities.route import METHOD_HEADER, ROUTING_HEADERS, RouteGrant
from vmm.errors import InvalidVerdict, UnacceptableVerdict, UngrantedMutation, VerdictTooLarge
from vmm.events import (
    Answer,
    AnswerAndClose,
    Close,
    Direction,
    Event,
    Fields,
    Forward,
    HttpForward,
    HttpHeaders,
    HttpOpen,
    HttpTrailers,
    Mutation,
    Replace,
    Reset,
    Respond,
    TcpClose,
    TcpData,
    TcpOpen,
    Verdict,
)
from vmm.manifest import Manifest

# The HTTP connection manager's defaults in Envoy 1.40 (`max_headers_count`,
# `max_request_headers_kb`; responses get the same by default). ext_proc refuses a mutation
# setting or removing more headers than the count, and one leaving more headers, or more bytes
# of names and values, than these.
MAX_HEADERS = 100
MAX_HEADER_BYTES = 60 << 10
# What the host spends on one lifted list entry besides its bytes (its Python objects), so
# that a long list of empty strings costs too.
ENTRY_BYTES = 128

# Envoy's header validation: names are RFC 9110 tokens (lower-case: HTTP/2 requires it, and
# the plugin interface promises it), pseudo-headers a token after ':'; values may hold HTAB,
# visible ASCII, space and obs-text (0x80-0xff), nothing else.
_TOKEN = r"[a-z0-9!#$%&'*+\-.^_`|~]+"
_HEADER_NAME = re.compile(f":?{_TOKEN}")
_METHOD = re.compile(r"[A-Za-z0-9!#$%&'*+\-.^_`|~]+")
_BAD_VALUE_BYTE = re.compile(rb"[^\t\x20-\x7e\x80-\xff]")
_BAD_AUTHORITY_BYTE = re.compile(rb"[^A-Za-z0-9\-._~%!$&'()\[\]*+,;=:@]")
# Headers that frame the message: Envoy sets them for the body it actually sends, and a
# plugin's value would make the next message on a keep-alive connection start mid-body.
FRAMING_HEADERS = frozenset({"content-length", "transfer-encoding"})
# Connection-specific (RFC 9110 7.6.1; HTTP/2 forbids them, RFC 9113 8.2.2): Envoy's own.
CONNECTION_HEADERS = frozenset({"connection", "keep-alive", "proxy-connection", "upgrade", "te"})
ENVOY_PREFIX = "x-envoy-"
# Statuses whose responses never carry a body (RFC 9110 15.3.5, 15.4.5).
BODILESS_STATUSES = frozenset({204, 304})


class VerdictProblem(ValueError):
    """Why a verdict cannot be used; `fault` is the SandboxFault the sandbox reports."""

    fault: type[InvalidVerdict] = InvalidVerdict


class TooLarge(VerdictProblem):
    fault = VerdictTooLarge


class Unacceptable(VerdictProblem):
    fault = UnacceptableVerdict


class Ungranted(VerdictProblem):
    fault = UngrantedMutation


@dataclass(frozen=True, slots=True)
class VerdictRules:
    """What one plugin's verdicts may be: its size limit, and the request pseudo-headers (and
    `host`) its grants let it set."""

    max_bytes: int
    settable: frozenset[str] = frozenset()

    @classmethod
    def of(cls, manifest: Manifest) -> VerdictRules:
        route = manifest.grants.get("route")
        settable = route.settable if isinstance(route, RouteGrant) else frozenset()
        return cls(manifest.limits.verdict_bytes, settable)


def _size(count: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if count >= 1 << shift:
            return f"{count / (1 << shift):.1f} {unit}"
    return f"{count} bytes"


def check_size(declared: int, entries: int, max_bytes: int) -> None:
    """A verdict of `declared` bytes in `entries` list entries, within `max_bytes`."""
    if declared + entries * ENTRY_BYTES > max_bytes:
        in_entries = f" in {entries} list entries" if entries else ""
        raise TooLarge(f"it declares {_size(declared)}{in_entries}, more than the "
                       f"{_size(max_bytes)} a verdict may hold")


def check_entries(count: int, what: str) -> None:
    """Envoy's header count, for a list of headers to set or remove (before it is read)."""
    if count > MAX_HEADERS:
        raise TooLarge(f"{what} has {count} entries; Envoy takes at most {MAX_HEADERS} "
                       "(max_headers_count)")


def check_header_bytes(count: int, what: str) -> None:
    if count > MAX_HEADER_BYTES:
        raise TooLarge(f"{what} come to {_size(count)}; Envoy takes at most "
                       f"{_size(MAX_HEADER_BYTES)} of headers (max_request_headers_kb)")


def _field_bytes(fields: Fields) -> int:
    return sum(len(name) + len(value) for name, value in fields)


def _check_value(name: str, value: bytes, what: str) -> None:
    bad = _BAD_VALUE_BYTE.search(value)
    if bad is not None:
        raise Unacceptable(f"{what}: the value of {name!r} has byte {bad.group()[0]:#04x}; "
                           "Envoy takes no control characters but HTAB in a header value")


def _check_name(name: str, what: str) -> None:
    if not _HEADER_NAME.fullmatch(name):
        raise Unacceptable(f"{what}: {name[:64]!r} is not a lower-case header name")


def _check_routing_value(name: str, value: bytes) -> None:
    if name == ":path" and not value.startswith(b"/"):
        raise Unacceptable(f"set-headers: :path {value[:64]!r} does not start with '/'")
    if name in (":authority", "host") and (not value or _BAD_AUTHORITY_BYTE.search(value)):
        raise Unacceptable(f"set-headers: {value[:64]!r} is not an authority (host[:port])")
    if name == METHOD_HEADER and not _METHOD.fullmatch(value.decode("latin-1")):
        raise Unacceptable(f"set-headers: {value[:64]!r} is not a method")


def _check_set(name: str, value: bytes, rules: VerdictRules, request: bool, what: str) -> None:
    _check_name(name, what)
    _check_value(name, value, what)
    if name.startswith(":") or name == "host":
        if request and name in rules.settable:
            _check_routing_value(name, value)
            return
        if request and (name in ROUTING_HEADERS or name == METHOD_HEADER):
            needs = "the `route` grant" + (" with `method = true`" if name == METHOD_HEADER
                                           else "")
            raise Ungranted(f"{what}: setting {name} needs {needs}")
        raise Unacceptable(f"{what}: {name} cannot be set here; Envoy owns it")
    if name in FRAMING_HEADERS:
        raise Unacceptable(f"{what}: {name} frames the message, and Envoy sets it for the body "
                           "it sends; another value would desync the connection")
    if name in CONNECTION_HEADERS:
        raise Unacceptable(f"{what}: {name} is connection-specific; Envoy manages it")
    if name.startswith(ENVOY_PREFIX):
        raise Unacceptable(f"{what}: Envoy ignores changes to {ENVOY_PREFIX}* headers")


def _check_removal(name: str) -> None:
    _check_name(name, "remove-headers")
    if name.startswith(":") or name == "host":
        raise Unacceptable(f"remove-headers: Envoy never removes {name}")
    if name.startswith(ENVOY_PREFIX):
        raise Unacceptable(f"remove-headers: Envoy ignores changes to {ENVOY_PREFIX}* headers")


def _resulting_headers(fields: Fields, mutation: Mutation) -> tuple[int, int]:
    """(count, bytes) of the header map Envoy has once it applies `mutation` (removals first,
    then each set replacing every header of its name)."""
    gone = set(mutation.remove_headers) | {name for name, _ in mutation.set_headers}
    kept = [(name, value) for name, value in fields if name not in gone]
    added = dict(mutation.set_headers)
    return (len(kept) + len(added),
            _field_bytes(tuple(kept)) + _field_bytes(tuple(added.items())))


def _check_mutation(event: Event, mutation: Mutation, rules: VerdictRules) -> None:
    sets, removes = mutation.set_headers, mutation.remove_headers
    check_entries(len(sets), "set-headers")
    check_entries(len(removes), "remove-headers")
    check_size(_field_bytes(sets) + sum(map(len, removes)) + len(mutation.body or b""),
               len(sets) + len(removes), rules.max_bytes)
    request = isinstance(event, HttpOpen) or (isinstance(event, HttpHeaders)
                                              and event.direction is Direction.INBOUND)
    what = "set-trailers" if isinstance(event, HttpTrailers) else "set-headers"
    for name, value in sets:
        _check_set(name, value, rules, request, what)
    for name in removes:
        _check_removal(name)
    # What it sets, as declared (as the lifting checks it: a name set twice counts twice),
    # then the header map Envoy would be left with, where the event shows it.
    check_header_bytes(_field_bytes(sets), "the headers it sets")
    if isinstance(event, HttpHeaders | HttpTrailers):
        fields = event.headers if isinstance(event, HttpHeaders) else event.trailers
        count, size = _resulting_headers(fields, mutation)
        if count > MAX_HEADERS:
            raise TooLarge(f"it leaves {count} headers; Envoy takes at most {MAX_HEADERS} "
                           "(max_headers_count)")
        check_header_bytes(size, "the headers it leaves")


def _check_respond(respond: Respond, rules: VerdictRules) -> None:
    if not 200 <= respond.status <= 599:
        raise Unacceptable(f"status {respond.status} is not between 200 and 599")
    if respond.status in BODILESS_STATUSES and respond.body:
        raise Unacceptable(f"a {respond.status} response carries no body; it has "
                           f"{_size(len(respond.body))}")
    headers = respond.headers
    check_entries(len(headers), "respond headers")
    check_size(_field_bytes(headers) + len(respond.body), len(headers), rules.max_bytes)
    check_header_bytes(_field_bytes(headers), "respond headers")
    for name, value in headers:
        _check_set(name, value, rules, False, "respond headers")


_TCP_EVENTS = (TcpOpen, TcpData)
_VERDICT_PROTOCOL = {Forward: "tcp", Replace: "tcp", Close: "tcp", Reset: "tcp", Answer: "tcp",
                     AnswerAndClose: "tcp", HttpForward: "http", Respond: "http"}


def check_verdict(event: Event, verdict: Verdict | None, rules: VerdictRules) -> Verdict | None:
    """`verdict` if the host may act on it for `event`; otherwise a VerdictProblem saying why."""
    event_type = type(event)
    if event_type is TcpClose:
        return None
    protocol = _VERDICT_PROTOCOL.get(type(verdict))
    if protocol != ("tcp" if event_type in _TCP_EVENTS else "http"):
        raise VerdictProblem(
            f"{type(verdict).__name__} is not a verdict for {event_type.__name__}")
    if isinstance(verdict, Replace | Answer | AnswerAndClose):
        check_size(len(verdict.data), 0, rules.max_bytes)
    elif isinstance(verdict, HttpForward) and not verdict.mutation.is_empty:
        if verdict.mutation.body is not None and event_type in (HttpOpen, HttpTrailers):
            raise VerdictProblem(f"{event_type.__name__} cannot have its verdict replace a body")
        _check_mutation(event, verdict.mutation, rules)
    elif isinstance(verdict, Respond):
        _check_respond(verdict, rules)
    return verdict
