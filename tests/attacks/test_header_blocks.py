"""Header blocks as the weapon: CONTINUATION floods, an HPACK bomb, integers that never end."""

from __future__ import annotations

import pytest
from h2.errors import ErrorCodes

from bench import attacks
from bench.attacks import ServerView
from sidecar.http2 import MAX_HEADER_LIST_BYTES
from tests.attacks import expect
from tests.attacks.conftest import UnderAttack
from tests.attacks.expect import MiB


def test_continuation_flood_small_frames(under_attack: UnderAttack) -> None:
    # CVE-2024-28182: past MAX_CONTINUATIONS frames the connection ends. The peer is not
    # breaking the framing, it is costing us: ENHANCE_YOUR_CALM (RFC 9113, 7).
    trial = under_attack(lambda port: attacks.continuation_flood(port, 16, frames=10_000))
    expect.goaway(trial.outcome, ErrorCodes.ENHANCE_YOUR_CALM)
    expect.closed(trial.outcome)
    expect.contained(trial, rss=16 * MiB)


def test_continuation_flood_1mib_frames(under_attack: UnderAttack) -> None:
    # 48 MiB offered; none of it may be held. A frame past SETTINGS_MAX_FRAME_SIZE is a
    # FRAME_SIZE_ERROR (RFC 9113, 4.2); nghttp2 does not check a CONTINUATION's length and
    # stops at the 1 MiB header field inside it, which no decoder takes (COMPRESSION_ERROR).
    trial = under_attack(lambda port: attacks.continuation_flood(port, 1 << 20, frames=48))
    expect.goaway(trial.outcome, ErrorCodes.FRAME_SIZE_ERROR, ErrorCodes.COMPRESSION_ERROR)
    expect.closed(trial.outcome)
    expect.contained(trial, rss=16 * MiB)


def refused(server: ServerView, stream: int) -> bool:
    """RST_STREAM (RFC 9113, 10.5.1: the block is still decoded, the stream not served), a
    431 or a gRPC error status, or the whole connection ended (GOAWAY with an error) before
    the stream got any answer."""
    statuses = [block.get(":status") for block in server.headers.get(stream, [])]
    status = server.grpc_status(stream)
    sent_away = server.goaway is not None and server.goaway.error_code != ErrorCodes.NO_ERROR \
        and (stream > server.goaway.last_stream_id or not server.answered(stream))
    return stream in server.resets or "431" in statuses \
        or (status is not None and status != 0) or sent_away


def test_hpack_bomb(under_attack: UnderAttack) -> None:
    trial = under_attack(lambda port: attacks.hpack_bomb(port, streams=20))
    result = trial.outcome
    assert result.figures["decoded_bytes_per_stream"] > 100 * MAX_HEADER_LIST_BYTES
    served = [s for s in result.streams if not refused(result.server, s)]
    assert not served, (
        f"streams {served} of {len(result.streams)}, each {MAX_HEADER_LIST_BYTES} bytes past "
        f"MAX_HEADER_LIST_BYTES once decoded, were not refused; the server: "
        f"{attacks.summary(result)}")
    expect.contained(trial, rss=16 * MiB)


@pytest.mark.parametrize("continuation", [0xFF, 0x80], ids=["huge-value", "zero-padded"])
def test_long_hpack_integer(under_attack: UnderAttack, continuation: int) -> None:
    # RFC 7541 5.1: an integer past what the decoder takes is a decoding error, whether its
    # value is huge (0xFF bytes) or its encoding merely long (0x80 bytes add nothing); RFC
    # 9113 4.3: COMPRESSION_ERROR for the connection.
    trial = under_attack(
        lambda port: attacks.long_hpack_integer(port, 256 << 10, continuation))
    expect.goaway(trial.outcome, ErrorCodes.COMPRESSION_ERROR)
    expect.closed(trial.outcome)
    expect.contained(trial, rss=16 * MiB)
