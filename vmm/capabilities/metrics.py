"""Capability `metrics`: counters and gauges, only the names the grant declares."""

from __future__ import annotations

import re
from dataclasses import dataclass

from vmm.canonical import S64, STRING, U64, Signature
from vmm.capabilities.base import CapabilityDenied, Grant, HostEnv, HostFunction, MetricsSink
from vmm.tables import Table, TableError

_METRIC_NAME = re.compile(r"[a-z_][a-z0-9_]{0,63}")


class MetricsHost:
    def __init__(
        self, plugin: str, counters: frozenset[str], gauges: frozenset[str], sink: MetricsSink
    ) -> None:
        self._plugin = plugin
        self._counters = counters
        self._gauges = gauges
        self._sink = sink

    def add(self, name: str, delta: int) -> None:
        if name not in self._counters:
            raise CapabilityDenied(f"metrics.add: counter {name!r} is not declared in the grant")
        self._sink.add(self._plugin, name, delta)

    def set(self, name: str, value: int) -> None:
        if name not in self._gauges:
            raise CapabilityDenied(f"metrics.set: gauge {name!r} is not declared in the grant")
        self._sink.set(self._plugin, name, value)


@dataclass(frozen=True)
class MetricsGrant(Grant):
    name = "metrics"
    functions = (
        HostFunction("add", Signature([STRING, U64], None)),
        HostFunction("set", Signature([STRING, S64], None)),
    )

    counters: tuple[str, ...] = ()
    gauges: tuple[str, ...] = ()

    @classmethod
    def parse(cls, table: Table) -> MetricsGrant:
        counters = table.get_strings("counters", ())
        gauges = table.get_strings("gauges", ())
        for key, names in (("counters", counters), ("gauges", gauges)):
            for metric in names:
                if not _METRIC_NAME.fullmatch(metric):
                    raise TableError(
                        f"{table.path(key)}: {metric!r} is not a metric name ([a-z_][a-z0-9_]*)"
                    )
        return cls(counters=counters, gauges=gauges)

    def bind(self, env: HostEnv) -> MetricsHost:
        return MetricsHost(env.plugin, frozenset(self.counters), frozenset(self.gauges),
                           env.metrics)
