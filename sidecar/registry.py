"""The plugins the configuration names, loaded once, and the chains streams ask for."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from sidecar.config import PluginEntry, SidecarConfig
from vmm.capabilities import MetricsSink
from vmm.capabilities.state import StateBackend
from vmm.errors import TierMismatchError
from vmm.loader import load_plugin
from vmm.manifest import FailurePolicy
from vmm.pool import SandboxPool
from vmm.sandbox import Backend, LoadedPlugin

log = logging.getLogger(__name__)

CHAIN_METADATA_KEY = "x-hyperfilter-chain"
SPARE_SANDBOXES = 4  # per plugin: enough for a burst of new streams between two loop turns


class Pace:
    """How much CPU time a plugin's events take beyond what their bytes account for, on
    average (seconds, exponentially weighted): a plugin past SLOW_EVENT_SECONDS has its
    streams' events run off the event loop, so that it cannot stall the streams of other
    plugins."""

    __slots__ = ("average",)
    WEIGHT = 0.1  # of the newest event
    SLOW_EVENT_SECONDS = 0.002
    # CPU time per byte of an event's data that does not count: about what the sidecar itself
    # spends carrying a byte of a message (5-10 ns here). Counted, a plugin fast per byte
    # (xor-rewrite: 2.7 ms for Envoy's 1 MiB messages under load) turned slow, and its
    # events queued behind every other stream's in the slow lane at nice 19, up to 5.1 s:
    # 448 of 500 connections closed by message_timeout (one worker, kvm). Off the loop, such
    # work spares the neighbours no more than carrying the bytes already costs them.
    BYTE_SECONDS = 5e-9

    def __init__(self) -> None:
        self.average = 0.0

    def record(self, seconds: float, size: int = 0) -> None:
        """One event's CPU time, `size` bytes of data (TCP data, an HTTP body) in it."""
        beyond = max(0.0, seconds - size * self.BYTE_SECONDS)
        self.average += (beyond - self.average) * self.WEIGHT

    @property
    def slow(self) -> bool:
        return self.average > self.SLOW_EVENT_SECONDS


@dataclass(frozen=True)
class ChainLink:
    plugin: LoadedPlugin
    policy: FailurePolicy
    pool: SandboxPool
    pace: Pace = field(default_factory=Pace, compare=False)

    @property
    def name(self) -> str:
        return self.plugin.name


@dataclass(frozen=True)
class Chain:
    """The plugins a stream runs through, in order. A chain with a `refusal` cannot serve the
    stream (it names an unknown chain, say); the stream then fails under `refusal_policy`."""

    name: str
    links: tuple[ChainLink, ...]
    refusal: str | None = None
    refusal_policy: FailurePolicy = FailurePolicy.FAIL_CLOSED


class Registry:
    def __init__(self, chains: Mapping[str, Chain], default_chain: str | None,
                 default_policy: FailurePolicy) -> None:
        self.chains = dict(chains)
        self.default_chain = default_chain
        self.default_policy = default_policy
        self.live_streams = 0  # streams running on this registry's plugins
        self._retired = False

    @classmethod
    def load(cls, config: SidecarConfig, backends_for: Callable[[PluginEntry], list[Backend]],
             metrics: MetricsSink, state: StateBackend,
             on_plugin: Callable[[PluginEntry], None] = lambda entry: None) -> Registry:
        """Load every plugin, on the first of its backends that can run it (the next one is
        its fallback: said in the log); a PluginLoadError stops everything, naming the
        plugin."""
        links = {}
        for entry in config.plugins.values():
            on_plugin(entry)
            plugin = _load(entry, backends_for(entry), metrics, state)
            policy = plugin.manifest.failure_policy or config.default_failure_policy
            links[entry.name] = ChainLink(plugin, policy, SandboxPool(plugin, SPARE_SANDBOXES))
        chains = {name: Chain(name, (link,)) for name, link in links.items()}
        for name, members in config.chains.items():
            chains[name] = Chain(name, tuple(links[member] for member in members))
        return cls(chains, config.default_chain, config.default_failure_policy)

    def stream_opened(self) -> None:
        self.live_streams += 1

    def stream_closed(self) -> None:
        self.live_streams -= 1
        if self._retired and not self.live_streams:
            self.close()

    def retire(self) -> None:
        """Replaced (a reload): closed now if no stream uses it, else when the last one ends."""
        self._retired = True
        if not self.live_streams:
            self.close()

    def close(self) -> None:
        for chain in self.chains.values():
            for link in chain.links:
                link.pool.close()

    @property
    def plugins(self) -> list[LoadedPlugin]:
        return [chain.links[0].plugin for chain in self.chains.values()
                if len(chain.links) == 1 and chain.name == chain.links[0].name]

    def resolve(self, requested: str | None) -> Chain:
        """The chain a stream asked for in its metadata, or the default one."""
        name = requested or self.default_chain
        if name is None:
            return Chain("", (), f"the stream names no chain ({CHAIN_METADATA_KEY}) and there "
                                 "is no default chain", self.default_policy)
        chain = self.chains.get(name)
        if chain is None:
            return Chain(name, (), f"unknown chain {name!r}", self.default_policy)
        return chain


def _load(entry: PluginEntry, backends: list[Backend], metrics: MetricsSink,
          state: StateBackend) -> LoadedPlugin:
    *first, last = backends
    for backend in first:
        try:
            return _load_on(entry, backend, metrics, state)
        except TierMismatchError as exc:
            log.warning("%s; running it on its fallback tier, %s", exc, last.tier)
    return _load_on(entry, last, metrics, state)


def _load_on(entry: PluginEntry, backend: Backend, metrics: MetricsSink,
             state: StateBackend) -> LoadedPlugin:
    return load_plugin(entry.path, backend, metrics, name=entry.name, config=entry.config,
                       failure_policy=entry.failure_policy, state=state)
