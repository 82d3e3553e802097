"""Envoy's stream attributes as on-open's StreamInfo: what is taken, and what is ignored."""

from __future__ import annotations

from envoy.service.network_ext_proc.v3 import network_external_processor_pb2 as xds
from google.protobuf import struct_pb2

from sidecar.attributes import MAX_VALUE_BYTES, stream_info
from sidecar.protos import network_ext_proc as pb
from vmm.events import StreamInfo

FILTER = "envoy.filters.network.ext_proc"
METADATA = (("x-hyperfilter-chain", "c"),)


def request(**attributes: object) -> pb.ProcessingRequest:
    struct = struct_pb2.Struct()
    struct.update(attributes)
    message = pb.ProcessingRequest()
    message.attributes[FILTER].CopyFrom(struct)
    return message


def test_the_three_attributes_become_the_stream_info() -> None:
    message = request(**{"source.address": "10.1.2.3:40000",
                         "destination.address": "[::1]:6379",
                         "connection.requested_server_name": "db.example",
                         "source.port": 40000})
    assert stream_info(message.attributes, METADATA) == StreamInfo(
        "10.1.2.3:40000", "[::1]:6379", "db.example", METADATA)


def test_no_attributes_leave_the_fields_empty() -> None:
    assert stream_info(pb.ProcessingRequest().attributes, ()) == StreamInfo()


def test_values_of_the_wrong_type_or_size_are_ignored() -> None:
    message = request(**{"source.address": 12345.0,
                         "destination.address": {"nested": "struct"},
                         "connection.requested_server_name": "x" * (MAX_VALUE_BYTES + 1)})
    assert stream_info(message.attributes, ()) == StreamInfo()
    longest = "é" * (MAX_VALUE_BYTES // 2)  # the bound is in bytes
    assert stream_info(request(**{"connection.requested_server_name": longest}).attributes,
                       ()).server_name == longest
    assert stream_info(request(**{"connection.requested_server_name": longest + "é"})
                       .attributes, ()).server_name == ""


def test_the_messages_are_envoys_on_the_wire() -> None:
    """The project's own declarations (proto/) read what xds-protos' write, and Envoy 1.40's
    fields that xds-protos lacks survive a round trip through them."""
    sent = xds.ProcessingRequest(read_data=xds.Data(data=b"PING\r\n", end_of_stream=True))
    received = pb.ProcessingRequest.FromString(sent.SerializeToString())
    assert (received.read_data.data, received.read_data.end_of_stream) == (b"PING\r\n", True)
    response = pb.ProcessingResponse(write_data=pb.Data(data=b"-ERR\r\n"),
                                     connection_status=pb.ProcessingResponse.CLOSE,
                                     close_stream_to_ext_proc_server=True)
    as_xds = xds.ProcessingResponse.FromString(response.SerializeToString())
    assert (as_xds.write_data.data, as_xds.connection_status) == (b"-ERR\r\n",
                                                                 xds.ProcessingResponse.CLOSE)
    assert pb.ProcessingRequest.DESCRIPTOR.full_name.startswith("hyperfilter.")
