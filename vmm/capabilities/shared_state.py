"""Capability `shared-state`: one key-value store per plugin, shared by all its sandboxes.

What a rate limiter needs: `increment` with a time-to-live. The store has quotas (keys and
bytes, keys included) so that one plugin cannot grow the sidecar's memory without bound.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from vmm.canonical import BYTES, S64, STRING, U32, Enum, Option, Result, Signature
from vmm.capabilities.base import CapabilityError, Grant, HostEnv, HostFunction
from vmm.tables import Table

STATE_ERROR = Enum("quota-exceeded", "not-a-number")
S64_MIN, S64_MAX = -(1 << 63), (1 << 63) - 1


class SharedState:
    def __init__(
        self, max_keys: int, max_bytes: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_keys = max_keys
        self.max_bytes = max_bytes
        self._clock = clock
        self._items: dict[str, tuple[bytes, float | None]] = {}
        self.used_bytes = 0

    def _live(self, key: str) -> tuple[bytes, float | None] | None:
        item = self._items.get(key)
        if item is not None and item[1] is not None and item[1] <= self._clock():
            self._remove(key)
            return None
        return item

    def _remove(self, key: str) -> None:
        value, _ = self._items.pop(key)
        self.used_bytes -= len(key.encode()) + len(value)

    def _purge_expired(self) -> None:
        now = self._clock()
        for key in [k for k, (_, exp) in self._items.items() if exp is not None and exp <= now]:
            self._remove(key)

    def _put(self, key: str, value: bytes, expires: float | None) -> None:
        size = len(key.encode()) + len(value)
        if not self._room_for(key, size):
            self._purge_expired()
            if not self._room_for(key, size):
                raise CapabilityError("quota-exceeded")
        if key in self._items:
            self._remove(key)
        self._items[key] = (value, expires)
        self.used_bytes += size

    def _room_for(self, key: str, size: int) -> bool:
        old = self._items.get(key)
        old_size = len(key.encode()) + len(old[0]) if old else 0
        return (self.used_bytes - old_size + size <= self.max_bytes
                and len(self._items) + (0 if old else 1) <= self.max_keys)

    def _expiry(self, ttl_ms: int) -> float | None:
        return self._clock() + ttl_ms / 1000 if ttl_ms else None

    def get(self, key: str) -> bytes | None:
        item = self._live(key)
        return item[0] if item else None

    def set(self, key: str, value: bytes, ttl_ms: int) -> None:
        self._put(key, bytes(value), self._expiry(ttl_ms))

    def delete(self, key: str) -> None:
        if self._live(key) is not None:
            self._remove(key)

    def increment(self, key: str, delta: int, ttl_ms: int) -> int:
        item = self._live(key)
        if item is None:
            current, expires = 0, self._expiry(ttl_ms)
        else:
            try:
                current = int(item[0].decode("ascii"))
            except ValueError:
                raise CapabilityError("not-a-number") from None
            expires = item[1]
        total = max(S64_MIN, min(S64_MAX, current + delta))  # saturate, never trap
        self._put(key, str(total).encode(), expires)
        return total


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

    def bind(self, env: HostEnv) -> SharedState:
        return SharedState(self.max_keys, self.max_bytes)
