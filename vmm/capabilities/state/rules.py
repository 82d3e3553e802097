"""What every `shared-state` backend promises, and the rules they share.

A plugin's store holds at most `max_keys` keys and `max_bytes` bytes (each key's UTF-8 bytes
plus its value's). A write past either fails with `quota-exceeded` after expired keys have
been dropped; replacing a value counts only the difference. `ttl_ms` 0 keeps a key until it is
deleted. `increment` treats a missing key as 0, keeps the key's expiry, refuses a value that is
not a canonical decimal integer within s64 (`not-a-number`) and saturates instead of
overflowing. The store is the plugin's, by the name it is loaded under: every worker and
every reload of that plugin sees the same keys.
"""

from __future__ import annotations

import re
from typing import Protocol

from vmm.capabilities.base import CapabilityError

S64_MIN, S64_MAX = -(1 << 63), (1 << 63) - 1
# What `increment` reads as a number: what it writes (no sign, spaces or leading zeros).
_CANONICAL_INTEGER = re.compile(rb"0|-?[1-9][0-9]{0,18}")


class StoreUnavailable(Exception):
    """The backend cannot serve the call now (its server does not answer): the plugin's event
    fails under its failure policy."""


class StateStore(Protocol):
    def get(self, key: str) -> bytes | None: ...

    def set(self, key: str, value: bytes, ttl_ms: int) -> None: ...

    def delete(self, key: str) -> None: ...

    def increment(self, key: str, delta: int, ttl_ms: int) -> int: ...


class StateBackend(Protocol):
    name: str

    def store(self, plugin: str, max_keys: int, max_bytes: int) -> StateStore:
        """Plugin `plugin`'s store, with the quotas its grant declares now."""
        ...

    def close(self) -> None: ...


def count_of(value: bytes) -> int:
    """The integer `increment` adds to; CapabilityError("not-a-number") if it is none."""
    if _CANONICAL_INTEGER.fullmatch(value) is None:
        raise CapabilityError("not-a-number")
    number = int(value)
    if not S64_MIN <= number <= S64_MAX:
        raise CapabilityError("not-a-number")
    return number


def saturated(number: int) -> int:
    return max(S64_MIN, min(S64_MAX, number))


def entry_size(key: str, value: bytes) -> int:
    """What one key costs against `max_bytes`."""
    return len(key.encode()) + len(value)
