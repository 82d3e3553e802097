"""HttpStream's per-direction state and its dispatch by message kind, with real ext_proc
messages over fake sandboxes. Through the real Envoy: tests/integration/test_http.py."""

from __future__ import annotations

import logging

import pytest
from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb

from sidecar.http_ext_proc import FULL_DUPLEX, HttpStream, Part
from tests.unit.test_sessions import HTTP_EVENTS, IN, OUT, fake, http
from vmm.events import (
    HTTP_FORWARD,
    Event,
    HttpBody,
    HttpForward,
    HttpHeaders,
    HttpOpen,
    HttpTrailers,
    Mutation,
    Verdict,
)

STREAMED = processing_mode_pb2.ProcessingMode.STREAMED
ADD_OPENED = Mutation((("x-opened", b"yes"),))


def headers(name: str, end_of_stream: bool = False) -> pb.ProcessingRequest:
    message = pb.HttpHeaders(headers=base_pb2.HeaderMap(
        headers=[base_pb2.HeaderValue(key="x-a", raw_value=b"1")]), end_of_stream=end_of_stream)
    return pb.ProcessingRequest(**{name: message})


def body(name: str, data: bytes, end_of_stream: bool = True) -> pb.ProcessingRequest:
    return pb.ProcessingRequest(**{name: pb.HttpBody(body=data, end_of_stream=end_of_stream)})


def trailers(name: str) -> pb.ProcessingRequest:
    return pb.ProcessingRequest(**{name: pb.HttpTrailers(trailers=base_pb2.HeaderMap(
        headers=[base_pb2.HeaderValue(key="x-t", raw_value=b"1")]))})


def with_modes(request: pb.ProcessingRequest, request_body: int = STREAMED,
               response_body: int = STREAMED) -> pb.ProcessingRequest:
    request.protocol_config.request_body_mode = request_body
    request.protocol_config.response_body_mode = response_body
    return request


def marks(event: Event) -> Verdict:
    """Opens with ADD_OPENED; marks headers and trailers with x-seen, upper-cases bodies."""
    if isinstance(event, HttpOpen):
        return HttpForward(ADD_OPENED)
    if isinstance(event, HttpBody):
        return HttpForward(Mutation(body=event.body.upper()))
    if isinstance(event, HttpHeaders | HttpTrailers):
        return HttpForward(Mutation((("x-seen", b"1"),)))
    return HTTP_FORWARD


def stream_over(first: pb.ProcessingRequest) -> tuple[HttpStream, list[Event]]:
    plugin = fake("marks", marks, HTTP_EVENTS)
    return HttpStream(http(plugin), first), plugin.seen


def set_names(mutation: pb.HeaderMutation) -> list[str]:
    return [option.header.key for option in mutation.set_headers]


def test_each_message_gets_the_response_of_its_kind_and_direction() -> None:
    first = with_modes(headers("request_headers"))
    stream, seen = stream_over(first)
    expected = [(first, "request_headers", IN, Part.HEADERS),
                (body("request_body", b"up"), "request_body", IN, Part.BODY),
                (trailers("request_trailers"), "request_trailers", IN, Part.TRAILERS),
                (headers("response_headers"), "response_headers", OUT, Part.HEADERS),
                (body("response_body", b"down"), "response_body", OUT, Part.BODY),
                (trailers("response_trailers"), "response_trailers", OUT, Part.TRAILERS)]
    for request, kind, direction, part in expected:
        response = stream.respond(request)
        assert response is not None and response.WhichOneof("response") == kind
        state = stream.states[direction]
        assert part in state.received and state.awaited is None
    assert [type(e) for e in seen] == [HttpOpen, HttpHeaders, HttpBody, HttpTrailers,
                                        HttpHeaders, HttpBody, HttpTrailers]
    assert stream.states[IN].received == set(Part) == stream.states[OUT].received


def test_responses_carry_the_plugins_mutations() -> None:
    stream, _ = stream_over(with_modes(headers("request_headers")))
    opened = stream.respond(with_modes(headers("request_headers")))
    assert opened is not None
    assert set_names(opened.request_headers.response.header_mutation) == ["x-opened", "x-seen"]
    upper = stream.respond(body("request_body", b"abc"))
    assert upper is not None and upper.request_body.response.body_mutation.body == b"ABC"
    marked = stream.respond(trailers("response_trailers"))
    assert marked is not None and set_names(marked.response_trailers.header_mutation) == ["x-seen"]


def test_body_modes_come_from_the_protocol_config_per_direction() -> None:
    stream, _ = stream_over(with_modes(headers("request_headers"), response_body=FULL_DUPLEX))
    assert not stream.states[IN].full_duplex and stream.states[OUT].full_duplex
    streamed = stream.respond(body("request_body", b"in", end_of_stream=False))
    assert streamed is not None
    assert not streamed.request_body.response.body_mutation.HasField("streamed_response")
    duplex = stream.respond(body("response_body", b"out", end_of_stream=False))
    assert duplex is not None
    sent_back = duplex.response_body.response.body_mutation.streamed_response
    assert sent_back.body == b"OUT" and not sent_back.end_of_stream


def test_in_observability_mode_the_plugins_run_and_nothing_is_answered() -> None:
    request = with_modes(headers("request_headers"))
    request.observability_mode = True
    stream, seen = stream_over(request)
    assert stream.respond(request) is None
    assert isinstance(seen[-1], HttpHeaders) and stream.states[IN].awaited is None
    empty = pb.ProcessingRequest(observability_mode=True)
    assert stream.respond(empty) is None
    assert stream.respond(pb.ProcessingRequest()) == pb.ProcessingResponse()


@pytest.mark.parametrize("first", [body("request_body", b"abc"), headers("response_headers")],
                         ids=["request-body-first", "response-headers-first"])
def test_an_open_mutation_is_dropped_once_with_a_warning_when_request_headers_are_skipped(
        first: pb.ProcessingRequest, caplog: pytest.LogCaptureFixture) -> None:
    stream, _ = stream_over(with_modes(first))
    with caplog.at_level(logging.WARNING, logger="sidecar.http_session"):
        response = stream.respond(first)
        for later in (trailers("request_trailers"), headers("response_headers"),
                      body("response_body", b"x")):
            stream.respond(later)
    assert response is not None
    carried = [response.request_body.response.header_mutation,
               response.response_headers.response.header_mutation]
    assert all("x-opened" not in set_names(mutation) for mutation in carried)
    warnings = [r.getMessage() for r in caplog.records if r.name == "sidecar.http_session"]
    assert len(warnings) == 1 and "on-open mutation of marks not applied" in warnings[0]


def test_close_destroys_the_sandboxes() -> None:
    plugin = fake("p", lambda e: HTTP_FORWARD, HTTP_EVENTS)
    session = http(plugin)
    session.handle(HttpHeaders(IN, (), True))
    session.close()
    assert plugin.sandboxes and all(s.closed for s in plugin.sandboxes)
