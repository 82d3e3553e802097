"""What a TCP plugin's on-open learns about its connection through the real Envoy: the
client's address and port and the one it reached (`connection_attributes`), and the TLS
server name where the listener runs Envoy's tls_inspector."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import TIERS
from tests.integration.harness import LineClient, Stack, StackSpec, stack_per_tier

pytestmark = pytest.mark.integration

SERVER_NAME = "db.example.test"
SPEC = StackSpec(
    plugins={"describer": {"path": "answerer", "config": {"greeting": "info"}}},
    tcp={"plain": "describer", "inspected": ("describer", {"inspect_tls": True})},
)


@pytest.fixture(scope="module", params=TIERS)
def stack(request: pytest.FixtureRequest, compile_cache: Path) -> Iterator[Stack]:
    yield from stack_per_tier(SPEC, request.param, compile_cache)


def client_hello(server_name: str) -> bytes:
    """The first flight of a TLS client asking for `server_name` (nothing answers it here:
    the upstream only echoes)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    connection = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        connection.do_handshake()
    return outgoing.read()


def what_on_open_saw(port: int, first_bytes: bytes) -> tuple[str, str, str, tuple[str, str]]:
    """(source, destination, server name) from the plugin's greeting, and the client's own
    address as it knows it."""
    with LineClient(port) as client:
        client.send(first_bytes)
        source, destination, server_name = client.line().decode().removesuffix("\r\n").split(" ")
        host, client_port = client.socket.getsockname()[:2]
        return source, destination, server_name, (host, str(client_port))


def test_on_open_sees_the_client_address_and_port(stack: Stack) -> None:
    port = stack.ports["plain"]
    source, destination, server_name, (host, client_port) = what_on_open_saw(port, b"hi\r\n")
    assert source == f"{host}:{client_port}"
    assert destination == f"127.0.0.1:{port}"
    assert server_name == ""


def test_on_open_sees_the_tls_server_name(stack: Stack) -> None:
    port = stack.ports["inspected"]
    source, destination, server_name, (host, client_port) = what_on_open_saw(
        port, client_hello(SERVER_NAME))
    assert server_name == SERVER_NAME
    assert (source, destination) == (f"{host}:{client_port}", f"127.0.0.1:{port}")


def test_plain_bytes_pass_a_listener_that_inspects_tls(stack: Stack) -> None:
    port = stack.ports["inspected"]
    assert what_on_open_saw(port, b"not tls\r\n")[2] == ""
    with LineClient(port) as client:
        client.send(b"hello\r\n")
        client.line()  # the greeting
        assert client.line() == b"hello\r\n"
