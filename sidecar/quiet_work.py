"""Work that no response waits for, run when the worker is quiet.

A new stream takes a spare sandbox from its plugin's pool, and a finished stream leaves one to
destroy. Making the next spare and destroying the old one cost a worker as much as serving
several messages; run at once, they delay whatever message Envoy sends next (on a new
connection, the upstream's first answer). Here they wait until no bytes have arrived for a
moment, longer than the gaps within one exchange on loopback, and never longer than
`longest_wait`, so that under constant load they still get done. Each piece runs in its own
loop turn, so a message that arrives meanwhile waits for at most one. While bytes keep
coming, the check repeats once per quiet period: uvloop's timers count whole milliseconds, and
a shorter wait would be none at all (the loop spun, 25 checks per connection, measured).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable

log = logging.getLogger(__name__)
QUIET_SECONDS = 0.001  # at least the event loop's timer resolution
LONGEST_WAIT_SECONDS = 0.02


class QuietWork:
    def __init__(self, loop: asyncio.AbstractEventLoop, quiet: float = QUIET_SECONDS,
                 longest_wait: float = LONGEST_WAIT_SECONDS) -> None:
        self._loop = loop
        self._quiet = quiet
        self._longest_wait = longest_wait
        self._queue: deque[tuple[float, Callable[[], object]]] = deque()  # (queued at, work)
        self._last_activity = loop.time()
        self._scheduled = False

    def activity(self) -> None:
        """Bytes arrived: whatever is queued waits for the next quiet moment."""
        self._last_activity = self._loop.time()

    def defer(self, work: Callable[[], object]) -> None:
        self._queue.append((self._loop.time(), work))
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_later(self._quiet, self._run_next)

    def __len__(self) -> int:
        return len(self._queue)

    def _run_next(self) -> None:
        """One piece if the worker is quiet; every piece past its longest wait if not, so
        that under constant load the queue never holds more than that wait's worth."""
        if not self._queue:  # run_all got there first
            self._scheduled = False
            return
        now = self._loop.time()
        quiet_for = now - self._last_activity
        overdue_in = self._queue[0][0] + self._longest_wait - now
        if overdue_in > 0:
            if quiet_for < self._quiet:
                self._loop.call_later(self._quiet, self._run_next)
                return
            self._run(self._queue.popleft()[1])
        else:
            while self._queue and self._queue[0][0] + self._longest_wait <= now:
                self._run(self._queue.popleft()[1])
        if self._queue:
            self._loop.call_soon(self._run_next)  # after the I/O that is ready, if any
        else:
            self._scheduled = False

    @staticmethod
    def _run(work: Callable[[], object]) -> None:
        try:
            work()
        except Exception:  # one failed piece must not strand the rest
            log.exception("deferred work failed")

    def run_all(self) -> None:
        """Everything queued, now (the server is stopping)."""
        while self._queue:
            self._run(self._queue.popleft()[1])
        self._scheduled = False
