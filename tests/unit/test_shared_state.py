"""`shared-state`, the same rules on every backend (in memory, LMDB across processes, a real
Redis server): quotas, expiry, an atomic and saturating increment; one store per plugin seen
by every process that opens it; a Redis that does not answer fails calls fast."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from vmm.capabilities import CapabilityError
from vmm.capabilities.state import StateBackend, StoreUnavailable
from vmm.capabilities.state.lmdb_store import LmdbBackend
from vmm.capabilities.state.memory import MemoryBackend
from vmm.capabilities.state.redis_store import RETRY_SECONDS, RedisBackend
from vmm.capabilities.state.rules import S64_MAX, S64_MIN

BACKENDS = ("memory", "lmdb", "redis")
SHORT_TTL_MS = 50  # expired well before EXPIRED_AFTER
EXPIRED_AFTER = 0.25
_spawn = multiprocessing.get_context("spawn")
OpenBackend = Callable[[], StateBackend]


def opened(kind: str, where: str) -> StateBackend:
    """Another handle on the keys of the lmdb file or Redis server (and prefix) `where`."""
    if kind == "lmdb":
        return LmdbBackend(Path(where))
    url, _, prefix = where.rpartition(" ")
    return RedisBackend(url, prefix, timeout=2.0)


@pytest.fixture(params=BACKENDS)
def backend_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def where(backend_kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The backend's keys: a file of this test's, or a prefix of this test's on the server."""
    if backend_kind == "redis":
        prefix = f"test-{request.node.name}-{time.monotonic_ns()}"
        return f"{request.getfixturevalue('redis_url')} {prefix}"
    return str(tmp_path / "state")


@pytest.fixture
def open_backend(backend_kind: str, where: str) -> Iterator[OpenBackend]:
    """Opens the backend under test; each call another handle on the same keys (as another
    worker would), but for memory, which is one process's."""
    handles: list[StateBackend] = []
    memory = MemoryBackend()

    def open_one() -> StateBackend:
        handles.append(memory if backend_kind == "memory" else opened(backend_kind, where))
        return handles[-1]

    yield open_one
    for handle in handles:
        handle.close()


def test_quotas_count_keys_and_bytes(open_backend: OpenBackend) -> None:
    state = open_backend().store("p", max_keys=2, max_bytes=10)
    state.set("a", b"1234", 0)  # 1 + 4 bytes
    state.set("b", b"12", 0)  # 1 + 2
    with pytest.raises(CapabilityError) as too_many:
        state.set("c", b"", 0)
    assert too_many.value.case == "quota-exceeded"
    with pytest.raises(CapabilityError):
        state.set("a", b"1234567", 0)  # 1 + 7, plus "b" (3): 11 bytes
    assert state.get("a") == b"1234"  # a refused write changes nothing
    state.set("a", b"123456", 0)  # replacing a value only counts the difference: 7 + 3
    assert state.get("a") == b"123456"
    state.delete("a")
    assert state.get("a") is None
    state.set("c", b"123456", 0)  # room again: 7 + 3


def test_expired_keys_free_their_quota(open_backend: OpenBackend) -> None:
    state = open_backend().store("p", max_keys=1, max_bytes=100)
    state.set("window", b"x", SHORT_TTL_MS)
    time.sleep(EXPIRED_AFTER)
    assert state.get("window") is None
    state.set("next", b"y", 0)  # only fits because "window" has expired
    assert state.get("next") == b"y"
    state.set("next", b"z", 60_000)  # replaced, with a TTL that has not passed
    assert state.get("next") == b"z"


def test_increment_is_what_a_rate_limiter_needs(open_backend: OpenBackend) -> None:
    state = open_backend().store("p", max_keys=10, max_bytes=200)
    assert [state.increment("ip:1", 1, SHORT_TTL_MS) for _ in range(3)] == [1, 2, 3]
    time.sleep(EXPIRED_AFTER)
    assert state.increment("ip:1", 1, 60_000) == 1  # a new window, with the new TTL
    assert state.increment("ip:1", 5, SHORT_TTL_MS) == 6  # the window keeps its expiry
    time.sleep(EXPIRED_AFTER)
    assert state.increment("ip:1", 1, 0) == 7
    for text in (b"abc", b"007", b" 7", b"+7", b"-0", b"99999999999999999999"):
        state.set("text", text, 0)
        with pytest.raises(CapabilityError) as error:
            state.increment("text", 1, 0)
        assert error.value.case == "not-a-number"
        assert state.get("text") == text  # untouched
    state.set("big", str(S64_MAX).encode(), 0)
    assert state.increment("big", 10, 0) == S64_MAX  # saturates instead of trapping
    assert state.increment("big", S64_MIN, 0) == -1
    assert state.increment("big", S64_MIN, 0) == S64_MIN
    assert state.get("big") == str(S64_MIN).encode()


def test_an_increment_past_the_quota_changes_nothing(open_backend: OpenBackend) -> None:
    state = open_backend().store("p", max_keys=1, max_bytes=3)  # "n" and two digits
    assert state.increment("n", 99, 0) == 99
    with pytest.raises(CapabilityError) as error:
        state.increment("n", 1, 0)  # "100" would be 4 bytes
    assert error.value.case == "quota-exceeded"
    assert state.get("n") == b"99"
    with pytest.raises(CapabilityError):
        state.increment("other", 1, 0)
    assert state.get("other") is None


def test_each_plugin_has_its_own_keys_and_quota_and_keeps_them(
        open_backend: OpenBackend) -> None:
    backend = open_backend()
    first, second = backend.store("p", 1, 100), backend.store("q", 1, 100)
    first.set("k", b"p's", 0)
    second.set("k", b"q's", 0)
    assert first.get("k") == b"p's" and second.get("k") == b"q's"
    reloaded = backend.store("p", 2, 100)  # the plugin loaded again, with a larger quota
    assert reloaded.get("k") == b"p's"
    reloaded.set("k2", b"", 0)


def test_keys_of_any_length_are_kept_apart(open_backend: OpenBackend) -> None:
    state = open_backend().store("p", max_keys=3, max_bytes=10_000)
    long_a, long_b = "a" * 2000, "a" * 1999 + "b"
    state.set(long_a, b"1", 0)
    state.set(long_b, b"2", 0)
    assert (state.get(long_a), state.get(long_b)) == (b"1", b"2")
    with pytest.raises(CapabilityError):
        state.set("c" * 6001, b"", 0)  # the key's bytes count against the quota


def count_to(kind: str, where: str, times: int) -> None:
    """In another process: `times` increments of one key."""
    backend = opened(kind, where)
    state = backend.store("limiter", 10, 100)
    for _ in range(times):
        state.increment("window", 1, 60_000)
    backend.close()


@pytest.mark.parametrize("backend_kind", ["lmdb", "redis"], indirect=True)
def test_processes_share_one_store_and_increments_are_atomic(
        backend_kind: str, where: str, open_backend: OpenBackend) -> None:
    """What a rate limit across workers needs: every increment counted once."""
    state = open_backend().store("limiter", 10, 100)
    processes = [_spawn.Process(target=count_to, args=(backend_kind, where, 300))
                 for _ in range(3)]
    for process in processes:
        process.start()
    for _ in range(300):
        state.increment("window", 1, 60_000)
    for process in processes:
        process.join(60)
        assert process.exitcode == 0
    assert state.get("window") == b"1200"


def test_a_redis_that_does_not_answer_fails_fast(tmp_path: Path) -> None:
    backend = RedisBackend(f"unix://{tmp_path / 'nobody.sock'}", "p", timeout=0.05)
    state = backend.store("p", 10, 100)
    with pytest.raises(StoreUnavailable, match=r"nobody\.sock"):
        state.increment("k", 1, 0)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="retrying"):
        state.get("k")  # not tried again yet
    assert time.monotonic() - started < RETRY_SECONDS
