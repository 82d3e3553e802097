"""Envoy's HTTP ext_proc (`envoy.filters.http.ext_proc`): one gRPC stream per HTTP request,
one HttpSession per stream.

Every message gets exactly one response of the matching kind (Envoy's contract), except in
observability mode, where Envoy does not wait for any. In FULL_DUPLEX_STREAMED body mode
Envoy forwards only the body the processor sends back, so each chunk is returned as a
streamed response, changed or not.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from dataclasses import dataclass, field

from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.type.v3 import http_status_pb2
from google.protobuf.message import DecodeError

from sidecar.attributes import stream_info
from sidecar.grpc_metadata import Metadata, StreamSetup, open_stream
from sidecar.grpc_server import Answer, GrpcError, Status
from sidecar.http_session import HttpMessage, HttpResult, HttpSession
from sidecar.offload import StreamWork
from vmm.events import (
    Direction,
    Fields,
    HttpBody,
    HttpHeaders,
    HttpTrailers,
    Mutation,
)

log = logging.getLogger(__name__)

METHOD = "/envoy.service.ext_proc.v3.ExternalProcessor/Process"
FULL_DUPLEX = processing_mode_pb2.ProcessingMode.FULL_DUPLEX_STREAMED
_KNOWN_STATUS = frozenset(http_status_pb2.StatusCode.values())
_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
IN, OUT = Direction.INBOUND, Direction.OUTBOUND


def header_fields(header_map: base_pb2.HeaderMap) -> Fields:
    return tuple((h.key, h.raw_value or h.value.encode()) for h in header_map.headers)


def header_mutation(set_headers: Fields, remove_headers: tuple[str, ...] = ()) -> pb.HeaderMutation:
    return pb.HeaderMutation(
        set_headers=[base_pb2.HeaderValueOption(
            header=base_pb2.HeaderValue(key=name, raw_value=value), append_action=_OVERWRITE)
            for name, value in set_headers],
        remove_headers=list(remove_headers))


def common_response(mutation: Mutation, *, headers_phase: bool) -> pb.CommonResponse:
    response = pb.CommonResponse()
    if mutation.set_headers or mutation.remove_headers:
        response.header_mutation.CopyFrom(
            header_mutation(mutation.set_headers, mutation.remove_headers))
    if mutation.body is not None:
        response.body_mutation.body = mutation.body
        if headers_phase:  # a body chosen while seeing the headers replaces the whole body
            response.status = pb.CommonResponse.CONTINUE_AND_REPLACE
    return response


def immediate_response(result: HttpResult) -> pb.ProcessingResponse:
    assert result.respond is not None
    status = result.respond.status
    if status not in _KNOWN_STATUS:
        log.warning("%s answered with status %d, which Envoy cannot send; answering 500",
                    result.details, status)
        status = 500
    return pb.ProcessingResponse(immediate_response=pb.ImmediateResponse(
        status=http_status_pb2.HttpStatus(code=status),  # type: ignore[arg-type]
        headers=header_mutation(result.respond.headers),
        body=result.respond.body, details=result.details))


class Part(enum.Enum):
    HEADERS = "headers"
    BODY = "body"
    TRAILERS = "trailers"


_PART_OF = {HttpHeaders: Part.HEADERS, HttpBody: Part.BODY, HttpTrailers: Part.TRAILERS}


def received(request: pb.ProcessingRequest) -> HttpMessage | None:
    """The message Envoy sent, by kind; None for a request that carries none."""
    match request.WhichOneof("request"):  # the protobuf oneof, read in this one place
        case "request_headers":
            headers = request.request_headers
            return HttpHeaders(IN, header_fields(headers.headers), headers.end_of_stream)
        case "response_headers":
            headers = request.response_headers
            return HttpHeaders(OUT, header_fields(headers.headers), headers.end_of_stream)
        case "request_body":
            return HttpBody(IN, request.request_body.body, request.request_body.end_of_stream)
        case "response_body":
            return HttpBody(OUT, request.response_body.body, request.response_body.end_of_stream)
        case "request_trailers":
            return HttpTrailers(IN, header_fields(request.request_trailers.trailers))
        case "response_trailers":
            return HttpTrailers(OUT, header_fields(request.response_trailers.trailers))
    return None


def headers_response(direction: Direction, common: pb.CommonResponse) -> pb.ProcessingResponse:
    answer = pb.HeadersResponse(response=common)
    if direction is IN:
        return pb.ProcessingResponse(request_headers=answer)
    return pb.ProcessingResponse(response_headers=answer)


def body_response(direction: Direction, common: pb.CommonResponse) -> pb.ProcessingResponse:
    answer = pb.BodyResponse(response=common)
    if direction is IN:
        return pb.ProcessingResponse(request_body=answer)
    return pb.ProcessingResponse(response_body=answer)


def trailers_response(direction: Direction, mutation: Mutation) -> pb.ProcessingResponse:
    answer = pb.TrailersResponse(
        header_mutation=header_mutation(mutation.set_headers, mutation.remove_headers))
    if direction is IN:
        return pb.ProcessingResponse(request_trailers=answer)
    return pb.ProcessingResponse(response_trailers=answer)


@dataclass(slots=True)
class DirectionState:
    """One direction of the request as the processor sees it, after Envoy's ProcessorState:
    the body mode Envoy announced, the parts received, and the part whose response Envoy
    waits for (none between messages, and none in observability mode)."""

    body_mode: int  # ProcessingMode.BodySendMode, from the first message's protocol_config
    received: set[Part] = field(default_factory=set)
    awaited: Part | None = None

    @property
    def full_duplex(self) -> bool:
        return self.body_mode == FULL_DUPLEX


class HttpStream:
    """Translates one ext_proc stream's messages into HttpSession calls and back."""

    def __init__(self, session: HttpSession, first: pb.ProcessingRequest) -> None:
        self.session = session
        config = first.protocol_config
        self.states = {IN: DirectionState(config.request_body_mode),
                       OUT: DirectionState(config.response_body_mode)}

    def respond(self, request: pb.ProcessingRequest) -> pb.ProcessingResponse | None:
        """The response to `request`, or None when Envoy waits for none."""
        message = received(request)
        if message is None:
            return None if request.observability_mode else pb.ProcessingResponse()
        state = self.states[message.direction]
        part = _PART_OF[type(message)]
        state.received.add(part)
        state.awaited = None if request.observability_mode else part
        response = self._answer(state, message)  # the plugins run in observability mode too
        if state.awaited is None:
            return None
        state.awaited = None  # answered
        return response

    def _answer(self, state: DirectionState, message: HttpMessage) -> pb.ProcessingResponse:
        result = self.session.handle(message)
        if result.respond is not None:
            return immediate_response(result)
        mutation = result.mutation
        match message:
            case HttpHeaders():
                return headers_response(message.direction,
                                        common_response(mutation, headers_phase=True))
            case HttpBody():
                common = common_response(mutation, headers_phase=False)
                if state.full_duplex:  # Envoy forwards only the body sent back
                    streamed = common.body_mutation.streamed_response
                    streamed.body = message.body if mutation.body is None else mutation.body
                    streamed.end_of_stream = message.end_of_stream
                return body_response(message.direction, common)
            case HttpTrailers():
                return trailers_response(message.direction, mutation)


class HttpExtProcCall:
    """One HTTP ext_proc stream: one HTTP request. Its sandboxes are made when its first
    message arrives."""

    def __init__(self, setup: StreamSetup, headers: Metadata) -> None:
        setup.admission.open_stream()
        self._setup = setup
        self._headers = headers
        self._stream: HttpStream | None = None
        self._work: StreamWork | None = None

    def message(self, payload: bytes) -> Answer | asyncio.Future[Answer]:
        try:
            request = pb.ProcessingRequest.FromString(payload)
        except DecodeError:
            raise GrpcError(Status.INVALID_ARGUMENT, "not a ProcessingRequest") from None
        if self._stream is None or self._work is None:
            plugins, metadata = open_stream(self._setup, self._headers, "http")
            info = stream_info(request.attributes, metadata)
            self._stream = HttpStream(HttpSession(plugins, info), request)
            self._work = self._setup.offload.stream(plugins)
        stream = self._stream

        def answer() -> Answer:
            response = stream.respond(request)
            return None if response is None else response.SerializeToString()

        return self._work.run(answer)

    def close(self) -> None:
        if self._stream is not None and self._work is not None:
            self._work.close(self._stream.session.close)
        self._setup.admission.close_stream()
