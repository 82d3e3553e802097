"""Choosing each plugin's isolation tier: its own, or its fallback when this machine cannot run
it (a tier made unavailable here by a stand-in that refuses, as a machine without /dev/kvm
does)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from sidecar import tiers
from sidecar.config import PluginEntry, SidecarConfig
from sidecar.registry import Registry
from sidecar.tiers import Tiers
from tests.conftest import RecordingMetrics, kvm_refused_component, skip_unless_tier_runs
from vmm.capabilities.state.memory import MemoryBackend
from vmm.errors import PluginLoadError, TierUnavailableError
from vmm.wasmtime import WasmtimeBackend


def no_kvm(cache_dir: Path) -> WasmtimeBackend:
    raise TierUnavailableError("kvm", "/dev/kvm cannot be opened (No such file or directory)")


@pytest.fixture
def without_kvm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(tiers.BACKENDS, "kvm", no_kvm)


def config(tmp_path: Path, **entry: object) -> SidecarConfig:
    plugin = PluginEntry("guard", tmp_path / "guard", **entry)  # type: ignore[arg-type]
    return SidecarConfig(plugins={"guard": plugin}, cache_dir=tmp_path)


@pytest.mark.usefixtures("without_kvm")
def test_an_unavailable_tier_falls_back_when_the_entry_allows_it(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = config(tmp_path, tier="kvm", fallback_tier="wasmtime")
    chosen = Tiers(settings)
    try:
        with caplog.at_level(logging.WARNING):
            assert [b.tier for b in chosen.backends_for(settings.plugins["guard"])] == [
                "wasmtime"]
        assert "plugin guard: the kvm tier cannot run here: /dev/kvm" in caplog.text
        assert "running it on its fallback tier, wasmtime" in caplog.text
    finally:
        chosen.close()


@pytest.mark.usefixtures("without_kvm")
def test_an_unavailable_tier_without_fallback_stops_the_load(tmp_path: Path) -> None:
    settings = config(tmp_path, tier="kvm", fallback_tier=None)
    chosen = Tiers(settings)
    try:
        with pytest.raises(PluginLoadError, match=r"asks for the kvm tier, but the kvm tier "
                                                  r"cannot run here: /dev/kvm .*fallback-tier"):
            chosen.backends_for(settings.plugins["guard"])
    finally:
        chosen.close()


def test_only_the_tiers_in_use_are_started(tmp_path: Path) -> None:
    chosen = Tiers(config(tmp_path, tier="wasmtime", fallback_tier=None))
    try:
        assert list(chosen.backends) == ["wasmtime"] and not chosen.unavailable
    finally:
        chosen.close()


def test_a_plugin_the_kvm_tier_refuses_runs_on_its_fallback_saying_why(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The default entry (kvm, falling back to wasmtime): a component the kvm tier cannot run
    is loaded on wasmtime, and the log says why."""
    skip_unless_tier_runs("kvm")
    settings = SidecarConfig(plugins={"guard": PluginEntry(
        "guard", kvm_refused_component(tmp_path))}, cache_dir=tmp_path / "cache")
    chosen = Tiers(settings)
    try:
        with caplog.at_level(logging.WARNING):
            registry = Registry.load(settings, chosen.backends_for, RecordingMetrics(),
                                     MemoryBackend())
        assert registry.chains["guard"].links[0].plugin.tier == "wasmtime"
        assert "its modules define 2 linear memories" in caplog.text
        assert "running it on its fallback tier, wasmtime" in caplog.text
        registry.close()
    finally:
        chosen.close()
