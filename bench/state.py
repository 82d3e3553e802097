"""The cost of one shared-state `increment`, per backend, called as a plugin's host call is:
in this process (`memory`, one worker's own store), in the LMDB file every worker of a
sidecar maps (`lmdb`, the default), and in a real Redis server on this machine, over its Unix
socket (`redis`; across machines, add the network's round trip)."""

from __future__ import annotations

import tempfile
from functools import partial
from pathlib import Path
from typing import Any

from rich.progress import Progress

from bench.stats import summarize
from bench.workloads import timed
from sidecar.upstreams import RedisServer
from vmm.capabilities.state import StateBackend
from vmm.capabilities.state.lmdb_store import LmdbBackend
from vmm.capabilities.state.memory import MemoryBackend
from vmm.capabilities.state.redis_store import RedisBackend

WARM_UP = 200


def increment_costs(count: int, progress: Progress) -> dict[str, dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="hyperfilter-bench-state-") as scratch:
        directory = Path(scratch)
        backends: dict[str, StateBackend] = {
            "memory (each worker its own)": MemoryBackend(),
            "lmdb (every worker of a sidecar)": LmdbBackend(directory / "lmdb"),
        }
        redis = None
        try:
            redis = RedisServer(directory)
            backends["redis (sidecars sharing a server; Unix socket)"] = RedisBackend(
                redis.url, "bench", timeout=1.0)
        except FileNotFoundError:
            pass  # reported as a missing row
        task = progress.add_task("shared-state increment", total=len(backends))
        results = {}
        try:
            for label, backend in backends.items():
                store = backend.store("bench", 1024, 1 << 16)
                increment = partial(store.increment, "window", 1, 60_000)
                timed(increment, WARM_UP)
                results[label] = summarize(timed(increment, count))
                progress.advance(task)
        finally:
            for backend in backends.values():
                backend.close()
            if redis is not None:
                redis.stop()
        return results
