"""The server side of HTTP/2 for long-lived gRPC streams: an asyncio Protocol over libnghttp2
(sidecar/nghttp2.py), which parses and checks every frame and keeps flow control and stream
states. This module owns what the engine leaves to its user: the limits below, each stream's
outgoing bytes (sent strictly in the order they were queued, as DATA frames nghttp2 sizes to
the peer's windows and frame size), timeouts, draining, and one write per batch of frames.

Each request stream goes to a `StreamHandler` made by the `open_stream` callable.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Protocol

from sidecar import nghttp2
from sidecar.nghttp2 import HeaderList, Nghttp2Error, ServerSession, SessionOptions

log = logging.getLogger(__name__)
Headers = tuple[tuple[str, str], ...]

# --- limits: each names what it stops ----------------------------------------------------------
# Streams one connection may hold open at once (advertised; nghttp2 refuses the rest). Never-
# ended streams cost at most this many per connection; Envoy opens more connections past it.
MAX_CONCURRENT_STREAMS = 1024
# What the peer may send before we are done with it. A stream's window opens again only as
# its messages are processed, so it bounds what one stream holds unprocessed; it fits the
# largest message the gRPC layer takes (sidecar/grpc_server.py, MAX_MESSAGE) with its prefix.
# The connection's window opens as bytes arrive (streams' partial messages must not starve
# each other), and is small enough that Envoy never queues more DATA frames for us than its
# outbound-frame flood limit (10,000): 16 MiB is 1,024 frames of 16 KiB.
MAX_STREAM_MESSAGE = 4 << 20
STREAM_WINDOW = MAX_STREAM_MESSAGE + 5
CONNECTION_WINDOW = 16 << 20
# Bytes of messages declared but not yet complete, over all streams of one connection: many
# streams each parking a partial message stop here (RESOURCE_EXHAUSTED for the call).
MAX_PENDING_MESSAGE_BYTES = 32 << 20
# One request's header list, counted as RFC 9113 6.5.2 does (name + value + 32 per field):
# stops HPACK bombs (one table entry referenced many times) and oversized metadata, by
# ending the connection (ENHANCE_YOUR_CALM).
MAX_HEADER_LIST_BYTES = 64 << 10
HEADER_FIELD_OVERHEAD = 32
# CONTINUATION frames after one HEADERS (CVE-2024-28182: unbounded CONTINUATION floods).
MAX_CONTINUATIONS = 8
# Streams that end by a reset before we answered them (HEADERS then RST_STREAM, CVE-2023-44487
# Rapid Reset; also streams we reset for breaking a limit): a token bucket of RESET_BURST,
# refilled at RESET_RATE per second; past it, GOAWAY (ENHANCE_YOUR_CALM). Resets after the
# answer do not count: Envoy resets every ext_proc stream it is done with. (nghttp2's own
# limiter counts those too, so it is turned off.)
RESET_BURST = 200
RESET_RATE = 100.0
# Entries in one SETTINGS frame, and SETTINGS/PING acknowledgements queued for a peer that
# does not read them (settings and ping floods end the connection past these).
MAX_SETTINGS_ENTRIES = 32
MAX_OUTBOUND_ACKS = 100
# Our HPACK encoder's dynamic table, whatever SETTINGS_HEADER_TABLE_SIZE the peer asks for.
MAX_ENCODER_TABLE = 4096
# A connection that has not sent the preface and its first frame header by then is closed
# (slow-preface, slowloris-style connections).
PREFACE_TIMEOUT_SECONDS = 10.0
# A connection with no stream for this long is sent GOAWAY and closed.
IDLE_TIMEOUT_SECONDS = 300.0
# One connection's share of a loop turn: past it, the rest of what it sent waits for the loop's
# next turn, behind whatever else is ready then (busy connections share the worker evenly), so
# a burst of cheap streams (Rapid Reset, never-ended streams: about 25 µs each) or a large read
# cannot hold the other connections.
TURN_SECONDS = 0.001
# Between the shutdown notice and the GOAWAY that names the last stream, while draining: the
# peer's streams already in flight are still taken.
DRAIN_NOTICE_SECONDS = 1.0

PREFACE_BYTES = 24 + 9  # the client magic and the header of its first frame (SETTINGS)
SETTINGS = (
    (nghttp2.SETTINGS_MAX_CONCURRENT_STREAMS, MAX_CONCURRENT_STREAMS),
    (nghttp2.SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW),
    (nghttp2.SETTINGS_MAX_HEADER_LIST_SIZE, MAX_HEADER_LIST_BYTES),
    (nghttp2.SETTINGS_ENABLE_PUSH, 0),
)
OPTIONS = SessionOptions(max_settings=MAX_SETTINGS_ENTRIES, max_outbound_ack=MAX_OUTBOUND_ACKS,
                         reset_limit=False,
                         max_continuations=MAX_CONTINUATIONS,
                         max_deflate_table=MAX_ENCODER_TABLE)
NO_ERROR = nghttp2.NO_ERROR


class ResetBudget:
    """Resets of unanswered streams one connection may cause: a token bucket."""

    __slots__ = ("_last", "_tokens")

    def __init__(self, now: float) -> None:
        self._tokens = float(RESET_BURST)
        self._last = now

    def spend(self, now: float) -> bool:
        """One reset; False once the budget is spent."""
        self._tokens = min(RESET_BURST, self._tokens + (now - self._last) * RESET_RATE) - 1
        self._last = now
        return self._tokens >= 0


class StreamHandler(Protocol):
    """One request stream, as the layer above sees it."""

    def data(self, payload: bytes, end_stream: bool) -> None:
        """DATA arrived (possibly empty, when only END_STREAM did)."""

    def reset(self) -> None:
        """The stream is gone before its end: RST_STREAM, or the connection closed."""


class Stream:
    """One request stream: its request headers while they arrive, then its handler, and the
    bytes queued for it that nghttp2 has not sent yet."""

    __slots__ = ("handler", "header_bytes", "headers", "outgoing", "queued", "responded",
                 "submitted", "trailers")

    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] | None = []
        self.header_bytes = 0
        self.handler: StreamHandler | None = None
        self.outgoing: deque[memoryview] = deque()
        self.queued = 0  # bytes in `outgoing`
        self.responded = False  # response HEADERS submitted (trailers-only, or data follows)
        self.submitted = False  # nghttp2 is sending what is queued (a data submission)
        self.trailers: HeaderList | None = None  # once set, they follow the queued bytes


Opener = Callable[["Connection", int, Headers], StreamHandler]


class Connection(asyncio.Protocol):
    """One HTTP/2 connection. `open_stream(connection, stream_id, headers)` makes the handler
    of each new request stream; `on_bytes()` is told whenever bytes arrive."""

    def __init__(self, open_stream: Opener, on_bytes: Callable[[], None] = lambda: None,
                 on_closed: Callable[[Connection], None] = lambda connection: None) -> None:
        self._open_stream = open_stream
        self._on_bytes = on_bytes
        self._on_closed = on_closed
        self._loop = asyncio.get_running_loop()  # made by the server, on its loop
        self._streams: dict[int, Stream] = {}
        self._out: list[bytes | memoryview] = []
        self._transport: asyncio.Transport | None = None
        self._session = ServerSession(self, OPTIONS, SETTINGS)
        self._session.set_window(0, CONNECTION_WINDOW)
        self._pending_message_bytes = 0
        self._received = 0
        self._reset_budget = ResetBudget(self._loop.time())
        self._preface_timer: asyncio.TimerHandle | None = None
        self._idle_timer: asyncio.TimerHandle | None = None
        self._idle_since = 0.0
        self._turn_ends = 0.0
        self._abuse: str | None = None  # why a callback failed the session, if on purpose
        self._backlog = b""  # what the peer sent that waits for the next loop turn
        self._turn_paused = False  # a callback paused nghttp2 this turn
        self._paused_for: set[str] = set()  # why reading is paused, if it is
        self.draining = False
        self._goaway = False  # one was sent or received: the session may finish

    # --- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        loop = self._loop
        self._preface_timer = loop.call_later(PREFACE_TIMEOUT_SECONDS, self._preface_expired)
        self._idle_since = loop.time()
        self._idle_timer = loop.call_later(IDLE_TIMEOUT_SECONDS, self._idle_check)
        self.flush()  # our SETTINGS and connection window

    def data_received(self, data: bytes) -> None:
        self._on_bytes()
        if self._preface_timer is not None:
            self._received += len(data)
            if self._received >= PREFACE_BYTES:
                self._preface_timer.cancel()
                self._preface_timer = None
        self._receive(data)

    def _receive(self, data: bytes) -> None:
        """Hand `data` to nghttp2 for at most TURN_SECONDS; what is left waits for the next
        loop turn, with reading paused meanwhile."""
        self._turn_ends = time.perf_counter() + TURN_SECONDS
        self._turn_paused = False
        try:
            taken = self._session.recv(data)
        except Nghttp2Error as error:
            log.warning("HTTP/2 connection from %s ended: %s", self._peer(), self._abuse or error)
            abuse = self._abuse or error.code in nghttp2.FLOOD_ERRORS
            self._end(nghttp2.ENHANCE_YOUR_CALM if abuse else nghttp2.PROTOCOL_ERROR)
            return
        # Paused, nghttp2 may have taken every byte and still owe the frame's end (a DATA
        # frame's END_STREAM, a header block's end): the next turn goes on, bytes or none.
        if taken < len(data) or self._turn_paused:
            self._backlog = data[taken:]
            self._pause_reading("backlog")
            # After what else is ready, not after a rest as long as the turn: a connection alone
            # on its worker (one Envoy worker sends every stream on one) then left the worker
            # idle about half the time while Envoy queued its messages past message_timeout.
            self._loop.call_soon(self._receive_backlog)
        self.flush()

    def _receive_backlog(self) -> None:
        data, self._backlog = self._backlog, b""
        if self._transport is None:
            return
        self._receive(data)
        if not self._turn_paused:
            self._resume_reading("backlog")

    def _pause_reading(self, why: str) -> None:
        if self._transport is not None and not self._paused_for:
            self._transport.pause_reading()
        self._paused_for.add(why)

    def _resume_reading(self, why: str) -> None:
        self._paused_for.discard(why)
        if self._transport is not None and not self._paused_for:
            self._transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        for timer in (self._preface_timer, self._idle_timer):
            if timer is not None:
                timer.cancel()
        streams, self._streams = self._streams, {}
        for stream in streams.values():
            if stream.handler is not None:
                stream.handler.reset()
        self._session.close()
        self._on_closed(self)

    def pause_writing(self) -> None:
        self._pause_reading("peer not reading")  # it is not reading: stop reading from it too

    def resume_writing(self) -> None:
        self._resume_reading("peer not reading")

    # --- nghttp2.SessionEvents ----------------------------------------------------------

    def begin_request(self, stream_id: int) -> None:
        self._streams[stream_id] = Stream()

    def header(self, stream_id: int, name: bytes, value: bytes) -> int:
        stream = self._streams.get(stream_id)
        if stream is None:
            return 0
        stream.header_bytes += len(name) + len(value) + HEADER_FIELD_OVERHEAD
        if stream.header_bytes > MAX_HEADER_LIST_BYTES:
            # Never a legitimate client of this port (Envoy's metadata is its own config), and
            # nghttp2 would go on decoding the block: the connection ends.
            self._abuse = f"a header list over {MAX_HEADER_LIST_BYTES} bytes"
            return nghttp2.ERR_CALLBACK_FAILURE
        if stream.headers is not None:  # not trailers: those are only counted
            stream.headers.append((name, value))
        return nghttp2.ERR_PAUSE if self._turn_is_over() else 0

    def request_headers_done(self, stream_id: int, end_stream: bool) -> None:
        stream = self._streams[stream_id]
        fields, stream.headers = stream.headers or [], None
        headers = tuple((name.decode("utf-8", "replace"), value.decode("utf-8", "replace"))
                        for name, value in fields)
        stream.handler = self._open_stream(self, stream_id, headers)
        if end_stream:
            self.end_stream(stream_id)

    def data(self, stream_id: int, data: bytes) -> int:
        self._session.consume_connection(len(data))
        stream = self._streams.get(stream_id)
        if stream is not None and stream.handler is not None:
            stream.handler.data(data, False)  # it reports back through `consumed`
        else:
            self._session.consume_stream(stream_id, len(data))
        return nghttp2.ERR_PAUSE if self._turn_is_over() else 0

    def _turn_is_over(self) -> bool:
        """Past the turn's time: the callback returns ERR_PAUSE (and `_receive` goes on next
        turn)."""
        if time.perf_counter() > self._turn_ends:
            self._turn_paused = True
        return self._turn_paused

    def end_stream(self, stream_id: int) -> None:
        stream = self._streams.get(stream_id)
        if stream is not None and stream.handler is not None:
            stream.handler.data(b"", True)

    def stream_closed(self, stream_id: int, error_code: int) -> None:
        stream = self._streams.pop(stream_id, None)
        if stream is None:
            return
        if stream.handler is not None:
            handler, stream.handler = stream.handler, None
            handler.reset()
        now = self._loop.time()
        if error_code != NO_ERROR and not stream.responded and not self._goaway \
                and not self._reset_budget.spend(now):
            # No new streams; the ones it has already opened may finish (were these Envoy's,
            # only a hostile client of Envoy's could have spent the budget).
            log.warning("HTTP/2 connection from %s reset over %d unanswered streams; sent "
                        "away", self._peer(), RESET_BURST)
            self._goaway = True
            self._session.goaway(nghttp2.ENHANCE_YOUR_CALM)
        if not self._streams:
            self._idle_since = now

    def data_length(self, stream_id: int, room: int) -> tuple[int, bool]:
        stream = self._streams[stream_id]
        length = min(room, stream.queued)
        last = length == stream.queued
        if last:
            stream.submitted = False
        return length, last

    def write_data(self, stream_id: int, frame_header: bytes, length: int) -> None:
        stream = self._streams[stream_id]
        out, outgoing = self._out, stream.outgoing
        out.append(frame_header)
        stream.queued -= length
        while length:
            chunk = outgoing[0]
            if len(chunk) <= length:
                out.append(outgoing.popleft())
                length -= len(chunk)
            else:
                out.append(chunk[:length])
                outgoing[0] = chunk[length:]
                length = 0

    def goaway_received(self) -> None:
        self._goaway = True

    def output(self, data: bytes) -> None:
        self._out.append(data)
        if not self._goaway and _has_goaway(data):  # nghttp2's own, for a connection error
            self._goaway = True

    def trailers(self, stream_id: int) -> HeaderList | None:
        return self._streams[stream_id].trailers

    # --- what the layer above tells of what it received ----------------------------------

    def consumed(self, stream_id: int, size: int) -> None:
        """`size` bytes of the stream are processed: its window may open by as much."""
        if stream_id in self._streams:
            self._session.consume_stream(stream_id, size)

    def reserve(self, size: int) -> bool:
        """Room for `size` more bytes of declared, incomplete messages; False past the
        connection's MAX_PENDING_MESSAGE_BYTES."""
        if self._pending_message_bytes + size > MAX_PENDING_MESSAGE_BYTES:
            return False
        self._pending_message_bytes += size
        return True

    def release(self, size: int) -> None:
        """`size` reserved bytes are no longer pending (the message completed, or its call
        ended)."""
        self._pending_message_bytes -= size

    # --- what the layer above sends -----------------------------------------------------

    def respond(self, stream_id: int, headers: HeaderList) -> None:
        """Response HEADERS; `send_data` and `finish` follow."""
        stream = self._streams.get(stream_id)
        if stream is not None and not stream.responded:
            stream.responded = True
            self._session.respond(stream_id, headers, end_stream=False)

    def send_data(self, stream_id: int, data: bytes) -> None:
        """Queue `data` after everything queued on the stream before it."""
        stream = self._streams.get(stream_id)
        if stream is None or not data:
            return
        stream.outgoing.append(memoryview(data))
        stream.queued += len(data)
        if not stream.submitted:  # else the pending submission carries it too
            stream.submitted = True
            self._session.submit_data(stream_id)

    def finish(self, stream_id: int, trailers: HeaderList) -> None:
        """End the stream with `trailers` after its queued data; before any response, the
        trailers alone make the response (gRPC's trailers-only form)."""
        stream = self._streams.get(stream_id)
        if stream is None:
            return
        stream.handler = None  # the layer above is done with it
        if not stream.responded:
            stream.responded = True
            self._session.respond(stream_id, trailers, end_stream=True)
        elif stream.submitted:
            stream.trailers = trailers  # they follow the submission's last DATA
        else:
            self._session.trailers(stream_id, trailers)

    def flush(self) -> None:
        """Everything nghttp2 can send now, in one write; close once both sides are done."""
        try:
            self._session.send()
        except Nghttp2Error as error:
            log.warning("HTTP/2 connection to %s failed: %s", self._peer(), error)
            self._close()
            return
        if self._out:
            if self._transport is not None:
                self._transport.write(b"".join(self._out))
            self._out.clear()
        if self._goaway and self._session.finished:
            self._close()

    # --- draining and timeouts ----------------------------------------------------------

    def drain(self) -> None:
        """Stop taking streams: a shutdown notice now, the GOAWAY naming the last stream
        taken after DRAIN_NOTICE_SECONDS; the connection closes when its streams are done."""
        if self.draining or self._transport is None:
            return
        self.draining = self._goaway = True
        self._session.shutdown_notice()
        self.flush()
        self._loop.call_later(DRAIN_NOTICE_SECONDS, self._send_goaway, NO_ERROR)

    def _send_goaway(self, code: int) -> None:
        if self._transport is not None:
            self._goaway = True
            self._session.goaway(code)
            self.flush()

    def abort(self) -> None:
        """Close the connection now, whatever its streams are doing."""
        self._close()

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    def _preface_expired(self) -> None:
        self._preface_timer = None
        log.warning("HTTP/2 connection from %s sent no preface within %.0f s; closed",
                    self._peer(), PREFACE_TIMEOUT_SECONDS)
        self._close()

    def _idle_check(self) -> None:
        if self._transport is None:
            return
        now = self._loop.time()
        if self._streams:
            self._idle_since = now
        elif now - self._idle_since >= IDLE_TIMEOUT_SECONDS:
            self._send_goaway(NO_ERROR)
            self._close()
            return
        self._idle_timer = self._loop.call_later(self._idle_since + IDLE_TIMEOUT_SECONDS - now,
                                                 self._idle_check)

    # --- bookkeeping --------------------------------------------------------------------

    def _end(self, code: int) -> None:
        """The session failed: a GOAWAY goes out (nghttp2's, or `code` where it queued
        none), then the connection closes."""
        try:
            self._session.terminate(code)
            self._session.send()
        except Nghttp2Error:
            pass
        if self._out and self._transport is not None:
            self._transport.write(b"".join(self._out))
        self._out.clear()
        self._close()

    def _close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def _peer(self) -> str:
        info = self._transport.get_extra_info("peername") if self._transport else None
        return f"{info[0]}:{info[1]}" if isinstance(info, tuple) else "?"


def _has_goaway(frames: bytes) -> bool:
    """Whether serialized frames (whole ones, as nghttp2 hands them out) hold a GOAWAY."""
    at = 0
    while at + 9 <= len(frames):
        if frames[at + 3] == nghttp2.FRAME_GOAWAY:
            return True
        at += 9 + int.from_bytes(frames[at:at + 3], "big")
    return False


def header_list(fields: Sequence[tuple[str, str]]) -> HeaderList:
    return HeaderList([(name.encode(), value.encode()) for name, value in fields])
