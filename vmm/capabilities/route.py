"""Grant `route`: the plugin may change where a request goes. Not an interface, it links no
host function; it widens what a verdict may set (vmm/verdicts.py enforces it)."""

from __future__ import annotations

from dataclasses import dataclass

from vmm.capabilities.base import Grant, HostEnv
from vmm.tables import Table

ROUTING_HEADERS = frozenset({":path", ":authority", "host"})
METHOD_HEADER = ":method"


@dataclass(frozen=True)
class RouteGrant(Grant):
    """`:path`, `:authority` and `host` in the request headers; `:method` only with
    `method = true`, since a new method changes what the upstream does, not where it is."""

    name = "route"
    functions = ()
    method: bool = False

    @classmethod
    def parse(cls, table: Table) -> RouteGrant:
        return cls(method=table.get("method", bool, False))

    def bind(self, env: HostEnv) -> None:
        return None

    @property
    def settable(self) -> frozenset[str]:
        """The request pseudo-headers (and `host`) this grant lets a plugin set."""
        return ROUTING_HEADERS | {METHOD_HEADER} if self.method else ROUTING_HEADERS
