"""h2spec's "generic" section: the server accepts every well-formed frame, request and header
representation, and answers. A request is a gRPC call to the echo method (a POST), where h2spec
sends a GET; the few cases about other methods say how they read the RFC. Cases that are the
same as one of the "http2" section run there under both ids: generic/1/1 (http2/3.5/1) and
generic/3.7/1 (http2/6.7/1)."""

from __future__ import annotations

from collections.abc import Callable
from itertools import product

import pytest
from h2.errors import ErrorCodes
from h2.settings import SettingCodes
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from tests.conformance import hpack_fields as hf
from tests.conformance.raw_client import MESSAGE, RawClient, header_flags

PING_DATA = b"h2spec\0\0"
Request = Callable[[RawClient], None]


# --- generic/2: frames allowed in each stream state ------------------------------------------


def test_priority_on_an_idle_stream_is_accepted(client: RawClient) -> None:
    """generic/2/1: PRIORITY on an idle stream, then PING: answered."""
    client.send(PriorityFrame(1, depends_on=0, stream_weight=255), PingFrame(0, bytes(8)))
    client.expect_ping_ack(bytes(8))


@pytest.mark.parametrize("also_priority", [pytest.param(False, id="generic/2/2"),
                                           pytest.param(True, id="generic/2/3")])
def test_window_update_on_a_half_closed_remote_stream_is_accepted(
        client: RawClient, also_priority: bool) -> None:
    """A window of 0 holds the reply of a finished request (half-closed remote); PRIORITY
    (generic/2/3) and a WINDOW_UPDATE on that stream are accepted: the reply's DATA comes."""
    client.send(SettingsFrame(settings={SettingCodes.INITIAL_WINDOW_SIZE: 0}))
    client.call()
    if also_priority:
        client.send(PriorityFrame(1, depends_on=0, stream_weight=255))
    client.send(WindowUpdateFrame(1, 1))
    client.expect_data(1)


def test_rst_stream_on_a_half_closed_remote_stream_is_accepted(client: RawClient) -> None:
    """generic/2/4: RST_STREAM on a stream the client finished, then PING: answered (or the
    connection closed)."""
    client.send(client.request(), RstStreamFrame(1, ErrorCodes.CANCEL), PingFrame(0, bytes(8)))
    client.expect_ping_ack(bytes(8), or_closed=True)


def test_priority_on_a_closed_stream_is_accepted(client: RawClient) -> None:
    """generic/2/5: PRIORITY on a stream both sides ended, then PING: answered."""
    client.send(client.request())
    client.expect_stream_closed(1)
    client.send(PriorityFrame(1, depends_on=0, stream_weight=255), PingFrame(0, bytes(8)))
    client.expect_ping_ack(bytes(8))


# --- generic/3: every frame type -------------------------------------------------------------


def test_rst_stream_is_accepted(client: RawClient) -> None:
    """generic/3.4/1: RST_STREAM on an open stream, then PING: answered (or closed)."""
    client.send(client.request(end_stream=False), RstStreamFrame(1, ErrorCodes.CANCEL),
                PingFrame(0, bytes(8)))
    client.expect_ping_ack(bytes(8), or_closed=True)


def test_settings_with_every_defined_parameter_is_acknowledged(client: RawClient) -> None:
    """generic/3.5/1: SETTINGS with each parameter RFC 9113 defines, at valid values."""
    client.send(SettingsFrame(settings={
        SettingCodes.HEADER_TABLE_SIZE: 4096, SettingCodes.ENABLE_PUSH: 1,
        SettingCodes.MAX_CONCURRENT_STREAMS: 100, SettingCodes.INITIAL_WINDOW_SIZE: 65535,
        SettingCodes.MAX_FRAME_SIZE: 16384, SettingCodes.MAX_HEADER_LIST_SIZE: 100}))
    client.expect_settings_ack()


def test_goaway_is_accepted(client: RawClient) -> None:
    """generic/3.8/1: GOAWAY(NO_ERROR) from the client, then PING: answered (or closed)."""
    client.send(GoAwayFrame(0, last_stream_id=0, error_code=ErrorCodes.NO_ERROR,
                            additional_data=b"h2spec"), PingFrame(0, PING_DATA))
    client.expect_ping_ack(PING_DATA, or_closed=True)


def test_window_update_on_the_connection_is_accepted(client: RawClient) -> None:
    """generic/3.9/1: WINDOW_UPDATE on stream 0, then PING: answered."""
    client.send(WindowUpdateFrame(0, 1), PingFrame(0, bytes(8)))
    client.expect_ping_ack(bytes(8))


# --- requests that the server must answer ----------------------------------------------------


def data(client: RawClient) -> None:
    """A DATA frame with the request's message."""
    client.call()


def two_data_frames(client: RawClient) -> None:
    client.send(client.request(end_stream=False), DataFrame(1, MESSAGE),
                DataFrame(1, MESSAGE, flags=["END_STREAM"]))


def padded_data(client: RawClient) -> None:
    client.send(client.request(end_stream=False),
                DataFrame(1, MESSAGE, flags=["END_STREAM", "PADDED"], pad_length=5))


def headers(client: RawClient) -> None:
    client.send(client.request())


def padded_headers(client: RawClient) -> None:
    client.send(client.request(flags=["PADDED"], pad_length=8))


def headers_with_priority(client: RawClient) -> None:
    client.send(client.request(flags=["PRIORITY"], depends_on=0, stream_weight=255))


def priority_then_headers(stream: int = 1, *, depends_on: int = 0, stream_weight: int = 0,
                          exclusive: bool = False) -> Request:
    """PRIORITY for `stream` (hyperframe's defaults unless given), then the request on
    stream 1."""
    def send(client: RawClient) -> None:
        client.send(PriorityFrame(stream, depends_on=depends_on, stream_weight=stream_weight,
                                  exclusive=exclusive), client.request())
    return send


def window_update_after_headers(client: RawClient) -> None:
    client.send(client.request(), WindowUpdateFrame(1, 1))


def continued(*cuts: int) -> Request:
    """The request's header block cut at `cuts`: HEADERS, then CONTINUATION frames."""
    def send(client: RawClient) -> None:
        block = client.block(client.request_headers())
        parts = [block[start:end] for start, end in zip((0, *cuts), (*cuts, None), strict=True)]
        client.send(HeadersFrame(1, parts[0], flags=["END_STREAM"]),
                    *(ContinuationFrame(1, part) for part in parts[1:-1]),
                    ContinuationFrame(1, parts[-1], flags=["END_HEADERS"]))
    return send


def method(name: str) -> Request:
    """A request with another method. gRPC gives GET and HEAD no meaning, but RFC 9113 §8.1
    asks only for a response, whatever its status: it must begin with HEADERS."""
    def send(client: RawClient) -> None:
        client.send(client.request(headers=client.request_headers(name)))
    return send


def trailers(client: RawClient) -> None:
    """The request ends with a trailer field (RFC 9113 §8.1), announced in `trailer`."""
    client.send(client.request(headers=[*client.request_headers(), ("trailer", "x-test")],
                               end_stream=False),
                DataFrame(1, MESSAGE),
                HeadersFrame(1, client.block([("x-test", "ok")]),
                             flags=header_flags(end_stream=True)))


@pytest.mark.parametrize("send", [
    pytest.param(data, id="generic/3.1/1"),
    pytest.param(two_data_frames, id="generic/3.1/2"),
    pytest.param(padded_data, id="generic/3.1/3"),
    pytest.param(headers, id="generic/3.2/1"),
    pytest.param(padded_headers, id="generic/3.2/2"),
    pytest.param(headers_with_priority, id="generic/3.2/3"),
    pytest.param(priority_then_headers(stream_weight=0), id="generic/3.3/1"),
    pytest.param(priority_then_headers(stream_weight=255), id="generic/3.3/2"),
    pytest.param(priority_then_headers(stream=3, depends_on=1), id="generic/3.3/3"),
    pytest.param(priority_then_headers(exclusive=True), id="generic/3.3/4"),
    # PRIORITY does not open stream 3, so stream 1 may still open after it
    pytest.param(priority_then_headers(stream=3, stream_weight=255), id="generic/3.3/5"),
    pytest.param(window_update_after_headers, id="generic/3.9/2"),
    pytest.param(continued(5), id="generic/3.10/1"),
    pytest.param(continued(5, 10), id="generic/3.10/2"),
    pytest.param(method("GET"), id="generic/4/1"),
    pytest.param(method("HEAD"), id="generic/4/2"),
    pytest.param(data, id="generic/4/3"),
    pytest.param(trailers, id="generic/4/4"),
])
def test_a_valid_request_is_answered(client: RawClient, send: Request) -> None:
    send(client)
    client.expect_headers(1)


# --- generic/5: every HPACK representation ---------------------------------------------------

NAME, VALUE = b"x-test", b"h2spec"
NAMES: tuple[int | bytes, ...] = (hf.USER_AGENT, NAME)  # an indexed name, then a new one
# generic/5/2 to 5/13: each literal kind, with each name, each plain then Huffman-coded.
LITERALS = [hf.literal(kind, name if isinstance(name, int) else hf.string(name, huffman_coded),
                       hf.string(VALUE, huffman_coded))
            for kind, name, huffman_coded in product(
                (hf.INCREMENTAL_INDEXING, hf.WITHOUT_INDEXING, hf.NEVER_INDEXED),
                NAMES, (False, True))]


@pytest.mark.parametrize("representation", [
    pytest.param(hf.indexed(hf.USER_AGENT), id="generic/5/1"),
    *(pytest.param(literal, id=f"generic/5/{case}")
      for case, literal in enumerate(LITERALS, start=2)),
])
def test_each_header_field_representation_is_decoded(client: RawClient,
                                                     representation: bytes) -> None:
    """One more field, in the representation under test, after the request's own."""
    client.send(HeadersFrame(1, client.block(client.request_headers()) + representation,
                             flags=header_flags(end_stream=True)))
    client.expect_headers(1)


def test_a_dynamic_table_size_update_is_accepted(client: RawClient) -> None:
    """generic/5/14: the encoder shrinks its table to 128 octets, so the block starts with a
    size update."""
    client.encoder.header_table_size = 128
    client.send(client.request())
    client.expect_headers(1)


def test_two_dynamic_table_size_updates_are_accepted(client: RawClient) -> None:
    """generic/5/15: two size updates (to 128, then back to 4096) before the block, as RFC 7541
    §4.2 allows between two blocks."""
    updates = hf.table_size_update(128) + hf.table_size_update(4096)
    client.send(HeadersFrame(1, updates + client.block(client.request_headers()),
                             flags=header_flags(end_stream=True)))
    client.expect_headers(1)
