"""Slow prefaces: connections that send nothing, or the preface a byte at a time (slowloris)."""

from __future__ import annotations

from bench import attacks
from bench.attacks import LINGER_SECONDS, PREFACE
from sidecar.http2 import PREFACE_TIMEOUT_SECONDS
from tests.attacks import expect
from tests.attacks.conftest import UnderAttack
from tests.attacks.expect import MiB

OPENING = len(PREFACE) + 9  # the preface and the header of the first SETTINGS


def test_slow_preface(under_attack: UnderAttack) -> None:
    # Every connection is closed PREFACE_TIMEOUT_SECONDS after it opened, however steadily
    # its bytes trickle in: the opening would take 1.5 times as long, one byte at a time.
    interval = 1.5 * PREFACE_TIMEOUT_SECONDS / OPENING
    bound = PREFACE_TIMEOUT_SECONDS + LINGER_SECONDS
    trial = under_attack(lambda port: attacks.slow_preface(
        port, silent=20, trickling=5, interval=interval, seconds=bound + 1))
    for result in trial.outcome:
        closed = result.server.closed_at
        assert closed is not None and closed <= bound, (
            f"{result.name}: closed after {closed}s, expected within {bound}s")
        assert result.bytes_sent < OPENING, f"{result.name}: the whole opening went through"
    expect.contained(trial, rss=16 * MiB)
