"""h2spec's "http2" sections 6.5.3/1 and 6.9 (WINDOW_UPDATE, flow-control windows): the server
sends no more DATA than the windows the client grants, and rejects windows out of range
(RFC 9113 §6.5.3, §6.9). Each call's reply is one 15-octet gRPC message."""

from __future__ import annotations

import struct

import pytest
from h2.errors import ErrorCodes
from h2.settings import SettingCodes
from hyperframe.frame import SettingsFrame, WindowUpdateFrame

from tests.conformance.raw_client import RawClient, raw_frame

MAX_WINDOW = (1 << 31) - 1


def initial_window(*sizes: int) -> bytes:
    """SETTINGS carrying SETTINGS_INITIAL_WINDOW_SIZE once for each of `sizes`, in order."""
    return raw_frame(SettingsFrame.type, 0, 0, b"".join(
        struct.pack(">HI", SettingCodes.INITIAL_WINDOW_SIZE, size) for size in sizes))


@pytest.mark.parametrize("settings", [
    pytest.param(initial_window(1), id="http2/6.9.1/1"),
    # the last value of a parameter in one frame is the one that holds
    pytest.param(initial_window(100, 1), id="http2/6.5.3/1"),
])
def test_the_reply_waits_for_an_initial_window_of_one_octet(client: RawClient,
                                                            settings: bytes) -> None:
    """SETTINGS_INITIAL_WINDOW_SIZE ending at 1, acknowledged; then a call: the first DATA of
    its reply is one octet."""
    client.send(settings)
    client.expect_settings_ack()
    client.call()
    assert len(client.expect_data(1).data) == 1


def test_a_new_initial_window_applies_to_open_streams(client: RawClient) -> None:
    """http2/6.9.2/1: a window of 0 holds the reply; SETTINGS raising the initial window to 1
    lets one octet of it go."""
    client.send(initial_window(0))
    client.expect_settings_ack()
    client.call()
    client.send(initial_window(1))
    assert len(client.expect_data(1).data) == 1


def test_a_stream_window_can_go_negative(client: RawClient) -> None:
    """http2/6.9.2/2: with an initial window of 3 the reply's first 3 octets go; lowering it to
    2 leaves the stream's window at -1, so a WINDOW_UPDATE of 2 lets exactly 1 more go."""
    client.send(initial_window(3))
    client.expect_settings_ack()
    client.call()
    assert len(client.expect_data(1).data) == 3
    client.send(initial_window(2))
    client.expect_settings_ack()
    client.send(WindowUpdateFrame(1, 2))
    assert len(client.expect_data(1).data) == 1


def test_a_zero_increment_on_the_connection_is_a_connection_error(client: RawClient) -> None:
    """http2/6.9/1: WINDOW_UPDATE of 0 on stream 0: PROTOCOL_ERROR."""
    client.send(WindowUpdateFrame(0, 0))
    client.expect_connection_error(ErrorCodes.PROTOCOL_ERROR)


def test_a_zero_increment_on_a_stream_is_a_stream_error(client: RawClient) -> None:
    """http2/6.9/2: WINDOW_UPDATE of 0 on an open stream: PROTOCOL_ERROR on that stream."""
    client.send(client.request(end_stream=False), WindowUpdateFrame(1, 0))
    client.expect_stream_error(1, ErrorCodes.PROTOCOL_ERROR)


def test_a_window_update_of_the_wrong_length_is_a_connection_error(client: RawClient) -> None:
    """http2/6.9/3: WINDOW_UPDATE of 3 octets: FRAME_SIZE_ERROR."""
    client.send(raw_frame(WindowUpdateFrame.type, 0, 0, bytes(3)))
    client.expect_connection_error(ErrorCodes.FRAME_SIZE_ERROR)


def test_a_connection_window_over_the_maximum_is_answered_with_goaway(client: RawClient) -> None:
    """http2/6.9.1/2: WINDOW_UPDATEs taking the connection's window over 2^31-1: GOAWAY with
    FLOW_CONTROL_ERROR (h2spec wants the GOAWAY itself, not only the close)."""
    client.send(WindowUpdateFrame(0, MAX_WINDOW), WindowUpdateFrame(0, MAX_WINDOW))
    client.expect_goaway(ErrorCodes.FLOW_CONTROL_ERROR)


def test_a_stream_window_over_the_maximum_is_answered_with_rst_stream(client: RawClient) -> None:
    """http2/6.9.1/3: WINDOW_UPDATEs taking a stream's window over 2^31-1: RST_STREAM with
    FLOW_CONTROL_ERROR on that stream."""
    client.send(client.request(end_stream=False), WindowUpdateFrame(1, MAX_WINDOW),
                WindowUpdateFrame(1, MAX_WINDOW))
    client.expect_rst_stream(1, ErrorCodes.FLOW_CONTROL_ERROR)
