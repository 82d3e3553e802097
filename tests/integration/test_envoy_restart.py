"""Envoy killed with 100 streams open: the sidecar sees its HTTP/2 connections go and releases
every session and sandbox they held; a new Envoy's connections are filtered again."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from sidecar.envoy import Envoy
from tests.conftest import TIERS
from tests.integration.harness import (
    Stack,
    StackSpec,
    stack_per_tier,
    tcp_exchange,
    wait_until,
)

pytestmark = pytest.mark.integration
OPEN_STREAMS = 100
RELEASE_SECONDS = 10.0  # the longest the sidecar may take to notice and release


@pytest.fixture(scope="module", params=TIERS)
def stack(request: pytest.FixtureRequest, compile_cache: Path) -> Iterator[Stack]:
    spec = StackSpec(plugins={"counter": "counter"}, tcp={"counter": "counter"})
    yield from stack_per_tier(spec, request.param, compile_cache)


def test_killed_envoy_leaves_no_session_or_sandbox_behind(stack: Stack) -> None:
    assert stack.sidecar.server is not None
    admission = stack.sidecar.server.setup.admission
    port = stack.ports["counter"]
    held = []
    try:
        for index in range(OPEN_STREAMS):
            conn = socket.create_connection(("127.0.0.1", port), timeout=5)
            conn.sendall(b"a")
            assert conn.recv(16) == b"1:a", f"connection {index} was not filtered"
            held.append(conn)
        assert admission.streams >= OPEN_STREAMS and admission.sandboxes >= OPEN_STREAMS
        assert stack.envoy.process is not None
        stack.envoy.process.kill()
        stack.envoy.process.wait()
        assert wait_until(lambda: (admission.streams, admission.sandboxes) == (0, 0),
                          RELEASE_SECONDS), (admission.streams, admission.sandboxes)
    finally:
        for conn in held:
            conn.close()
    killed = stack.envoy
    stack.envoy = Envoy((killed.workdir / "envoy.yaml").read_text()).start()  # the same one
    killed.stop()
    assert tcp_exchange(stack.envoy.listener_ports["counter"], [b"b"]).replies == [b"1:b"]
