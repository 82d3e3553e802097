"""h2spec's "http2" sections 3.5 (connection preface) and 4 (frame format, frame size, header
compression): RFC 9113 §3.4, §4.1-4.3."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from h2.errors import ErrorCodes
from h2.settings import SettingCodes
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    SettingsFrame,
)

from tests.conformance import hpack_fields as hf
from tests.conformance.conftest import Connect
from tests.conformance.raw_client import (
    DEFAULT_MAX_FRAME,
    DUMMY_HEADERS,
    PREFACE,
    RawClient,
    header_flags,
    raw_frame,
)

UNKNOWN_TYPE = 0x16
UNDEFINED_PING_FLAGS = 0x16  # every bit but ACK's is undefined for PING
RESERVED_BIT = 1 << 31


def test_the_client_preface_is_answered_with_settings(connect: Connect) -> None:
    """http2/3.5/1, also generic/1/1: after the client's preface, the server's first frame is
    SETTINGS (not an ACK)."""
    client = connect()
    client.send(PREFACE, SettingsFrame(settings={SettingCodes.INITIAL_WINDOW_SIZE: 65535}))
    first = client.wait_for("a frame", lambda frame: frame is not None)
    assert isinstance(first, SettingsFrame) and "ACK" not in first.flags, first


def test_an_invalid_preface_is_a_connection_error(connect: Connect) -> None:
    """http2/3.5/2: anything but the preface is a connection error of type PROTOCOL_ERROR."""
    client = connect()
    client.send(b"INVALID CONNECTION PREFACE\r\n\r\n")
    client.expect_connection_error(ErrorCodes.PROTOCOL_ERROR)


@pytest.mark.parametrize("frame", [
    pytest.param(raw_frame(UNKNOWN_TYPE, 0, 0, bytes(8)), id="http2/4.1/1"),
    pytest.param(raw_frame(UNKNOWN_TYPE, 0, 0, bytes(8)), id="http2/5.5/1"),  # the same case
    pytest.param(raw_frame(PingFrame.type, UNDEFINED_PING_FLAGS, 0, bytes(8)), id="http2/4.1/2"),
    pytest.param(raw_frame(PingFrame.type, 0, RESERVED_BIT, bytes(8)), id="http2/4.1/3"),
])
def test_unknown_types_undefined_flags_and_the_reserved_bit_are_ignored(
        client: RawClient, frame: bytes) -> None:
    """An unknown frame type is ignored (§4.1, §5.5); so are undefined flags and the stream
    identifier's reserved bit (§4.1): the PING after the first, or the PING itself, is
    answered."""
    client.send(frame, PingFrame(0, bytes(8)))
    client.expect_ping_ack(bytes(8))


def test_a_data_frame_of_the_minimum_maximum_size_is_accepted(client: RawClient) -> None:
    """http2/4.2/1: a DATA frame of 2^14 octets, which every endpoint must accept: one gRPC
    message that fills it."""
    payload = b"x" * (DEFAULT_MAX_FRAME - 5)
    client.send(client.request(end_stream=False),
                DataFrame(1, b"\0" + len(payload).to_bytes(4, "big") + payload,
                          flags=["END_STREAM"]))
    client.expect_headers(1)


def test_a_data_frame_over_the_maximum_frame_size_is_an_error(client: RawClient) -> None:
    """http2/4.2/2: DATA one octet over the server's SETTINGS_MAX_FRAME_SIZE: FRAME_SIZE_ERROR,
    a stream error (DATA cannot alter the connection's state)."""
    client.send(client.request(end_stream=False),
                DataFrame(1, b"x" * (client.max_frame_size + 1), flags=["END_STREAM"]))
    client.expect_stream_error(1, ErrorCodes.FRAME_SIZE_ERROR)


def test_a_headers_frame_over_the_maximum_frame_size_is_a_connection_error(
        client: RawClient) -> None:
    """http2/4.2/3: a HEADERS frame over SETTINGS_MAX_FRAME_SIZE carries a field block, so it
    is a connection error of type FRAME_SIZE_ERROR."""
    filler = hf.literal(hf.WITHOUT_INDEXING, hf.string(b"x-dummy"),
                        hf.string(b"x" * client.max_frame_size))
    client.send(HeadersFrame(1, client.block(client.request_headers()) + filler,
                             flags=header_flags(end_stream=True)))
    client.expect_connection_error(ErrorCodes.FRAME_SIZE_ERROR)


def invalid_field_block(client: RawClient) -> None:
    """A field block that ends inside its only field: a literal whose name is missing."""
    client.send(raw_frame(HeadersFrame.type, 0x05, 1, b"\x40"))


def priority_inside_a_field_block(client: RawClient) -> None:
    client.send(client.request(end_stream=False, end_headers=False),
                PriorityFrame(1, stream_weight=255),
                ContinuationFrame(1, client.block(DUMMY_HEADERS), flags=["END_HEADERS"]))


def headers_of_another_stream_inside_a_field_block(client: RawClient) -> None:
    client.send(client.request(1, end_stream=False, end_headers=False), client.request(3),
                ContinuationFrame(1, client.block(DUMMY_HEADERS), flags=["END_HEADERS"]))


@pytest.mark.parametrize(("send", "code"), [
    pytest.param(invalid_field_block, ErrorCodes.COMPRESSION_ERROR, id="http2/4.3/1"),
    pytest.param(priority_inside_a_field_block, ErrorCodes.PROTOCOL_ERROR, id="http2/4.3/2"),
    pytest.param(headers_of_another_stream_inside_a_field_block, ErrorCodes.PROTOCOL_ERROR,
                 id="http2/4.3/3"),
    # §6.2's cases about HEADERS without END_HEADERS are the same two
    pytest.param(priority_inside_a_field_block, ErrorCodes.PROTOCOL_ERROR, id="http2/6.2/1"),
    pytest.param(headers_of_another_stream_inside_a_field_block, ErrorCodes.PROTOCOL_ERROR,
                 id="http2/6.2/2"),
])
def test_field_block_errors_are_connection_errors(
        client: RawClient, send: Callable[[RawClient], None], code: ErrorCodes) -> None:
    """A field block that cannot be decoded is a COMPRESSION_ERROR; one interrupted by any
    other frame is a PROTOCOL_ERROR (§4.3): both connection errors."""
    send(client)
    client.expect_connection_error(code)
