"""h2spec's "http2" section 5 (streams and multiplexing): stream states, identifiers,
concurrency, dependencies, connection errors and extension frames (RFC 9113 §5.1-5.5)."""

from __future__ import annotations

from collections.abc import Callable

import hpack
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
    WindowUpdateFrame,
)

from tests.conformance.raw_client import DUMMY_HEADERS, MESSAGE, RawClient, raw_frame

STREAMS_PROBED = 10_000  # opening more streams than this to reach a limit is no quick test
UNKNOWN_TYPE = 0x16
Send = Callable[[RawClient], None]

# --- frames on a stream after it ended ---------------------------------------------------------


def half_closed_remote(client: RawClient) -> None:
    """The client ended its side of stream 1 (END_STREAM)."""
    client.send(client.request())


def reset_by_the_client(client: RawClient) -> None:
    """The client reset stream 1 (RST_STREAM) while it was open."""
    client.send(client.request(end_stream=False), RstStreamFrame(1, ErrorCodes.CANCEL))


def closed_by_both(client: RawClient) -> None:
    """Both sides ended stream 1: the server's reply is complete."""
    client.send(client.request())
    client.expect_stream_closed(1)


def data(client: RawClient) -> Frame:
    return DataFrame(1, MESSAGE, flags=["END_STREAM"])


def headers(client: RawClient) -> Frame:
    return client.request()


def continuation(client: RawClient) -> Frame:
    return ContinuationFrame(1, client.block(DUMMY_HEADERS), flags=["END_HEADERS"])


STREAM_CLOSED = (ErrorCodes.STREAM_CLOSED,)
# CONTINUATION after a complete field block is also a PROTOCOL_ERROR (§6.10)
STREAM_CLOSED_OR_PROTOCOL = (ErrorCodes.STREAM_CLOSED, ErrorCodes.PROTOCOL_ERROR)


@pytest.mark.parametrize(("state", "frame", "codes", "connection_error"), [
    pytest.param(half_closed_remote, data, STREAM_CLOSED, False, id="http2/5.1/5"),
    pytest.param(half_closed_remote, data, STREAM_CLOSED, False, id="http2/6.1/2"),  # the same
    pytest.param(half_closed_remote, headers, STREAM_CLOSED, False, id="http2/5.1/6"),
    pytest.param(half_closed_remote, continuation, STREAM_CLOSED_OR_PROTOCOL, False,
                 id="http2/5.1/7"),
    pytest.param(reset_by_the_client, data, STREAM_CLOSED, False, id="http2/5.1/8"),
    pytest.param(reset_by_the_client, headers, STREAM_CLOSED, False, id="http2/5.1/9"),
    pytest.param(reset_by_the_client, continuation, STREAM_CLOSED_OR_PROTOCOL, False,
                 id="http2/5.1/10"),
    pytest.param(closed_by_both, data, STREAM_CLOSED, False, id="http2/5.1/11"),
    pytest.param(closed_by_both, headers, STREAM_CLOSED, True, id="http2/5.1/12"),
    pytest.param(closed_by_both, continuation, STREAM_CLOSED_OR_PROTOCOL, True,
                 id="http2/5.1/13"),
])
def test_frames_on_a_stream_the_client_ended_are_errors(
        client: RawClient, state: Send, frame: Callable[[RawClient], Frame],
        codes: tuple[ErrorCodes, ...], connection_error: bool) -> None:
    """§5.1: after the client's END_STREAM or RST_STREAM only WINDOW_UPDATE, PRIORITY and
    RST_STREAM may follow; anything else is STREAM_CLOSED, a stream error, except HEADERS or
    CONTINUATION on a stream closed both ways, which is a connection error."""
    state(client)
    client.send(frame(client))
    if connection_error:
        client.expect_connection_error(*codes)
    else:
        client.expect_stream_error(1, *codes)


# --- connection errors -------------------------------------------------------------------------


def sending(make: Callable[[RawClient], Frame | bytes]) -> Send:
    def send(client: RawClient) -> None:
        client.send(make(client))
    return send


def headers_on_streams(*stream_ids: int) -> Send:
    def send(client: RawClient) -> None:
        client.send(*(client.request(stream_id) for stream_id in stream_ids))
    return send


def unknown_frame_inside_a_field_block(client: RawClient) -> None:
    client.send(client.request(end_headers=False), raw_frame(UNKNOWN_TYPE, 0, 0, bytes(8)))


@pytest.mark.parametrize("send", [
    pytest.param(sending(lambda client: RstStreamFrame(1, ErrorCodes.CANCEL)), id="http2/5.1/2"),
    pytest.param(sending(lambda client: RstStreamFrame(1, ErrorCodes.CANCEL)),
                 id="http2/6.4/2"),  # the same case
    pytest.param(sending(lambda client: WindowUpdateFrame(1, 100)), id="http2/5.1/3"),
    pytest.param(sending(lambda client: ContinuationFrame(
        1, client.block(client.request_headers()), flags=["END_HEADERS"])), id="http2/5.1/4"),
    pytest.param(headers_on_streams(2), id="http2/5.1.1/1"),
    pytest.param(unknown_frame_inside_a_field_block, id="http2/5.5/2"),
])
def test_protocol_violations_are_connection_errors(client: RawClient, send: Send) -> None:
    """Frames other than HEADERS and PRIORITY on an idle stream (§5.1), an even or decreasing
    stream identifier from the client (§5.1.1), any frame inside a field block, even an unknown
    one (§5.5): connection errors of type PROTOCOL_ERROR."""
    send(client)
    client.expect_connection_error(ErrorCodes.PROTOCOL_ERROR)


def test_a_decreasing_stream_identifier_is_never_served(client: RawClient) -> None:
    """http2/5.1.1/2: HEADERS on stream 5, then on stream 3. RFC 9113 asks for a connection
    error (PROTOCOL_ERROR); libnghttp2 ignores the second HEADERS instead, since a lower id may
    be a stream it closed and no longer remembers. Either way stream 3 is never served: a
    PING sent after it is answered with nothing on stream 3 before, or the connection ends
    with PROTOCOL_ERROR."""
    headers_on_streams(5, 3)(client)
    client.send(PingFrame(0, b"after-3!"))

    def decide(frame: Frame | None) -> bool | None:
        if frame is None or isinstance(frame, GoAwayFrame):
            return frame is None or frame.error_code == ErrorCodes.PROTOCOL_ERROR
        if frame.stream_id == 3:
            return False
        return (isinstance(frame, PingFrame) and "ACK" in frame.flags) or None

    client.wait_for("stream 3 unserved (PING ACK first) or PROTOCOL_ERROR", decide)


# --- stream errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(("make", "codes"), [
    # §5.1 makes it a connection error of type PROTOCOL_ERROR, §6.1 a stream error of type
    # STREAM_CLOSED: either is right.
    pytest.param(lambda client: DataFrame(1, MESSAGE, flags=["END_STREAM"]),
                 (ErrorCodes.PROTOCOL_ERROR, ErrorCodes.STREAM_CLOSED), id="http2/5.1/1"),
    pytest.param(lambda client: client.request(flags=["PRIORITY"], depends_on=1,
                                               stream_weight=255),
                 (ErrorCodes.PROTOCOL_ERROR,), id="http2/5.3.1/1"),
    pytest.param(lambda client: PriorityFrame(1, depends_on=1, stream_weight=255),
                 (ErrorCodes.PROTOCOL_ERROR,), id="http2/5.3.1/2"),
])
def test_stream_level_violations_are_stream_errors(
        client: RawClient, make: Callable[[RawClient], Frame],
        codes: tuple[ErrorCodes, ...]) -> None:
    """DATA on an idle stream; a stream that depends on itself (§5.3.1)."""
    client.send(make(client))
    client.expect_stream_error(1, *codes)


def test_streams_over_the_advertised_limit_are_refused(client: RawClient) -> None:
    """http2/5.1.2/1: one stream more than SETTINGS_MAX_CONCURRENT_STREAMS is a stream error of
    type PROTOCOL_ERROR or REFUSED_STREAM (§5.1.2). The calls send no END_STREAM, so that each
    stays open (h2spec holds its GETs open with a window of 0 instead: a gRPC call without a
    message ends without DATA). As in h2spec, a server that advertises no limit skips it."""
    limit = client.server_settings.get(SettingCodes.MAX_CONCURRENT_STREAMS)
    if limit is None:
        pytest.skip("the server advertises no SETTINGS_MAX_CONCURRENT_STREAMS")
    if limit >= STREAMS_PROBED:
        pytest.skip(f"the server allows {limit} concurrent streams, too many to open here")
    # a block that leaves the dynamic table alone, so that every stream can reuse it
    block = hpack.Encoder().encode(
        [hpack.NeverIndexedHeaderTuple(name, value) for name, value in client.request_headers()])
    last = 2 * limit + 1
    client.send(*(HeadersFrame(stream_id, block, flags=["END_HEADERS"])
                  for stream_id in range(1, last + 1, 2)))
    client.expect_stream_error(last, ErrorCodes.PROTOCOL_ERROR, ErrorCodes.REFUSED_STREAM)


def test_a_connection_error_closes_the_connection(client: RawClient) -> None:
    """http2/5.4.1/1: after a connection error (here PING on a stream) the server closes the
    TCP connection (§5.4.1)."""
    client.send(raw_frame(PingFrame.type, 0, 3, bytes(8)))
    client.expect_closed()
