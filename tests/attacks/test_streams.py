"""Streams as the weapon: Rapid Reset, streams opened and never ended, stream ids that RFC 9113
forbids."""

from __future__ import annotations

import pytest
from envoy.service.network_ext_proc.v3 import network_external_processor_pb2 as pb
from h2.errors import ErrorCodes
from h2.settings import SettingCodes
from hyperframe.frame import RstStreamFrame

from bench import attacks
from bench.attacks import AttackResult, Trial
from sidecar.app import Sidecar
from sidecar.http2 import MAX_CONCURRENT_STREAMS, RESET_BURST, RESET_RATE
from tests.attacks import expect
from tests.attacks.conftest import UnderAttack
from tests.attacks.expect import MiB


def check_rapid_reset(trial: Trial[AttackResult]) -> None:
    result = trial.outcome
    sent = expect.goaway(result, ErrorCodes.ENHANCE_YOUR_CALM)
    # Stream 2k-1 is the k-th pair. The budget lets RESET_BURST through at once (Envoy resets
    # the streams it is done with in bursts), and RESET_RATE a second after that.
    budget = RESET_BURST + RESET_RATE * result.seconds
    assert 2 * RESET_BURST - 1 <= sent.last_stream_id <= 2 * budget + 1, (
        f"GOAWAY after stream {sent.last_stream_id}: the budget is {RESET_BURST} resets, then "
        f"{RESET_RATE}/s ({len(result.streams)} pairs sent in {result.seconds:.1f}s)")
    expect.closed(result)
    expect.contained(trial, rss=16 * MiB)


def test_rapid_reset(under_attack: UnderAttack) -> None:
    check_rapid_reset(under_attack(lambda port: attacks.rapid_reset(port, 2 * RESET_BURST)))


@pytest.mark.heavy
def test_rapid_reset_50000_pairs(under_attack: UnderAttack) -> None:
    check_rapid_reset(under_attack(
        lambda port: attacks.rapid_reset(port, pairs=50_000, seconds=60)))


def check_never_ended(trial: Trial[AttackResult], rss: int) -> None:
    result = trial.outcome
    server = result.server
    advertised = server.settings.get(SettingCodes.MAX_CONCURRENT_STREAMS)
    assert advertised == MAX_CONCURRENT_STREAMS, (
        f"SETTINGS_MAX_CONCURRENT_STREAMS {advertised}, expected {MAX_CONCURRENT_STREAMS}")
    within, extra = (result.streams[:MAX_CONCURRENT_STREAMS],
                     result.streams[MAX_CONCURRENT_STREAMS:])
    assert not [s for s in within if s in server.resets], "streams within the limit were reset"
    # RFC 9113 5.1.2 makes a stream past the advertised limit a stream error (REFUSED_STREAM
    # or PROTOCOL_ERROR), and 5.4.1 lets an endpoint treat it as a connection error: nghttp2
    # does, once the peer has acknowledged the limit (before that it refuses the stream).
    if server.goaway is not None:
        assert server.goaway.error_code == ErrorCodes.PROTOCOL_ERROR, server.goaway.error
        assert server.goaway.last_stream_id == within[-1], (
            f"GOAWAY names stream {server.goaway.last_stream_id}; the last within the limit "
            f"is {within[-1]}")
    else:
        refused = {attacks.error_name(server.resets[s]) if s in server.resets
                   else "not refused" for s in extra}
        assert refused <= {"REFUSED_STREAM", "PROTOCOL_ERROR"}, (
            f"the {len(extra)} streams past the limit: {sorted(refused)}")
    expect.contained(trial, rss=rss)


def test_never_ended_streams(under_attack: UnderAttack) -> None:
    check_never_ended(under_attack(lambda port: attacks.never_ended_streams(
        port, streams=MAX_CONCURRENT_STREAMS + 100)), rss=16 * MiB)


@pytest.mark.heavy
def test_20000_never_ended_streams(under_attack: UnderAttack) -> None:
    check_never_ended(under_attack(lambda port: attacks.never_ended_streams(
        port, streams=20_000, seconds=60, hold=3.0)), rss=32 * MiB)


@pytest.mark.parametrize("kind", ["zero", "even"])
def test_headers_on_a_stream_id_a_client_cannot_use(under_attack: UnderAttack,
                                                     kind: str) -> None:
    # RFC 9113 6.2: HEADERS on stream 0; 5.1.1: a client's streams are odd. Both
    # PROTOCOL_ERROR for the connection.
    trial = under_attack(lambda port: attacks.bad_stream_id(port, kind))
    expect.goaway(trial.outcome, ErrorCodes.PROTOCOL_ERROR)
    expect.contained(trial, rss=16 * MiB)


@pytest.mark.parametrize("kind", ["reused", "decreasing"])
def test_headers_on_a_stream_id_already_passed(under_attack: UnderAttack, kind: str) -> None:
    # RFC 9113 5.1.1 wants PROTOCOL_ERROR (STREAM_CLOSED for a stream known to be closed,
    # 5.1); nghttp2 ignores HEADERS on an id it no longer tracks instead. Either way, no new
    # stream: nothing answers on that id.
    trial = under_attack(lambda port: attacks.bad_stream_id(port, kind))
    result = trial.outcome
    server = result.server
    if server.goaway is not None:
        expect.goaway(result, ErrorCodes.PROTOCOL_ERROR, ErrorCodes.STREAM_CLOSED)
    bad = result.streams[-1]
    answers = len(server.headers.get(bad, [])) - result.figures.get("answers_before", 0)
    assert answers == 0 and bad not in server.resets, (
        f"the server treated HEADERS on stream {bad} ({kind}) as a new stream: "
        f"{server.headers.get(bad)}, reset {server.resets.get(bad)}")
    expect.contained(trial, rss=16 * MiB)


def test_resets_past_the_budget_spare_the_streams_already_open(sidecar: Sidecar) -> None:
    # Envoy shares one connection between many client connections: a hostile client of
    # Envoy's that makes it reset streams before they are answered spends that connection's
    # budget. The GOAWAY then refuses new streams only; an open one goes on being served.
    conn = attacks.AttackConnection(sidecar.port)
    assert conn.handshake()
    request = conn.request()

    def message(text: bytes) -> bytes:
        return attacks.grpc_message(
            pb.ProcessingRequest(read_data=pb.Data(data=text)).SerializeToString())

    conn.send(attacks.headers(1, request) + attacks.data(1, message(b"before")))
    assert conn.wait_until(lambda view: view.data.get(1, 0) > 0, 5)
    answered = conn.view.data[1]
    resets = b"".join(attacks.headers(stream, request)
                      + RstStreamFrame(stream, error_code=ErrorCodes.CANCEL).serialize()
                      for stream in range(3, 2 * (RESET_BURST + 50), 2))
    conn.send(resets + attacks.data(1, message(b"after")))
    assert conn.wait_until(lambda view: view.goaway is not None
                           and view.data.get(1, 0) > answered, 5), attacks.summary(
        conn.result("resets past the budget", streams=[1]))
    assert conn.view.goaway is not None
    assert conn.view.goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM
    assert conn.view.goaway.last_stream_id >= 1
