"""A plugin's own test file, `tests.toml` in its directory: scripted streams, and the verdict
the plugin must give each event. Read here into events as the fuzzer's cases hold them and
expectations to compare verdicts with; `hyperfilter plugin test` runs them
(sidecar/plugin/tester.py), `hyperfilter fuzz` starts from them.

    config = { limit = 3 }                # optional: overrides entries of the manifest's [config]

    [[case]]                              # one stream, in a fresh sandbox
    name = "FLUSHALL is refused"          # unique in the file
    protocol = "tcp"                      # or "http"
    repeat = 1                            # optional: N streams, one after the other
    source-address = "10.1.2.3:40000"     # optional: what on-open gets (default empty), also
    destination-address = "10.0.0.1:6379" # server-name, metadata = { key = "value" }
    expect-open = "forward"               # optional: the on-open verdict

    [[case.event]]
    inbound = "*1\\r\\n$8\\r\\nFLUSH"         # TCP: inbound or outbound bytes; end-of-stream
    expect = "forward"

HTTP events have one of `headers = [[name, value], ...]`, `body = BYTES`, `trailers = [...]`,
a `direction` ("inbound", the default: the request; "outbound": the response) and, but for
trailers, `end-of-stream`. BYTES is a string (its UTF-8) or `{ hex = "0d0a" }`.

Expectations, TCP: "forward", "close", "reset", { replace = BYTES }, { answer = BYTES },
{ answer-and-close = BYTES }. HTTP: "forward" (no changes), { forward = { set-headers = [...],
remove-headers = [...], body = BYTES } } (the parts listed must match, headers in any order;
the others are not checked), { respond = STATUS, headers = [...], body = BYTES } (headers and
body optional). Either: "fault" (the event fails: a trap, a limit, a refused verdict). An
event the manifest does not want is not delivered and counts as "forward". After a verdict
that ends the stream (close, reset, answer-and-close, respond) a case has no more events;
after an on-open one, its events carry no `expect`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sidecar.fuzz.cases import CaseEvent
from vmm.events import (
    CLOSE,
    FORWARD,
    HTTP_FORWARD,
    RESET,
    Answer,
    AnswerAndClose,
    Close,
    Direction,
    Fields,
    HttpBody,
    HttpForward,
    HttpHeaders,
    HttpTrailers,
    Replace,
    Reset,
    Respond,
    StreamInfo,
    TcpData,
    Verdict,
)
from vmm.manifest import config_value
from vmm.tables import Table, TableError, TomlError, read_toml

TEST_FILE = "tests.toml"
PROTOCOLS = ("tcp", "http")
DIRECTIONS = {"inbound": Direction.INBOUND, "outbound": Direction.OUTBOUND}
MAX_REPEAT = 100_000  # runs of one case: a typo'd repeat must not run for hours
_TCP_WORDS: dict[str, Verdict] = {"forward": FORWARD, "close": CLOSE, "reset": RESET}
_TCP_WITH_BYTES: dict[str, type[Replace | Answer | AnswerAndClose]] = {
    "replace": Replace, "answer": Answer, "answer-and-close": AnswerAndClose}
_CASE_HEADER = re.compile(r"\s*\[\[\s*case\s*\]\]")
_EVENT_HEADER = re.compile(r"\s*\[\[\s*case\s*\.\s*event\s*\]\]")
_ESCAPES = {0x0A: "\\n", 0x0D: "\\r", 0x22: '\\"', 0x5C: "\\\\"}
SHOWN_BYTES = 60  # of a byte string in a message; the rest is counted


class CaseFileError(Exception):
    """A test file that cannot be run; the message names the file, the line or case, and the
    problem."""


# --- expectations ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Exactly:
    """This verdict and no other (TCP verdicts, and HTTP's plain "forward")."""

    verdict: Verdict


@dataclass(frozen=True)
class ForwardWith:
    """HTTP forward whose listed parts are these; a part left out (None) is not checked.
    Header lists compare without regard to order."""

    set_headers: Fields | None = None
    remove_headers: tuple[str, ...] | None = None
    body: bytes | None = None


@dataclass(frozen=True)
class RespondWith:
    """HTTP respond with this status; headers (in any order) and body when listed."""

    status: int
    headers: Fields | None = None
    body: bytes | None = None


@dataclass(frozen=True)
class Fault:
    """The event fails in the sandbox: a trap, a limit, a verdict the host refuses."""


Expectation = Exactly | ForwardWith | RespondWith | Fault


def matches(expected: Expectation, verdict: Verdict | None, faulted: bool) -> bool:
    """Whether what the plugin did (its verdict, or a fault) is what `expected` says."""
    if isinstance(expected, Fault) or faulted:
        return isinstance(expected, Fault) and faulted
    match expected:
        case Exactly():
            return verdict == expected.verdict
        case ForwardWith():
            if not isinstance(verdict, HttpForward):
                return False
            mutation = verdict.mutation
            return ((expected.set_headers is None
                     or sorted(expected.set_headers) == sorted(mutation.set_headers))
                    and (expected.remove_headers is None
                         or sorted(expected.remove_headers) == sorted(mutation.remove_headers))
                    and (expected.body is None or expected.body == mutation.body))
        case RespondWith():
            return (isinstance(verdict, Respond) and verdict.status == expected.status
                    and (expected.headers is None
                         or sorted(expected.headers) == sorted(verdict.headers))
                    and (expected.body is None or expected.body == verdict.body))


def ends_stream(expected: Expectation) -> bool:
    """Whether Envoy sends nothing more on a stream after this verdict."""
    return isinstance(expected, RespondWith) or (
        isinstance(expected, Exactly)
        and isinstance(expected.verdict, Close | Reset | AnswerAndClose))


def show_bytes(data: bytes) -> str:
    """Bytes in a message, as a TOML string would write them; long ones cut."""
    text = "".join(_ESCAPES.get(b) or (chr(b) if 0x20 <= b < 0x7F else f"\\x{b:02x}")
                   for b in data[:SHOWN_BYTES])
    more = f"… ({len(data):,} bytes)" if len(data) > SHOWN_BYTES else ""
    return f'"{text}"{more}'


def _show_fields(fields: Fields) -> str:
    return "[" + ", ".join(f"{name}: {show_bytes(value)}" for name, value in fields) + "]"


def describe(verdict: Verdict) -> str:
    """A verdict in the test file's words."""
    match verdict:
        case Replace(data) | Answer(data) | AnswerAndClose(data):
            return f"{_kebab(type(verdict).__name__)} {show_bytes(data)}"
        case HttpForward(mutation):
            if mutation.is_empty:
                return "forward (no changes)"
            return "forward " + _parts(mutation.set_headers or None,
                                       mutation.remove_headers or None, mutation.body)
        case Respond(status, headers, body):
            return f"respond {status} " + _parts(None, None, body, headers or None)
    return _kebab(type(verdict).__name__)


def describe_expected(expected: Expectation) -> str:
    match expected:
        case Exactly(verdict):
            return describe(verdict)
        case ForwardWith():
            listed = _parts(expected.set_headers, expected.remove_headers, expected.body)
            return f"forward {listed}" if listed else "forward (changes unchecked)"
        case RespondWith(status, headers, body):
            return f"respond {status} {_parts(None, None, body, headers)}".rstrip()
        case Fault():
            return "fault"


def _parts(set_headers: Fields | None, remove_headers: Sequence[str] | None,
           body: bytes | None, headers: Fields | None = None) -> str:
    parts = []
    if set_headers is not None:
        parts.append(f"set-headers {_show_fields(set_headers)}")
    if remove_headers is not None:
        parts.append(f"remove-headers [{', '.join(remove_headers)}]")
    if headers is not None:
        parts.append(f"headers {_show_fields(headers)}")
    if body is not None:
        parts.append(f"body {show_bytes(body)}")
    return ", ".join(parts)


def _kebab(name: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"-\1", name).lower()


# --- the file --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScriptedCase:
    """One `[[case]]`: a stream's events, each with its expectation (None only after an
    on-open verdict that ends the stream, where the events are not delivered)."""

    number: int  # 1-based, in file order
    name: str
    protocol: str
    events: tuple[CaseEvent, ...]
    expects: tuple[Expectation | None, ...]
    expect_open: Expectation | None = None
    info: StreamInfo = field(default_factory=StreamInfo)
    repeat: int = 1
    line: int | None = None  # of its [[case]] header

    @property
    def label(self) -> str:
        return f"case {self.number} ({self.name})"


@dataclass(frozen=True)
class CaseFile:
    path: Path
    cases: tuple[ScriptedCase, ...]
    config: Mapping[str, str]  # over the manifest's [config]


def load_cases(path: Path) -> CaseFile:
    """Read a test file (a plugin directory's tests.toml when `path` is a directory);
    CaseFileError naming the file, the line or case, and the problem."""
    if path.is_dir():
        path = path / TEST_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise CaseFileError(f"{path}: no test file (write one: see docs/plugins.md)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CaseFileError(f"{path}: cannot be read: {exc}") from None
    return parse_cases(text, path)


def parse_cases(text: str, path: Path) -> CaseFile:
    try:
        data = read_toml(text)
    except TomlError as exc:
        raise CaseFileError(f"{path}: not valid TOML: {exc}") from None
    case_lines, event_lines = _header_lines(text)
    top = Table(data, "")
    try:
        config_table = top.sub("config")
        config = {key: config_value(value, config_table.path(key))
                  for key, value in config_table.items()}
        items = top.get("case", list, [])
        top.finish()
    except TableError as exc:
        raise CaseFileError(f"{path}: {exc}") from None
    if not items:
        raise CaseFileError(f"{path}: no [[case]]: a test file holds at least one")
    cases = []
    names: dict[str, int] = {}
    for index, item in enumerate(items):
        number = index + 1
        line = case_lines[index] if index < len(case_lines) else None
        lines = event_lines[index] if index < len(event_lines) else []
        where = f"{path}:{line}" if line else str(path)
        try:
            case = _case(item, number, line, lines)
        except _EventError as exc:
            label = _label(item, number)
            at = f"{path}:{exc.line}" if exc.line else where
            raise CaseFileError(f"{at}: {label}: event {exc.number}: {exc}") from None
        except TableError as exc:
            raise CaseFileError(f"{where}: {_label(item, number)}: {exc}") from None
        if case.name in names:
            raise CaseFileError(f"{where}: {case.label}: the same name as case "
                                f"{names[case.name]}")
        names[case.name] = number
        cases.append(case)
    return CaseFile(path, tuple(cases), config)


def _label(item: Any, number: int) -> str:
    name = item.get("name") if isinstance(item, Mapping) else None
    return f"case {number} ({name})" if isinstance(name, str) else f"case {number}"


def _header_lines(text: str) -> tuple[list[int], list[list[int]]]:
    """The line of each [[case]] header, and of each [[case.event]] under it."""
    cases: list[int] = []
    events: list[list[int]] = []
    for number, line in enumerate(text.splitlines(), 1):
        if _CASE_HEADER.match(line):
            cases.append(number)
            events.append([])
        elif _EVENT_HEADER.match(line) and events:
            events[-1].append(number)
    return cases, events


class _EventError(TableError):
    def __init__(self, number: int, line: int | None, problem: str) -> None:
        super().__init__(problem)
        self.number = number
        self.line = line


def _case(item: Any, number: int, line: int | None, event_lines: list[int]) -> ScriptedCase:
    table = Table(item, "")
    name = table.get("name", str)
    if not name.strip():
        raise TableError("name: must not be empty")
    protocol = table.get_choice("protocol", {p: p for p in PROTOCOLS})
    repeat = table.get_positive("repeat", 1)
    if repeat > MAX_REPEAT:
        raise TableError(f"repeat: at most {MAX_REPEAT:,}, found {repeat:,}")
    metadata_table = table.sub("metadata")
    metadata = tuple((key, table_string(value, metadata_table.path(key)))
                     for key, value in metadata_table.items())
    info = StreamInfo(table.get("source-address", str, ""),
                      table.get("destination-address", str, ""),
                      table.get("server-name", str, ""), metadata)
    expect_open = (_expectation(table.get("expect-open", object), protocol, "expect-open")
                   if table.has("expect-open") else None)
    raw_events = table.get("event", list, [])
    table.finish()
    if not raw_events:
        raise TableError("no [[case.event]]: a case has at least one event")
    events, expects = [], []
    opened_only = expect_open is not None and ends_stream(expect_open)
    ended_at: str | None = None
    for index, raw in enumerate(raw_events):
        event_line = event_lines[index] if index < len(event_lines) else None
        if ended_at is not None:
            raise _EventError(index + 1, event_line,
                              f"the stream ended at {ended_at}: Envoy sends nothing after it")
        try:
            event, expected = _event(raw, protocol, delivered=not opened_only)
        except TableError as exc:
            raise _EventError(index + 1, event_line, str(exc)) from None
        events.append(event)
        expects.append(expected)
        if expected is not None and ends_stream(expected):
            ended_at = f"event {index + 1} ({describe_expected(expected)})"
    return ScriptedCase(number, name, protocol, tuple(events), tuple(expects), expect_open,
                        info, repeat, line)


def table_string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise TableError(f"{where}: expected a string, found {type(value).__name__}")
    return value


def _event(raw: Any, protocol: str, delivered: bool) -> tuple[CaseEvent, Expectation | None]:
    table = Table(raw, "")
    event = _tcp_event(table) if protocol == "tcp" else _http_event(table)
    if not delivered:
        if table.has("expect"):
            raise TableError("expect: the on-open verdict ends the stream, so this event is "
                             "never delivered: leave its expect out")
        expected = None
    else:
        expected = _expectation(table.get("expect", object), protocol, "expect")
    table.finish()
    return event, expected


def _one_of(table: Table, keys: Sequence[str]) -> str:
    present = [key for key in keys if table.has(key)]
    if len(present) != 1:
        found = f"found {', '.join(present)}" if present else "found none"
        raise TableError(f"an event has exactly one of {', '.join(keys)} ({found})")
    return present[0]


def _tcp_event(table: Table) -> TcpData:
    side = _one_of(table, tuple(DIRECTIONS))
    data = to_bytes(table.get(side, object), side)
    return TcpData(DIRECTIONS[side], data, table.get("end-of-stream", bool, False))


def _http_event(table: Table) -> CaseEvent:
    part = _one_of(table, ("headers", "body", "trailers"))
    direction = table.get_choice("direction", DIRECTIONS, Direction.INBOUND)
    if part == "trailers":
        if table.has("end-of-stream"):
            raise TableError("end-of-stream: trailers always end their direction")
        return HttpTrailers(direction, to_fields(table.get(part, list), part))
    end = table.get("end-of-stream", bool, False)
    if part == "headers":
        return HttpHeaders(direction, to_fields(table.get(part, list), part), end)
    return HttpBody(direction, to_bytes(table.get(part, object), part), end)


def to_bytes(value: Any, where: str) -> bytes:
    """A TOML string is its UTF-8 bytes; `{ hex = "..." }` raw bytes."""
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, Mapping):
        table = Table(value, where)
        text = table.get("hex", str)
        table.finish()
        try:
            return bytes.fromhex(text)
        except ValueError:
            raise TableError(f"{where}.hex: {text!r} is not hexadecimal bytes") from None
    raise TableError(f"{where}: expected a string or {{ hex = \"...\" }}, found "
                     f"{type(value).__name__}")


def to_fields(value: Any, where: str) -> Fields:
    """[[name, value], ...]: lower-case names (as Envoy sends them), values as bytes."""
    if not isinstance(value, list):
        raise TableError(f"{where}: expected a list of [name, value] pairs")
    fields = []
    for index, pair in enumerate(value):
        at = f"{where}[{index}]"
        if not isinstance(pair, list) or len(pair) != 2 or not isinstance(pair[0], str):
            raise TableError(f"{at}: expected a [name, value] pair, found {pair!r}")
        name = pair[0]
        if not name or name != name.lower():
            raise TableError(f"{at}: header name {name!r}: names are lower-case and not "
                             "empty, as Envoy sends them")
        fields.append((name, to_bytes(pair[1], at)))
    return tuple(fields)


def _expectation(value: Any, protocol: str, where: str) -> Expectation:
    if value == "fault":
        return Fault()
    if protocol == "tcp":
        return _tcp_expectation(value, where)
    return _http_expectation(value, where)


def _tcp_expectation(value: Any, where: str) -> Expectation:
    known = ('"forward", "close", "reset", "fault", or a table { replace = ... }, '
             "{ answer = ... }, { answer-and-close = ... }")
    if isinstance(value, str):
        if value not in _TCP_WORDS:
            raise TableError(f"{where}: {value!r} is not a TCP verdict (expected {known})")
        return Exactly(_TCP_WORDS[value])
    if isinstance(value, Mapping) and len(value) == 1:
        [(key, data)] = value.items()
        if key in _TCP_WITH_BYTES:
            return Exactly(_TCP_WITH_BYTES[key](to_bytes(data, f"{where}.{key}")))
    raise TableError(f"{where}: expected {known}, found {value!r}")


def _http_expectation(value: Any, where: str) -> Expectation:
    known = '"forward", "fault", { forward = { ... } } or { respond = STATUS, ... }'
    if value == "forward":
        return Exactly(HTTP_FORWARD)
    if isinstance(value, Mapping):
        table = Table(value, where)
        if table.has("forward") and len(value) == 1:
            return _forward_with(table.sub("forward"))
        if table.has("respond"):
            status = table.get("respond", int)
            if not 100 <= status <= 599:
                raise TableError(f"{table.path('respond')}: {status} is not an HTTP status")
            headers = to_fields(table.get("headers", list), table.path("headers")) \
                if table.has("headers") else None
            body = to_bytes(table.get("body", object), table.path("body")) \
                if table.has("body") else None
            table.finish()
            return RespondWith(status, headers, body)
    raise TableError(f"{where}: expected {known}, found {value!r}")


def _forward_with(table: Table) -> ForwardWith:
    set_headers = to_fields(table.get("set-headers", list), table.path("set-headers")) \
        if table.has("set-headers") else None
    remove_headers = table.get_strings("remove-headers") if table.has("remove-headers") else None
    body = to_bytes(table.get("body", object), table.path("body")) if table.has("body") else None
    table.finish()
    return ForwardWith(set_headers, remove_headers, body)
