"""`shared-state` in a memory-mapped LMDB file that every worker of one sidecar opens: one
store per plugin across the workers, each call one transaction (writers take LMDB's
process-shared lock, readers take none). Made fresh for each run of the sidecar, in its
runtime directory: expiries are CLOCK_MONOTONIC readings, the same in every process of one
boot.

Layout: `entries` maps plugin id + a hash of the key (LMDB keys are at most 511 bytes;
plugin keys are bounded only by the quota) to expiry, key length and value; `usage` maps
plugin id to its key and byte counts, updated in the same transaction as the entries.
"""

from __future__ import annotations

import hashlib
import struct
import time
from pathlib import Path

import lmdb

from vmm.capabilities.base import CapabilityError
from vmm.capabilities.state.rules import StoreUnavailable, count_of, entry_size, saturated

MAP_BYTES = 1 << 30  # address space reserved for the file; it grows only as keys are written
_ENTRY = struct.Struct("<QI")  # expiry (monotonic ns, 0: none), the key's length in bytes
_USAGE = struct.Struct("<QQ")  # keys, bytes


def _id(text: str, size: int) -> bytes:
    return hashlib.blake2b(text.encode(), digest_size=size).digest()


class LmdbBackend:
    name = "lmdb"

    def __init__(self, path: Path) -> None:
        self._env = lmdb.open(str(path), map_size=MAP_BYTES, max_dbs=2, subdir=True,
                              sync=False, metasync=False)  # a run's state: no fsync needed
        self._entries = self._env.open_db(b"entries")
        self._usage = self._env.open_db(b"usage")

    def store(self, plugin: str, max_keys: int, max_bytes: int) -> LmdbStore:
        return LmdbStore(self, _id(plugin, 8), max_keys, max_bytes)

    def close(self) -> None:
        self._env.close()


class LmdbStore:
    def __init__(self, backend: LmdbBackend, plugin_id: bytes, max_keys: int,
                 max_bytes: int) -> None:
        self._env, self._entries, self._usage = backend._env, backend._entries, backend._usage
        self._plugin = plugin_id
        self.max_keys, self.max_bytes = max_keys, max_bytes

    def _key(self, key: str) -> bytes:
        return self._plugin + _id(key, 16)

    def get(self, key: str) -> bytes | None:
        with self._env.begin(db=self._entries) as txn:
            found = _live(txn.get(self._key(key)), time.monotonic_ns())
        return found[1] if found else None

    def set(self, key: str, value: bytes, ttl_ms: int) -> None:
        now = time.monotonic_ns()
        with self._writing() as txn:
            self._put(txn, key, bytes(value), _expiry(now, ttl_ms), now)

    def delete(self, key: str) -> None:
        with self._writing() as txn:
            stored = txn.get(self._key(key), db=self._entries)
            if stored is not None:
                self._remove(txn, self._key(key), stored)

    def increment(self, key: str, delta: int, ttl_ms: int) -> int:
        now = time.monotonic_ns()
        with self._writing() as txn:
            found = _live(txn.get(self._key(key), db=self._entries), now)
            if found is None:
                current, expires = 0, _expiry(now, ttl_ms)
            else:
                current, expires = count_of(found[1]), found[0]
            total = saturated(current + delta)
            self._put(txn, key, str(total).encode(), expires, now)
            return total

    def _writing(self) -> lmdb.Transaction:
        try:
            return self._env.begin(write=True)
        except lmdb.Error as exc:
            raise StoreUnavailable(f"the sidecar's state file: {exc}") from None

    def _put(self, txn: lmdb.Transaction, key: str, value: bytes, expires: int,
             now: int) -> None:
        stored_key = self._key(key)
        old = txn.get(stored_key, db=self._entries)
        keys, used = self._used(txn)
        if old is not None:
            keys, used = keys - 1, used - _size(old)
        size = entry_size(key, value)
        if keys + 1 > self.max_keys or used + size > self.max_bytes:
            keys, used = self._purge_expired(txn, now, keep=stored_key)
            if old is not None:
                keys, used = keys - 1, used - _size(old)
            if keys + 1 > self.max_keys or used + size > self.max_bytes:
                raise CapabilityError("quota-exceeded")
        try:
            txn.put(stored_key, _ENTRY.pack(expires, len(key.encode())) + value,
                    db=self._entries)
        except lmdb.MapFullError:
            raise CapabilityError("quota-exceeded") from None  # the whole file is full
        txn.put(self._plugin, _USAGE.pack(keys + 1, used + size), db=self._usage)

    def _remove(self, txn: lmdb.Transaction, stored_key: bytes, stored: bytes) -> None:
        keys, used = self._used(txn)
        txn.delete(stored_key, db=self._entries)
        txn.put(self._plugin, _USAGE.pack(keys - 1, used - _size(stored)), db=self._usage)

    def _used(self, txn: lmdb.Transaction) -> tuple[int, int]:
        usage = txn.get(self._plugin, db=self._usage)
        return _USAGE.unpack(usage) if usage is not None else (0, 0)

    def _purge_expired(self, txn: lmdb.Transaction, now: int, keep: bytes) -> tuple[int, int]:
        """Drop the plugin's expired keys (but `keep`, about to be written); the usage left."""
        keys, used = self._used(txn)
        cursor = txn.cursor(db=self._entries)
        found = cursor.set_range(self._plugin)
        while found and (stored_key := bytes(cursor.key())).startswith(self._plugin):
            stored = bytes(cursor.value())
            if stored_key != keep and _live(stored, now) is None:
                keys, used = keys - 1, used - _size(stored)
                found = cursor.delete()  # moves to the next entry
            else:
                found = cursor.next()
        txn.put(self._plugin, _USAGE.pack(keys, used), db=self._usage)
        return keys, used


def _expiry(now: int, ttl_ms: int) -> int:
    return now + ttl_ms * 1_000_000 if ttl_ms else 0


def _live(stored: bytes | None, now: int) -> tuple[int, bytes] | None:
    """(expiry, value) of a stored entry that has not expired."""
    if stored is None:
        return None
    expires, _ = _ENTRY.unpack_from(stored)
    if expires and expires <= now:
        return None
    return expires, bytes(stored[_ENTRY.size:])


def _size(stored: bytes) -> int:
    _, key_length = _ENTRY.unpack_from(stored)
    return key_length + len(stored) - _ENTRY.size
