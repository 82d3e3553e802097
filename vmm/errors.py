"""Typed errors: what went wrong loading a plugin, and what went wrong inside a sandbox."""

from __future__ import annotations


class PluginLoadError(Exception):
    """A plugin, its manifest or its wasm cannot be used. Raised at load, never per stream."""

    def __init__(self, plugin: str, problem: str) -> None:
        super().__init__(f"plugin {plugin!r}: {problem}")
        self.plugin = plugin
        self.problem = problem


class ManifestError(PluginLoadError):
    """The manifest is missing, malformed, or names something unknown."""


class NotWasmError(PluginLoadError):
    """The plugin file is not a WebAssembly module or component."""


class WorldMismatchError(PluginLoadError):
    """The wasm does not implement the hyperfilter world (missing or mistyped exports)."""


class UngrantedImportError(PluginLoadError):
    """The wasm imports an interface its manifest does not grant."""

    def __init__(self, plugin: str, interface: str, detail: str = "") -> None:
        suffix = f" ({detail})" if detail else ""
        super().__init__(
            plugin, f"imports {interface} but its manifest does not grant it{suffix}"
        )
        self.interface = interface


class TierMismatchError(PluginLoadError):
    """The plugin cannot run on the isolation tier asked for (a component on `kvm`)."""


class UnlinkableComponentError(PluginLoadError):
    """A component of a shape the host cannot take apart into core modules and link, on any
    tier (a module instantiated twice, a string encoding other than UTF-8, ...)."""


class TierUnavailableError(Exception):
    """An isolation tier cannot run on this machine (no /dev/kvm, no toolchain)."""

    def __init__(self, tier: str, reason: str) -> None:
        super().__init__(f"the {tier} tier cannot run here: {reason}")
        self.tier = tier
        self.reason = reason


class SandboxFault(Exception):
    """A plugin failed while handling an event. The sandbox is poisoned afterwards."""

    cause = "fault"

    def __init__(self, plugin: str, detail: str) -> None:
        super().__init__(f"plugin {plugin!r} {self.cause}: {detail}")
        self.plugin = plugin
        self.detail = detail


class PluginTrap(SandboxFault):
    """The plugin trapped: unreachable, out-of-bounds access, stack overflow, a denied call."""

    cause = "trapped"


class PluginError(PluginTrap):
    """The plugin's own code failed and its SDK said why before stopping it: an exception in
    a hook, a verdict of a type the world cannot carry (the Python SDK)."""

    cause = "failed"


class CpuLimitExceeded(SandboxFault):
    """The plugin ran past its CPU time bound for one event."""

    cause = "exceeded its CPU bound"


class MemoryLimitExceeded(SandboxFault):
    """The plugin needed more memory than its limit allows."""

    cause = "exceeded its memory limit"


class InvalidVerdict(SandboxFault):
    """The plugin returned a verdict the host cannot use (bad tag, bounds, header, UTF-8)."""

    cause = "returned an invalid verdict"


class CapabilityUnavailable(SandboxFault):
    """A capability's backing service could not serve the plugin's call (its shared-state
    store's server does not answer)."""

    cause = "could not be served by a capability"


class VmFault(SandboxFault):
    """The micro-VM stopped in a way the host did not expect (bad port, MMIO, shutdown)."""

    cause = "crashed its VM"


class SandboxPoisoned(SandboxFault):
    """An event was delivered to a sandbox that already failed."""

    cause = "is poisoned by an earlier fault"


class VerdictTooLarge(InvalidVerdict):
    """The verdict is larger than the plugin's limits let the host lift, copy and send on:
    too many bytes (each list entry counted too) or too many entries. Refused on the sizes the
    plugin declares, before the host copies anything."""

    cause = "returned a verdict larger than its limits"


class UnacceptableVerdict(InvalidVerdict):
    """The verdict breaks a rule Envoy applies to what a processor sends (a header name or
    value it refuses, a header it ignores or a message framing it would misread)."""

    cause = "returned a verdict Envoy would refuse or misread"


class UngrantedMutation(InvalidVerdict):
    """The verdict changes a header only a grant lets a plugin change (`route`)."""

    cause = "returned a verdict its grants do not allow"
