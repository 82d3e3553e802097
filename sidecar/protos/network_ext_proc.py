"""Envoy 1.40's network ext_proc messages (proto/network_ext_proc.proto): xds-protos' with
ProcessingRequest.attributes and ProcessingResponse's dynamic_metadata and
close_stream_to_ext_proc_server."""

from __future__ import annotations

from sidecar.protos import message_classes

_PACKAGE = "hyperfilter.network_ext_proc.v3"
_classes = message_classes("network_ext_proc")

Data = _classes[f"{_PACKAGE}.Data"]
ProcessingRequest = _classes[f"{_PACKAGE}.ProcessingRequest"]
ProcessingResponse = _classes[f"{_PACKAGE}.ProcessingResponse"]
