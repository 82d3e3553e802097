"""Per-worker bounds on live Envoy streams and live sandboxes.

Past either bound a new stream is refused with gRPC status RESOURCE_EXHAUSTED, which Envoy
treats as a failed processor: its `failure_mode_allow` decides whether the connection or
request goes on unfiltered or is refused. A stream takes its sandboxes only when its first
message arrives, so streams opened and never used cost none.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from sidecar.grpc_server import GrpcError, Status


class Refused(GrpcError):
    """A stream over a bound."""

    def __init__(self, what: str, bound: int) -> None:
        super().__init__(Status.RESOURCE_EXHAUSTED,
                         f"this worker already serves its maximum of {bound} live {what}")
        self.what = what


class Admission:
    def __init__(self, max_streams: int, max_sandboxes: int,
                 on_refused: Callable[[str], None] = lambda what: None) -> None:
        self.max_streams = max_streams
        self.max_sandboxes = max_sandboxes
        self.streams = 0
        self.sandboxes = 0
        self.refused: Counter[str] = Counter()
        self._on_refused = on_refused

    def _refuse(self, what: str, bound: int) -> Refused:
        self.refused[what] += 1
        self._on_refused(what)
        return Refused(what, bound)

    def open_stream(self) -> None:
        """Raises Refused past `max_streams`; else the stream counts until `close_stream`."""
        if self.streams >= self.max_streams:
            raise self._refuse("streams", self.max_streams)
        self.streams += 1

    def close_stream(self) -> None:
        self.streams -= 1

    def take_sandbox(self) -> None:
        """Raises Refused past `max_sandboxes`; else one counts until `give_back_sandbox`."""
        if self.sandboxes >= self.max_sandboxes:
            raise self._refuse("sandboxes", self.max_sandboxes)
        self.sandboxes += 1

    def give_back_sandbox(self) -> None:
        self.sandboxes -= 1


UNBOUNDED = 1 << 62


def unbounded() -> Admission:
    """For sessions made outside a server (tests, tools)."""
    return Admission(UNBOUNDED, UNBOUNDED)
