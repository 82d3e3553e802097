"""Loading a plugin from its directory: manifest, wasm file, host environment, backend."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

from vmm.capabilities import HostEnv, MetricsSink, PluginLog
from vmm.capabilities.log import DEFAULT_RATE, LogGrant
from vmm.capabilities.state import StateBackend
from vmm.capabilities.state.memory import MemoryBackend
from vmm.errors import PluginLoadError
from vmm.manifest import FailurePolicy, load_manifest
from vmm.sandbox import Backend, LoadedPlugin


def load_plugin(location: Path, backend: Backend, metrics: MetricsSink, *,
                name: str | None = None, config: Mapping[str, str] | None = None,
                failure_policy: FailurePolicy | None = None,
                state: StateBackend | None = None) -> LoadedPlugin:
    """Load the plugin in `location` (a directory or a manifest file). The operator may load
    it under another `name`, override entries of its `[config]`, and its failure policy.
    `shared-state` keeps its keys in `state` (by default, a store of its own in memory)."""
    manifest = load_manifest(location)
    manifest = dataclasses.replace(
        manifest,
        name=name or manifest.name,
        config={**manifest.config, **(config or {})},
        failure_policy=failure_policy or manifest.failure_policy,
    )
    try:
        wasm = manifest.wasm.read_bytes()
    except FileNotFoundError:
        raise PluginLoadError(
            manifest.name, f"no wasm file at {manifest.wasm}; build it with "
            f"`hyperfilter plugin build {manifest.wasm.parent}`") from None
    except OSError as exc:
        raise PluginLoadError(manifest.name, f"cannot read {manifest.wasm}: {exc}") from None
    log_grant = manifest.grants.get("log")
    rate = log_grant.rate if isinstance(log_grant, LogGrant) else DEFAULT_RATE
    env = HostEnv(manifest.name, manifest.config, PluginLog(manifest.name, rate), metrics,
                  state or MemoryBackend())
    return backend.load(manifest, wasm, env)
