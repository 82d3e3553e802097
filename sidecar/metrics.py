"""Prometheus metrics: the sidecar's own, and the counters and gauges plugins keep through the
`metrics` capability (only names their grant declares)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from sidecar.streams import Decision, StreamPlugins
from vmm.events import Verdict

_VERDICT_NAMES = {"Forward": "forward", "Replace": "replace", "Close": "close",
                  "Reset": "reset", "HttpForward": "forward", "Respond": "respond"}


def verdict_name(verdict: Verdict | None) -> str:
    return _VERDICT_NAMES[type(verdict).__name__] if verdict is not None else "none"


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
        self.verdicts = Counter("hyperfilter_verdicts", "Plugin verdicts",
                                ["plugin", "event", "verdict"], registry=r)
        self.faults = Counter("hyperfilter_plugin_faults",
                              "Plugins that trapped, ran out of CPU time or memory",
                              ["plugin", "cause"], registry=r)
        # labels() costs microseconds: each combination's child is looked up once
        self._verdict_counters: dict[tuple[object, ...], Counter] = {}
        self._stream_children: dict[tuple[str, str], tuple[Counter, Histogram]] = {}
        self.sandbox_seconds = Histogram(
            "hyperfilter_stream_sandboxes_seconds", "Time to create one stream's sandboxes",
            ["protocol"], registry=r,
            buckets=(25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 50e-3))

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
        key = (decision.plugin, decision.event, type(decision.verdict))
        counter = self._verdict_counters.get(key)
        if counter is None:
            counter = self._verdict_counters[key] = self.verdicts.labels(
                decision.plugin, decision.event.value, verdict_name(decision.verdict))
        counter.inc()

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
