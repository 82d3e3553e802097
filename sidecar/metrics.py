"""Prometheus metrics: the sidecar's own, and the counters and gauges plugins keep through the
`metrics` capability (only names their grant declares)."""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily

from sidecar.admission import Admission
from sidecar.offload import Offload
from sidecar.streams import Decision, StreamPlugins
from vmm.events import EventKind, Verdict

_VERDICT_NAMES = {"Forward": "forward", "Replace": "replace", "Close": "close",
                  "Reset": "reset", "HttpForward": "forward", "Respond": "respond"}


def verdict_name(verdict: Verdict | None) -> str:
    return verdict_type_name(type(verdict) if verdict is not None else None)


def verdict_type_name(verdict_type: type | None) -> str:
    return _VERDICT_NAMES[verdict_type.__name__] if verdict_type is not None else "none"


class VerdictCounts:
    """`hyperfilter_verdicts`: one per plugin decision, the hottest metric. Counted as plain
    ints and handed to Prometheus when it scrapes: an event costs a dict update, not a labelled
    counter's lock."""

    def __init__(self) -> None:
        self.counts: Tally[tuple[str, EventKind, type | None]] = Tally()

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily("hyperfilter_verdicts", "Plugin verdicts",
                                     labels=["plugin", "event", "verdict"])
        for (plugin, event, verdict), count in list(self.counts.items()):
            family.add_metric([plugin, event.value, verdict_type_name(verdict)], count)
        yield family


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.plugin_counters = Counter("hyperfilter_plugin_counter", "Counters kept by plugins",
                                       ["plugin", "name"], registry=r)
        self.plugin_gauges = Gauge("hyperfilter_plugin_gauge", "Gauges kept by plugins",
                                   ["plugin", "name"], registry=r)
        self.streams = Counter("hyperfilter_streams", "Envoy streams served",
                               ["protocol", "chain"], registry=r)
        self.verdicts = VerdictCounts()
        r.register(self.verdicts)
        self.faults = Counter("hyperfilter_plugin_faults",
                              "Plugins that trapped, ran out of CPU time or memory",
                              ["plugin", "cause"], registry=r)
        # labels() costs microseconds: each combination's children are looked up once
        self._stream_children: dict[tuple[str, str], tuple[Counter, Histogram]] = {}
        self.refused = Counter("hyperfilter_refused_streams",
                               "Streams refused past the worker's max-streams or max-sandboxes",
                               ["bound"], registry=r)
        self.live_streams = Gauge("hyperfilter_live_streams", "Envoy streams open now",
                                  registry=r)
        self.live_sandboxes = Gauge("hyperfilter_live_sandboxes", "Sandboxes of open streams",
                                    registry=r)
        self.slow_events_running = Gauge(
            "hyperfilter_slow_events_running",
            "Events of slow plugins running off the event loop, each in a slow lane", registry=r)
        self.slow_events_waiting = Gauge(
            "hyperfilter_slow_events_waiting",
            "Events of slow plugins waiting for a slow lane (slow-plugin-cores)", registry=r)
        self.sandbox_seconds = Histogram(
            "hyperfilter_stream_sandboxes_seconds", "Time to create one stream's sandboxes",
            ["protocol"], registry=r,
            buckets=(25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 50e-3))

    def watch(self, admission: Admission, offload: Offload) -> None:
        """The live gauges read the worker's counts when scraped."""
        self.live_streams.set_function(lambda: admission.streams)
        self.live_sandboxes.set_function(lambda: admission.sandboxes)
        self.slow_events_running.set_function(lambda: offload.running)
        self.slow_events_waiting.set_function(lambda: offload.waiting)

    # the `metrics` capability's sink
    def add(self, plugin: str, name: str, delta: int) -> None:
        self.plugin_counters.labels(plugin, name).inc(delta)

    def set(self, plugin: str, name: str, value: int) -> None:
        self.plugin_gauges.labels(plugin, name).set(value)

    # an observer of streams
    def decided(self, decision: Decision) -> None:
        if decision.fault is not None:
            self.faults.labels(decision.plugin, type(decision.fault).__name__).inc()
            return
        verdict = decision.verdict
        self.verdicts.counts[decision.plugin, decision.event,
                             type(verdict) if verdict is not None else None] += 1

    def stream_started(self, stream: StreamPlugins) -> None:
        key = (stream.protocol, stream.chain.name)
        children = self._stream_children.get(key)
        if children is None:
            children = self._stream_children[key] = (
                self.streams.labels(*key), self.sandbox_seconds.labels(stream.protocol))
        streams, sandbox_seconds = children
        streams.inc()
        sandbox_seconds.observe(stream.creation_seconds)

    def serve(self, address: str) -> int:
        host, _, port = address.rpartition(":")
        server, _ = start_http_server(int(port), host or "0.0.0.0", registry=self.registry)
        return server.server_port
