"""The TLS SNI allow-list (plugins/examples/tls-sni-allowlist, Rust) through the real Envoy on
each tier: Python's ssl module is the client, the upstream an echo server, so that what got
through comes back and what was refused never reached it."""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import TIERS, skip_unless_rustc
from tests.integration.harness import Stack, StackSpec, stack_per_tier

pytestmark = pytest.mark.integration

SPEC = StackSpec(plugins={"sni": {"path": "tls-sni-allowlist",
                                  "config": {"allow": "example.com *.example.com"}}},
                 tcp={"sni": "sni"})
UNRECOGNIZED_NAME = bytes([21, 3, 3, 0, 2, 2, 112])  # fatal alerts, as the plugin sends them
DECODE_ERROR = bytes([21, 3, 3, 0, 2, 2, 50])


@pytest.fixture(scope="module", params=TIERS)
def stack(request: pytest.FixtureRequest, compile_cache: Path) -> Iterator[Stack]:
    skip_unless_rustc()  # the plugin is built from its Rust source
    yield from stack_per_tier(SPEC, request.param, compile_cache)


def client_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False  # the echo upstream has no certificate to check
    context.verify_mode = ssl.CERT_NONE
    return context


def client_hello(server_name: str | None) -> bytes:
    """The first bytes Python's ssl module sends as a client asking for `server_name`."""
    outgoing = ssl.MemoryBIO()
    tls = client_context().wrap_bio(ssl.MemoryBIO(), outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def handshake_error(port: int, server_name: str | None) -> ssl.SSLError | OSError:
    """Python's ssl client handshaking through Envoy: how it fails (the echo upstream is no
    TLS server, so an allowed client fails too, on its own ClientHello coming back)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        try:
            with client_context().wrap_socket(conn, server_hostname=server_name):
                pass
        except (ssl.SSLError, OSError) as error:
            return error
    raise AssertionError("the handshake succeeded against an echo server")


def exchange(port: int, segments: list[bytes], pause: float = 0.0) -> tuple[bytes, bool]:
    """Send `segments` (`pause` apart, so that Envoy reads them one by one), then read what
    comes back until the connection ends or the echo of everything sent has arrived; the
    bytes and whether the connection was closed."""
    sent = b"".join(segments)
    reply = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            for segment in segments:
                conn.sendall(segment)
                time.sleep(pause)
            while len(reply) < len(sent):
                chunk = conn.recv(65536)
                if not chunk:
                    return reply, True
                reply += chunk
        except ConnectionResetError:
            return reply, True
    return reply, False


def upstream_saw(stack: Stack, before: int) -> bytes:
    """Every byte the upstream received on connections made since `before` of them were."""
    time.sleep(0.1)  # a refused connection's upstream side may still be closing
    return b"".join(bytes(received) for received in stack.echo.received[before:])


@pytest.mark.parametrize("name", ["example.com", "api.example.com", "A.B.Example.COM"])
def test_an_ssl_client_asking_for_an_allowed_name_gets_through(stack: Stack, name: str) -> None:
    before = len(stack.echo.received)
    error = handshake_error(stack.ports["sni"], name)
    assert "UNRECOGNIZED_NAME" not in str(error)
    seen = upstream_saw(stack, before)
    assert seen.startswith(b"\x16\x03") and name.encode() in seen


@pytest.mark.parametrize("name", ["evil.test", "example.com.evil.test", "notexample.com", None])
def test_an_ssl_client_asking_for_another_name_or_none_is_refused(stack: Stack,
                                                                  name: str | None) -> None:
    before = len(stack.echo.received)
    error = handshake_error(stack.ports["sni"], name)
    assert isinstance(error, ssl.SSLError) and "TLSV1_UNRECOGNIZED_NAME" in str(error), error
    assert upstream_saw(stack, before) == b""


def test_the_client_hello_reaches_the_upstream_byte_for_byte(stack: Stack) -> None:
    hello = client_hello("api.example.com")
    before = len(stack.echo.received)
    reply, closed = exchange(stack.ports["sni"], [hello, b"after the hello"])
    assert reply == hello + b"after the hello" and not closed
    assert upstream_saw(stack, before) == hello + b"after the hello"


def test_nothing_passes_before_the_name_is_known(stack: Stack) -> None:
    hello = client_hello("example.com")
    before = len(stack.echo.received)
    with socket.create_connection(("127.0.0.1", stack.ports["sni"]), timeout=10) as conn:
        conn.sendall(hello[:100])
        conn.settimeout(0.5)
        with pytest.raises(TimeoutError):
            conn.recv(65536)
        assert upstream_saw(stack, before) == b""
        conn.settimeout(10)
        conn.sendall(hello[100:])
        reply = b""
        while len(reply) < len(hello):
            reply += conn.recv(65536)
    assert reply == hello


@pytest.mark.parametrize("name", ["api.example.com", "evil.test"])
def test_a_client_hello_in_one_byte_segments_is_read_whole(stack: Stack, name: str) -> None:
    hello = client_hello(name)
    before = len(stack.echo.received)
    reply, closed = exchange(stack.ports["sni"], [hello[i:i + 1] for i in range(len(hello))],
                             pause=0.001)
    if name == "evil.test":
        assert (reply, closed) == (UNRECOGNIZED_NAME, True)
        assert upstream_saw(stack, before) == b""
    else:
        assert (reply, closed) == (hello, False)
        assert upstream_saw(stack, before) == hello


def test_bytes_that_are_no_tls_are_closed_on_without_an_alert(stack: Stack) -> None:
    before = len(stack.echo.received)
    assert exchange(stack.ports["sni"], [b"GET / HTTP/1.1\r\nhost: example.com\r\n\r\n"]) == \
        (b"", True)
    assert upstream_saw(stack, before) == b""


def malformed(hello: bytes) -> bytes:
    """`hello` with its session id length (after the record and handshake headers, the
    version and the random) one past what TLS allows."""
    session_id_length = 5 + 4 + 2 + 32
    return hello[:session_id_length] + bytes([33]) + hello[session_id_length + 1:]


def oversized() -> bytes:
    """A full record whose ClientHello says it runs to 64 KiB."""
    return bytes([22, 3, 1, 0x40, 0x00, 1]) + (1 << 16).to_bytes(3, "big") + bytes(16384 - 4)


@pytest.mark.parametrize("make", [malformed, lambda hello: oversized(),
                                  lambda hello: hello[:200]], ids=["malformed", "oversized",
                                                                   "cut-short"])
def test_a_bad_client_hello_gets_a_decode_error_alert(stack: Stack,
                                                      make: Callable[[bytes], bytes]) -> None:
    hello = make(client_hello("example.com"))
    before = len(stack.echo.received)
    with socket.create_connection(("127.0.0.1", stack.ports["sni"]), timeout=10) as conn:
        conn.sendall(hello)
        conn.shutdown(socket.SHUT_WR)  # a cut-short hello is refused when the client stops
        reply = b""
        while chunk := conn.recv(65536):
            reply += chunk
    assert reply == DECODE_ERROR
    assert upstream_saw(stack, before) == b""
