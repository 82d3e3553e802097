"""Capabilities as the host implements them: rate limits, denials (shared-state: its own
file)."""

from __future__ import annotations

import logging

import pytest

from tests.conftest import RecordingMetrics
from vmm.capabilities import CapabilityDenied, parse_grants
from vmm.capabilities.log import OutputLines, PluginLog
from vmm.capabilities.metrics import MetricsHost
from vmm.capabilities.random import RandomHost
from vmm.tables import Table, TableError


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_log_rate_limit_drops_and_reports(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    log = PluginLog("noisy", rate=2, clock=clock)
    with caplog.at_level(logging.DEBUG, logger="hyperfilter.plugin.noisy"):
        for i in range(5):
            log.log(1, f"message {i}")
        clock.now += 1.0
        log.log(3, "after a second")
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["message 0", "message 1", "3 messages dropped by the log rate limit",
                        "after a second"]


def test_log_lines_cannot_be_forged(caplog: pytest.LogCaptureFixture) -> None:
    log = PluginLog("p", rate=100)
    with caplog.at_level(logging.INFO, logger="hyperfilter.plugin.p"):
        log.log(1, "ok\nERROR forged \x1b[31m")
        OutputLines(log, 1).write(b"partial")
        OutputLines(log, 1).write(b"line one\nline two\n")
    assert [r.getMessage() for r in caplog.records] == [
        "ok\\nERROR forged \\x1b[31m", "line one", "line two"]


def test_a_flood_of_lines_past_the_rate_is_counted_not_walked(
        caplog: pytest.LogCaptureFixture) -> None:
    log = PluginLog("flood", rate=2, clock=Clock())
    with caplog.at_level(logging.INFO, logger="hyperfilter.plugin.flood"):
        OutputLines(log, 1).write(b"\n" * (64 << 10))
    assert len(caplog.records) == 2 and log.dropped == (64 << 10) - 2


def test_metrics_only_declared_names() -> None:
    sink = RecordingMetrics()
    host = MetricsHost("p", frozenset({"hits"}), frozenset({"level"}), sink)
    host.add("hits", 2)
    host.set("level", -3)
    assert sink.counters == {("p", "hits"): 2} and sink.gauges == {("p", "level"): -3}
    with pytest.raises(CapabilityDenied, match="counter 'misses' is not declared"):
        host.add("misses", 1)
    with pytest.raises(CapabilityDenied, match="gauge 'hits' is not declared"):
        host.set("hits", 1)


def test_random_is_bounded_per_call() -> None:
    assert len(RandomHost().get_bytes(4096)) == 4096
    with pytest.raises(CapabilityDenied):
        RandomHost().get_bytes(4097)


def test_unknown_grant_is_named() -> None:
    with pytest.raises(TableError, match="unknown grant 'network'"):
        parse_grants(Table({"network": {}}, "grants"))
