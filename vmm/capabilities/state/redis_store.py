"""`shared-state` in a Redis server (6.2 or later) that sidecars on several machines share.

Each call that writes is one Lua script (redis_*.lua), atomic across every sidecar; times
are the server's (`TIME`), so the machines' clocks do not matter. A plugin's keys live under
`<prefix>:{<plugin>}:`, the braces making them one cluster hash slot:
  `…:v:<key>`   the value, expiring by itself (PEXPIREAT) when it has a TTL;
  `…:expiry`    a sorted set of the plugin's keys by expiry (ms), to find what to drop;
  `…:size`      a hash of each key's size against the quota;
  `…:usage`     a hash: `keys` and `bytes` in use.
A server that does not answer within `timeout` fails the call (StoreUnavailable: the event
meets the plugin's failure policy); for RETRY_SECONDS after that, calls fail at once rather
than each waiting for the timeout on the event loop.
"""

from __future__ import annotations

import threading
import time
from importlib import resources

import redis

from vmm.capabilities.base import CapabilityError
from vmm.capabilities.state.rules import StoreUnavailable, entry_size

RETRY_SECONDS = 1.0


def _script(name: str) -> str:
    """A script with the functions they share (redis.lua) ahead of it."""
    here = resources.files(__package__)
    return here.joinpath("redis.lua").read_text() + here.joinpath(name).read_text()


class RedisBackend:
    name = "redis"

    def __init__(self, url: str, prefix: str, timeout: float) -> None:
        self._client = redis.Redis.from_url(url, socket_timeout=timeout,
                                            socket_connect_timeout=timeout,
                                            retry_on_timeout=False)
        self.url = url
        self._prefix = prefix
        self._set = self._client.register_script(_script("redis_set.lua"))
        self._increment = self._client.register_script(_script("redis_increment.lua"))
        self._delete = self._client.register_script(_script("redis_delete.lua"))
        self._down_until = 0.0
        self._lock = threading.Lock()

    def store(self, plugin: str, max_keys: int, max_bytes: int) -> RedisStore:
        return RedisStore(self, f"{self._prefix}:{{{plugin}}}:", max_keys, max_bytes)

    def close(self) -> None:
        self._client.close()

    def call(self, script: redis.commands.core.Script | None, keys: list[str],
             args: list[bytes | str | int]) -> object:
        """A script (or, with None, a GET of keys[0]); StoreUnavailable if the server does
        not answer, and at once for RETRY_SECONDS after it did not."""
        if time.monotonic() < self._down_until:
            raise StoreUnavailable(f"Redis at {self.url} did not answer; retrying in under "
                                   f"{RETRY_SECONDS:g} s")
        try:
            return self._client.get(keys[0]) if script is None else script(keys, args)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            with self._lock:
                self._down_until = time.monotonic() + RETRY_SECONDS
            raise StoreUnavailable(f"Redis at {self.url}: {exc}") from None


class RedisStore:
    def __init__(self, backend: RedisBackend, namespace: str, max_keys: int,
                 max_bytes: int) -> None:
        self._backend = backend
        self._namespace = namespace
        self._meta = [f"{namespace}expiry", f"{namespace}size", f"{namespace}usage"]
        self.max_keys, self.max_bytes = max_keys, max_bytes

    def _keys(self, key: str) -> list[str]:
        return [*self._meta, f"{self._namespace}v:{key}"]

    def get(self, key: str) -> bytes | None:
        value = self._backend.call(None, [f"{self._namespace}v:{key}"], [])
        return value if isinstance(value, bytes) else None

    def set(self, key: str, value: bytes, ttl_ms: int) -> None:
        status = self._backend.call(self._backend._set, self._keys(key), [
            key, bytes(value), ttl_ms, entry_size(key, value), self.max_keys, self.max_bytes])
        if status != b"ok":
            raise CapabilityError("quota-exceeded")

    def delete(self, key: str) -> None:
        self._backend.call(self._backend._delete, self._keys(key), [key])

    def increment(self, key: str, delta: int, ttl_ms: int) -> int:
        answer = self._backend.call(self._backend._increment, self._keys(key), [
            key, delta, ttl_ms, len(key.encode()), self.max_keys, self.max_bytes])
        assert isinstance(answer, list)
        status, value = answer
        if status != b"ok":
            raise CapabilityError(status.decode())
        return int(value)
