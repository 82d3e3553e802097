"""A TCP plugin answering the client itself (`answer`, `answer-and-close`), through the real
Envoy: Envoy 1.40's network ext_proc injects a response's `write_data` toward the client
whichever request it answers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import TIERS
from tests.integration.harness import LineClient, Stack, StackSpec, stack_per_tier, wait_until

pytestmark = pytest.mark.integration

SPEC = StackSpec(
    plugins={
        "answerer": "answerer",
        "greeter": {"path": "answerer", "config": {"greeting": "WELCOME\r\n"}},
        "refuser": {"path": "answerer", "config": {"refusal": "FULL\r\n"}},
    },
    tcp={"answerer": "answerer", "greeter": "greeter", "refuser": "refuser"},
    echo_replies={b"what?\r\n": b"SECRET 42\r\n"},
)


@pytest.fixture(scope="module", params=TIERS)
def stack(request: pytest.FixtureRequest, compile_cache: Path) -> Iterator[Stack]:
    yield from stack_per_tier(SPEC, request.param, compile_cache)


def upstream_received(stack: Stack) -> bytes:
    return b"".join(bytes(seen) for seen in stack.echo.received)


def test_an_answer_reaches_the_client_and_the_connection_goes_on(stack: Stack) -> None:
    with LineClient(stack.ports["answerer"]) as client:
        client.send(b"ASK why\r\n")
        assert client.line() == b"ANSWER why\r\n"
        client.send(b"hello\r\n")
        assert client.line() == b"hello\r\n"  # the upstream's echo: still connected
        client.send(b"ASK again\r\n")
        assert client.line() == b"ANSWER again\r\n"
    assert b"ASK" not in upstream_received(stack)


def test_answer_and_close_sends_the_bytes_then_fin(stack: Stack) -> None:
    with LineClient(stack.ports["answerer"]) as client:
        client.send(b"QUIT\r\n")
        assert client.rest() == (b"BYE\r\n", "closed")
    assert b"QUIT" not in upstream_received(stack)


def test_an_answer_to_upstream_bytes_replaces_them(stack: Stack) -> None:
    with LineClient(stack.ports["answerer"]) as client:
        client.send(b"what?\r\n")
        assert client.line() == b"[withheld]\r\n"
        client.send(b"more\r\n")
        assert client.line() == b"more\r\n"


def test_an_open_answer_greets_the_client_first(stack: Stack) -> None:
    with LineClient(stack.ports["greeter"]) as client:
        client.send(b"hello\r\n")
        assert client.line() == b"WELCOME\r\n"
        assert client.line() == b"hello\r\n"
        client.send(b"twice?\r\n")
        assert client.line() == b"twice?\r\n"  # once per connection


def test_an_open_answer_and_close_refuses_the_connection(stack: Stack) -> None:
    with LineClient(stack.ports["refuser"]) as client:
        client.send(b"let me in\r\n")
        assert client.rest() == (b"FULL\r\n", "closed")
    assert b"let me in" not in upstream_received(stack)


def test_connections_that_were_answered_end_cleanly(stack: Stack) -> None:
    """The write_data Envoy did not ask for is not counted against what it waits for: the
    connections close as usual afterwards, and their gRPC streams end."""
    # Every listener binds port 0 and Envoy names their statistics by that address: the sum.
    active = "listener.127.0.0.1_0.downstream_cx_active"
    clients = [LineClient(stack.ports["answerer"]) for _ in range(3)]
    for client in clients:
        client.send(b"ASK x\r\n")
        assert client.line() == b"ANSWER x\r\n"
        client.send(b"ping\r\n")
        assert client.line() == b"ping\r\n"
    assert stack.envoy.counter(active) >= len(clients)
    for client in clients:
        client.close()
    assert stack.sidecar.server is not None
    admission = stack.sidecar.server.setup.admission
    assert wait_until(lambda: stack.envoy.counter(active) == 0 and admission.streams == 0, 10)
    assert stack.envoy.counter("network_ext_proc.answerer.message_timeouts") == 0
