"""The cores slow plugins may take: at most `slow-plugin-cores` of their events run at once,
across every worker of a sidecar.

Events of slow plugins run off the event loop (sidecar/offload.py) at the lowest normal
scheduling priority (nice 19, SCHED_BATCH). That alone does not keep a neighbour fast once
slow events occupy every core. A neighbour's round trip is a chain of wakeups (Envoy, this
worker's event loop, the upstream, Envoy again), and the loop also needs the GIL, which a slow
event's thread may hold at the moment it is preempted: it then waits for that thread to be
scheduled again, behind the other slow events. Measured on 2 cores, 50 connections keeping a
plugin that computes 18 ms per event busy: a pass-through neighbour's round trip p99 was 9x its
idle figure with both cores running slow events, about 1.7x with one core left to everything
else.

Each running slow event holds a lane: one of `count` files in a directory, locked with
flock(2). A lock belongs to its open file, so the kernel releases it when a worker dies, and
the workers, separate processes, need nothing else to agree.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class SlowLanes:
    """`count` lanes, as lock files in `directory`. Passed to worker processes as it is."""

    directory: Path
    count: int

    @classmethod
    def create(cls, directory: Path, count: int) -> SlowLanes:
        directory.mkdir(mode=0o700)
        for lane in range(count):
            (directory / str(lane)).touch(mode=0o600)
        return cls(directory, count)

    def holder(self, home: int) -> LaneHolder:
        return LaneHolder(self, home % self.count)


class LaneHolder:
    """One thread's way into the lanes: its own open file of each (threads that shared one
    would share its lock), and a home lane it waits for when every lane is taken."""

    __slots__ = ("_files", "_home")

    def __init__(self, lanes: SlowLanes, home: int) -> None:
        self._files = [os.open(lanes.directory / str(lane), os.O_RDWR | os.O_CLOEXEC)
                       for lane in range(lanes.count)]
        self._home = home

    def run(self, work: Callable[[], T]) -> T:
        """`work()` while holding a lane: the first free one, else the home lane once it is
        freed. (Waiting on one lane can leave another idle for a while; each worker has a
        thread per lane, so a worker with work waiting waits on every lane.)"""
        lane = self._take()
        try:
            return work()
        finally:
            fcntl.flock(lane, fcntl.LOCK_UN)

    def _take(self) -> int:
        count = len(self._files)
        for step in range(count):
            lane = self._files[(self._home + step) % count]
            with contextlib.suppress(BlockingIOError):
                fcntl.flock(lane, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return lane
        lane = self._files[self._home]
        fcntl.flock(lane, fcntl.LOCK_EX)  # blocks without the GIL
        return lane

    def close(self) -> None:
        for lane in self._files:
            os.close(lane)
        self._files = []
