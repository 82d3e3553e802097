"""h2spec's "http2" section 6 (frame definitions) but for flow control (in
test_http2_flow_control.py): DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PING, GOAWAY and
CONTINUATION, each sent malformed or out of place (RFC 9113 §6.1-6.8, §6.10). Cases that are
the same as another run once under both ids: http2/6.1/2 (with 5.1/5), 6.2/1 and 6.2/2 (with
4.3/2 and 4.3/3), 6.4/2 (with 5.1/2), and here 6.9.2/3 (with 6.5.2/2)."""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest
from h2.errors import ErrorCodes
from h2.settings import SettingCodes
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    RstStreamFrame,
    SettingsFrame,
)

from tests.conformance.raw_client import DUMMY_HEADERS, MESSAGE, RawClient, raw_frame

PING_DATA = b"h2spec\0\0"
END_STREAM, ACK, END_HEADERS, PADDED = 0x1, 0x1, 0x4, 0x8
Send = Callable[[RawClient], None]


def sending(*make: Callable[[RawClient], Frame | bytes]) -> Send:
    """Sends what each of `make` builds, in order (each may use the HPACK state the ones
    before left)."""
    def send(client: RawClient) -> None:
        for build in make:
            client.send(build(client))
    return send


def opened(client: RawClient) -> HeadersFrame:
    """A call on stream 1 that the client has not ended."""
    return client.request(end_stream=False)


def data_padded_beyond_its_payload(client: RawClient) -> bytes:
    """A Pad Length of 6 in a 5-octet payload."""
    return raw_frame(DataFrame.type, PADDED | END_STREAM, 1, b"\x06" + MESSAGE[:4])


def headers_with_padding_as_long_as_the_payload(client: RawClient) -> bytes:
    block = client.block(client.request_headers())
    return raw_frame(HeadersFrame.type, PADDED | END_HEADERS | END_STREAM, 1,
                     bytes([len(block) + 1]) + block)


def dummy_continuation(stream_id: int, end_headers: bool = True) -> Callable[[RawClient], bytes]:
    """CONTINUATION with h2spec's filler field, on any stream (even 0)."""
    def build(client: RawClient) -> bytes:
        return raw_frame(ContinuationFrame.type, END_HEADERS if end_headers else 0, stream_id,
                         client.block(DUMMY_HEADERS))
    return build


def settings(**values: int) -> Callable[[RawClient], SettingsFrame]:
    return lambda client: SettingsFrame(settings={
        SettingCodes[name.upper()]: value for name, value in values.items()})


@pytest.mark.parametrize(("send", "code"), [
    pytest.param(sending(lambda client: raw_frame(DataFrame.type, END_STREAM, 0, MESSAGE)),
                 ErrorCodes.PROTOCOL_ERROR, id="http2/6.1/1"),
    pytest.param(sending(opened, data_padded_beyond_its_payload),
                 ErrorCodes.PROTOCOL_ERROR, id="http2/6.1/3"),
    pytest.param(sending(lambda client: raw_frame(
        HeadersFrame.type, END_HEADERS | END_STREAM, 0, client.block(client.request_headers()))),
                 ErrorCodes.PROTOCOL_ERROR, id="http2/6.2/3"),
    # RFC 9113 §6.2 makes padding errors connection errors (h2spec accepts stream errors)
    pytest.param(sending(headers_with_padding_as_long_as_the_payload),
                 ErrorCodes.PROTOCOL_ERROR, id="http2/6.2/4"),
    pytest.param(sending(lambda client: raw_frame(PriorityFrame.type, 0, 0, b"\0\0\0\0\xff")),
                 ErrorCodes.PROTOCOL_ERROR, id="http2/6.3/1"),
    pytest.param(sending(lambda client: raw_frame(RstStreamFrame.type, 0, 0, bytes(4))),
                 ErrorCodes.PROTOCOL_ERROR, id="http2/6.4/1"),
    # RFC 9113 §6.4 makes a bad length a connection error (h2spec accepts stream errors)
    pytest.param(sending(lambda client: client.request(),
                         lambda client: raw_frame(RstStreamFrame.type, 0, 1, bytes(3))),
                 ErrorCodes.FRAME_SIZE_ERROR, id="http2/6.4/3"),
    pytest.param(sending(lambda client: raw_frame(SettingsFrame.type, ACK, 0, bytes(1))),
                 ErrorCodes.FRAME_SIZE_ERROR, id="http2/6.5/1"),
    pytest.param(sending(lambda client: raw_frame(SettingsFrame.type, 0, 1,
                                                  struct.pack(">HI", 3, 100))),
                 ErrorCodes.PROTOCOL_ERROR, id="http2/6.5/2"),
    # RFC 9113 §6.5 names FRAME_SIZE_ERROR (h2spec also accepts PROTOCOL_ERROR)
    pytest.param(sending(lambda client: raw_frame(SettingsFrame.type, 0, 0, b"\0\3\0")),
                 ErrorCodes.FRAME_SIZE_ERROR, id="http2/6.5/3"),
    pytest.param(sending(settings(enable_push=2)), ErrorCodes.PROTOCOL_ERROR,
                 id="http2/6.5.2/1"),
    pytest.param(sending(settings(initial_window_size=1 << 31)), ErrorCodes.FLOW_CONTROL_ERROR,
                 id="http2/6.5.2/2"),
    pytest.param(sending(settings(initial_window_size=1 << 31)), ErrorCodes.FLOW_CONTROL_ERROR,
                 id="http2/6.9.2/3"),  # the same case, in §6.9.2
    pytest.param(sending(settings(max_frame_size=(1 << 14) - 1)), ErrorCodes.PROTOCOL_ERROR,
                 id="http2/6.5.2/3"),
    pytest.param(sending(settings(max_frame_size=1 << 24)), ErrorCodes.PROTOCOL_ERROR,
                 id="http2/6.5.2/4"),
    pytest.param(sending(lambda client: raw_frame(PingFrame.type, 0, 1, bytes(8))),
                 ErrorCodes.PROTOCOL_ERROR, id="http2/6.7/3"),
    pytest.param(sending(lambda client: raw_frame(PingFrame.type, 0, 0, bytes(6))),
                 ErrorCodes.FRAME_SIZE_ERROR, id="http2/6.7/4"),
    pytest.param(sending(lambda client: raw_frame(GoAwayFrame.type, 0, 1, bytes(8))),
                 ErrorCodes.PROTOCOL_ERROR, id="http2/6.8/1"),
    pytest.param(sending(lambda client: client.request(end_stream=False, end_headers=False),
                         dummy_continuation(1, end_headers=False),
                         lambda client: DataFrame(1, MESSAGE, flags=["END_STREAM"])),
                 ErrorCodes.PROTOCOL_ERROR, id="http2/6.10/2"),
    pytest.param(sending(lambda client: client.request(end_headers=False),
                         dummy_continuation(0)),
                 ErrorCodes.PROTOCOL_ERROR, id="http2/6.10/3"),
    pytest.param(sending(lambda client: client.request(), dummy_continuation(1)),
                 ErrorCodes.PROTOCOL_ERROR, id="http2/6.10/4"),
    pytest.param(sending(lambda client: client.request(end_headers=False),
                         dummy_continuation(1), dummy_continuation(1)),
                 ErrorCodes.PROTOCOL_ERROR, id="http2/6.10/5"),
    # h2spec interrupts a field block with DATA here (6.10/2 again); the case's title, which
    # this follows, is a CONTINUATION after DATA, with no field block to continue.
    pytest.param(sending(opened, lambda client: DataFrame(1, MESSAGE), dummy_continuation(1)),
                 ErrorCodes.PROTOCOL_ERROR, id="http2/6.10/6"),
])
def test_malformed_or_misplaced_frames_are_connection_errors(
        client: RawClient, send: Send, code: ErrorCodes) -> None:
    """Stream 0 where a stream is needed and the reverse, lengths a frame type does not allow,
    padding that does not fit, SETTINGS values out of range, CONTINUATION without a field block
    to continue: connection errors."""
    send(client)
    client.expect_connection_error(code)


def test_a_priority_frame_of_the_wrong_length_is_a_stream_error(client: RawClient) -> None:
    """http2/6.3/2: PRIORITY of 4 octets is a stream error of type FRAME_SIZE_ERROR."""
    client.send(client.request(), raw_frame(PriorityFrame.type, 0, 1, b"\x80\0\0\1"))
    client.expect_stream_error(1, ErrorCodes.FRAME_SIZE_ERROR)


def test_an_unknown_setting_is_ignored(client: RawClient) -> None:
    """http2/6.5.2/5: SETTINGS with an unknown identifier, then PING: answered."""
    client.send(SettingsFrame(settings={0xFF: 1}), PingFrame(0, bytes(8)))
    client.expect_ping_ack(bytes(8))


def test_settings_are_acknowledged(client: RawClient) -> None:
    """http2/6.5.3/2: SETTINGS without ACK gets a SETTINGS ACK."""
    client.send(SettingsFrame(settings={SettingCodes.ENABLE_PUSH: 0}))
    client.expect_settings_ack()


def test_ping_is_answered(client: RawClient) -> None:
    """http2/6.7/1, also generic/3.7/1: PING gets a PING ACK with the same data."""
    client.send(PingFrame(0, PING_DATA))
    client.expect_ping_ack(PING_DATA)


def test_a_ping_ack_is_not_answered(client: RawClient) -> None:
    """http2/6.7/2: a PING ACK from the client gets no answer: the first ACK to arrive is the
    one for the PING after it."""
    client.send(PingFrame(0, b"invalid\0", flags=["ACK"]), PingFrame(0, PING_DATA))
    client.expect_ping_ack(PING_DATA)


def test_a_field_block_in_several_continuation_frames_is_accepted(client: RawClient) -> None:
    """http2/6.10/1: HEADERS, then two CONTINUATION frames with more fields."""
    client.send(client.request(end_headers=False),
                ContinuationFrame(1, client.block(DUMMY_HEADERS)),
                ContinuationFrame(1, client.block(DUMMY_HEADERS), flags=["END_HEADERS"]))
    client.expect_headers(1)
