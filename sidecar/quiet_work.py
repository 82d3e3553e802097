"""Work that no response waits for, run when the worker is quiet.

A new stream takes a spare sandbox from its plugin's pool, and a finished stream leaves one to
destroy. Making the next spare and destroying the old one cost a worker as much as serving
several messages; run at once, they delay whatever message Envoy sends next (on a new
connection, the upstream's first answer). Here they wait until no bytes have arrived for a
moment, longer than the gaps within one exchange on loopback, and never longer than
`longest_wait`, so that under constant load they still get done. Each piece runs in its own
loop turn, so a message that arrives meanwhile waits for at most one.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable

log = logging.getLogger(__name__)
QUIET_SECONDS = 0.0005
LONGEST_WAIT_SECONDS = 0.02


class QuietWork:
    def __init__(self, loop: asyncio.AbstractEventLoop, quiet: float = QUIET_SECONDS,
                 longest_wait: float = LONGEST_WAIT_SECONDS) -> None:
        self._loop = loop
        self._quiet = quiet
        self._longest_wait = longest_wait
        self._queue: deque[Callable[[], object]] = deque()
        self._last_activity = loop.time()
        self._waiting_since = 0.0
        self._scheduled = False

    def activity(self) -> None:
        """Bytes arrived: whatever is queued waits for the next quiet moment."""
        self._last_activity = self._loop.time()

    def defer(self, work: Callable[[], object]) -> None:
        self._queue.append(work)
        if not self._scheduled:
            self._scheduled = True
            self._waiting_since = self._loop.time()
            self._loop.call_later(self._quiet, self._run_next)

    def __len__(self) -> int:
        return len(self._queue)

    def _run_next(self) -> None:
        if not self._queue:  # run_all got there first
            self._scheduled = False
            return
        now = self._loop.time()
        quiet_for = now - self._last_activity
        if quiet_for < self._quiet and now - self._waiting_since < self._longest_wait:
            self._loop.call_later(self._quiet - quiet_for, self._run_next)
            return
        work = self._queue.popleft()
        try:
            work()
        except Exception:  # one failed piece must not strand the rest
            log.exception("deferred work failed")
        if self._queue:
            self._waiting_since = now
            self._loop.call_soon(self._run_next)  # after the I/O that is ready, if any
        else:
            self._scheduled = False

    def run_all(self) -> None:
        """Everything queued, now (the server is stopping)."""
        while self._queue:
            self._queue.popleft()()
        self._scheduled = False
