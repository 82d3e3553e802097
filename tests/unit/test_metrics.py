"""The sidecar's metrics: tallies that reach Prometheus exactly as direct counting would, one
endpoint's sum over worker processes (a dead one's counts stay, its gauges go), and the JSON
log lines naming the stream they are about."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import multiprocessing
import threading
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.multiprocess import MultiProcessCollector

from sidecar.admission import Admission
from sidecar.logs import STREAM_ON_THREAD, JsonLines
from sidecar.metrics import (
    EVENT_BUCKETS,
    MULTIPROCESS_DIR,
    CounterTally,
    HistogramTallies,
    Metrics,
    worker_gone,
)
from sidecar.offload import Offload
from sidecar.registry import Chain
from sidecar.slow_lanes import SlowLanes
from sidecar.streams import Decision, StreamPlugins
from vmm.errors import CpuLimitExceeded
from vmm.events import FORWARD, Close, EventKind

# on a bound, between bounds, past the last one
SECONDS = [5e-6, 7e-6, 1e-3, 3e-3, 0.3, 2.0, 5e-6]


def decision(plugin: str = "p", seconds: float = 6e-6, **fields: object) -> Decision:
    return Decision(1, "tcp", "c", plugin, EventKind.TCP_DATA, tier="wasmtime",
                    seconds=seconds, **fields)  # type: ignore[arg-type]


def test_tallied_observations_flush_as_observed_ones() -> None:
    observed, tallied = CollectorRegistry(), CollectorRegistry()
    direct = Histogram("e_seconds", "e", ["plugin"], registry=observed, buckets=EVENT_BUCKETS)
    for seconds in SECONDS:
        direct.labels("p").observe(seconds)
    tallies = HistogramTallies(Histogram("e_seconds", "e", ["plugin"], registry=tallied,
                                         buckets=EVENT_BUCKETS), EVENT_BUCKETS)
    for seconds in SECONDS[:3]:
        tallies["p",].observe(seconds)
    tallies.flush()
    for seconds in SECONDS[3:]:
        tallies["p",].observe(seconds)
    tallies.flush()
    tallies.flush()  # nothing new: nothing added
    for bound in (*EVENT_BUCKETS, float("inf")):
        le = "+Inf" if bound == float("inf") else str(bound)
        assert tallied.get_sample_value("e_seconds_bucket", {"plugin": "p", "le": le}) \
            == observed.get_sample_value("e_seconds_bucket", {"plugin": "p", "le": le}), le
    assert tallied.get_sample_value("e_seconds_count", {"plugin": "p"}) == len(SECONDS)
    assert tallied.get_sample_value("e_seconds_sum", {"plugin": "p"}) \
        == pytest.approx(sum(SECONDS))


def test_counter_tallies_add_only_what_is_new() -> None:
    registry = CollectorRegistry()
    tally: CounterTally[tuple[str, str]] = CounterTally(
        Counter("c", "c", ["a", "b"], registry=registry), lambda key: key)
    tally.counts["x", "y"] += 2
    tally.flush()
    tally.counts["x", "y"] += 1
    tally.counts["x", "z"] += 5
    tally.flush()
    tally.flush()
    assert registry.get_sample_value("c_total", {"a": "x", "b": "y"}) == 3
    assert registry.get_sample_value("c_total", {"a": "x", "b": "z"}) == 5


def test_a_scrape_of_the_process_itself_is_exact() -> None:
    """One worker: no timer, the scrape itself brings the tallies in."""
    metrics = Metrics()
    metrics.decided(decision(verdict=FORWARD))
    metrics.decided(decision(verdict=Close()))
    metrics.decided(decision(fault=CpuLimitExceeded("p", "20 ms")))
    metrics.add("p", "blocked", 2)
    metrics.set("p", "level", -3)
    registry = metrics.registry
    labels = {"plugin": "p", "event": "tcp.data"}
    assert registry.get_sample_value("hyperfilter_verdicts_total",
                                     {**labels, "verdict": "forward"}) == 1
    assert registry.get_sample_value("hyperfilter_verdicts_total",
                                     {**labels, "verdict": "close"}) == 1
    assert registry.get_sample_value("hyperfilter_plugin_faults_total",
                                     {"plugin": "p", "cause": "CpuLimitExceeded"}) == 1
    assert registry.get_sample_value("hyperfilter_event_seconds_count",
                                     {"plugin": "p", "tier": "wasmtime"}) == 3
    assert registry.get_sample_value("hyperfilter_plugin_counter_total",
                                     {"plugin": "p", "name": "blocked"}) == 2
    assert registry.get_sample_value("hyperfilter_plugin_gauge",
                                     {"plugin": "p", "name": "level"}) == -3


def run_as_worker(lanes: Path, streams: int, open_streams: int) -> None:
    """A worker process's figures: `streams` streams and a verdict each, `open_streams` of
    them still open when it flushes."""

    async def serve() -> None:
        metrics = Metrics()
        admission = Admission(100, 100)
        for _ in range(open_streams):
            admission.open_stream()
        offload = Offload(asyncio.get_running_loop(), SlowLanes.create(lanes, 1))
        metrics.start(admission, offload, lambda work: work())
        for _ in range(streams):
            metrics.stream_started(StreamPlugins(Chain("c", ()), "tcp"))
            metrics.decided(decision(verdict=FORWARD))
        metrics.add("p", "blocked", 1)
        metrics.close()
        await offload.close()

    asyncio.run(serve())


def test_the_endpoint_sums_the_workers_and_keeps_a_dead_ones_counts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    figures = tmp_path / "metrics"
    figures.mkdir()
    monkeypatch.setenv(MULTIPROCESS_DIR, str(figures))  # as the parent does for its workers
    spawn = multiprocessing.get_context("spawn")
    pids = []
    for index, (streams, still_open) in enumerate(((3, 2), (4, 1))):
        worker = spawn.Process(target=run_as_worker,
                               args=(tmp_path / f"lanes{index}", streams, still_open))
        worker.start()
        worker.join(timeout=60)
        assert worker.exitcode == 0 and worker.pid is not None
        pids.append(worker.pid)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(figures))

    def value(sample_name: str, **labels: str) -> float | None:
        return registry.get_sample_value(sample_name, labels)

    assert value("hyperfilter_streams_total", protocol="tcp", chain="c") == 7
    assert value("hyperfilter_verdicts_total", plugin="p", event="tcp.data",
                 verdict="forward") == 7
    assert value("hyperfilter_event_seconds_count", plugin="p", tier="wasmtime") == 7
    assert value("hyperfilter_plugin_counter_total", plugin="p", name="blocked") == 2
    assert value("hyperfilter_live_streams") == 3
    worker_gone(figures, pids[0])  # the first one died: the parent restarts it
    assert value("hyperfilter_live_streams") == 1
    assert value("hyperfilter_streams_total", protocol="tcp", chain="c") == 7
    assert value("hyperfilter_event_seconds_count", plugin="p", tier="wasmtime") == 7


def test_json_lines_name_the_stream_of_the_event_running_on_their_thread() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonLines(worker=1))
    logger = logging.getLogger("tests.json-lines")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("about no stream")
        STREAM_ON_THREAD[threading.get_ident()] = 7  # as while stream 7's event runs here
        try:
            logger.warning("from the plugin %s", "p")
            logger.warning("about another one", extra={"stream": 9})
            elsewhere = threading.Thread(target=logger.warning, args=("on another thread",))
            elsewhere.start()
            elsewhere.join()
        finally:
            del STREAM_ON_THREAD[threading.get_ident()]
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(line["message"], line.get("stream")) for line in lines] == [
        ("about no stream", None), ("from the plugin p", 7), ("about another one", 9),
        ("on another thread", None), ("failed", None)]
    assert lines[0].keys() == {"time", "level", "worker", "logger", "message"}
    assert lines[0]["worker"] == 1 and lines[0]["level"] == "warning"
    assert lines[0]["logger"] == "tests.json-lines"
    assert "ValueError: boom" in lines[4]["exception"]
