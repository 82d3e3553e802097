"""One metrics endpoint for the whole sidecar, through the real Envoy and `hyperfilter serve`
with two workers: one scrape shows every worker's figures summed, a worker killed and started
again leaves the totals as they were, and the JSON log lines carry the stream they are about."""

from __future__ import annotations

import json
import os
import re
import signal
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sidecar.envoy import Envoy, TcpListener, Upstream, render_bootstrap
from sidecar.metrics import FLUSH_SECONDS
from tests.conftest import plugin_dir
from tests.integration.harness import tcp_exchange
from tests.integration.test_cli import write_config
from tests.integration.test_operations import Held, Served

pytestmark = pytest.mark.integration
CONNECTIONS = 10  # Envoy's round robin: 5 on each worker
Scrape = Callable[[], dict[tuple[str, frozenset[tuple[str, str]]], float]]


def blocker_config(tmp_path: Path, extra: str = "") -> Path:
    """tcp-blocker as chain `p` (it closes on "DROP TABLE", logging a warning and counting it
    in its `blocked` counter), two workers, one metrics endpoint."""
    return write_config(tmp_path, f'p = {{ path = "{plugin_dir("tcp-blocker")}", '
                                  'tier = "wasmtime" }',
                        f'listen = "127.0.0.1:0"\nworkers = 2\nmetrics = "127.0.0.1:0"\n{extra}')


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    running = Served(blocker_config(tmp_path), tmp_path / "serve.log")
    try:
        yield running.start(workers=2)
    finally:
        running.close()


def scraper(served: Served) -> Scrape:
    url = served.wait_for(r"metrics on (http://127\.0\.0\.1:\d+/metrics)").group(1)

    def scrape() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        text = urllib.request.urlopen(url, timeout=5).read().decode()
        return {(sample.name, frozenset(sample.labels.items())): sample.value
                for family in text_string_to_metric_families(text)
                for sample in family.samples}
    return scrape


def total(values: dict[tuple[str, frozenset[tuple[str, str]]], float], sample_name: str,
          **labels: str) -> float:
    wanted = set(labels.items())
    return sum(value for (sample, have), value in values.items()
               if sample == sample_name and wanted <= have)


def blocked_connections(port: int, count: int) -> None:
    for _ in range(count):
        exchange = tcp_exchange(port, [b"hello", b"DROP TABLE users"])
        assert exchange.replies == [b"hello"] and exchange.closed


def settled(scrape: Scrape, sample_name: str, expected: float) -> dict[
        tuple[str, frozenset[tuple[str, str]]], float]:
    """The scrape once `sample_name` totals `expected`: workers flush every FLUSH_SECONDS."""
    deadline = time.monotonic() + FLUSH_SECONDS + 5
    while True:
        values = scrape()
        if total(values, sample_name) == expected or time.monotonic() > deadline:
            return values
        time.sleep(0.1)


def steady(scrape: Scrape) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The scrape once two, a flush apart, agree: a worker's last flush may have been taken
    mid-way through streams that have ended since (a live gauge still counting one of them)."""
    deadline = time.monotonic() + 6 * FLUSH_SECONDS + 5
    values = scrape()
    while True:
        time.sleep(FLUSH_SECONDS + 0.3)
        again = scrape()
        if again == values or time.monotonic() > deadline:
            return again
        values = again


def test_one_scrape_shows_every_workers_figures(served: Served) -> None:
    scrape = scraper(served)
    blocked_connections(served.port, CONNECTIONS)
    values = settled(scrape, "hyperfilter_streams_total", CONNECTIONS)
    assert total(values, "hyperfilter_streams_total", protocol="tcp", chain="p") == CONNECTIONS
    assert total(values, "hyperfilter_sandboxes_total", plugin="p", tier="wasmtime") \
        == CONNECTIONS
    # each connection: "hello" in and its echo out forwarded, "DROP TABLE" closed
    assert total(values, "hyperfilter_verdicts_total", plugin="p", verdict="close") \
        == CONNECTIONS
    assert total(values, "hyperfilter_verdicts_total", plugin="p", verdict="forward") \
        >= 2 * CONNECTIONS
    assert total(values, "hyperfilter_plugin_counter_total", plugin="p", name="blocked") \
        == CONNECTIONS
    verdicts = total(values, "hyperfilter_verdicts_total", plugin="p")
    assert total(values, "hyperfilter_event_seconds_count", plugin="p", tier="wasmtime") \
        == verdicts
    assert total(values, "hyperfilter_sandbox_seconds_count", plugin="p", tier="wasmtime") \
        == CONNECTIONS
    assert total(values, "hyperfilter_live_streams") == 0
    # and both workers served: the plugin's warnings came from each
    warned = re.findall(r"WARNING w(\d) hyperfilter\.plugin\.p: forbidden pattern seen",
                        served.log())
    assert sorted(warned) == ["0"] * (CONNECTIONS // 2) + ["1"] * (CONNECTIONS // 2)


def test_a_killed_worker_leaves_the_totals_as_they_were(served: Served) -> None:
    scrape = scraper(served)
    blocked_connections(served.port, CONNECTIONS)
    held = [Held(served.port) for _ in range(2)]  # one open stream on each worker
    try:
        for one in held:
            assert one.exchange(b"hello", 5) == b"hello"
        settled(scrape, "hyperfilter_live_streams", 2)
        before = steady(scrape)
        assert total(before, "hyperfilter_live_streams") == 2
        pid = int(served.wait_for(r"worker 1 \(pid (\d+)\) listening on").group(1))
        os.kill(pid, signal.SIGKILL)
        served.wait_for(r"worker 1 exited with -9; starting it again")
        served.wait_for(r"worker 1 \(pid \d+\) listening on \S+ again")
        settled(scrape, "hyperfilter_live_streams", 1)
        after = steady(scrape)
    finally:
        for one in held:
            one.close()
    # the dead worker's counts stay; its open stream has left the live ones
    for name in ("hyperfilter_streams_total", "hyperfilter_verdicts_total",
                 "hyperfilter_plugin_counter_total", "hyperfilter_event_seconds_count"):
        assert total(after, name) == total(before, name), name
    assert total(after, "hyperfilter_live_streams") == 1
    blocked_connections(served.port, 4)  # the new worker counts on top
    values = settled(scrape, "hyperfilter_streams_total",
                     total(before, "hyperfilter_streams_total") + 4)
    assert total(values, "hyperfilter_streams_total") == total(
        before, "hyperfilter_streams_total") + 4
    assert total(values, "hyperfilter_plugin_counter_total", name="blocked") \
        == CONNECTIONS + 4


def test_json_lines_name_the_stream_each_line_is_about(tmp_path: Path) -> None:
    running = Served(blocker_config(tmp_path, 'log-format = "json"'), tmp_path / "serve.log")
    try:
        running.wait_for(r"give Envoy's cluster every one")
        workers = [found.group(1) for line in json_lines(running)
                   if (found := re.fullmatch(r"worker \d \(pid \d+\) listening on (\S+)",
                                             str(line["message"])))]
        echo = Upstream("127.0.0.1", running.loop.run(running.echo.start))
        running.envoy = Envoy(render_bootstrap(workers, [
            TcpListener("p", "p", echo), TcpListener("unknown", "no-such-chain", echo)])).start()
        ports = running.envoy.listener_ports
        blocked_connections(ports["p"], CONNECTIONS)
        assert tcp_exchange(ports["unknown"], [b"hello"]).closed  # fail-closed
        lines = json_lines(running)  # every line is one JSON object
    finally:
        running.close()
    assert all(set(line) >= {"time", "level", "worker", "logger", "message"} for line in lines)
    # a plugin's own line, logged while the stream's event runs in it
    blocked = [line for line in lines
               if line["message"] == "forbidden pattern seen: closing the connection"]
    assert len(blocked) == CONNECTIONS
    assert all(line["logger"] == "hyperfilter.plugin.p" and line["level"] == "warning"
               for line in blocked)
    assert {line["worker"] for line in blocked} == {0, 1}
    assert len({(line["worker"], line["stream"]) for line in blocked}) == CONNECTIONS
    # the sidecar's own line about a stream
    refused = [line for line in lines if "unknown chain 'no-such-chain'" in str(line["message"])]
    assert len(refused) == 1 and isinstance(refused[0]["stream"], int)
    assert refused[0]["logger"] == "sidecar.streams"
    # lines about no stream name none
    assert not any("stream" in line for line in lines if line["logger"] == "hyperfilter"
                   and "listening on" in str(line["message"]))


def json_lines(served: Served) -> list[dict[str, object]]:
    return [json.loads(line) for line in served.log().splitlines() if line.strip()]
