"""Capability `config`: the plugin reads its own configuration, and nothing else."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from vmm.canonical import STRING, Option, Signature
from vmm.capabilities.base import Grant, HostEnv, HostFunction
from vmm.tables import Table


class ConfigHost:
    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = dict(values)

    def get(self, key: str) -> str | None:
        return self._values.get(key)


@dataclass(frozen=True)
class ConfigGrant(Grant):
    name = "config"
    functions = (HostFunction("get", Signature([STRING], Option(STRING))),)

    @classmethod
    def parse(cls, table: Table) -> ConfigGrant:
        return cls()

    def bind(self, env: HostEnv) -> ConfigHost:
        return ConfigHost(env.config)
