"""Events of slow plugins, run off the event loop so that they cannot stall other streams.

Plugin calls run on the event loop: for a plugin whose events take microseconds, a thread
hop would cost more than the event. A plugin whose events take long (its `Pace`, in
sidecar/registry.py, averages past a couple of milliseconds) would hold every other stream of
the worker for as long. Its streams' events therefore run on a small pool of threads, at the
lowest normal scheduling priority: wasm runs with the GIL released (wasmtime's C API and
`KVM_RUN` are foreign calls), so the loop goes on serving the other streams meanwhile. Each
event holds one of the sidecar's slow lanes while it runs (sidecar/slow_lanes.py), so that
slow plugins never take every core.

A stream has at most one event in flight (the gRPC call takes its next message once the
answer is back), so its events keep their order; while one runs, whatever the stream's
plugins hand to the loop (deferred work, decisions for observers) gets there through
`call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from sidecar.slow_lanes import LaneHolder, SlowLanes
from sidecar.streams import StreamPlugins

T = TypeVar("T")
# The highest nice value: under contention a slow event's thread gets about one share in
# seventy against each busy thread at the default priority, so it still makes progress.
# (SCHED_IDLE, which gets none while anything else runs, let a busy machine starve slow
# events past Envoy's message timeout.)
NICENESS = 19
# How long a thread that wants the GIL waits before it makes the holder hand it over (Python's
# default: 5 ms). A slow event's thread holds it only between calls into wasm, but when it is
# preempted there, at its low priority, the loop waits behind whatever preempted it: 0.2 ms
# took a neighbour's p99 beside a busy plugin from about 2.4x to 1.9x its idle figure.
GIL_SWITCH_SECONDS = 0.0002


def _lower_priority() -> None:
    """This thread yields its core to any other that wants it, and wakes no one early:
    SCHED_BATCH (for CPU-bound work, never preempting on wakeup) at nice 19."""
    with contextlib.suppress(AttributeError, OSError):  # not Linux: the nice value alone
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))  # 0: this thread
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICENESS)


class Offload:
    def __init__(self, loop: asyncio.AbstractEventLoop, lanes: SlowLanes) -> None:
        """A thread per lane: one worker alone may use them all. Sets the process's GIL
        switch interval."""
        sys.setswitchinterval(GIL_SWITCH_SECONDS)
        self._loop = loop
        self._lanes = lanes
        self._homes = itertools.count()
        self._holders: list[LaneHolder] = []
        self._holder = threading.local()  # each pool thread's LaneHolder
        self._pool = ThreadPoolExecutor(lanes.count, thread_name_prefix="slow-plugins",
                                        initializer=self._start_thread)
        self._in_flight: set[asyncio.Future[object]] = set()
        self._counts = threading.Lock()
        self.waiting = 0  # events handed to the pool, not yet in a lane
        self.running = 0  # events in a lane

    def _start_thread(self) -> None:
        _lower_priority()
        holder = self._lanes.holder(next(self._homes))
        self._holders.append(holder)
        self._holder.lanes = holder

    def _in_a_lane(self, work: Callable[[], T]) -> T:
        holder: LaneHolder = self._holder.lanes
        return holder.run(lambda: self._counted(work))

    def _counted(self, work: Callable[[], T]) -> T:
        with self._counts:
            self.waiting -= 1
            self.running += 1
        try:
            return work()
        finally:
            with self._counts:
                self.running -= 1

    def stream(self, plugins: StreamPlugins) -> StreamWork:
        return StreamWork(self, plugins)

    def _run(self, plugins: StreamPlugins, work: Callable[[], T]) -> asyncio.Future[T]:
        plugins.handoff = self._loop.call_soon_threadsafe
        with self._counts:
            self.waiting += 1
        future = self._loop.run_in_executor(self._pool, self._in_a_lane, work)
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
        for holder in self._holders:
            holder.close()
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
