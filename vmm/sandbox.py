"""The Sandbox/Backend interface: the only bridge between the sidecar and an isolation tier.

A Backend loads a plugin (compile, check its imports and exports against the world and the
manifest's grants, link the granted host functions) into a LoadedPlugin. A LoadedPlugin makes
one fresh Sandbox per stream: its own memory, nothing shared with any other stream. Events go
in one at a time; each returns a verdict or raises a SandboxFault, after which the sandbox is
poisoned. `close()` destroys the sandbox and releases its memory.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from vmm.capabilities import HostEnv
from vmm.errors import SandboxFault, SandboxPoisoned
from vmm.events import Event, Verdict
from vmm.manifest import Manifest
from vmm.verdicts import VerdictProblem, VerdictRules, check_verdict


class Sandbox(ABC):
    def __init__(self, plugin: str, verdict_rules: VerdictRules) -> None:
        self.plugin = plugin
        self.verdict_rules = verdict_rules  # the tier's lifting takes its `max_bytes`
        self.fault: SandboxFault | None = None
        # A micro-VM an earlier stream ran in, reset to the plugin's snapshot (kvm), rather
        # than one made new; either way its memory is what no earlier stream touched.
        self.reused = False

    def deliver(self, event: Event) -> Verdict | None:
        """Run the plugin's handler for `event`: a verdict, None for `TcpClose`."""
        self.settle()
        if self.fault is not None:
            raise SandboxPoisoned(self.plugin, self.fault.detail)
        try:
            return check_verdict(event, self._run(event), self.verdict_rules)
        except VerdictProblem as problem:  # from the rules, or from lifting the verdict
            self.fault = problem.fault(self.plugin, str(problem))
        except SandboxFault as fault:
            self.fault = fault
        raise self.fault

    def settle(self) -> None:
        """Finish what the last event left for later: the canonical ABI's post-return, which
        must run before the plugin's next call but need not delay the verdict. The host calls
        this once it has acted on the verdict; `deliver` settles first anyway. A fault here
        poisons the sandbox, for the next event to report."""
        if self.fault is None:
            try:
                self._settle()
            except SandboxFault as fault:
                self.fault = fault

    @property
    def unsettled(self) -> bool:
        """Whether `settle` has work to do; a tier with deferred work says when."""
        return False

    @abstractmethod
    def _settle(self) -> None:
        """The tier's deferred work, if any."""

    @abstractmethod
    def _run(self, event: Event) -> Verdict | None:
        """Deliver one event in the tier's own way; raise a SandboxFault on failure."""

    @abstractmethod
    def close(self) -> None:
        """Destroy the sandbox; idempotent."""


class LoadedPlugin(ABC):
    """A plugin compiled, checked and linked by one backend, ready to make sandboxes."""

    tier: ClassVar[str]
    kind: str  # "core module" or "component"

    def __init__(self, manifest: Manifest) -> None:
        self.manifest = manifest
        self.verdict_rules = VerdictRules.of(manifest)

    @property
    def name(self) -> str:
        return self.manifest.name

    @abstractmethod
    def new_sandbox(self) -> Sandbox:
        """A fresh sandbox: memory no earlier stream touched."""


class Backend(ABC):
    tier: ClassVar[str]

    @abstractmethod
    def load(self, manifest: Manifest, wasm: bytes, env: HostEnv) -> LoadedPlugin:
        """Compile (or take from the cache), check and link a plugin; raise PluginLoadError."""

    @abstractmethod
    def close(self) -> None:
        """Release what the backend holds (threads, engines)."""
