"""The fuzzer's parts on their own: case files round-trip, the minimizer keeps a failure while
it shrinks it, generated cases have the shapes of real streams, durations parse."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from sidecar.fuzz import cases
from sidecar.fuzz.cases import Case
from sidecar.fuzz.command import seconds_of
from sidecar.fuzz.generate import Generator, words_of
from sidecar.fuzz.minimize import Minimizer
from vmm.events import Direction, HttpBody, HttpHeaders, HttpTrailers, TcpData


def test_a_case_file_round_trips_every_byte(tmp_path: Path) -> None:
    case = Case("http", (
        HttpHeaders(Direction.INBOUND, ((":path", b"/\xff\x00"), ("", b"")), False),
        HttpBody(Direction.INBOUND, bytes(range(256)), True),
        HttpTrailers(Direction.OUTBOUND, (("x-t", b"\r\n"),))))
    cases.save(case, tmp_path / "case.json", "a note")
    assert cases.load(tmp_path / "case.json") == case
    assert "a note" in (tmp_path / "case.json").read_text()


def test_a_file_that_is_not_a_case_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"format": 1, "protocol": "udp", "events": []}')
    with pytest.raises(cases.CaseError, match=r"bad\.json: not a fuzz case"):
        cases.load(path)


def test_the_minimizer_keeps_the_failure_and_drops_the_rest() -> None:
    noise = [TcpData(Direction.INBOUND, random.Random(1).randbytes(300), False)
             for _ in range(20)]
    culprit = TcpData(Direction.OUTBOUND, b"....needle....", False)
    case = Case("tcp", (*noise[:7], culprit, *noise[7:]))

    def still_fails(candidate: Case) -> bool:
        return any(isinstance(e, TcpData) and b"needle" in e.data for e in candidate.events)

    small = Minimizer(still_fails).minimize(case)
    assert small == Case("tcp", (TcpData(Direction.OUTBOUND, b"needle", False),))


def test_generated_cases_are_streams_envoy_could_send() -> None:
    generator = Generator(random.Random(7), words=(b"secret",))
    for _ in range(200):
        tcp = generator.tcp_case()
        assert tcp.events and all(isinstance(e, TcpData) for e in tcp.events)
        http = generator.http_case()
        first_response = next(i for i, e in enumerate(http.events)
                              if e.direction is Direction.OUTBOUND)
        assert all(e.direction is Direction.INBOUND for e in http.events[:first_response])
        assert isinstance(http.events[0], HttpHeaders)
        assert isinstance(http.events[first_response], HttpHeaders)
        for mutated in (generator.mutate(tcp), generator.mutate(http)):
            assert mutated.protocol in ("tcp", "http")


def test_a_plugins_own_strings_become_words_to_splice_in() -> None:
    words = words_of(b"\x00\x01x-api-key\x00\x02FLUSHALL\x00ab\x00")
    assert words == (b"FLUSHALL", b"x-api-key")


@pytest.mark.parametrize(("text", "seconds"), [("90", 90), ("90s", 90), ("1.5m", 90),
                                              ("500ms", 0.5), ("2h", 7200)])
def test_durations(text: str, seconds: float) -> None:
    assert seconds_of(text) == seconds


def test_a_duration_that_is_none_is_refused() -> None:
    with pytest.raises(ValueError, match="expected a duration"):
        seconds_of("soon")
