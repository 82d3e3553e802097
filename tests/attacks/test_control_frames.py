"""Control frames as the weapon: SETTINGS and PING floods (read or never read), and SETTINGS
values at or past the edges of their ranges."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from h2.errors import ErrorCodes
from h2.settings import SettingCodes

from bench import attacks
from bench.attacks import AttackResult
from sidecar.http2 import MAX_OUTBOUND_ACKS
from tests.attacks import expect
from tests.attacks.conftest import UnderAttack
from tests.attacks.expect import MiB

Flood = Callable[..., AttackResult]
FLOODS = pytest.mark.parametrize("flood", [attacks.settings_flood, attacks.ping_flood],
                                 ids=["SETTINGS", "PING"])


@FLOODS
def test_control_flood(under_attack: UnderAttack, flood: Flood) -> None:
    # Each frame asks for an answer. The server either keeps up (every one answered, nothing
    # queued), or ends the connection once MAX_OUTBOUND_ACKS answers wait: a load the peer
    # causes, ENHANCE_YOUR_CALM (RFC 9113, 7).
    frames = 20 * MAX_OUTBOUND_ACKS
    trial = under_attack(lambda port: flood(port, frames=frames))
    result = trial.outcome
    if result.figures.get("acks", 0) < frames:
        expect.goaway(result, ErrorCodes.ENHANCE_YOUR_CALM)
        expect.closed(result)
    expect.contained(trial, rss=16 * MiB)


@FLOODS
def test_control_flood_never_reading(under_attack: UnderAttack, flood: Flood) -> None:
    # The answers pile up unread: the server must stop reading or end the connection, not
    # queue them in memory (36-68 MiB of frames are offered over 3 s).
    trial = under_attack(lambda port: flood(port, frames=1 << 22, read=False, seconds=3.0))
    result = trial.outcome
    assert result.blocked or result.send_failed, (
        f"the server took {result.bytes_sent / MiB:.0f} MiB "
        f"({result.figures['flood_frames']} frames) in {result.seconds:.1f}s from a client that "
        "never read its answers")
    expect.contained(trial, rss=16 * MiB)


@pytest.mark.parametrize(("setting", "value", "error"), [
    (SettingCodes.MAX_FRAME_SIZE, (1 << 32) - 1, ErrorCodes.PROTOCOL_ERROR),  # > 2^24-1
    (SettingCodes.MAX_FRAME_SIZE, 0, ErrorCodes.PROTOCOL_ERROR),  # < 16,384
    (SettingCodes.INITIAL_WINDOW_SIZE, 1 << 31, ErrorCodes.FLOW_CONTROL_ERROR),  # > 2^31-1
    (SettingCodes.HEADER_TABLE_SIZE, (1 << 32) - 1, None),  # allowed: a cap for our encoder
], ids=["MAX_FRAME_SIZE=2^32-1", "MAX_FRAME_SIZE=0", "INITIAL_WINDOW_SIZE=2^31",
        "HEADER_TABLE_SIZE=2^32-1"])
def test_extreme_setting(under_attack: UnderAttack, setting: SettingCodes, value: int,
                         error: ErrorCodes | None) -> None:
    # RFC 9113 6.5.2: values out of range end the connection with the error named there. A
    # huge HEADER_TABLE_SIZE only permits the server's encoder a big table: it keeps a small
    # one, and the connection goes on serving (a health check on it).
    trial = under_attack(lambda port: attacks.extreme_setting(port, setting, value))
    result = trial.outcome
    if error is not None:
        expect.goaway(result, error)
    else:
        assert result.server.goaway is None, f"GOAWAY {result.server.goaway}"
        assert result.server.grpc_status(1) == 0, (
            f"the health check after the setting: {attacks.summary(result)}")
    expect.contained(trial, rss=16 * MiB)
