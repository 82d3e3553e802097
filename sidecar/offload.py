"""Events of slow plugins, run off the event loop so that they cannot stall other streams.

Plugin calls run on the event loop: for a plugin whose events take microseconds, a thread
hop would cost more than the event. A plugin whose events take long (its `Pace`, in
sidecar/registry.py, averages past a couple of milliseconds) would hold every other stream of
the worker for as long. Its streams' events therefore run on a small pool of threads, at the
lowest normal scheduling priority: wasm runs with the GIL released (wasmtime's C API and
`KVM_RUN` are foreign calls), so the loop goes on serving the other streams meanwhile. Each
event holds one of the sidecar's slow lanes while it runs (sidecar/slow_lanes.py), so that
slow plugins never take every core.

Threads take queued events a chain at a time, in turn (`TakingTurns`). A stream has at
most one event in flight (the gRPC call takes its next message once the answer is back), so
its events keep their order; while one runs, whatever the stream's
plugins hand to the loop (deferred work, decisions for observers) gets there through
`call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import threading
from collections import deque
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

from sidecar.slow_lanes import LaneHolder, SlowLanes
from sidecar.streams import StreamPlugins

T = TypeVar("T")
J = TypeVar("J")
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


class TakingTurns(Generic[J]):
    """Jobs queued by key (a stream's chain), handed out one key at a time in turn: however
    many events one slow plugin has queued, another plugin's next event waits for at most one
    of them. (A single queue had a barely slow plugin wait behind every event of a very slow
    one, past Envoy's message timeout.)"""

    def __init__(self) -> None:
        self._queues: dict[Hashable, deque[J]] = {}
        self._turns: deque[Hashable] = deque()  # the keys with jobs, in the order they go
        self._ready = threading.Condition()
        self._closed = False

    def put(self, key: Hashable, job: J) -> None:
        with self._ready:
            queue = self._queues.get(key)
            if queue is None:
                queue = self._queues[key] = deque()
                self._turns.append(key)
            queue.append(job)
            self._ready.notify()

    def take(self) -> J | None:
        """The next job (blocking until there is one); None once closed."""
        with self._ready:
            while not self._turns and not self._closed:
                self._ready.wait()
            if self._closed:
                return None
            key = self._turns.popleft()
            queue = self._queues[key]
            job = queue.popleft()
            if queue:
                self._turns.append(key)  # its next job after the other keys' next ones
            else:
                del self._queues[key]
            return job

    def close(self) -> list[J]:
        """No more jobs handed out; those still queued."""
        with self._ready:
            self._closed = True
            left = [job for queue in self._queues.values() for job in queue]
            self._queues.clear()
            self._turns.clear()
            self._ready.notify_all()
            return left


Job = tuple["asyncio.Future[Any]", Callable[[], Any]]


class Offload:
    def __init__(self, loop: asyncio.AbstractEventLoop, lanes: SlowLanes) -> None:
        """A thread per lane: one worker alone may use them all. (The process that serves sets
        the GIL switch interval: `sidecar.app.serve`.)"""
        self._loop = loop
        self._jobs: TakingTurns[Job] = TakingTurns()
        self._threads = [threading.Thread(target=self._serve, args=(lanes.holder(home),),
                                          name=f"slow-plugins-{home}", daemon=True)
                         for home in range(lanes.count)]
        for thread in self._threads:
            thread.start()
        self._in_flight: set[asyncio.Future[Any]] = set()
        self._counts = threading.Lock()
        self.waiting = 0  # events handed to the threads, not yet in a lane
        self.running = 0  # events in a lane

    def _serve(self, holder: LaneHolder) -> None:
        """One thread: jobs, in turn, each in a lane, until closed."""
        _lower_priority()
        try:
            while (job := self._jobs.take()) is not None:
                future, work = job
                try:
                    result = holder.run(functools.partial(self._counted, work))
                except BaseException as exc:  # noqa: BLE001 - handed to the event's awaiter
                    self._loop.call_soon_threadsafe(_fail, future, exc)
                else:
                    self._loop.call_soon_threadsafe(_succeed, future, result)
        finally:
            holder.close()

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
        future: asyncio.Future[T] = self._loop.create_future()
        self._in_flight.add(future)

        def back_on_the_loop(done: asyncio.Future[T]) -> None:
            plugins.handoff = None
            self._in_flight.discard(done)

        future.add_done_callback(back_on_the_loop)
        self._jobs.put(plugins.chain.name, (future, work))
        return future

    async def close(self) -> None:
        """Events already running finish (queued ones are cancelled), and what waited for
        them (their streams' closing) runs, before the plugins may be closed."""
        for future, _ in self._jobs.close():
            future.cancel()
        for thread in self._threads:
            thread.join()
        await asyncio.gather(*self._in_flight, return_exceptions=True)


def _succeed(future: asyncio.Future[T], result: T) -> None:
    if not future.done():
        future.set_result(result)


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


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
