"""A raw HTTP/2 client for the conformance cases, in the shape of h2spec's: it keeps no stream
state and checks nothing it sends, so that a case can send exactly the invalid thing it is about.
Well-formed frames are hyperframe objects, malformed ones `raw_frame` bytes; header blocks come
from the connection's own HPACK encoder, whose dynamic table the server's decoder mirrors.

Every expectation reads frames until it is met or refuted, and fails when its timeout passes
first. A server that errs says so at once, and one that does not says nothing: errors get the
shorter timeout, since every case a wrong server fails waits that long.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterable

import hpack
from h2.errors import ErrorCodes
from h2.settings import SettingCodes
from hyperframe.frame import (
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
)

TIMEOUT = 1.0  # for an answer: a loopback server gives it in milliseconds
ERROR_TIMEOUT = 0.5  # for an error
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DEFAULT_MAX_FRAME = 1 << 14  # every endpoint accepts frames this large (RFC 9113 §4.2)
DEFAULT_TABLE_SIZE = 4096
ECHO_PATH = "/conformance.Echo/Call"
ECHOED = b"0123456789"
# One gRPC message; the echo method answers with the same 15 bytes.
MESSAGE = b"\0" + len(ECHOED).to_bytes(4, "big") + ECHOED
Headers = list[tuple[str, str]]
DUMMY_HEADERS: Headers = [("x-dummy0", "x" * 4000)]  # h2spec's filler for header blocks
# What a frame (or None: the connection closed) says about an expectation: True meets it,
# False refutes it, None says nothing yet.
Decision = Callable[[Frame | None], bool | None]


def raw_frame(kind: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    """A frame exactly as given, however invalid."""
    return (len(payload).to_bytes(3, "big") + bytes((kind, flags))
            + stream_id.to_bytes(4, "big") + payload)


def header_flags(end_stream: bool, end_headers: bool = True) -> list[str]:
    return [flag for flag, wanted in (("END_STREAM", end_stream), ("END_HEADERS", end_headers))
            if wanted]


def describe(frame: Frame | None) -> str:
    if frame is None:
        return "connection closed"
    name = type(frame).__name__.removesuffix("Frame")
    details = f"stream {frame.stream_id}, flags {sorted(frame.flags) or '-'}"
    if isinstance(frame, GoAwayFrame | RstStreamFrame):
        details += f", {_code_name(frame.error_code)}"
    elif isinstance(frame, DataFrame | HeadersFrame):
        details += f", {len(frame.data)} bytes"
    return f"{name}({details})"


def _code_name(code: int) -> str:
    try:
        return ErrorCodes(code).name
    except ValueError:
        return f"error code {code:#x}"


def _codes(codes: Iterable[ErrorCodes]) -> str:
    return " or ".join(code.name for code in codes)


class RawClient:
    """One TCP connection to the server under test."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.authority = f"127.0.0.1:{port}"
        self.encoder = hpack.Encoder()
        self.server_settings: dict[int, int] = {}
        self._buffer = b""
        self._closed = False
        self._history: list[str] = []  # what arrived (and what failed), for failure messages

    # --- the connection ----------------------------------------------------------------------

    def handshake(self) -> RawClient:
        """The connection preface, then SETTINGS both ways: ours acknowledged, the server's
        recorded and acknowledged."""
        self.send(PREFACE, SettingsFrame(settings={SettingCodes.INITIAL_WINDOW_SIZE: 65535}))
        seen = {"acknowledged": False, "theirs": False}

        def settle(frame: Frame | None) -> bool | None:
            if frame is None:
                return False
            if isinstance(frame, SettingsFrame):
                if "ACK" in frame.flags:
                    seen["acknowledged"] = True
                else:
                    seen["theirs"] = True
                    self.server_settings.update(frame.settings)
                    self.send(SettingsFrame(flags=["ACK"]))
            return all(seen.values()) or None

        self.wait_for("the server's SETTINGS and its ACK of ours", settle)
        return self

    def send(self, *items: Frame | bytes) -> None:
        data = b"".join(item if isinstance(item, bytes) else item.serialize() for item in items)
        try:
            self.sock.sendall(data)
        except OSError as error:  # the server may close before it read everything: reading tells
            self._history.append(f"(sending failed: {error})")

    def close(self) -> None:
        self.sock.close()

    @property
    def max_frame_size(self) -> int:
        return self.server_settings.get(SettingCodes.MAX_FRAME_SIZE, DEFAULT_MAX_FRAME)

    # --- requests ----------------------------------------------------------------------------

    def request_headers(self, method: str = "POST") -> Headers:
        """A gRPC call to the echo method: what the server accepts and answers."""
        return [(":method", method), (":scheme", "http"), (":path", ECHO_PATH),
                (":authority", self.authority), ("content-type", "application/grpc"),
                ("te", "trailers")]

    def block(self, headers: Headers) -> bytes:
        """A header block, encoded against (and updating) this connection's HPACK state."""
        return self.encoder.encode(headers)

    def request(self, stream_id: int = 1, headers: Headers | None = None, *,
                end_stream: bool = True, end_headers: bool = True,
                flags: Iterable[str] = (), **options: int | bool) -> HeadersFrame:
        """A HEADERS frame opening a gRPC call (or carrying `headers`); `options` are
        hyperframe's padding and priority fields, with their `flags`."""
        return HeadersFrame(stream_id, self.block(headers or self.request_headers()),
                            flags=[*header_flags(end_stream, end_headers), *flags], **options)

    def call(self, stream_id: int = 1) -> None:
        """A whole gRPC call: HEADERS, then one message ending the stream."""
        self.send(self.request(stream_id, end_stream=False),
                  DataFrame(stream_id, MESSAGE, flags=["END_STREAM"]))

    # --- reading -----------------------------------------------------------------------------

    def wait_for(self, expected: str, decide: Decision, timeout: float = TIMEOUT) -> Frame | None:
        """Read until `decide` says yes (returning that frame) or no, or `timeout` passes."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                event = self._next(deadline)
            except TimeoutError:
                raise AssertionError(f"expected {expected}; received {self._received()}, "
                                     f"then nothing for {timeout} s") from None
            self._history.append(describe(event))
            verdict = decide(event)
            if verdict:
                return event
            if verdict is False or event is None:
                raise AssertionError(f"expected {expected}; received {self._received()}")

    def _received(self) -> str:
        return ", ".join(self._history) or "nothing"

    def _next(self, deadline: float) -> Frame | None:
        """The next frame, or None once the connection is closed."""
        while True:
            if len(self._buffer) >= 9:
                length = int.from_bytes(self._buffer[:3], "big")
                if len(self._buffer) >= 9 + length:
                    frame, _ = Frame.parse_frame_header(memoryview(self._buffer[:9]))
                    frame.parse_body(memoryview(self._buffer[9:9 + length]))
                    self._buffer = self._buffer[9 + length:]
                    return frame
            if self._closed:
                return None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except ConnectionError:
                chunk = b""
            if not chunk:
                self._closed = True
            self._buffer += chunk

    # --- expectations ------------------------------------------------------------------------

    def expect_connection_error(self, *codes: ErrorCodes) -> None:
        """A connection error (RFC 9113 §5.4.1): GOAWAY with one of `codes`, or the connection
        closed. A GOAWAY with another code fails."""
        def decide(frame: Frame | None) -> bool | None:
            if frame is None:
                return True
            return frame.error_code in codes if isinstance(frame, GoAwayFrame) else None

        self.wait_for(f"GOAWAY({_codes(codes)}) or the connection closed", decide, ERROR_TIMEOUT)

    def expect_stream_error(self, stream_id: int, *codes: ErrorCodes) -> None:
        """A stream error (§5.4.2): RST_STREAM on the stream with one of `codes`, or the same
        treated as a connection error, which §5.4.1 allows."""
        def decide(frame: Frame | None) -> bool | None:
            if frame is None:
                return True
            if isinstance(frame, GoAwayFrame) or (isinstance(frame, RstStreamFrame)
                                                 and frame.stream_id == stream_id):
                return frame.error_code in codes
            return None

        self.wait_for(f"RST_STREAM({_codes(codes)}) on stream {stream_id}, "
                      f"GOAWAY({_codes(codes)}) or the connection closed", decide, ERROR_TIMEOUT)

    def expect_goaway(self, code: ErrorCodes) -> None:
        self.wait_for(f"GOAWAY({code.name})", lambda frame: frame is not None and (
            frame.error_code == code if isinstance(frame, GoAwayFrame) else None), ERROR_TIMEOUT)

    def expect_rst_stream(self, stream_id: int, code: ErrorCodes) -> None:
        def decide(frame: Frame | None) -> bool | None:
            if isinstance(frame, RstStreamFrame) and frame.stream_id == stream_id:
                return frame.error_code == code
            return False if frame is None or isinstance(frame, GoAwayFrame) else None

        self.wait_for(f"RST_STREAM({code.name}) on stream {stream_id}", decide, ERROR_TIMEOUT)

    def expect_closed(self) -> None:
        self.wait_for("the connection closed", lambda frame: frame is None or None, ERROR_TIMEOUT)

    def expect_headers(self, stream_id: int) -> None:
        """A HEADERS frame on the stream: the server answered the request."""
        def decide(frame: Frame | None) -> bool | None:
            if isinstance(frame, HeadersFrame) and frame.stream_id == stream_id:
                return True
            return self._ends(frame, stream_id)

        self.wait_for(f"HEADERS on stream {stream_id}", decide)

    def expect_data(self, stream_id: int) -> DataFrame:
        def decide(frame: Frame | None) -> bool | None:
            if isinstance(frame, DataFrame) and frame.stream_id == stream_id:
                return True
            if isinstance(frame, HeadersFrame) and frame.stream_id == stream_id \
                    and "END_STREAM" in frame.flags:
                return False
            return self._ends(frame, stream_id)

        frame = self.wait_for(f"DATA on stream {stream_id}", decide)
        assert isinstance(frame, DataFrame)
        return frame

    def expect_stream_closed(self, stream_id: int) -> None:
        """The server ended the stream: END_STREAM, or RST_STREAM(NO_ERROR)."""
        def decide(frame: Frame | None) -> bool | None:
            if isinstance(frame, DataFrame | HeadersFrame) and frame.stream_id == stream_id \
                    and "END_STREAM" in frame.flags:
                return True
            if isinstance(frame, RstStreamFrame) and frame.stream_id == stream_id:
                return frame.error_code == ErrorCodes.NO_ERROR
            return self._ends(frame, stream_id)

        self.wait_for(f"the end of stream {stream_id}", decide)

    def expect_ping_ack(self, data: bytes, or_closed: bool = False) -> None:
        """The first PING ACK carries `data`; with `or_closed`, the connection may close
        instead."""
        def decide(frame: Frame | None) -> bool | None:
            if frame is None:
                return or_closed
            if isinstance(frame, PingFrame) and "ACK" in frame.flags:
                return frame.opaque_data == data
            return None

        self.wait_for(f"PING ACK with {data!r}" + (" or the connection closed" if or_closed
                                                     else ""), decide)

    def expect_settings_ack(self) -> None:
        def decide(frame: Frame | None) -> bool | None:
            if isinstance(frame, SettingsFrame) and "ACK" in frame.flags:
                return True
            return False if frame is None or isinstance(frame, GoAwayFrame) else None

        self.wait_for("SETTINGS ACK", decide)

    @staticmethod
    def _ends(frame: Frame | None, stream_id: int) -> bool | None:
        """False when the frame means the stream will not be answered."""
        if frame is None or (isinstance(frame, RstStreamFrame) and frame.stream_id == stream_id):
            return False
        if isinstance(frame, GoAwayFrame) and frame.error_code != ErrorCodes.NO_ERROR:
            return False
        return None
