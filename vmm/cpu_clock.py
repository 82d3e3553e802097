"""Threads' CPU clocks: what `cpu-ms` measures on every tier.

An event's CPU time is that of the thread running it: the guest's instructions (wasm code, or
a vCPU in KVM_RUN, which Linux counts to the thread) and the host calls served for it. Time the
thread spends waiting for a core, under load, is not counted; its clock stops meanwhile.

A thread's clock is named by its kernel thread id (Linux's encoding of a per-thread CPU clock,
the one glibc's `pthread_getcpuclockid` returns), so another thread can read it, and reading
it once the thread has ended is an error, never another thread's clock.
"""

from __future__ import annotations

import threading
import time

_CPUCLOCK_SCHED, _CPUCLOCK_PER_THREAD = 2, 4


def thread_clock(native_id: int) -> int:
    """The CPU clock of the thread whose kernel id is `native_id` (`Thread.native_id`)."""
    return (~native_id << 3) | _CPUCLOCK_PER_THREAD | _CPUCLOCK_SCHED


def cpu_seconds(clock: int) -> float | None:
    """The clock's reading; None once its thread has ended."""
    try:
        return time.clock_gettime(clock)
    except OSError:
        return None


class BusiestThread:
    """How much CPU time the process's busiest Python thread used between two looks.

    Plugins run on Python threads only (each call into a sandbox comes from Python). The one
    looking is left out."""

    def __init__(self) -> None:
        self._last: dict[int, float] = {}  # by kernel thread id: the clock's last reading

    def used_since_last_look(self) -> float:
        me = threading.get_native_id()
        busiest, last = 0.0, self._last
        seen: dict[int, float] = {}
        for thread in threading.enumerate():
            native_id = thread.native_id
            if native_id is None or native_id == me:
                continue
            now = cpu_seconds(thread_clock(native_id))
            if now is None:  # it ended meanwhile
                continue
            seen[native_id] = now
            busiest = max(busiest, now - last.get(native_id, now))
        self._last = seen
        return busiest


class CpuBudgetSpent(Exception):
    """The event running on this thread used its CPU time, seen at a host call."""


_event = threading.local()


def start_event(cpu_seconds: float) -> None:
    """This thread begins running a plugin's code for one event (or its start function) with
    `cpu_seconds` of CPU time."""
    _event.started, _event.bound, _event.mark = time.perf_counter(), cpu_seconds, None


def check_event_budget() -> None:
    """At a host call: CpuBudgetSpent once the running event has used more than its CPU time.

    The epoch ticker alone can fall behind a loop over host calls, which holds the GIL the
    ticker needs (a plugin looping over `log` ran 3.6× its bound under load). Reading the
    thread's CPU clock costs a system call (about 0.6 µs here), so it is read only once the
    event has run its bound in wall time, which a thread's CPU time never exceeds: the first
    reading then is a mark, and the event ends once the clock has moved its bound past it, at
    most twice its bound in all."""
    try:
        started, bound, mark = _event.started, _event.bound, _event.mark
    except AttributeError:  # this thread has run no plugin code yet
        return
    if time.perf_counter() - started < bound:
        return
    now = time.thread_time()
    if mark is None:
        _event.mark = now
    elif now - mark >= bound:
        raise CpuBudgetSpent(f"its {bound * 1000:g} ms of CPU time ran out at a host call")
