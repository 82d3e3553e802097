"""TCP through the real Envoy (network ext_proc + tcp_proxy) and the sidecar's sandboxes."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from tests.conftest import TIERS, as_component
from tests.integration.harness import Stack, StackSpec, stack_per_tier, tcp_exchange

pytestmark = pytest.mark.integration

SPEC = StackSpec(
    plugins={
        "pass-through": "pass-through",
        "tcp-blocker": "tcp-blocker",
        "tcp-redactor": "tcp-redactor",  # a Python component
        "counter": "counter",
        "faulty-open": {"path": "faulty", "failure-policy": "fail-open"},
        "faulty-closed": {"path": "faulty", "failure-policy": "fail-closed"},
    },
    chains={"guard": ["tcp-blocker", "tcp-redactor"],
            "open-then-count": ["faulty-open", "counter"]},
    tcp={name: name for name in ("pass-through", "tcp-blocker", "tcp-redactor", "counter",
                                 "faulty-open", "faulty-closed", "guard", "open-then-count")}
    | {"unknown": "no-such-chain"},
    echo_replies={b"SECRET?": b"the secret is hunter2\n"},
)


# The blocker's module also as a component (several core modules: on kvm the guest
# instantiates them as the component's shell says), behind a listener of its own.
BLOCKERS = ["tcp-blocker", "blocker-component"]


@pytest.fixture(scope="module", params=TIERS)
def stack(request: pytest.FixtureRequest, compile_cache: Path,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    component = as_component("tcp-blocker", tmp_path_factory.mktemp("component"))
    spec = replace(SPEC, plugins={**SPEC.plugins, "blocker-component": str(component)},
                   tcp={**SPEC.tcp, "blocker-component": "blocker-component"})
    yield from stack_per_tier(spec, request.param, compile_cache)


def upstream_saw(stack: Stack) -> bytes:
    return bytes(stack.echo.received[-1])


def test_pass_through_reaches_the_upstream_unchanged(stack: Stack) -> None:
    messages = [b"hello\n", bytes(range(256)) * 4, b"x" * 65536]
    exchange = tcp_exchange(stack.ports["pass-through"], messages)
    assert b"".join(exchange.replies) == b"".join(messages)
    assert upstream_saw(stack) == b"".join(messages)
    assert not exchange.closed


@pytest.mark.parametrize("blocker", BLOCKERS)
def test_the_blocker_closes_the_connection(stack: Stack, blocker: str) -> None:
    exchange = tcp_exchange(stack.ports[blocker], [b"hi\n", b"1; DROP TABLE users\n", b"?"])
    assert exchange.replies == [b"hi\n"] and exchange.closed
    assert upstream_saw(stack) == b"hi\n"


@pytest.mark.parametrize("blocker", BLOCKERS)
def test_the_blocker_sees_a_pattern_split_across_segments(stack: Stack, blocker: str) -> None:
    exchange = tcp_exchange(stack.ports[blocker], [b"1; DROP ", b"TABLE users\n"])
    assert exchange.replies == [b"1; DROP "] and exchange.closed
    assert b"TABLE" not in upstream_saw(stack)


def test_the_redactor_rewrites_both_directions(stack: Stack) -> None:
    exchange = tcp_exchange(stack.ports["tcp-redactor"],
                            [b"login hunter2\n", b"SECRET?\n"])
    assert exchange.replies == [b"login *******\n", b"the secret is *******\n"]
    assert upstream_saw(stack) == b"login *******\nSECRET?\n"


def test_a_chain_runs_both_plugins(stack: Stack) -> None:
    redacted = tcp_exchange(stack.ports["guard"], [b"pw hunter2\n"])
    assert redacted.replies == [b"pw *******\n"]
    blocked = tcp_exchange(stack.ports["guard"], [b"DROP TABLE t\n"])
    assert blocked.closed and not blocked.replies


def test_every_connection_gets_a_fresh_sandbox(stack: Stack) -> None:
    port = stack.ports["counter"]
    assert tcp_exchange(port, [b"a", b"b", b"c"]).replies == [b"1:a", b"2:b", b"3:c"]
    assert tcp_exchange(port, [b"d"]).replies == [b"1:d"]


def test_concurrent_connections_never_share_memory(stack: Stack) -> None:
    results: list[list[bytes]] = []

    def connect() -> None:
        results.append(tcp_exchange(stack.ports["counter"], [b"x", b"y"]).replies)

    threads = [threading.Thread(target=connect) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [[b"1:x", b"2:y"]] * 16


@pytest.mark.parametrize("fault", [b"trap", b"loop", b"hog", b"oob", b"badptr"])
def test_fail_open_lets_traffic_pass(stack: Stack, fault: bytes) -> None:
    exchange = tcp_exchange(stack.ports["faulty-open"], [b"before ", fault, b" after"])
    assert b"".join(exchange.replies) == b"before " + fault + b" after"
    assert not exchange.closed


@pytest.mark.parametrize("fault", [b"trap", b"loop", b"hog", b"oob", b"badptr"])
def test_fail_closed_closes_the_connection(stack: Stack, fault: bytes) -> None:
    exchange = tcp_exchange(stack.ports["faulty-closed"], [b"before ", fault, b" after"])
    assert exchange.replies == [b"before "] and exchange.closed
    assert upstream_saw(stack) == b"before "


def test_a_failed_plugin_drops_out_and_the_chain_goes_on(stack: Stack) -> None:
    exchange = tcp_exchange(stack.ports["open-then-count"], [b"trap", b"next"])
    assert exchange.replies == [b"1:trap", b"2:next"]


def test_a_looping_plugin_does_not_stop_other_connections(stack: Stack) -> None:
    """Every loop holds the sidecar for its CPU bound (20 ms), then only its own connection
    closes; a busy neighbour keeps getting correct answers meanwhile."""
    answers: list[bytes] = []

    def neighbour() -> None:
        for i in range(30):
            answers.extend(tcp_exchange(stack.ports["counter"], [b"%d" % i]).replies)

    thread = threading.Thread(target=neighbour)
    thread.start()
    loops = [tcp_exchange(stack.ports["faulty-closed"], [b"loop"]) for _ in range(5)]
    thread.join()
    assert all(exchange.closed and not exchange.replies for exchange in loops)
    assert answers == [b"1:%d" % i for i in range(30)]


def test_an_unknown_chain_fails_under_the_default_policy(stack: Stack) -> None:
    exchange = tcp_exchange(stack.ports["unknown"], [b"hello"])
    assert exchange.closed and not exchange.replies
