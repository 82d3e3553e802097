"""Prometheus metrics: the sidecar's own, and the counters and gauges plugins keep through the
`metrics` capability (only names their grant declares).

One endpoint for the whole sidecar. With one worker, the process serves its own registry. With
several, the parent points prometheus-client's multiprocess mode at a directory of the
sidecar's runtime directory before it starts them (`share_with_workers`): each worker's values
live in files there, kept after the worker dies (its counters stay in the totals; its gauges
leave them: `worker_gone`), and the parent serves their sum (`serve_workers`).

The hot path adds to plain ints (`CounterTally`, `HistogramTally`): an event costs a dict or
list update, not a labelled counter's lock and, with workers, a write into a shared file. The
tallies reach Prometheus's values on every scrape of the process's own registry (so a single
worker's endpoint is exact) and, with workers, every FLUSH_SECONDS when the worker is quiet:
the parent's endpoint is at most that far behind (plus quiet work's longest wait).
"""

from __future__ import annotations

import asyncio
import os
import threading
from bisect import bisect_left
from collections import Counter as Tally
from collections.abc import Callable, Hashable, Iterator, Sequence
from pathlib import Path
from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

from sidecar.admission import Admission
from sidecar.offload import Offload
from sidecar.streams import Decision, StreamPlugins
from vmm.events import Verdict

# prometheus-client reads it once, when imported: the parent sets it for the workers it starts.
MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"
SHARED = MULTIPROCESS_DIR in os.environ
FLUSH_SECONDS = 1.0
# A warm sandbox takes microseconds per event, a slow plugin up to its cpu-ms; a new sandbox
# tens of microseconds (a spare), a new kvm VM about a millisecond.
EVENT_BUCKETS = (5e-6, 10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 10e-3,
                 50e-3, 250e-3)
CREATION_BUCKETS = (10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3,
                    50e-3)
_VERDICT_NAMES = {"Forward": "forward", "Replace": "replace", "Close": "close",
                  "Reset": "reset", "Answer": "answer", "AnswerAndClose": "answer-and-close",
                  "HttpForward": "forward", "Respond": "respond"}
K = TypeVar("K", bound=Hashable)


def verdict_name(verdict: Verdict | None) -> str:
    return verdict_type_name(type(verdict) if verdict is not None else None)


def verdict_type_name(verdict_type: type | None) -> str:
    return _VERDICT_NAMES[verdict_type.__name__] if verdict_type is not None else "none"


def _as_labels(key: tuple[str, ...]) -> tuple[str, ...]:
    return key


class CounterTally(Generic[K]):
    """A labelled counter's increments as plain ints by key; `flush` adds to the counter what
    came since the last flush. `labels(key)` gives the key's label values."""

    def __init__(self, counter: Counter, labels: Callable[[K], Sequence[str]]) -> None:
        self.counts: Tally[K] = Tally()
        self._counter = counter
        self._labels = labels
        self._flushed: dict[K, tuple[Counter, int]] = {}  # key → (its child, count flushed)

    def flush(self) -> None:
        for key, count in list(self.counts.items()):  # a copy: the hot path goes on adding
            child, flushed = self._flushed.get(key) or (
                self._counter.labels(*self._labels(key)), 0)
            if count != flushed:
                child.inc(count - flushed)
                self._flushed[key] = (child, count)


class HistogramTally:
    """One histogram child's observations as plain ints per bucket and a float sum; `flush`
    adds to the child what came since the last flush."""

    __slots__ = ("_bounds", "_child", "_flushed", "_flushed_sum", "counts", "sum")

    def __init__(self, child: Histogram, bounds: Sequence[float]) -> None:
        self._bounds = tuple(bounds)  # the child's, +Inf last
        self._child = child
        self.counts = [0] * len(self._bounds)
        self.sum = 0.0
        self._flushed = [0] * len(self._bounds)
        self._flushed_sum = 0.0

    def observe(self, seconds: float) -> None:
        # Histogram.observe's bucket: the first whose bound is at least `seconds`
        self.counts[bisect_left(self._bounds, seconds)] += 1
        self.sum += seconds

    def flush(self) -> int:
        """The number of observations added."""
        # prometheus-client has no public call adding n observations at once: this adds to
        # the values Histogram.observe adds to (tests/unit/test_metrics.py holds it to it).
        counts, total = list(self.counts), self.sum
        if counts == self._flushed:
            return 0
        for bucket, (count, flushed) in enumerate(zip(counts, self._flushed, strict=True)):
            if count != flushed:
                self._child._buckets[bucket].inc(count - flushed)
        self._child._sum.inc(total - self._flushed_sum)
        added = sum(counts) - sum(self._flushed)
        self._flushed, self._flushed_sum = counts, total
        return added


class DecisionTally(HistogramTally):
    """A plugin's verdicts of one kind on one kind of event and tier: timed into the plugin's
    event histogram, and counted (one tally, one look-up per decision, for both)."""

    __slots__ = ("_verdicts",)

    def __init__(self, child: Histogram, bounds: Sequence[float], verdicts: Counter) -> None:
        super().__init__(child, bounds)
        self._verdicts = verdicts

    def flush(self) -> int:
        added = super().flush()
        if added:
            self._verdicts.inc(added)
        return added


class HistogramTallies:
    """A labelled histogram's tallies, one per combination of labels."""

    def __init__(self, histogram: Histogram, buckets: Sequence[float]) -> None:
        self._histogram = histogram
        self.bounds = (*buckets, float("inf"))
        self.by_labels: dict[tuple[str, ...], HistogramTally] = {}

    def __getitem__(self, labels: tuple[str, ...]) -> HistogramTally:
        tally = self.by_labels.get(labels)
        if tally is None:
            tally = self.by_labels[labels] = HistogramTally(self.child(*labels), self.bounds)
        return tally

    def child(self, *labels: str) -> Histogram:
        return self._histogram.labels(*labels)

    def flush(self) -> None:
        for tally in list(self.by_labels.values()):
            tally.flush()


class _FlushFirst(Collector):
    """Registered first: a scrape of the registry sees everything counted until then."""

    def __init__(self, flush: Callable[[], None]) -> None:
        self._flush = flush

    def collect(self) -> Iterator[Metric]:
        self._flush()
        return iter(())


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        r.register(_FlushFirst(self.flush))
        self.streams: CounterTally[tuple[str, str]] = CounterTally(Counter(
            "hyperfilter_streams", "Envoy streams served", ["protocol", "chain"], registry=r),
            _as_labels)
        self._verdicts = Counter("hyperfilter_verdicts", "Plugin verdicts",
                                 ["plugin", "event", "verdict"], registry=r)
        # by plugin, tier, event and verdict type
        self._decisions: dict[tuple[str, str, str, type | None], DecisionTally] = {}
        self.sandboxes: CounterTally[tuple[str, str]] = CounterTally(Counter(
            "hyperfilter_sandboxes", "Sandboxes made for streams (a spare made earlier, or one "
            "made for the stream's first message)", ["plugin", "tier"], registry=r), _as_labels)
        self.sandboxes_reused: CounterTally[tuple[str, str]] = CounterTally(Counter(
            "hyperfilter_sandboxes_reused", "Of those, micro-VMs an earlier stream ran in, "
            "reset to the plugin's snapshot (kvm)", ["plugin", "tier"], registry=r),
            _as_labels)
        self.event_seconds = HistogramTallies(Histogram(
            "hyperfilter_event_seconds", "Time a plugin took over one event (wall clock)",
            ["plugin", "tier"], registry=r, buckets=EVENT_BUCKETS), EVENT_BUCKETS)
        self.sandbox_seconds = HistogramTallies(Histogram(
            "hyperfilter_sandbox_seconds", "Time a stream waited for one plugin's sandbox",
            ["plugin", "tier"], registry=r, buckets=CREATION_BUCKETS), CREATION_BUCKETS)
        self.stream_sandboxes_seconds = HistogramTallies(Histogram(
            "hyperfilter_stream_sandboxes_seconds", "Time to create one stream's sandboxes",
            ["protocol"], registry=r, buckets=CREATION_BUCKETS), CREATION_BUCKETS)
        # Plugins' host calls may run on slow-lane threads too: their counts take a lock.
        self._plugin_lock = threading.Lock()
        self.plugin_counters: CounterTally[tuple[str, str]] = CounterTally(Counter(
            "hyperfilter_plugin_counter", "Counters kept by plugins", ["plugin", "name"],
            registry=r), _as_labels)
        self._plugin_gauge_values: dict[tuple[str, str], int] = {}
        self._plugin_gauges = Gauge("hyperfilter_plugin_gauge",
                                    "Gauges kept by plugins (with workers, their sum)",
                                    ["plugin", "name"], registry=r, multiprocess_mode="livesum")
        # Rare: counted at once.
        self.faults = Counter("hyperfilter_plugin_faults",
                              "Plugins that trapped, ran out of CPU time or memory",
                              ["plugin", "cause"], registry=r)
        self.refused = Counter("hyperfilter_refused_streams",
                               "Streams refused past the worker's max-streams or max-sandboxes",
                               ["bound"], registry=r)
        # Read from the worker at each flush; a dead worker's leave the sum.
        self._live: list[tuple[Gauge, Callable[[], int]]] = []
        self._live_gauges = [
            Gauge("hyperfilter_live_streams", "Envoy streams open now", registry=r,
                  multiprocess_mode="livesum"),
            Gauge("hyperfilter_live_sandboxes", "Sandboxes of open streams", registry=r,
                  multiprocess_mode="livesum"),
            Gauge("hyperfilter_slow_events_running",
                  "Events of slow plugins running off the event loop, each in a slow lane",
                  registry=r, multiprocess_mode="livesum"),
            Gauge("hyperfilter_slow_events_waiting",
                  "Events of slow plugins waiting for a slow lane (slow-plugin-cores)",
                  registry=r, multiprocess_mode="livesum")]
        self._flush_lock = threading.Lock()  # the loop's timer and a scrape's thread
        self._timer: asyncio.TimerHandle | None = None

    def start(self, admission: Admission, offload: Offload,
              when_quiet: Callable[[Callable[[], None]], object]) -> None:
        """On the worker's event loop: the live gauges read its counts; with workers, the
        tallies are flushed every FLUSH_SECONDS, once the worker is quiet (`when_quiet`)."""
        self._live = list(zip(self._live_gauges, (
            lambda: admission.streams, lambda: admission.sandboxes,
            lambda: offload.running, lambda: offload.waiting), strict=True))
        if SHARED:
            loop = asyncio.get_running_loop()

            def tick() -> None:
                when_quiet(self.flush)
                self._timer = loop.call_later(FLUSH_SECONDS, tick)

            self._timer = loop.call_later(FLUSH_SECONDS, tick)

    def close(self) -> None:
        """The last flush: with workers, what this one counted stays in the totals."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.flush()

    def flush(self) -> None:
        with self._flush_lock:
            for tally in (self.streams, self.sandboxes, self.sandboxes_reused,
                          self.plugin_counters):
                tally.flush()
            for decisions in list(self._decisions.values()):
                decisions.flush()
            for histogram in (self.event_seconds, self.sandbox_seconds,
                              self.stream_sandboxes_seconds):
                histogram.flush()
            for (plugin, name), value in list(self._plugin_gauge_values.items()):
                self._plugin_gauges.labels(plugin, name).set(value)
            for gauge, read in self._live:
                gauge.set(read())

    # the `metrics` capability's sink
    def add(self, plugin: str, name: str, delta: int) -> None:
        with self._plugin_lock:
            self.plugin_counters.counts[plugin, name] += delta

    def set(self, plugin: str, name: str, value: int) -> None:
        self._plugin_gauge_values[plugin, name] = value

    # an observer of streams
    def decided(self, decision: Decision) -> None:
        if decision.fault is not None:
            self.faults.labels(decision.plugin, type(decision.fault).__name__).inc()
            self.event_seconds[decision.plugin, decision.tier].observe(decision.seconds)
            return
        verdict = decision.verdict
        # The hottest path: one look-up. The event's name as its `_value_`: an EventKind
        # hashes in Python, and its `value` is a Python property.
        key = (decision.plugin, decision.tier, decision.event._value_,
               type(verdict) if verdict is not None else None)
        (self._decisions.get(key) or self._decision_tally(key)).observe(decision.seconds)

    def _decision_tally(self, key: tuple[str, str, str, type | None]) -> DecisionTally:
        plugin, tier, event, verdict = key
        tally = self._decisions[key] = DecisionTally(
            self.event_seconds.child(plugin, tier), self.event_seconds.bounds,
            self._verdicts.labels(plugin, event, verdict_type_name(verdict)))
        return tally

    def stream_started(self, stream: StreamPlugins) -> None:
        self.streams.counts[stream.protocol, stream.chain.name] += 1
        self.stream_sandboxes_seconds[stream.protocol,].observe(stream.creation_seconds)
        for link in stream.links:
            if link.sandbox is not None:
                self.sandboxes.counts[link.name, link.tier] += 1
                if link.sandbox.reused:
                    self.sandboxes_reused.counts[link.name, link.tier] += 1
                self.sandbox_seconds[link.name, link.tier].observe(link.creation_seconds)

    def serve(self, address: str) -> int:
        """This process's registry served on `address`; the port bound."""
        return _serve(self.registry, address)


def share_with_workers(directory: Path) -> None:
    """Workers started from now on keep their values in files in `directory`."""
    directory.mkdir(exist_ok=True)
    os.environ[MULTIPROCESS_DIR] = str(directory)


def serve_workers(directory: Path, address: str) -> int:
    """The sum of every worker's values (the live ones' gauges) served on `address`."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))
    return _serve(registry, address)


def worker_gone(directory: Path, pid: int) -> None:
    """A worker's gauges leave the sums; its counters and histograms stay."""
    mark_process_dead(pid, str(directory))


def _serve(registry: CollectorRegistry, address: str) -> int:
    host, _, port = address.rpartition(":")
    server, _ = start_http_server(int(port), host or "0.0.0.0", registry=registry)
    return server.server_port
