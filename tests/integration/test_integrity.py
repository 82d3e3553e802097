"""Every byte through the real Envoy (network ext_proc + tcp_proxy to the echo upstream) and the
sidecar comes back once and in order, on each tier, through the pass-through plugin and
through one that rewrites every byte (xor-rewrite: XOR 0x5A each way, so the echo comes back
as sent and the upstream sees every byte changed). Both directions pass the plugin: the
client's bytes as read_data on their way to the upstream, the echo as write_data on its way
back; the upstream's copy is checked too, which says which way broke."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from collections import Counter
from collections.abc import Coroutine, Iterator
from pathlib import Path

import pytest

from bench.integrity import FlowOptions, IntegrityResult, concurrent_flows, one_big_flow
from tests.conftest import TIERS
from tests.integration.harness import Stack, StackSpec, stack_per_tier

pytestmark = pytest.mark.integration

PLUGINS = ("pass-through", "xor-rewrite")
SPEC = StackSpec(plugins={name: name for name in PLUGINS}, tcp={name: name for name in PLUGINS})
# The heavy load against the stack as `make bench` runs it (a worker process per core, and as
# many Envoy workers): on the test's own thread, the sidecar shares a GIL with these clients
# and the echo upstream, and Envoy's ext_proc, which reads every client's bytes at once,
# queued the sidecar's messages past message_timeout (250 MiB waiting at about 20 MiB/s).
HEAVY_SPEC = dataclasses.replace(SPEC, workers=2)
# What the upstream receives of what a client sent, through each plugin.
UPSTREAM_SEES = {"pass-through": bytes(range(256)),
                 "xor-rewrite": bytes(byte ^ 0x5A for byte in range(256))}
QUICK = FlowOptions(deadline_seconds=60, stall_seconds=10)
HEAVY = FlowOptions(deadline_seconds=240, stall_seconds=30)  # within pytest's 300 s
# What ends a connection on Envoy's side: the sidecar's gRPC stream failing (a garbled or
# reordered message), a message unanswered past message_timeout, Envoy's own HTTP/2 queue
# overflowing towards the sidecar, or the sidecar resetting streams.
ENVOY_COUNTERS = ("network_ext_proc.{listener}.streams_grpc_error",
                  "network_ext_proc.{listener}.message_timeouts",
                  "cluster.hyperfilter.http2.outbound_flood",
                  "cluster.hyperfilter.http2.rx_reset")


@pytest.fixture(scope="module", params=TIERS)
def stack(request: pytest.FixtureRequest, compile_cache: Path) -> Iterator[Stack]:
    yield from stack_per_tier(SPEC, request.param, compile_cache)


@pytest.fixture(scope="module", params=TIERS)
def served_stack(request: pytest.FixtureRequest, compile_cache: Path) -> Iterator[Stack]:
    yield from stack_per_tier(HEAVY_SPEC, request.param, compile_cache)


def upstream_divergence(upstream: bytes, result: IntegrityResult) -> str:
    """Where the upstream's copy of a single flow first differs from what the client sent."""
    sent = result.sent_by(result.flows[0])
    at = next((i for i, (a, b) in enumerate(zip(sent, upstream, strict=False)) if a != b), None)
    if at is None:
        return f"the upstream received {len(upstream)} of {len(sent)} sent bytes, all in order"
    return (f"the upstream's copy differs from offset {at}: sent {sent[at:at + 16].hex()}, "
            f"received {upstream[at:at + 16].hex()}")


def assert_intact(stack: Stack, plugin: str,
                  flows: Coroutine[None, None, IntegrityResult]) -> None:
    """Run `flows`: every connection must finish with its echo intact, and the upstream must
    have received exactly what each client sent (as `plugin` rewrites it). A failure says what
    Envoy saw meanwhile."""
    counters = [name.format(listener=plugin) for name in ENVOY_COUNTERS]
    before = {name: stack.envoy.counter(name) for name in counters}
    earlier_connections = len(stack.echo.received)
    result = asyncio.run(flows)
    envoy_saw = {name: stack.envoy.counter(name) - count for name, count in before.items()}
    as_sent = bytes.maketrans(UPSTREAM_SEES[plugin], bytes(range(256)))
    upstream = [bytes(seen).translate(as_sent)
                for seen in stack.echo.received[earlier_connections:]]
    intact = result.intact
    why = [result.summary(), f"Envoy: {', '.join(f'{k} +{v}' for k, v in envoy_saw.items())}"]
    if len(result.flows) == 1 and not intact:
        why.append(upstream_divergence(b"".join(upstream), result))
    assert intact, "\n".join(why)
    same = (Counter(hashlib.sha256(seen).hexdigest() for seen in upstream)
            == Counter(flow.sent_sha256 for flow in result.flows))
    assert same, "the echo came back intact, yet the upstream received something else"


@pytest.mark.parametrize("plugin", PLUGINS)
def test_100_concurrent_connections_round_trip_intact(stack: Stack, plugin: str) -> None:
    assert_intact(stack, plugin,
                  concurrent_flows(stack.ports[plugin], 100, 256 << 10, options=QUICK))


def test_one_64_mib_flow_round_trips_intact(stack: Stack) -> None:
    assert_intact(stack, "pass-through",
                  one_big_flow(stack.ports["pass-through"], 64 << 20, options=HEAVY))


@pytest.mark.heavy
@pytest.mark.parametrize("plugin", PLUGINS)
def test_500_concurrent_connections_of_up_to_1_mib_round_trip_intact(served_stack: Stack,
                                                                      plugin: str) -> None:
    assert_intact(served_stack, plugin,
                  concurrent_flows(served_stack.ports[plugin], 500, 1 << 20, options=HEAVY))
