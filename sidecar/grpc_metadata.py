"""A stream's gRPC metadata as plugins see it, and the chain it names."""

from __future__ import annotations

from collections.abc import Iterable

from sidecar.registry import CHAIN_METADATA_KEY

# Keys that describe the transport, not the stream: plugins do not see them.
_TRANSPORT = frozenset({"te", "content-type", "user-agent", "authority", "x-envoy-internal",
                        "x-forwarded-proto", "x-request-id", "x-envoy-expected-rq-timeout-ms"})


def stream_metadata(items: Iterable[tuple[str, str | bytes]] | None) -> tuple[tuple[str, str], ...]:
    """The text metadata Envoy sent with the stream (`initial_metadata`), transport keys and
    binary (`-bin`) values left out."""
    return tuple(
        (key, value) for key, value in items or ()
        if isinstance(value, str) and not key.startswith((":", "grpc-"))
        and key not in _TRANSPORT and not key.endswith("-bin"))


def requested_chain(metadata: tuple[tuple[str, str], ...]) -> str | None:
    return next((value for key, value in metadata if key == CHAIN_METADATA_KEY), None)
