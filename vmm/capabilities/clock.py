"""Capability `clock`: wall-clock and monotonic time."""

from __future__ import annotations

import time
from dataclasses import dataclass

from vmm.canonical import U64, Signature
from vmm.capabilities.base import Grant, HostEnv, HostFunction
from vmm.tables import Table


class ClockHost:
    def now(self) -> int:
        return time.time_ns()

    def monotonic(self) -> int:
        return time.monotonic_ns()


@dataclass(frozen=True)
class ClockGrant(Grant):
    name = "clock"
    functions = (
        HostFunction("now", Signature([], U64)),
        HostFunction("monotonic", Signature([], U64)),
    )

    @classmethod
    def parse(cls, table: Table) -> ClockGrant:
        return cls()

    def bind(self, env: HostEnv) -> ClockHost:
        return ClockHost()
