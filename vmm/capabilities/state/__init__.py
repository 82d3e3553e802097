"""Where `shared-state` keeps a plugin's keys: in this process (`memory`), in a file every
worker of the sidecar maps (`lmdb`, the default), or in a Redis server several sidecars share
(`redis`). Every backend keeps the same rules (rules.py): quotas of
keys and bytes per plugin, TTLs, and an atomic, saturating `increment`."""

from __future__ import annotations

from vmm.capabilities.state.rules import StateBackend, StateStore, StoreUnavailable

__all__ = ["StateBackend", "StateStore", "StoreUnavailable"]
