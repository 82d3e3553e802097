"""Choosing each plugin's isolation tier: its own, or its fallback when this machine cannot run
it (a tier made unavailable here by a stand-in that refuses, as a machine without /dev/kvm
does)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from sidecar import tiers
from sidecar.config import PluginEntry, SidecarConfig
from sidecar.tiers import Tiers
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
            assert chosen.backend_for(settings.plugins["guard"]).tier == "wasmtime"
        assert "plugin guard: the kvm tier cannot run here: /dev/kvm" in caplog.text
        assert "running it on its fallback tier, wasmtime" in caplog.text
    finally:
        chosen.close()


@pytest.mark.usefixtures("without_kvm")
def test_an_unavailable_tier_without_fallback_stops_the_load(tmp_path: Path) -> None:
    settings = config(tmp_path, tier="kvm")
    chosen = Tiers(settings)
    try:
        with pytest.raises(PluginLoadError, match=r"asks for the kvm tier, but the kvm tier "
                                                  r"cannot run here: /dev/kvm .*fallback-tier"):
            chosen.backend_for(settings.plugins["guard"])
    finally:
        chosen.close()


def test_only_the_tiers_in_use_are_started(tmp_path: Path) -> None:
    chosen = Tiers(config(tmp_path))
    try:
        assert list(chosen.backends) == ["wasmtime"] and not chosen.unavailable
    finally:
        chosen.close()
