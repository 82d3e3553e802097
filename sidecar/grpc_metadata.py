"""A stream's gRPC metadata as plugins see it, and the chain it names."""

from __future__ import annotations

import asyncio

from sidecar.admission import Admission
from sidecar.offload import Offload
from sidecar.quiet_work import QuietWork
from sidecar.registry import CHAIN_METADATA_KEY, Registry
from sidecar.streams import Observer, StreamPlugins

Metadata = tuple[tuple[str, str], ...]

# Keys that describe the transport, not the stream: plugins do not see them.
_TRANSPORT = frozenset({"te", "content-type", "user-agent", "grpc-accept-encoding",
                        "grpc-encoding", "grpc-timeout", "x-envoy-internal",
                        "x-forwarded-proto", "x-request-id", "x-envoy-expected-rq-timeout-ms"})


def stream_metadata(headers: Metadata) -> Metadata:
    """The text metadata Envoy sent with the stream (`initial_metadata`), transport keys and
    binary (`-bin`) values left out."""
    return tuple((key, value) for key, value in headers
                 if key not in _TRANSPORT and not key.endswith("-bin"))


class StreamSetup:
    """What every stream of one server is opened with. `registry` is replaced on reload:
    streams opened after that get the new plugins, open ones keep theirs."""

    def __init__(self, registry: Registry, observers: tuple[Observer, ...],
                 quiet_work: QuietWork, admission: Admission, offload: Offload) -> None:
        self.registry = registry
        self.observers = observers
        self.quiet_work = quiet_work
        self.admission = admission
        self.offload = offload


def open_stream(setup: StreamSetup, headers: Metadata,
                protocol: str) -> tuple[StreamPlugins, Metadata]:
    """The sandboxes of an Envoy stream, at its first message: the chain its metadata
    names, each plugin in a fresh sandbox. Raises Refused past the worker's bound."""
    metadata = stream_metadata(headers)
    requested = next((value for key, value in metadata if key == CHAIN_METADATA_KEY), None)
    defer = asyncio.get_running_loop().call_soon  # after this message's response is written
    registry = setup.registry
    plugins = StreamPlugins(registry.resolve(requested), protocol, setup.observers, defer,
                            setup.quiet_work.defer, setup.admission, registry.stream_closed)
    registry.stream_opened()
    return plugins, metadata
