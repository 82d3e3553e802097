"""Capability `log`, and the plugin log that WASI stdout/stderr also write to."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from vmm.canonical import STRING, Enum, Signature
from vmm.capabilities.base import Grant, HostEnv, HostFunction
from vmm.tables import Table

LEVEL = Enum("debug", "info", "warn", "error")
_PY_LEVELS = (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR)
MAX_MESSAGE = 2048
DEFAULT_RATE = 10


def _sanitise(message: str) -> str:
    """One printable line: a plugin must not forge log lines with newlines or escapes."""
    if len(message) > MAX_MESSAGE:
        message = message[:MAX_MESSAGE] + "…"
    if message.isprintable():
        return message
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)


class PluginLog:
    """A plugin's log, shared by all its sandboxes: a token bucket bounds the rate, and what
    it drops is counted and reported when messages flow again."""

    def __init__(
        self, plugin: str, rate: float = DEFAULT_RATE, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.logger = logging.getLogger(f"hyperfilter.plugin.{plugin}")
        self.rate = rate
        self._clock = clock
        self._tokens = rate
        self._last = clock()
        self.dropped = 0

    def _take(self) -> bool:
        now = self._clock()
        self._tokens = min(self.rate, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    def log(self, level: int, message: str, *more_lines: str) -> None:
        """`more_lines` make one message of several (a traceback) at the cost of one, each
        line indented: none passes for a line of the log's own. (The capability's function.)"""
        self.offer(level, message, *more_lines)

    def offer(self, level: int, message: str, *more_lines: str) -> bool:
        """`log`, saying whether the message was logged (False: dropped by the rate)."""
        if not self._take():
            self.dropped += 1
            return False
        if self.dropped:
            self.logger.warning("%d messages dropped by the log rate limit", self.dropped)
            self.dropped = 0
        text = _sanitise(message) + "".join(f"\n    {_sanitise(line)}" for line in more_lines)
        self.logger.log(_PY_LEVELS[level], "%s", text)
        return True


class OutputLines:
    """WASI stdout or stderr of one sandbox, cut into lines for the plugin log."""

    def __init__(self, log: PluginLog, level: int) -> None:
        self._log = log
        self._level = level
        self._pending = b""

    def write(self, data: bytes) -> None:
        self._pending += data
        *lines, self._pending = self._pending.split(b"\n")
        if len(self._pending) > MAX_MESSAGE:
            lines.append(self._pending)
            self._pending = b""
        for number, line in enumerate(lines, 1):
            if not self._log.offer(self._level, line.decode("utf-8", "replace")):
                # Out of rate: the rest are dropped too, counted, not each looked at (64 KiB
                # of newlines were 65,536 attempts, 34 ms of the host's CPU for one write).
                self._log.dropped += len(lines) - number
                break


@dataclass(frozen=True)
class LogGrant(Grant):
    name = "log"
    functions = (HostFunction("log", Signature([LEVEL, STRING], None)),)

    rate: int = DEFAULT_RATE

    @classmethod
    def parse(cls, table: Table) -> LogGrant:
        return cls(rate=table.get_positive("rate", DEFAULT_RATE))

    def bind(self, env: HostEnv) -> PluginLog:
        return env.log  # created with this grant's rate by the loader
