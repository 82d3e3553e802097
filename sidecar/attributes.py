"""Envoy's attributes of a stream (the HTTP filter's `request_attributes`, the network
filter's `connection_attributes`) as the StreamInfo a plugin's on-open gets.

Envoy sends them as a map from the filter's name to a Struct of attribute name to value.
Only the attributes below are read; a value that is not a string, or is longer than any real
one can be, is ignored (the plugin sees the field empty, as when Envoy sends nothing).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sidecar.grpc_metadata import Metadata
from vmm.events import StreamInfo

SOURCE_ADDRESS = "source.address"  # the client's "ip:port"
DESTINATION_ADDRESS = "destination.address"  # the address it connected to
SERVER_NAME = "connection.requested_server_name"  # TLS SNI (tls_inspector, or Envoy's TLS)
# What the bootstraps ask Envoy for (envoy-config/*-listener.yaml).
STREAM_ATTRIBUTES = (SOURCE_ADDRESS, DESTINATION_ADDRESS, SERVER_NAME)
# An address with its port ("[v6%zone]:port") is well under this, and a DNS name at most
# 253 bytes.
MAX_VALUE_BYTES = 255


def _text(value: Any) -> str | None:
    if value.WhichOneof("kind") != "string_value":
        return None
    text: str = value.string_value
    return text if len(text.encode()) <= MAX_VALUE_BYTES else None


def stream_info(attributes: Mapping[str, Any], metadata: Metadata) -> StreamInfo:
    """`attributes` is a request's `attributes` map (filter name → Struct)."""
    found: dict[str, str] = {}
    for struct in attributes.values():
        for name in STREAM_ATTRIBUTES:
            if name in struct.fields and (text := _text(struct.fields[name])) is not None:
                found[name] = text
    return StreamInfo(found.get(SOURCE_ADDRESS, ""), found.get(DESTINATION_ADDRESS, ""),
                      found.get(SERVER_NAME, ""), metadata)
