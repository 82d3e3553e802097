"""Flow control as the weapon: windows pushed past 2^31-1, DATA past the windows the server
advertised, a message that announces 4 GiB and trickles in."""

from __future__ import annotations

from h2.errors import ErrorCodes

from bench import attacks
from sidecar.grpc_server import MAX_MESSAGE, Status
from sidecar.http2 import CONNECTION_WINDOW, MAX_PENDING_MESSAGE_BYTES, STREAM_WINDOW
from tests.attacks import expect
from tests.attacks.conftest import UnderAttack
from tests.attacks.expect import MiB


def test_window_update_overflow_on_the_connection(under_attack: UnderAttack) -> None:
    # RFC 9113 6.9.1: exactly 2^31-1 is allowed, one more is GOAWAY FLOW_CONTROL_ERROR.
    trial = under_attack(lambda port: attacks.window_update_overflow(port, on_stream=False))
    result = trial.outcome
    sent = expect.goaway(result, ErrorCodes.FLOW_CONTROL_ERROR)
    assert sent.at >= result.marks["past_max"], "GOAWAY for a window of exactly 2^31-1"
    expect.contained(trial, rss=16 * MiB)


def test_window_update_overflow_on_a_stream(under_attack: UnderAttack) -> None:
    # RFC 9113 6.9.1: for a stream, RST_STREAM FLOW_CONTROL_ERROR; the connection goes on.
    trial = under_attack(lambda port: attacks.window_update_overflow(port, on_stream=True))
    result = trial.outcome
    expect.reset(result, 1, ErrorCodes.FLOW_CONTROL_ERROR)
    assert result.server.reset_at[1] >= result.marks["past_max"], (
        "RST_STREAM for a window of exactly 2^31-1")
    assert result.server.goaway is None, f"GOAWAY {result.server.goaway}"
    expect.contained(trial, rss=16 * MiB)


def check_windows(result: attacks.AttackResult) -> None:
    advertised = (result.figures["stream_window"], result.figures["connection_window"])
    assert advertised == (STREAM_WINDOW, CONNECTION_WINDOW), (
        f"windows advertised (stream, connection): {advertised}, expected "
        f"{(STREAM_WINDOW, CONNECTION_WINDOW)}")


def test_an_incomplete_message_holds_its_stream_window(under_attack: UnderAttack) -> None:
    # The largest message taken, all but its last byte: the server must keep it (it may
    # complete), but opens no more window for the stream, so that is all the stream can park.
    trial = under_attack(lambda port: attacks.parked_messages(port, 1, MAX_MESSAGE))
    result = trial.outcome
    check_windows(result)
    assert result.figures["stream_granted_meanwhile"] == 0, (
        f"the stream's window reopened by {result.figures['stream_granted_meanwhile']} bytes "
        "while its message was incomplete")
    expect.contained(trial, rss=STREAM_WINDOW + 16 * MiB)


def test_incomplete_messages_past_the_connection_budget_are_refused(
        under_attack: UnderAttack) -> None:
    # Streams each parking one incomplete message of the largest size: past the connection's
    # MAX_PENDING_MESSAGE_BYTES, the calls that would hold more end with RESOURCE_EXHAUSTED.
    streams = MAX_PENDING_MESSAGE_BYTES // MAX_MESSAGE + 2
    trial = under_attack(lambda port: attacks.parked_messages(port, streams, MAX_MESSAGE))
    result = trial.outcome
    check_windows(result)
    statuses = [result.server.grpc_status(stream) for stream in result.streams]
    refused = statuses.count(Status.RESOURCE_EXHAUSTED)
    assert refused >= 1 and statuses.count(None) + refused == streams, (
        f"gRPC statuses of the {streams} streams: {statuses}; expected RESOURCE_EXHAUSTED past "
        f"{MAX_PENDING_MESSAGE_BYTES} pending bytes, the others still waiting")
    expect.contained(trial, rss=MAX_PENDING_MESSAGE_BYTES + 16 * MiB)


def test_huge_message_trickled_in(under_attack: UnderAttack) -> None:
    # A message announcing 4 GiB-1 (past MAX_MESSAGE) ends the call with RESOURCE_EXHAUSTED as
    # soon as its length is known, not once (if ever) its bytes arrive.
    declared = (1 << 32) - 1
    assert declared > MAX_MESSAGE
    trial = under_attack(lambda port: attacks.huge_message_trickle(port, declared, seconds=2.0))
    result = trial.outcome
    status = result.server.grpc_status(1)
    assert status == Status.RESOURCE_EXHAUSTED, (
        f"grpc-status {status}, expected RESOURCE_EXHAUSTED; {attacks.summary(result)}")
    answered = result.server.ended.get(1, float("inf")) - result.marks["declared"]
    assert answered <= 1.0, (
        f"answered {answered:.1f}s after the length, {result.figures['trickled']} bytes later")
    expect.contained(trial, rss=16 * MiB)
