"""Capabilities as the host implements them: quotas, expiry, rate limits, denials."""

from __future__ import annotations

import logging

import pytest

from tests.conftest import RecordingMetrics
from vmm.capabilities import CapabilityDenied, CapabilityError, parse_grants
from vmm.capabilities.log import OutputLines, PluginLog
from vmm.capabilities.metrics import MetricsHost
from vmm.capabilities.random import RandomHost
from vmm.capabilities.shared_state import S64_MAX, SharedState
from vmm.tables import Table, TableError


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_shared_state_counts_keys_and_bytes() -> None:
    state = SharedState(max_keys=2, max_bytes=10, clock=Clock())
    state.set("a", b"1234", 0)  # 1 + 4 bytes
    state.set("b", b"12", 0)  # 1 + 2
    assert state.used_bytes == 8
    with pytest.raises(CapabilityError) as too_many:
        state.set("c", b"", 0)
    assert too_many.value.case == "quota-exceeded"
    with pytest.raises(CapabilityError):
        state.set("a", b"1234567", 0)  # 1 + 7, plus "b" (3): 11 bytes
    state.set("a", b"12345", 0)  # replacing a value only counts the difference
    assert state.used_bytes == 9 and state.get("a") == b"12345"
    state.delete("a")
    assert state.get("a") is None and state.used_bytes == 3


def test_expired_keys_free_their_quota() -> None:
    clock = Clock()
    state = SharedState(max_keys=1, max_bytes=100, clock=clock)
    state.set("window", b"x", 500)
    clock.now += 0.499
    assert state.get("window") == b"x"
    clock.now += 0.002
    state.set("next", b"y", 0)  # only fits because "window" has expired
    assert state.get("window") is None and state.get("next") == b"y"


def test_increment_is_what_a_rate_limiter_needs() -> None:
    clock = Clock()
    state = SharedState(max_keys=10, max_bytes=100, clock=clock)
    assert [state.increment("ip:1", 1, 1000) for _ in range(3)] == [1, 2, 3]
    clock.now += 1.0
    assert state.increment("ip:1", 1, 1000) == 1  # a new window
    state.set("text", b"abc", 0)
    with pytest.raises(CapabilityError) as error:
        state.increment("text", 1, 0)
    assert error.value.case == "not-a-number"
    state.set("big", str(S64_MAX).encode(), 0)
    assert state.increment("big", 10, 0) == S64_MAX  # saturates instead of trapping


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
