"""`shared-state` in this process: a dict per plugin. The fastest backend, and the right one
for a single worker; with several workers each would keep its own keys."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from vmm.capabilities.base import CapabilityError
from vmm.capabilities.state.rules import count_of, entry_size, saturated


class MemoryStore:
    def __init__(self, max_keys: int, max_bytes: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_keys = max_keys
        self.max_bytes = max_bytes
        self._clock = clock
        self._items: dict[str, tuple[bytes, float | None]] = {}  # value, expiry
        self.used_bytes = 0
        # The plugin's sandboxes may call from the loop and from slow-event threads at once.
        self._lock = threading.Lock()

    def _live(self, key: str) -> tuple[bytes, float | None] | None:
        item = self._items.get(key)
        if item is not None and item[1] is not None and item[1] <= self._clock():
            self._remove(key)
            return None
        return item

    def _remove(self, key: str) -> None:
        value, _ = self._items.pop(key)
        self.used_bytes -= entry_size(key, value)

    def _purge_expired(self) -> None:
        now = self._clock()
        for key in [k for k, (_, exp) in self._items.items() if exp is not None and exp <= now]:
            self._remove(key)

    def _put(self, key: str, value: bytes, expires: float | None) -> None:
        size = entry_size(key, value)
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
        old_size = entry_size(key, old[0]) if old else 0
        return (self.used_bytes - old_size + size <= self.max_bytes
                and len(self._items) + (0 if old else 1) <= self.max_keys)

    def _expiry(self, ttl_ms: int) -> float | None:
        return self._clock() + ttl_ms / 1000 if ttl_ms else None

    def get(self, key: str) -> bytes | None:
        with self._lock:
            item = self._live(key)
            return item[0] if item else None

    def set(self, key: str, value: bytes, ttl_ms: int) -> None:
        with self._lock:
            self._put(key, bytes(value), self._expiry(ttl_ms))

    def delete(self, key: str) -> None:
        with self._lock:
            if self._live(key) is not None:
                self._remove(key)

    def increment(self, key: str, delta: int, ttl_ms: int) -> int:
        with self._lock:
            item = self._live(key)
            if item is None:
                current, expires = 0, self._expiry(ttl_ms)
            else:
                current, expires = count_of(item[0]), item[1]
            total = saturated(current + delta)
            self._put(key, str(total).encode(), expires)
            return total


class MemoryBackend:
    name = "memory"

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._stores: dict[str, MemoryStore] = {}

    def store(self, plugin: str, max_keys: int, max_bytes: int) -> MemoryStore:
        store = self._stores.get(plugin)
        if store is None:
            store = self._stores[plugin] = MemoryStore(max_keys, max_bytes, self._clock)
        store.max_keys, store.max_bytes = max_keys, max_bytes  # a reload may change them
        return store

    def close(self) -> None:
        self._stores.clear()
