"""One TCP connection: its bytes, in each direction, through the plugins of its chain.

A plugin's answer (`answer`, `answer-and-close`) goes straight to the client: the bytes it
answers are dropped, and the plugins after it (and those between it and the client on the way
back) see neither. Answers from `on-open` (a greeting) are sent to the client before anything
else of the connection.
"""

from __future__ import annotations

import contextlib
import enum
from dataclasses import dataclass

from sidecar.streams import StreamFailed, StreamPlugins
from vmm.events import (
    Answer,
    AnswerAndClose,
    Close,
    Direction,
    Replace,
    Reset,
    StreamInfo,
    TcpClose,
    TcpData,
    TcpOpen,
    Verdict,
)


class ConnectionAction(enum.Enum):
    CONTINUE = "continue"
    CLOSE = "close"  # FIN
    RESET = "reset"  # RST


@dataclass(frozen=True, slots=True)
class TcpResult:
    """What to do with one piece of the connection: send `to_client` toward the client, pass
    `data` on in the piece's direction, then the action."""

    data: bytes
    action: ConnectionAction = ConnectionAction.CONTINUE
    to_client: bytes = b""


_ACTIONS = {Close: ConnectionAction.CLOSE, Reset: ConnectionAction.RESET,
            Answer: ConnectionAction.CONTINUE, AnswerAndClose: ConnectionAction.CLOSE}


def _ending(verdict: Verdict | None, greeting: bytes) -> TcpResult | None:
    """The result of a verdict that takes the bytes out of the chain; None for the others."""
    action = _ACTIONS.get(type(verdict))
    if action is None:
        return None
    answer = verdict.data if isinstance(verdict, Answer | AnswerAndClose) else b""
    return TcpResult(b"", action, greeting + answer)


class TcpSession:
    def __init__(self, plugins: StreamPlugins, info: StreamInfo) -> None:
        self.plugins = plugins
        self._info = info
        self._opened = False
        # Bytes a plugin's on-open asked to send upstream first, by chain position.
        self._prefixes: dict[int, bytes] = {}
        # Set once a verdict closed or reset the connection: whatever Envoy still sends (a
        # message in flight, a hostile peer) goes nowhere, and is answered the same way.
        self._ended: ConnectionAction | None = None

    def data(self, direction: Direction, data: bytes, end_of_stream: bool) -> TcpResult:
        if self._ended is not None:
            return TcpResult(b"", self._ended)
        result = self._through_chain(direction, data, end_of_stream)
        if result.action is not ConnectionAction.CONTINUE:
            self._ended = result.action
        return result

    def _through_chain(self, direction: Direction, data: bytes,
                       end_of_stream: bool) -> TcpResult:
        try:
            greeting = b""
            if not self._opened:
                opened = self._open()
                if opened.action is not ConnectionAction.CONTINUE:
                    return opened
                greeting = opened.to_client
            for link in self.plugins.in_order(direction):
                verdict = self.plugins.deliver(link, TcpData(direction, data, end_of_stream))
                if isinstance(verdict, Replace):
                    data = verdict.data
                elif (ending := _ending(verdict, greeting)) is not None:
                    return ending
                if direction is Direction.INBOUND and self._prefixes:
                    data = self._prefixes.pop(link.position, b"") + data
            return TcpResult(data, to_client=greeting)
        except StreamFailed:
            return TcpResult(b"", ConnectionAction.CLOSE)

    def _open(self) -> TcpResult:
        """Every plugin's on-open: the greetings they answer (in chain order), unless one
        stops the connection."""
        self._opened = True
        if self.plugins.failure is not None:
            raise self.plugins.failure
        greeting = b""
        for link in self.plugins.links:
            verdict = self.plugins.deliver(link, TcpOpen(self._info))
            if isinstance(verdict, Replace):
                self._prefixes[link.position] = verdict.data
            elif isinstance(verdict, Answer):
                greeting += verdict.data
            elif (ending := _ending(verdict, greeting)) is not None:
                return ending
        return TcpResult(b"", to_client=greeting)

    def close(self) -> None:
        """The connection is over: tell the plugins that want to know, then destroy them."""
        for link in self.plugins.links:
            with contextlib.suppress(StreamFailed):  # the connection is already gone
                self.plugins.deliver(link, TcpClose())
        self.plugins.close()
