"""The Go SDK's canonical-ABI lowering (plugins/sdk/go), on every tier, through a Go plugin
(tests/plugins/go-probe): stream info in, every kind of verdict out, every capability."""

from __future__ import annotations

import logging

import pytest

from tests.conftest import Loader, RecordingMetrics
from tests.vmm.test_wasi_preview1 import PROBE_LOG, answer
from vmm.events import (
    FORWARD,
    Answer,
    Direction,
    HttpBody,
    HttpForward,
    HttpHeaders,
    HttpTrailers,
    Mutation,
    Respond,
    StreamInfo,
    TcpOpen,
)
from vmm.sandbox import LoadedPlugin

IN = Direction.INBOUND


@pytest.fixture
def probe(load: Loader) -> LoadedPlugin:
    return load("go-probe")


@pytest.mark.parametrize(("source", "ip"), [("10.1.2.3:40000", "10.1.2.3"),
                                            ("[2001:db8::1]:443", "2001:db8::1"),
                                            ("", "")])
def test_on_open_gets_the_stream_info_and_answers_with_it(probe: LoadedPlugin, source: str,
                                                          ip: str) -> None:
    info = StreamInfo(source, "10.0.0.1:6379", "example.com",
                      (("x-probe-info", "1"), ("tenant", "é")))
    verdict = probe.new_sandbox().deliver(TcpOpen(info))
    assert verdict == Answer(f"{source}|{ip}|10.0.0.1:6379|example.com|x-probe-info=1,"
                             "tenant=é".encode())
    assert probe.new_sandbox().deliver(TcpOpen(StreamInfo(source))) == FORWARD


def test_http_verdicts_set_remove_and_replace(probe: LoadedPlugin) -> None:
    sandbox = probe.new_sandbox()
    headers = ((":method", b"GET"), (":path", b"/p?q"), ("x-drop", b"1"))
    assert sandbox.deliver(HttpHeaders(IN, headers, False)) == HttpForward(Mutation(
        (("x-path", b"/p?q"), ("x-headers", b"3")), ("x-drop",)))
    assert sandbox.deliver(HttpBody(IN, b"hello \xff\x00", False)) == HttpForward(Mutation(
        body=b"\x00\xff olleh"))
    assert sandbox.deliver(HttpBody(IN, b"", True)) == HttpForward(Mutation(body=b""))
    assert sandbox.deliver(HttpTrailers(IN, (("a", b"1"), ("b", b"2")))) == HttpForward(
        Mutation((("x-trailers", b"2"),)))


def test_http_respond_carries_status_headers_and_body(probe: LoadedPlugin) -> None:
    verdict = probe.new_sandbox().deliver(
        HttpHeaders(IN, ((":path", b"/"), ("x-probe-respond", b"teapot")), True))
    assert verdict == Respond(418, (("x-probe", b"yes"),), b"teapot")


def test_the_go_sdk_reaches_every_capability(probe: LoadedPlugin, metrics: RecordingMetrics,
                                             caplog: pytest.LogCaptureFixture) -> None:
    assert answer(probe, "config colour") == "blue"  # the host allocates the answer: reentry
    assert answer(probe, "config missing") == "none"
    assert answer(probe, "clock") == "ok"
    assert len(bytes.fromhex(answer(probe, "random 16"))) == 16
    assert [answer(probe, "count visits") for _ in range(3)] == ["1", "2", "3"]
    assert answer(probe, "set colour red") == "ok"
    assert answer(probe, "get colour") == "red"
    assert answer(probe, "del colour") == "ok"
    assert answer(probe, "get colour") == "none"
    assert [answer(probe, f"set key{i} v") for i in range(5)] == ["ok"] * 3 + ["quota"] * 2
    assert answer(probe, "metric") == "ok"
    assert metrics.counters["go-probe", "hits"] == 1
    assert metrics.gauges["go-probe", "level"] == -7
    with caplog.at_level(logging.INFO, logger=PROBE_LOG):
        assert answer(probe, "log hello") == "ok"
    assert "probe says hello" in caplog.messages
