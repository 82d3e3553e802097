"""A stream's gRPC metadata as plugins see it, and the chain it names."""

from __future__ import annotations

from collections.abc import Iterable

import grpc

from sidecar.registry import CHAIN_METADATA_KEY, Registry
from sidecar.streams import Observer, StreamPlugins

Metadata = tuple[tuple[str, str], ...]

# Keys that describe the transport, not the stream: plugins do not see them.
_TRANSPORT = frozenset({"te", "content-type", "user-agent", "authority", "x-envoy-internal",
                        "x-forwarded-proto", "x-request-id", "x-envoy-expected-rq-timeout-ms"})


def stream_metadata(items: Iterable[tuple[str, str | bytes]] | None) -> Metadata:
    """The text metadata Envoy sent with the stream (`initial_metadata`), transport keys and
    binary (`-bin`) values left out."""
    return tuple(
        (key, value) for key, value in items or ()
        if isinstance(value, str) and not key.startswith((":", "grpc-"))
        and key not in _TRANSPORT and not key.endswith("-bin"))


def requested_chain(metadata: Metadata) -> str | None:
    return next((value for key, value in metadata if key == CHAIN_METADATA_KEY), None)


def open_stream(registry: Registry, context: grpc.aio.ServicerContext, protocol: str,
                observers: tuple[Observer, ...]) -> tuple[StreamPlugins, Metadata]:
    """A new Envoy stream: the chain its metadata names, with fresh sandboxes."""
    metadata = stream_metadata(context.invocation_metadata())
    chain = registry.resolve(requested_chain(metadata))
    return StreamPlugins(chain, protocol, observers), metadata
