"""The redis-firewall example through the real Envoy: a refused command's -ERR reaches the
client, in the command's place when it can be (the connection stays open), with a close for
the destructive ones. The upstream echoes, and an echoed RESP command is a reply Redis could
have sent (an array of bulk strings), so the plugin's reply count holds as with Redis."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sidecar.pod.resp import encode_command
from tests.conftest import TIERS
from tests.integration.harness import LineClient, Stack, StackSpec, stack_per_tier

pytestmark = pytest.mark.integration

SPEC = StackSpec(plugins={"redis-firewall": "redis-firewall"},
                 tcp={"redis": "redis-firewall"})


@pytest.fixture(scope="module", params=TIERS)
def stack(request: pytest.FixtureRequest, compile_cache: Path) -> Iterator[Stack]:
    yield from stack_per_tier(SPEC, request.param, compile_cache)


def read_exactly(client: LineClient, count: int) -> bytes:
    data = b""
    while len(data) < count and (chunk := client.socket.recv(count - len(data))):
        data += chunk
    return data


def test_the_client_reads_the_refusal_and_goes_on(stack: Stack) -> None:
    get = encode_command("GET", "user:1")
    with LineClient(stack.ports["redis"]) as client:
        client.send(encode_command("KEYS", "*"))
        assert client.line() == b"-ERR KEYS is not allowed\r\n"
        client.send(get)
        assert read_exactly(client, len(get)) == get  # the upstream's reply
        client.send(b"keys user:*\r\n")
        assert client.line() == b"-ERR KEYS is not allowed\r\n"
        client.send(encode_command("FLUSHALL"))
        assert client.rest() == (b"-ERR FLUSHALL is not allowed\r\n", "closed")
    received = b"".join(bytes(seen) for seen in stack.echo.received)
    assert b"GET" in received and b"KEYS" not in received.upper()
    assert b"FLUSHALL" not in received


def test_a_pipelined_refusal_is_answered_then_closed(stack: Stack) -> None:
    with LineClient(stack.ports["redis"]) as client:
        client.send(encode_command("KEYS", "*") + encode_command("GET", "k"))
        assert client.rest() == (b"-ERR KEYS is not allowed\r\n", "closed")
