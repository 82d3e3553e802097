"""The sidecar's HTTP/2 gRPC server against an independent HTTP/2 implementation (h2) over a
real loopback socket: framing, flow control, resets, errors."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator
from typing import ClassVar

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest
from grpc_health.v1 import health_pb2

from sidecar import http2
from sidecar.grpc_server import GrpcServer, Status
from tests.integration.harness import LoopThread

ECHO = "/test.Echo/Call"


class EchoHandler:
    """Answers each message with the message repeated `times`; "boom" raises."""

    closed: ClassVar[list[EchoHandler]] = []

    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self.times = int(dict(metadata).get("x-times", "1"))

    def message(self, payload: bytes) -> bytes:
        if payload == b"boom":
            raise RuntimeError("a bug in a handler")
        return payload * self.times

    def close(self) -> None:
        EchoHandler.closed.append(self)


@pytest.fixture(scope="module")
def server() -> Iterator[int]:
    loop = LoopThread()
    grpc = GrpcServer({ECHO: EchoHandler})
    port = loop.run(lambda: grpc.start("127.0.0.1", 0))
    yield port
    loop.run(grpc.stop)
    loop.close()


def grpc_message(payload: bytes, compressed: bool = False) -> bytes:
    return bytes([compressed]) + struct.pack(">I", len(payload)) + payload


class Client:
    """A blocking HTTP/2 client on h2, just enough to drive one server."""

    def __init__(self, port: int, window: int | None = None) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.conn.initiate_connection()
        if window is not None:
            self.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
        self.flush()
        self.events: list[h2.events.Event] = []

    def flush(self) -> None:
        self.sock.sendall(self.conn.data_to_send())

    def call(self, path: str, metadata: dict[str, str] | None = None) -> int:
        stream = self.conn.get_next_available_stream_id()
        headers = [(":method", "POST"), (":scheme", "http"), (":path", path),
                   (":authority", "test"), ("content-type", "application/grpc"),
                   ("te", "trailers"), *(metadata or {}).items()]
        self.conn.send_headers(stream, headers)
        self.flush()
        return stream

    def send(self, stream: int, data: bytes, end: bool = False) -> None:
        self.conn.send_data(stream, data, end_stream=end)
        self.flush()

    def until(self, done: type, stream: int | None = None) -> list[h2.events.Event]:
        """Read until an event of type `done` arrives (for `stream`, if given)."""
        while True:
            for event in self.events:
                if isinstance(event, done) and (stream is None or
                                                 getattr(event, "stream_id", None) == stream):
                    return self.events
            chunk = self.sock.recv(65536)
            if not chunk:
                return self.events
            for event in self.conn.receive_data(chunk):
                if isinstance(event, h2.events.DataReceived):
                    self.conn.acknowledge_received_data(event.flow_controlled_length,
                                                        event.stream_id)
                self.events.append(event)
            self.flush()

    def body(self, stream: int) -> bytes:
        return b"".join(e.data for e in self.events
                        if isinstance(e, h2.events.DataReceived) and e.stream_id == stream)

    def trailers(self, stream: int) -> dict[str, str]:
        for event in self.events:
            if isinstance(event, h2.events.TrailersReceived | h2.events.ResponseReceived) \
                    and event.stream_id == stream and any(k == b"grpc-status"
                                                          for k, _ in event.headers):
                return {k.decode(): v.decode() for k, v in event.headers}
        return {}

    def close(self) -> None:
        self.sock.close()


def test_health_check(server: int) -> None:
    client = Client(server)
    stream = client.call("/grpc.health.v1.Health/Check")
    client.send(stream, grpc_message(health_pb2.HealthCheckRequest().SerializeToString()), True)
    client.until(h2.events.StreamEnded, stream)
    answer = health_pb2.HealthCheckResponse.FromString(client.body(stream)[5:])
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
    assert client.trailers(stream)["grpc-status"] == "0"
    unknown = client.call("/grpc.health.v1.Health/Check")
    client.send(unknown, grpc_message(health_pb2.HealthCheckRequest(
        service="nope").SerializeToString()), True)
    client.until(h2.events.StreamEnded, unknown)
    assert client.trailers(unknown)["grpc-status"] == str(int(Status.NOT_FOUND))
    client.close()


def test_messages_split_across_frames_and_batched_in_one(server: int) -> None:
    client = Client(server)
    stream = client.call(ECHO, {"x-times": "2"})
    first = grpc_message(b"abcdef")
    client.send(stream, first[:3])
    client.send(stream, first[3:7])
    client.send(stream, first[7:] + grpc_message(b"gh") + grpc_message(b""), end=True)
    client.until(h2.events.StreamEnded, stream)
    assert client.body(stream) == (grpc_message(b"abcdefabcdef") + grpc_message(b"ghgh")
                                   + grpc_message(b""))
    assert client.trailers(stream)["grpc-status"] == "0"
    client.close()


def test_replies_wait_for_the_clients_flow_control_window(server: int) -> None:
    client = Client(server, window=100)
    stream = client.call(ECHO, {"x-times": "50"})
    client.send(stream, grpc_message(b"0123456789"), end=True)  # a 500-byte reply
    client.until(h2.events.StreamEnded, stream)  # `until` acknowledges, opening the window
    assert client.body(stream) == grpc_message(b"0123456789" * 50)
    sizes = [len(e.data) for e in client.events if isinstance(e, h2.events.DataReceived)]
    assert max(sizes) <= 100 and len(sizes) >= 5
    assert client.trailers(stream)["grpc-status"] == "0"
    client.close()


def test_large_header_blocks_arrive_in_continuation_frames(server: int) -> None:
    client = Client(server)
    stream = client.call(ECHO, {f"x-pad-{i}": "v" * 400 for i in range(60)})  # > 16 KiB
    client.send(stream, grpc_message(b"hi"), end=True)
    client.until(h2.events.StreamEnded, stream)
    assert client.body(stream) == grpc_message(b"hi")
    client.close()


def test_a_reset_stream_closes_its_handler(server: int) -> None:
    client = Client(server)
    stream = client.call(ECHO)
    client.send(stream, grpc_message(b"x"))
    client.until(h2.events.DataReceived, stream)
    before = len(EchoHandler.closed)
    client.conn.reset_stream(stream)
    client.flush()
    ping = client.call(ECHO)  # the connection goes on serving
    client.send(ping, grpc_message(b"y"), end=True)
    client.until(h2.events.StreamEnded, ping)
    assert len(EchoHandler.closed) >= before + 2  # the reset one, then the finished one
    client.close()


@pytest.mark.parametrize(("path", "payload", "status", "message"), [
    ("/no.Such/Method", grpc_message(b"x"), Status.UNIMPLEMENTED, "unknown method"),
    (ECHO, grpc_message(b"x", compressed=True), Status.UNIMPLEMENTED, "compressed"),
    (ECHO, grpc_message(b"boom"), Status.INTERNAL, "internal error"),
    (ECHO, b"\0\xff\xff\xff\xff", Status.RESOURCE_EXHAUSTED, "message"),
])
def test_errors_end_the_call_with_a_status(server: int, path: str, payload: bytes,
                                           status: Status, message: str) -> None:
    client = Client(server)
    stream = client.call(path)
    client.send(stream, payload, end=True)
    client.until(h2.events.StreamEnded, stream)
    trailers = client.trailers(stream)
    assert trailers["grpc-status"] == str(int(status)) and message in trailers["grpc-message"]
    after = client.call(ECHO)  # the connection survives
    client.send(after, grpc_message(b"ok"), end=True)
    client.until(h2.events.StreamEnded, after)
    assert client.body(after) == grpc_message(b"ok")
    client.close()


def test_calls_end_when_every_callback_pauses(server: int,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Past its turn a callback pauses nghttp2, which may have taken every byte and still owe
    the frame's END_STREAM: under load, a call after a refused one never ended. Every callback
    pausing, each call ends, the refused one too."""
    monkeypatch.setattr(http2, "TURN_SECONDS", -1.0)
    client = Client(server)
    refused = client.call("/no.Such/Method")
    client.send(refused, grpc_message(b"x"), end=True)
    client.until(h2.events.StreamEnded, refused)
    for payload in (b"one", b"two"):
        stream = client.call(ECHO)
        client.send(stream, grpc_message(payload), end=True)
        client.until(h2.events.StreamEnded, stream)
        assert client.body(stream) == grpc_message(payload)
        assert client.trailers(stream)["grpc-status"] == "0"
    client.close()


def test_a_connection_alone_goes_on_after_its_turn_without_waiting(
        server: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past its turn a connection's bytes wait for what else the loop has ready, and nothing
    else is: a rest as long as the turn left a connection alone on its worker (one Envoy
    worker sends every stream on one) half the worker, and 500 busy TCP connections' messages
    queued in Envoy past its message timeout. Here every callback pauses, so that each call
    takes a turn or more."""
    monkeypatch.setattr(http2, "TURN_SECONDS", 0.05)

    def over(connection: http2.Connection) -> bool:
        connection._turn_paused = True
        return True

    monkeypatch.setattr(http2.Connection, "_turn_is_over", over)
    client = Client(server)
    began = time.monotonic()
    for payload in (b"one", b"two", b"three", b"four", b"five", b"six"):
        stream = client.call(ECHO)
        client.send(stream, grpc_message(payload), end=True)
        client.until(h2.events.StreamEnded, stream)
        assert client.body(stream) == grpc_message(payload)
    took = time.monotonic() - began
    client.close()
    assert took < 6 * http2.TURN_SECONDS, f"6 calls took {took:.2f} s"


def test_pings_are_answered(server: int) -> None:
    client = Client(server)
    client.conn.ping(b"12345678")
    client.flush()
    events = client.until(h2.events.PingAckReceived)
    assert any(isinstance(e, h2.events.PingAckReceived) and e.ping_data == b"12345678"
               for e in events)
    client.close()


def test_a_client_that_does_not_speak_http2_is_sent_away(server: int) -> None:
    with socket.create_connection(("127.0.0.1", server), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        received = b""
        while chunk := sock.recv(4096):
            received += chunk
    goaway = [received[i:i + 9] for i in range(0, len(received) - 8)
              if received[i + 3:i + 4] == b"\x07"]
    assert goaway, "no GOAWAY frame before the close"
