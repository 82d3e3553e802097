"""Capability `shared-state`: one key-value store per plugin, shared by all its sandboxes,
every worker of the sidecar, and (with the Redis backend) other sidecars.

What a rate limiter needs: `increment` with a time-to-live. The store has quotas (keys and
bytes, keys included) so that one plugin cannot grow the store without bound. Where the keys
live is the sidecar's choice (vmm/capabilities/state/).
"""

from __future__ import annotations

from dataclasses import dataclass

from vmm.canonical import BYTES, S64, STRING, U32, Enum, Option, Result, Signature
from vmm.capabilities.base import Grant, HostEnv, HostFunction
from vmm.capabilities.state import StateStore
from vmm.tables import Table

STATE_ERROR = Enum("quota-exceeded", "not-a-number")


@dataclass(frozen=True)
class SharedStateGrant(Grant):
    name = "shared-state"
    functions = (
        HostFunction("get", Signature([STRING], Option(BYTES))),
        HostFunction("set", Signature([STRING, BYTES, U32], Result(None, STATE_ERROR))),
        HostFunction("delete", Signature([STRING], None)),
        HostFunction("increment", Signature([STRING, S64, U32], Result(S64, STATE_ERROR))),
    )

    max_keys: int = 1024
    max_bytes: int = 64 * 1024

    @classmethod
    def parse(cls, table: Table) -> SharedStateGrant:
        return cls(
            max_keys=table.get_positive("max-keys", cls.max_keys),
            max_bytes=table.get_positive("max-bytes", cls.max_bytes),
        )

    def bind(self, env: HostEnv) -> StateStore:
        return env.state.store(env.plugin, self.max_keys, self.max_bytes)
