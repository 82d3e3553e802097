"""Capability `random`: cryptographically secure random bytes."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from vmm.canonical import BYTES, U32, Signature
from vmm.capabilities.base import CapabilityDenied, Grant, HostEnv, HostFunction
from vmm.tables import Table

MAX_BYTES_PER_CALL = 4096


class RandomHost:
    def get_bytes(self, length: int) -> bytes:
        if length > MAX_BYTES_PER_CALL:
            raise CapabilityDenied(f"random.get-bytes: {length} bytes asked, at most 4096")
        return secrets.token_bytes(length)


@dataclass(frozen=True)
class RandomGrant(Grant):
    name = "random"
    functions = (HostFunction("get-bytes", Signature([U32], BYTES)),)

    @classmethod
    def parse(cls, table: Table) -> RandomGrant:
        return cls()

    def bind(self, env: HostEnv) -> RandomHost:
        return RandomHost()
