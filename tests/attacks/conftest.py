"""The real sidecar (the pass-through plugin) on its own event loop thread, its gRPC port open
to the attacks of bench/attacks.py. No Envoy: the attacker is the HTTP/2 client."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol, TypeVar

import pytest

from bench.attacks import CHAIN, Trial, trial
from sidecar.app import Sidecar
from sidecar.config import parse_config
from tests.conftest import plugin_dir
from tests.integration.harness import sidecar_on_a_thread

R = TypeVar("R")


class UnderAttack(Protocol):
    def __call__(self, attack: Callable[[int], R]) -> Trial[R]: ...


@pytest.fixture
def sidecar(compile_cache: Path) -> Iterator[Sidecar]:
    """A sidecar per test: an attack that leaves one in a bad state fails only its own test.
    On wasmtime: the attacks' bounds (descriptors, resident memory) are the boundary's, and a
    kvm plugin keeps idle VMs (two descriptors and their pages each) by design."""
    config = parse_config({"plugins": {CHAIN: {"path": str(plugin_dir("pass-through")),
                                               "tier": "wasmtime"}},
                           "listen": "127.0.0.1:0", "cache-dir": str(compile_cache)}, Path("."))
    with sidecar_on_a_thread(config) as running:
        yield running


def sandboxes_created(sidecar: Sidecar) -> float:
    """Streams given their sandboxes so far: `hyperfilter_stream_sandboxes_seconds` observes
    each stream's sandbox creation once (one sandbox here: the chain has one plugin)."""
    return sum(sample.value for family in sidecar.metrics.registry.collect()
               if family.name == "hyperfilter_stream_sandboxes_seconds"
               for sample in family.samples if sample.name.endswith("_count"))


@pytest.fixture
def under_attack(sidecar: Sidecar) -> UnderAttack:
    """Run `attack(port)` against the sidecar while a well-behaved client is served on its
    own connection; the trial also counts the sandboxes created during the attack."""

    def run(attack: Callable[[int], R]) -> Trial[R]:
        return trial(sidecar.port, attack,
                     counters={"sandboxes": lambda: sandboxes_created(sidecar)})

    return run
