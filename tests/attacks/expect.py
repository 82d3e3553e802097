"""What every attack test checks, with failure messages that say what the server did."""

from __future__ import annotations

from h2.errors import ErrorCodes

from bench.attacks import LINGER_SECONDS, AttackResult, GoAway, Trial, error_name, summary

MiB = 1 << 20


def contained(trial: Trial[object], rss: int) -> None:
    """The attack cost the others nothing they could see: the server's peak memory grew by at
    most `rss`, no sandbox was made (no attack completes a gRPC message), and the well-behaved
    client was served throughout, after, and on a new connection."""
    assert trial.peak_rss_growth <= rss, (
        f"the sidecar's resident memory peaked {trial.peak_rss_growth / MiB:.1f} MiB over its "
        f"start, past the {rss / MiB:.0f} MiB bound")
    assert trial.counted["sandboxes"] == 0, (
        f"{trial.counted['sandboxes']:.0f} sandboxes made for streams that sent no whole gRPC "
        "message: a stream costs no sandbox until its first message")
    assert not trial.failures, (
        f"the well-behaved client failed {len(trial.failures)} round trips: {trial.failures[:3]}")
    assert trial.after, "the well-behaved client was not served after the attack"
    assert trial.new_connection is None, (
        f"a new connection after the attack was not served: {trial.new_connection}")


def goaway(result: AttackResult, *codes: ErrorCodes) -> GoAway:
    """The server ended the connection with GOAWAY and one of `codes`."""
    expected = " or ".join(code.name for code in codes)
    sent = result.server.goaway
    assert sent is not None, f"no GOAWAY ({expected} expected); the server: {summary(result)}"
    assert sent.error_code in codes, f"GOAWAY {sent.error}, expected {expected}"
    return sent


def closed(result: AttackResult) -> None:
    """The server closed the connection, within LINGER_SECONDS of the attack's last frame."""
    assert result.server.closed_at is not None, (
        f"the server still held the connection {LINGER_SECONDS}s after the attack's last frame "
        f"({result.seconds:.1f}s after it opened); the server: {summary(result)}")


def reset(result: AttackResult, stream: int, code: ErrorCodes) -> None:
    got = result.server.resets.get(stream)
    assert got == code, (
        f"stream {stream}: {'RST_STREAM ' + error_name(got) if got is not None else 'no reset'}"
        f", expected RST_STREAM {code.name}; the server: {summary(result)}")
