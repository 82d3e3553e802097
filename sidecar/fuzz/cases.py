"""A fuzz case: one whole stream, as Envoy would deliver it, and its readable file.

A TCP case is the connection's data events (each direction's bytes as they arrive, end of
stream where a side closes); the session opens it before the first and closes it after the
last, as the sidecar does. An HTTP case is the request's and the response's headers, body
pieces and trailers in the order Envoy sends them. Bytes are written as JSON strings, one
character per byte (U+0000 to U+00FF), so that text stays text in the file.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vmm.events import Direction, Fields, HttpBody, HttpHeaders, HttpTrailers, TcpData

HttpMessage = HttpHeaders | HttpBody | HttpTrailers
CaseEvent = TcpData | HttpMessage
FORMAT = 1  # of the case files


class CaseError(Exception):
    """A case file that cannot be read; the message names the file and the problem."""


@dataclass(frozen=True)
class Case:
    protocol: str  # "tcp" or "http"
    events: tuple[CaseEvent, ...]

    def size(self) -> int:
        """What minimizing makes smaller: events, bytes, header fields."""
        return len(self.events) + sum(_event_size(event) for event in self.events)


def _event_size(event: CaseEvent) -> int:
    match event:
        case TcpData():
            return len(event.data)
        case HttpBody():
            return len(event.body)
        case HttpHeaders():
            return sum(1 + len(name) + len(value) for name, value in event.headers)
        case HttpTrailers():
            return sum(1 + len(name) + len(value) for name, value in event.trailers)


def _text(data: bytes) -> str:
    return data.decode("latin-1")


def _bytes(text: str) -> bytes:
    return text.encode("latin-1")


def _fields(fields: Fields) -> list[list[str]]:
    return [[name, _text(value)] for name, value in fields]


def to_json(case: Case) -> dict[str, Any]:
    events: list[dict[str, Any]] = []
    for event in case.events:
        direction = event.direction.name.lower()
        match event:
            case TcpData():
                events.append({"data": _text(event.data), "direction": direction,
                               "end_of_stream": event.end_of_stream})
            case HttpHeaders():
                events.append({"headers": _fields(event.headers), "direction": direction,
                               "end_of_stream": event.end_of_stream})
            case HttpBody():
                events.append({"body": _text(event.body), "direction": direction,
                               "end_of_stream": event.end_of_stream})
            case HttpTrailers():
                events.append({"trailers": _fields(event.trailers), "direction": direction})
    return {"format": FORMAT, "protocol": case.protocol, "events": events}


def from_json(data: Any) -> Case:
    """ValueError, KeyError or TypeError when `data` is not a case."""
    if data.get("format") != FORMAT or data["protocol"] not in ("tcp", "http"):
        raise ValueError(f"not a format-{FORMAT} tcp or http case")
    return Case(data["protocol"], tuple(_event(item) for item in data["events"]))


def _event(item: dict[str, Any]) -> CaseEvent:
    direction = Direction[item["direction"].upper()]
    if "data" in item:
        return TcpData(direction, _bytes(item["data"]), bool(item["end_of_stream"]))
    if "headers" in item:
        return HttpHeaders(direction, _read_fields(item["headers"]), bool(item["end_of_stream"]))
    if "body" in item:
        return HttpBody(direction, _bytes(item["body"]), bool(item["end_of_stream"]))
    return HttpTrailers(direction, _read_fields(item["trailers"]))


def _read_fields(items: list[list[str]]) -> Fields:
    return tuple((str(name), _bytes(value)) for name, value in items)


def digest(case: Case) -> str:
    """A name for the case that only the same case has."""
    return hashlib.blake2b(json.dumps(to_json(case)).encode(), digest_size=8).hexdigest()


def save(case: Case, path: Path, note: str = "") -> None:
    path.write_text(json.dumps(to_json(case) | ({"finding": note} if note else {}), indent=1,
                               ensure_ascii=True) + "\n")


def load(path: Path) -> Case:
    try:
        return from_json(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CaseError(f"{path}: not a fuzz case: {exc}") from None
