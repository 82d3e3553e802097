"""The sandboxes serving one Envoy stream, one per link of its chain, and the failure policy.

Inbound events (TCP bytes from the client, the HTTP request) run through the chain in order;
outbound ones in reverse, as Envoy runs its own filter chains. A plugin that faults is
dropped from the stream under fail-open, and stops the stream under fail-closed.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable
from threading import get_ident
from typing import NamedTuple, Protocol

from sidecar.admission import Admission, Refused, unbounded
from sidecar.logs import STREAM_ON_THREAD
from sidecar.registry import Chain, ChainLink
from vmm.errors import SandboxFault
from vmm.events import Direction, Event, EventKind, HttpBody, TcpData, Verdict, kind_of
from vmm.manifest import FailurePolicy
from vmm.sandbox import Sandbox

log = logging.getLogger(__name__)
_stream_ids = itertools.count(1)
Deferral = Callable[[Callable[[], object]], object]


def _now(work: Callable[[], object]) -> None:
    work()


def _data_size(event: Event) -> int:
    """The bytes of data an event carries: what a plugin may spend CPU time per byte on."""
    if type(event) is TcpData:
        return len(event.data)
    if type(event) is HttpBody:
        return len(event.body)
    return 0


class Decision(NamedTuple):
    """What one plugin decided about one event of one stream: a verdict, or a fault.
    (A tuple: one is made per event and plugin, and tuples are the cheapest to make.)"""

    stream: int
    protocol: str
    chain: str
    plugin: str
    event: EventKind
    direction: Direction | None = None
    verdict: Verdict | None = None
    fault: SandboxFault | None = None
    policy: FailurePolicy | None = None
    tier: str = ""
    seconds: float = 0.0  # how long the plugin took over the event (wall clock)


class Observer(Protocol):
    """Told about every stream and every decision: metrics, the demo's report."""

    def stream_started(self, stream: StreamPlugins) -> None: ...

    def decided(self, decision: Decision) -> None: ...


class DecisionRecorder:
    """An observer that keeps every decision, in order: what the demo reports and the
    fuzzer checks."""

    def __init__(self) -> None:
        self.decisions: list[Decision] = []

    def stream_started(self, stream: StreamPlugins) -> None:
        pass

    def decided(self, decision: Decision) -> None:
        self.decisions.append(decision)

    def take(self) -> list[Decision]:
        """The decisions so far, which it then forgets."""
        taken, self.decisions = self.decisions, []
        return taken


class StreamFailed(Exception):
    """The stream must stop: a fail-closed plugin faulted, or its chain cannot serve it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Link:
    """One link of a stream's chain: its plugin, policy and own sandbox."""

    __slots__ = ("creation_seconds", "events", "logs", "name", "pace", "policy", "position",
                 "sandbox", "tier")

    def __init__(self, position: int, link: ChainLink, sandbox: Sandbox | None,
                 creation_seconds: float = 0.0) -> None:
        self.position = position
        self.name = link.name
        self.tier = link.plugin.tier
        self.policy = link.policy
        self.events = link.plugin.manifest.events
        # whether the plugin can log: granted `log`, or a component's WASI stdout and stderr
        self.logs = "log" in link.plugin.manifest.grants or link.plugin.kind == "component"
        self.pace = link.pace  # the plugin's, shared by its streams
        self.sandbox = sandbox  # None once dropped
        self.creation_seconds = creation_seconds  # how long the stream waited for its sandbox


class StreamPlugins:
    def __init__(self, chain: Chain, protocol: str, observers: tuple[Observer, ...] = (),
                 defer: Deferral = lambda work: work(),
                 when_quiet: Deferral = lambda work: work(),
                 admission: Admission | None = None,
                 on_close: Callable[[], None] = lambda: None) -> None:
        """`defer(work)` runs `work` after the response to the current message is sent (the
        server passes its event loop's `call_soon`); `when_quiet(work)` once the worker is idle
        (sidecar/quiet_work.py): making spare sandboxes, destroying finished ones. By default
        both run `work` at once. Each sandbox counts against `admission` while it lives
        (raises Refused past its bound, with nothing taken); `on_close()` runs once, at
        `close`."""
        self.id = next(_stream_ids)
        self._defer = defer
        self._when_quiet = when_quiet
        self._admission = admission or unbounded()
        self._on_close: Callable[[], None] | None = on_close
        self.chain = chain
        self.protocol = protocol
        self._observers = observers
        # While an event runs off the event loop (sidecar/offload.py): how work for the loop
        # gets there (its call_soon_threadsafe). None on the loop itself.
        self.handoff: Deferral | None = None
        self.failure: StreamFailed | None = None
        if chain.refusal is not None:
            log.warning("stream %d: %s", self.id, chain.refusal, extra={"stream": self.id})
            if chain.refusal_policy is FailurePolicy.FAIL_CLOSED:
                self.failure = StreamFailed(chain.refusal)
        self.links: list[Link] = []
        start = time.perf_counter()
        try:
            for position, link in enumerate(chain.links):
                if link.plugin.manifest.handles(protocol):
                    began = time.perf_counter()
                    sandbox = self._new_sandbox(link)
                    self.links.append(Link(position, link, sandbox,
                                           time.perf_counter() - began))
        except Refused:
            self.close()
            raise
        self.creation_seconds = time.perf_counter() - start
        self.outbound = list(reversed(self.links))
        for observer in observers:
            observer.stream_started(self)

    def _new_sandbox(self, link: ChainLink) -> Sandbox | None:
        self._admission.take_sandbox()
        try:
            sandbox = link.pool.take()
            self._when_quiet(link.pool.refill)
            return sandbox
        except SandboxFault as fault:
            self._admission.give_back_sandbox()
            self._report_fault(link.name, link.policy, fault, "creating its sandbox")
            if link.policy is FailurePolicy.FAIL_CLOSED and self.failure is None:
                self.failure = StreamFailed(str(fault))
            return None

    @property
    def slow(self) -> bool:
        """Whether one of its plugins is slow: its events then run off the event loop."""
        for link in self.links:  # noqa: SIM110 - a loop, not any(): runs for every message
            if link.pace.slow:
                return True
        return False

    def in_order(self, direction: Direction) -> list[Link]:
        return self.links if direction is Direction.INBOUND else self.outbound

    def deliver(self, link: Link, event: Event) -> Verdict | None:
        """The link's verdict for `event`; None when it does not take part (does not want the
        event, or was dropped after failing open). Raises StreamFailed under fail-closed."""
        sandbox = link.sandbox
        kind = kind_of(event)
        if sandbox is None or kind not in link.events:
            return None
        began = time.perf_counter()
        start = time.thread_time()  # CPU, not wall: a thread descheduled is not a slow plugin
        try:
            verdict = self._logged(sandbox, event) if link.logs else sandbox.deliver(event)
            seconds = time.perf_counter() - began
            if sandbox.unsettled:
                self._to_loop(self._defer, sandbox.settle)
        except SandboxFault as fault:
            seconds = time.perf_counter() - began
            link.pace.record(time.thread_time() - start, _data_size(event))
            self._drop(link)
            self._report_fault(link.name, link.policy, fault, kind.value)
            self._observe(Decision(self.id, self.protocol, self.chain.name, link.name, kind,
                                   getattr(event, "direction", None), fault=fault,
                                   policy=link.policy, tier=link.tier, seconds=seconds))
            if link.policy is FailurePolicy.FAIL_CLOSED:
                raise StreamFailed(str(fault)) from None
            return None
        link.pace.record(time.thread_time() - start, _data_size(event))
        if self._observers:  # every field by position: keywords cost a NamedTuple's __new__
            self._observe(Decision(self.id, self.protocol, self.chain.name, link.name, kind,
                                   getattr(event, "direction", None), verdict, None, None,
                                   link.tier, seconds))
        return verdict

    def _logged(self, sandbox: Sandbox, event: Event) -> Verdict | None:
        """`sandbox.deliver(event)`, what its plugin logs meanwhile naming this stream."""
        thread = get_ident()
        STREAM_ON_THREAD[thread] = self.id
        try:
            return sandbox.deliver(event)
        finally:
            del STREAM_ON_THREAD[thread]

    def _to_loop(self, run: Deferral, work: Callable[[], object]) -> None:
        """`run(work)` where `run` is only for the event loop's thread."""
        if self.handoff is None:
            run(work)
        else:
            self.handoff(lambda: run(work))

    def _report_fault(self, plugin: str, policy: FailurePolicy, fault: SandboxFault,
                      during: str) -> None:
        outcome = "stream stopped" if policy is FailurePolicy.FAIL_CLOSED else "plugin skipped"
        log.warning("stream %d (%s): %s on %s; %s: %s", self.id, self.chain.name, fault, during,
                    policy.value, outcome, extra={"stream": self.id})

    def _observe(self, decision: Decision) -> None:
        if self.handoff is not None:
            self.handoff(lambda: self._observe_now(decision))
        else:
            self._observe_now(decision)

    def _observe_now(self, decision: Decision) -> None:
        for observer in self._observers:
            observer.decided(decision)

    def _drop(self, link: Link) -> None:
        if link.sandbox is not None:
            sandbox, link.sandbox = link.sandbox, None  # it takes no more events from now
            self._to_loop(self._when_quiet, sandbox.close)
            self._to_loop(_now, self._admission.give_back_sandbox)

    def close(self) -> None:
        for link in self.links:
            self._drop(link)
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close()
