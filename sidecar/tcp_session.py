"""One TCP connection: its bytes, in each direction, through the plugins of its chain."""

from __future__ import annotations

import contextlib
import enum
from dataclasses import dataclass

from sidecar.streams import StreamFailed, StreamPlugins
from vmm.events import (
    Close,
    Direction,
    Replace,
    Reset,
    StreamInfo,
    TcpClose,
    TcpData,
    TcpOpen,
)


class ConnectionAction(enum.Enum):
    CONTINUE = "continue"
    CLOSE = "close"  # FIN
    RESET = "reset"  # RST


@dataclass(frozen=True, slots=True)
class TcpResult:
    """What to do with one piece of the connection: pass `data` on, then the action."""

    data: bytes
    action: ConnectionAction = ConnectionAction.CONTINUE


def _stopped(verdict: Close | Reset) -> TcpResult:
    return TcpResult(b"", ConnectionAction.RESET if isinstance(verdict, Reset)
                     else ConnectionAction.CLOSE)


class TcpSession:
    def __init__(self, plugins: StreamPlugins, info: StreamInfo) -> None:
        self.plugins = plugins
        self._info = info
        self._opened = False
        # Bytes a plugin's on-open asked to send upstream first, by chain position.
        self._prefixes: dict[int, bytes] = {}

    def data(self, direction: Direction, data: bytes, end_of_stream: bool) -> TcpResult:
        try:
            if not self._opened:
                refused = self._open()
                if refused is not None:
                    return refused
            for link in self.plugins.in_order(direction):
                verdict = self.plugins.deliver(link, TcpData(direction, data, end_of_stream))
                if isinstance(verdict, Replace):
                    data = verdict.data
                elif isinstance(verdict, Close | Reset):
                    return _stopped(verdict)
                if direction is Direction.INBOUND and self._prefixes:
                    data = self._prefixes.pop(link.position, b"") + data
            return TcpResult(data)
        except StreamFailed:
            return TcpResult(b"", ConnectionAction.CLOSE)

    def _open(self) -> TcpResult | None:
        self._opened = True
        if self.plugins.failure is not None:
            raise self.plugins.failure
        for link in self.plugins.links:
            verdict = self.plugins.deliver(link, TcpOpen(self._info))
            if isinstance(verdict, Replace):
                self._prefixes[link.position] = verdict.data
            elif isinstance(verdict, Close | Reset):
                return _stopped(verdict)
        return None

    def close(self) -> None:
        """The connection is over: tell the plugins that want to know, then destroy them."""
        for link in self.plugins.links:
            with contextlib.suppress(StreamFailed):  # the connection is already gone
                self.plugins.deliver(link, TcpClose())
        self.plugins.close()
