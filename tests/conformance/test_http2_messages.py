"""h2spec's "http2" sections 7 (error codes) and 8 (HTTP message exchanges): unknown error
codes, malformed requests and server push (RFC 9113 §7, §8.1-8.4; h2spec numbers them after
RFC 7540's §8.1.2.x). A malformed request is a stream error of type PROTOCOL_ERROR (§8.1.1)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from h2.errors import ErrorCodes
from hyperframe.frame import (
    DataFrame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    PushPromiseFrame,
    RstStreamFrame,
)

from tests.conformance.raw_client import MESSAGE, Headers, RawClient, header_flags

PING_DATA = b"h2spec\0\0"
UNKNOWN_CODE = 0xFF
Edit = Callable[[Headers], Headers]


def test_goaway_with_an_unknown_error_code_is_accepted(client: RawClient) -> None:
    """http2/7/1: an unknown error code means nothing special (§7): the PING after the GOAWAY
    is answered (or the connection closes)."""
    client.send(GoAwayFrame(0, last_stream_id=0, error_code=UNKNOWN_CODE),
                PingFrame(0, PING_DATA))
    client.expect_ping_ack(PING_DATA, or_closed=True)


def test_rst_stream_with_an_unknown_error_code_is_accepted(client: RawClient) -> None:
    """http2/7/2: the same for RST_STREAM on an open stream."""
    client.send(client.request(end_stream=False), RstStreamFrame(1, UNKNOWN_CODE),
                PingFrame(0, bytes(8)))
    client.expect_ping_ack(bytes(8), or_closed=True)


def test_push_promise_from_a_client_is_a_connection_error(client: RawClient) -> None:
    """http2/8.2/1: a client cannot push (§8.4): PUSH_PROMISE is a PROTOCOL_ERROR."""
    client.send(PushPromiseFrame(1, promised_stream_id=3,
                                 data=client.block(client.request_headers()),
                                 flags=["END_HEADERS"]))
    client.expect_connection_error(ErrorCodes.PROTOCOL_ERROR)


# --- malformed field sections --------------------------------------------------------------


def among_pseudo_fields(name: str, value: str) -> Edit:
    """One more field after the request's pseudo-header fields, before its regular ones."""
    def edit(headers: Headers) -> Headers:
        split = sum(1 for field, _ in headers if field.startswith(":"))
        return [*headers[:split], (name, value), *headers[split:]]
    return edit


def appended(name: str, value: str) -> Edit:
    return lambda headers: [*headers, (name, value)]


def first(name: str, value: str) -> Edit:
    return lambda headers: [(name, value), *headers]


def without(name: str) -> Edit:
    return lambda headers: [(field, value) for field, value in headers if field != name]


def replaced(name: str, value: str) -> Edit:
    return lambda headers: [(field, value if field == name else old) for field, old in headers]


def duplicated(name: str) -> Edit:
    return lambda headers: among_pseudo_fields(name, dict(headers)[name])(headers)


@pytest.mark.parametrize("edit", [
    pytest.param(appended("X-TEST", "ok"), id="http2/8.1.2/1"),  # names are lowercase (§8.2.1)
    pytest.param(among_pseudo_fields(":test", "ok"), id="http2/8.1.2.1/1"),
    pytest.param(among_pseudo_fields(":status", "200"), id="http2/8.1.2.1/2"),
    pytest.param(first("x-test", "ok"), id="http2/8.1.2.1/4"),
    pytest.param(appended("connection", "keep-alive"), id="http2/8.1.2.2/1"),
    pytest.param(replaced("te", "trailers, deflate"), id="http2/8.1.2.2/2"),
    pytest.param(replaced(":path", ""), id="http2/8.1.2.3/1"),
    pytest.param(without(":method"), id="http2/8.1.2.3/2"),
    pytest.param(without(":scheme"), id="http2/8.1.2.3/3"),
    pytest.param(without(":path"), id="http2/8.1.2.3/4"),
    pytest.param(duplicated(":method"), id="http2/8.1.2.3/5"),
    pytest.param(duplicated(":scheme"), id="http2/8.1.2.3/6"),
    pytest.param(duplicated(":path"), id="http2/8.1.2.3/7"),
])
def test_malformed_requests_are_stream_errors(client: RawClient, edit: Edit) -> None:
    """The gRPC request, edited: an uppercase name; an unknown or a response pseudo-header
    field, or one after a regular field (§8.3); a connection-specific field, or TE other than
    "trailers" (§8.2.2); an empty, missing or repeated request pseudo-header field (§8.3.1)."""
    client.send(client.request(headers=edit(client.request_headers())))
    client.expect_stream_error(1, ErrorCodes.PROTOCOL_ERROR)


def trailers_without_end_stream(client: RawClient) -> None:
    """A second field block that does not end the stream (§8.1)."""
    client.send(client.request(end_stream=False), DataFrame(1, MESSAGE),
                HeadersFrame(1, client.block([("x-test", "ok")]),
                             flags=header_flags(end_stream=False)))


def pseudo_field_in_trailers(client: RawClient) -> None:
    """Trailers with a pseudo-header field (§8.1). h2spec's trailers here also lack
    END_STREAM, which 8.1/1 is about; these end the stream, so only the field is wrong."""
    client.send(client.request(end_stream=False), DataFrame(1, MESSAGE),
                HeadersFrame(1, client.block([(":method", "POST")]),
                             flags=header_flags(end_stream=True)))


def content_length_unlike_the_data(frames: int) -> Callable[[RawClient], None]:
    """content-length: 1, then `frames` DATA frames of a 15-octet message each (§8.1.1)."""
    def send(client: RawClient) -> None:
        client.send(client.request(headers=[*client.request_headers(), ("content-length", "1")],
                                   end_stream=False),
                    *(DataFrame(1, MESSAGE) for _ in range(frames - 1)),
                    DataFrame(1, MESSAGE, flags=["END_STREAM"]))
    return send


@pytest.mark.parametrize("send", [
    pytest.param(trailers_without_end_stream, id="http2/8.1/1"),
    pytest.param(pseudo_field_in_trailers, id="http2/8.1.2.1/3"),
    pytest.param(content_length_unlike_the_data(1), id="http2/8.1.2.6/1"),
    pytest.param(content_length_unlike_the_data(2), id="http2/8.1.2.6/2"),
])
def test_malformed_messages_are_stream_errors(client: RawClient,
                                              send: Callable[[RawClient], None]) -> None:
    """Trailers out of place or with a pseudo-header field; a body unlike its
    content-length."""
    send(client)
    client.expect_stream_error(1, ErrorCodes.PROTOCOL_ERROR)
