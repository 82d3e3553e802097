"""Envoy's network ext_proc (`envoy.filters.network.ext_proc`): one gRPC stream per TCP
connection, one TcpSession per stream.

Envoy injects the bytes of every response into the connection whatever
`data_processing_status` says, so every `read_data`/`write_data` is answered with the data to
pass on: the original bytes or the plugins' replacement.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from envoy.service.network_ext_proc.v3 import network_external_processor_pb2 as pb
from envoy.service.network_ext_proc.v3 import network_external_processor_pb2_grpc as pb_grpc

from sidecar.grpc_metadata import open_stream
from sidecar.registry import Registry
from sidecar.streams import Observer
from sidecar.tcp_session import ConnectionAction, TcpSession
from vmm.events import Direction, StreamInfo

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
    response = pb.ProcessingResponse(
        data_processing_status=pb.ProcessingResponse.MODIFIED if modified
        else pb.ProcessingResponse.UNMODIFIED,
        connection_status=_STATUS[result.action])
    if direction is Direction.INBOUND:
        response.read_data.CopyFrom(out)
    else:
        response.write_data.CopyFrom(out)
    return response


class NetworkExtProc(pb_grpc.NetworkExternalProcessorServicer):
    def __init__(self, registry: Registry, observers: tuple[Observer, ...] = ()) -> None:
        self._registry = registry
        self._observers = observers

    async def Process(  # noqa: N802 - the gRPC method's name
        self, request_iterator: AsyncIterator[pb.ProcessingRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[pb.ProcessingResponse]:
        plugins, metadata = open_stream(self._registry, context, "tcp", self._observers)
        session = TcpSession(plugins, StreamInfo(metadata=metadata))
        try:
            async for request in request_iterator:
                yield tcp_response(session, request)
        finally:
            session.close()
