"""Events of slow plugins, run off the event loop so that they cannot stall other streams.

Plugin calls run on the event loop: for a plugin whose events take microseconds, a thread
hop would cost more than the event. A plugin whose events take long (its `Pace`, in
sidecar/registry.py, averages past a couple of milliseconds) would hold every other stream of
the worker for as long. Its streams' events therefore run on a small pool of threads, at a
lower scheduling priority than the loop: wasm runs with the GIL released (wasmtime's C API
and `KVM_RUN` are foreign calls), so the loop goes on serving the other streams meanwhile.
A stream has at most one event in flight (the gRPC call takes its next message once the
answer is back), so its events keep their order; while one runs, whatever the stream's
plugins hand to the loop (deferred work, decisions for observers) gets there through
`call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from sidecar.streams import StreamPlugins

T = TypeVar("T")
OFFLOAD_THREADS = 2  # one per core here; more only queue for the same cores
# Added to the threads' nice value: under contention the loop (and so every fast plugin's
# stream) is scheduled first.
OFFLOAD_NICENESS = 10


def _lower_priority() -> None:
    with contextlib.suppress(OSError):  # not allowed: the threads run at the loop's priority
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), OFFLOAD_NICENESS)


class Offload:
    def __init__(self, loop: asyncio.AbstractEventLoop, threads: int = OFFLOAD_THREADS) -> None:
        self._loop = loop
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="slow-plugins",
                                        initializer=_lower_priority)
        self._in_flight: set[asyncio.Future[object]] = set()

    def stream(self, plugins: StreamPlugins) -> StreamWork:
        return StreamWork(self, plugins)

    def _run(self, plugins: StreamPlugins, work: Callable[[], T]) -> asyncio.Future[T]:
        plugins.handoff = self._loop.call_soon_threadsafe
        future = self._loop.run_in_executor(self._pool, work)
        self._in_flight.add(future)  # type: ignore[arg-type]

        def back_on_the_loop(done: asyncio.Future[T]) -> None:
            plugins.handoff = None
            self._in_flight.discard(done)  # type: ignore[arg-type]

        future.add_done_callback(back_on_the_loop)
        return future

    async def close(self) -> None:
        """Events already running finish (queued ones are cancelled), and what waited for
        them (their streams' closing) runs, before the plugins may be closed."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        await asyncio.gather(*self._in_flight, return_exceptions=True)


class StreamWork:
    """One stream's events: run on the loop, or on the pool while its plugins are slow."""

    __slots__ = ("_in_flight", "_offload", "plugins")

    def __init__(self, offload: Offload, plugins: StreamPlugins) -> None:
        self._offload = offload
        self.plugins = plugins
        self._in_flight: asyncio.Future[object] | None = None

    def run(self, work: Callable[[], T]) -> T | asyncio.Future[T]:
        """`work()` now, or a future of it from the pool."""
        if not self.plugins.slow:
            return work()
        future = self._offload._run(self.plugins, work)
        self._in_flight = future  # type: ignore[assignment]
        return future

    def close(self, closing: Callable[[], None]) -> None:
        """`closing()` once no event is in flight (the sandboxes are still in use until)."""
        in_flight = self._in_flight
        if in_flight is not None and not in_flight.done():
            in_flight.add_done_callback(lambda _: closing())
        else:
            closing()
