"""A failing case made as small as it can be while it still breaks the same rule: fewer
events (halves, then quarters, … of them dropped, as delta debugging does), then shorter
bytes in each (halves and smaller pieces cut out), then fewer header fields. Bounded in runs
and time: what it has when the budget is spent is still a failing case."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

from sidecar.fuzz.cases import Case, CaseEvent
from vmm.events import HttpBody, HttpHeaders, HttpTrailers, TcpData

MAX_RUNS = 2000
MAX_SECONDS = 60.0


class Minimizer:
    def __init__(self, still_fails: Callable[[Case], bool]) -> None:
        self._still_fails = still_fails
        self.runs = 0
        self._deadline = time.monotonic() + MAX_SECONDS

    def _try(self, case: Case) -> bool:
        if self.runs >= MAX_RUNS or time.monotonic() > self._deadline:
            return False
        self.runs += 1
        return self._still_fails(case)

    def minimize(self, case: Case) -> Case:
        while True:
            smaller = self._fewer_events(case)
            smaller = self._shorter_events(smaller)
            if smaller.size() >= case.size():
                return smaller
            case = smaller

    def _fewer_events(self, case: Case) -> Case:
        events = list(case.events)
        chunk = max(1, len(events) // 2)
        while chunk >= 1 and events:
            at, removed = 0, False
            while at < len(events):
                candidate = events[:at] + events[at + chunk:]
                if candidate and self._try(Case(case.protocol, tuple(candidate))):
                    events, removed = candidate, True
                else:
                    at += chunk
            if not removed:
                chunk //= 2
        return Case(case.protocol, tuple(events))

    def _shorter_events(self, case: Case) -> Case:
        events = list(case.events)
        for index in range(len(events)):
            for smaller in self._smaller_versions(events[index]):
                candidate = [*events[:index], smaller, *events[index + 1:]]
                if self._try(Case(case.protocol, tuple(candidate))):
                    events = candidate
                    break
        return Case(case.protocol, tuple(events))

    def _smaller_versions(self, event: CaseEvent) -> list[CaseEvent]:
        match event:
            case TcpData():
                return [replace(event, data=d) for d in _shorter(event.data)]
            case HttpBody():
                return [replace(event, body=d) for d in _shorter(event.body)]
            case HttpHeaders():
                return [replace(event, headers=event.headers[:i] + event.headers[i + 1:])
                        for i in range(len(event.headers))]
            case HttpTrailers():
                return [replace(event, trailers=event.trailers[:i] + event.trailers[i + 1:])
                        for i in range(len(event.trailers))]


PIECES_PER_SIZE = 16  # cut-outs tried per piece size: the first and the last ones


def _shorter(data: bytes) -> list[bytes]:
    """`data` with a piece cut out: either half, then smaller pieces, nearest the ends first
    (where what does not matter tends to be)."""
    versions = []
    piece = len(data) // 2
    while piece >= 1:
        starts = list(range(0, len(data), piece))
        if len(starts) > PIECES_PER_SIZE:
            half = PIECES_PER_SIZE // 2
            starts = starts[:half] + starts[-half:]
        versions += [data[:at] + data[at + piece:] for at in starts]
        piece //= 2
    return versions
