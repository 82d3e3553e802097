"""Envoy's network ext_proc (`envoy.filters.network.ext_proc`): one gRPC stream per TCP
connection, one TcpSession per stream.

Envoy injects the bytes of every response into the connection whatever
`data_processing_status` says, so every `read_data`/`write_data` is answered with the data to
pass on: the original bytes or the plugins' replacement.
"""

from __future__ import annotations

import asyncio

from envoy.service.network_ext_proc.v3 import network_external_processor_pb2 as pb
from google.protobuf.message import DecodeError

from sidecar.grpc_metadata import Metadata, StreamSetup, open_stream
from sidecar.grpc_server import GrpcError, Status
from sidecar.offload import StreamWork
from sidecar.tcp_session import ConnectionAction, TcpSession
from vmm.events import Direction, StreamInfo

METHOD = "/envoy.service.network_ext_proc.v3.NetworkExternalProcessor/Process"
_STATUS = {
    ConnectionAction.CONTINUE: pb.ProcessingResponse.CONTINUE,
    ConnectionAction.CLOSE: pb.ProcessingResponse.CLOSE,
    ConnectionAction.RESET: pb.ProcessingResponse.CLOSE_RST,
}


def tcp_response(session: TcpSession, request: pb.ProcessingRequest) -> pb.ProcessingResponse:
    """The answer to one network ext_proc message."""
    if request.HasField("read_data"):
        direction, data = Direction.INBOUND, request.read_data
    elif request.HasField("write_data"):
        direction, data = Direction.OUTBOUND, request.write_data
    else:
        return pb.ProcessingResponse()
    result = session.data(direction, data.data, data.end_of_stream)
    out = pb.Data(data=result.data, end_of_stream=data.end_of_stream)
    modified = result.data is not data.data and result.data != data.data
    status = pb.ProcessingResponse.MODIFIED if modified else pb.ProcessingResponse.UNMODIFIED
    action = _STATUS[result.action]
    if direction is Direction.INBOUND:
        return pb.ProcessingResponse(read_data=out, data_processing_status=status,
                                     connection_status=action)
    return pb.ProcessingResponse(write_data=out, data_processing_status=status,
                                 connection_status=action)


class NetworkExtProcCall:
    """One network ext_proc stream: one TCP connection. Its sandboxes are made when its first
    message arrives."""

    def __init__(self, setup: StreamSetup, headers: Metadata) -> None:
        setup.admission.open_stream()
        self._setup = setup
        self._headers = headers
        self.session: TcpSession | None = None
        self._work: StreamWork | None = None

    def message(self, payload: bytes) -> bytes | asyncio.Future[bytes | None] | None:
        try:
            request = pb.ProcessingRequest.FromString(payload)
        except DecodeError:
            raise GrpcError(Status.INVALID_ARGUMENT, "not a ProcessingRequest") from None
        if self.session is None or self._work is None:
            plugins, metadata = open_stream(self._setup, self._headers, "tcp")
            self.session = TcpSession(plugins, StreamInfo(metadata=metadata))
            self._work = self._setup.offload.stream(plugins)
        session = self.session

        def answer() -> bytes | None:
            return tcp_response(session, request).SerializeToString()

        return self._work.run(answer)

    def close(self) -> None:
        if self.session is not None and self._work is not None:
            self._work.close(self.session.close)
        self._setup.admission.close_stream()
