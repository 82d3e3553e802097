"""Capabilities: everything a plugin can reach outside its sandbox, one module per interface.

A manifest grants capabilities by name (`[grants.log]`, ...). Backends link only the functions
of granted capabilities; a plugin importing anything else is refused at load.
"""

from __future__ import annotations

from vmm.capabilities.base import (
    CapabilityDenied,
    CapabilityError,
    Grant,
    HostEnv,
    HostFunction,
    MetricsSink,
    interface_id,
)
from vmm.capabilities.clock import ClockGrant
from vmm.capabilities.config import ConfigGrant
from vmm.capabilities.log import LogGrant, OutputLines, PluginLog
from vmm.capabilities.metrics import MetricsGrant
from vmm.capabilities.random import RandomGrant
from vmm.capabilities.route import RouteGrant
from vmm.capabilities.shared_state import SharedStateGrant
from vmm.tables import Table, TableError

GRANTS: dict[str, type[Grant]] = {
    grant.name: grant
    for grant in (LogGrant, ConfigGrant, ClockGrant, RandomGrant, MetricsGrant, SharedStateGrant,
                  RouteGrant)
}
# The grants a plugin imports as interfaces; the others (`route`) only widen its verdicts.
BY_INTERFACE: dict[str, type[Grant]] = {
    interface_id(name): g for name, g in GRANTS.items() if g.functions}


def parse_grants(table: Table) -> dict[str, Grant]:
    grants = {}
    for name, params in table.items():
        grant = GRANTS.get(name)
        if grant is None:
            known = ", ".join(GRANTS)
            raise TableError(f"{table.path(name)}: unknown grant {name!r} (known: {known})")
        params_table = Table(params, table.path(name))
        grants[name] = grant.parse(params_table)
        params_table.finish()
    return grants


__all__ = [
    "BY_INTERFACE",
    "GRANTS",
    "CapabilityDenied",
    "CapabilityError",
    "Grant",
    "HostEnv",
    "HostFunction",
    "MetricsSink",
    "OutputLines",
    "PluginLog",
    "RouteGrant",
    "interface_id",
    "parse_grants",
]
