"""Envoy's network ext_proc (`envoy.filters.network.ext_proc`): one gRPC stream per TCP
connection, one TcpSession per stream.

Envoy injects the bytes of every response into the connection whatever
`data_processing_status` says, so every `read_data`/`write_data` is answered with the data to
pass on: the original bytes or the plugins' replacement. A plugin's answer to the client goes
in a `write_data` of its own (see `tcp_responses`).
"""

from __future__ import annotations

import asyncio

from google.protobuf.message import DecodeError

from sidecar.attributes import stream_info
from sidecar.grpc_metadata import Metadata, StreamSetup, open_stream
from sidecar.grpc_server import Answer, GrpcError, Status
from sidecar.offload import StreamWork
from sidecar.protos import network_ext_proc as pb
from sidecar.tcp_session import ConnectionAction, TcpSession
from vmm.events import Direction

METHOD = "/envoy.service.network_ext_proc.v3.NetworkExternalProcessor/Process"
_STATUS = {
    ConnectionAction.CONTINUE: pb.ProcessingResponse.CONTINUE,
    ConnectionAction.CLOSE: pb.ProcessingResponse.CLOSE,
    ConnectionAction.RESET: pb.ProcessingResponse.CLOSE_RST,
}


def tcp_responses(session: TcpSession, request: pb.ProcessingRequest
                  ) -> tuple[pb.ProcessingResponse, ...]:
    """The answers to one network ext_proc message, in order.

    Envoy takes the response messages of a stream as they come, whichever request they
    answer: `write_data` in any of them is injected toward the client. So bytes for the client
    while answering `read_data` go first, in a `write_data` of their own, and the `read_data`
    answer follows (its absence would leave Envoy waiting for it, until message_timeout closes
    the connection). A connection status is acted on before the data of its own message,
    which Envoy then drops: a close after bytes for the client goes in the last message."""
    if request.HasField("read_data"):
        direction, data = Direction.INBOUND, request.read_data
    elif request.HasField("write_data"):
        direction, data = Direction.OUTBOUND, request.write_data
    else:
        return (pb.ProcessingResponse(),)
    result = session.data(direction, data.data, data.end_of_stream)
    action = _STATUS[result.action]
    if direction is Direction.INBOUND:
        answer = _data_response("read_data", data.data, result.data, data.end_of_stream, action)
        if not result.to_client:
            return (answer,)
        return (pb.ProcessingResponse(write_data=pb.Data(data=result.to_client),
                                      data_processing_status=pb.ProcessingResponse.MODIFIED),
                answer)
    out = result.to_client + result.data if result.to_client else result.data
    if not result.to_client or action == pb.ProcessingResponse.CONTINUE:
        return (_data_response("write_data", data.data, out, data.end_of_stream, action),)
    return (_data_response("write_data", data.data, out, data.end_of_stream,
                           pb.ProcessingResponse.CONTINUE),
            pb.ProcessingResponse(connection_status=action))


def _data_response(field: str, original: bytes, out: bytes, end_of_stream: bool,
                   action: int) -> pb.ProcessingResponse:
    """The bytes to pass on in `field` (read_data, write_data), then `action`."""
    modified = out is not original and out != original
    return pb.ProcessingResponse(
        **{field: pb.Data(data=out, end_of_stream=end_of_stream)},
        data_processing_status=pb.ProcessingResponse.MODIFIED if modified
        else pb.ProcessingResponse.UNMODIFIED, connection_status=action)


class NetworkExtProcCall:
    """One network ext_proc stream: one TCP connection. Its sandboxes are made when its first
    message arrives."""

    def __init__(self, setup: StreamSetup, headers: Metadata) -> None:
        setup.admission.open_stream()
        self._setup = setup
        self._headers = headers
        self.session: TcpSession | None = None
        self._work: StreamWork | None = None

    def message(self, payload: bytes) -> Answer | asyncio.Future[Answer]:
        try:
            request = pb.ProcessingRequest.FromString(payload)
        except DecodeError:
            raise GrpcError(Status.INVALID_ARGUMENT, "not a ProcessingRequest") from None
        if self.session is None or self._work is None:
            plugins, metadata = open_stream(self._setup, self._headers, "tcp")
            # Envoy sends the connection's attributes in the stream's first message.
            self.session = TcpSession(plugins, stream_info(request.attributes, metadata))
            self._work = self._setup.offload.stream(plugins)
        session = self.session

        def answer() -> Answer:
            return tuple(response.SerializeToString()
                         for response in tcp_responses(session, request))

        return self._work.run(answer)

    def close(self) -> None:
        if self.session is not None and self._work is not None:
            self._work.close(self.session.close)
        self._setup.admission.close_stream()
