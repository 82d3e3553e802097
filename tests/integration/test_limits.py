"""The worker's bounds on live streams and sandboxes, through the real Envoy: a stream past
them is refused (Envoy, failing closed, closes the connection), counted, and the worker goes
on serving once streams end; a stream costs no sandbox before its first message."""

from __future__ import annotations

import dataclasses
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import h2.config
import h2.connection
import pytest

from sidecar.network_ext_proc import METHOD
from tests.integration.harness import Stack, StackSpec, tcp_exchange

pytestmark = pytest.mark.integration

SPEC = StackSpec(plugins={"pass-through": "pass-through"}, tcp={"pass-through": "pass-through"})


@pytest.fixture
def one_sandbox(compile_cache: Path) -> Iterator[Stack]:
    stack = Stack(SPEC, compile_cache)
    stack.config = dataclasses.replace(stack.config, max_sandboxes=1)
    with stack as running:
        yield running


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_a_stream_past_the_sandbox_bound_is_refused_and_the_worker_recovers(
        one_sandbox: Stack) -> None:
    port = one_sandbox.ports["pass-through"]
    admission = one_sandbox.sidecar.server.setup.admission  # type: ignore[union-attr]
    with socket.create_connection(("127.0.0.1", port), timeout=5) as holder:
        holder.sendall(b"first")
        assert holder.recv(100) == b"first"  # this connection's sandbox is live
        refused = tcp_exchange(port, [b"second"])
        assert refused.replies == [] and (refused.closed or refused.reset)
        assert admission.refused["sandboxes"] == 1
        holder.sendall(b"still served")
        assert holder.recv(100) == b"still served"
    assert wait_for(lambda: admission.sandboxes == 0)
    assert tcp_exchange(port, [b"third"]).replies == [b"third"]


def test_streams_cost_no_sandbox_before_their_first_message(one_sandbox: Stack) -> None:
    admission = one_sandbox.sidecar.server.setup.admission  # type: ignore[union-attr]
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    headers = [(":method", "POST"), (":scheme", "http"), (":path", METHOD),
               (":authority", "sidecar"), ("content-type", "application/grpc"),
               ("te", "trailers")]
    with socket.create_connection(("127.0.0.1", one_sandbox.sidecar.port), timeout=5) as sock:
        for _ in range(50):
            client.send_headers(client.get_next_available_stream_id(), headers)
        sock.sendall(client.data_to_send())
        assert wait_for(lambda: admission.streams == 50)
        assert admission.sandboxes == 0
        # and Envoy's streams still get the one sandbox there is
        assert tcp_exchange(one_sandbox.ports["pass-through"], [b"hi"]).replies == [b"hi"]
    assert wait_for(lambda: admission.streams == 0)
