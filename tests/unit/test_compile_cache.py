"""The compile cache (vmm/cache.py) on a real directory: it stays within its size bound by
removing the entries used least recently, never the one just stored; a hit counts as a use;
a compile is said in the log, with how long it took."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from vmm.cache import MAX_BYTES, CompileCache

ENTRY = 1000  # bytes of each artifact


def store(cache: CompileCache, source: bytes) -> bytes:
    return cache.load_or_compile(source, "art", lambda: source * (ENTRY // len(source)),
                                 Path.read_bytes, f"plugin {source.decode()}")


def age(cache: CompileCache, source: bytes, seconds_ago: float) -> None:
    """Mark the entry as last used that long ago (mtimes, not sleeps)."""
    path = cache.path_for(source, "art")
    when = path.stat().st_mtime - seconds_ago
    os.utime(path, (when, when))


def test_the_bound_defaults_to_a_gibibyte(tmp_path: Path) -> None:
    assert CompileCache(tmp_path, "runtime").max_bytes == MAX_BYTES == 1 << 30


def test_least_recently_used_entries_go_first(tmp_path: Path) -> None:
    cache = CompileCache(tmp_path, "runtime", max_bytes=3 * ENTRY)
    for index, name in enumerate((b"a", b"b", b"c")):
        store(cache, name)
        age(cache, name, 100 - index * 10)  # a the oldest, then b, then c
    store(cache, b"a")  # a hit: a is now the most recently used
    assert (cache.hits, cache.misses) == (1, 3)
    store(cache, b"d")  # over the bound: b, the least recently used, goes
    assert not cache.path_for(b"b", "art").exists()
    assert all(cache.path_for(name, "art").exists() for name in (b"a", b"c", b"d"))
    assert sum(p.stat().st_size for p in tmp_path.iterdir()) <= cache.max_bytes
    store(cache, b"b")  # compiled again
    assert cache.misses == 5


def test_an_entry_above_the_bound_alone_is_kept(tmp_path: Path) -> None:
    cache = CompileCache(tmp_path, "runtime", max_bytes=ENTRY // 2)
    store(cache, b"a")
    store(cache, b"b")
    assert [p.name for p in tmp_path.iterdir()] == [cache.path_for(b"b", "art").name]
    assert store(cache, b"b") == b"b" * ENTRY


def test_a_compile_is_logged_with_its_duration(tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    cache = CompileCache(tmp_path, "runtime")
    with caplog.at_level(logging.INFO, logger="vmm.cache"):
        store(cache, b"a")
        store(cache, b"a")
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 2  # the hit logs nothing
    assert messages[0].startswith("compiling plugin a: ")
    assert messages[1].startswith("compiled plugin a in ")
