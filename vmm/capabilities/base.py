"""What every capability is: a grant parsed from the manifest, WIT functions, a host object."""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Protocol

from vmm.canonical import Signature
from vmm.tables import Table

if TYPE_CHECKING:
    from vmm.capabilities.log import PluginLog
    from vmm.capabilities.state import StateBackend

WIT_PACKAGE = "hyperfilter:plugin"
WIT_VERSION = "0.1.0"


def interface_id(name: str) -> str:
    """The fully qualified WIT interface name, as it appears in a plugin's imports."""
    return f"{WIT_PACKAGE}/{name}@{WIT_VERSION}"


class CapabilityError(Exception):
    """The error case of a host function's `result<_, E>`: `case` names the WIT enum case."""

    def __init__(self, case: str) -> None:
        super().__init__(case)
        self.case = case


class CapabilityDenied(Exception):
    """A call the grant does not allow (an undeclared metric, an oversized request).

    Raised inside a host call, it traps the calling plugin.
    """


@dataclass(frozen=True)
class HostFunction:
    """One function of a capability interface; the host object has a method of the same name
    with dashes turned into underscores."""

    name: str
    signature: Signature

    @property
    def method(self) -> str:
        return self.name.replace("-", "_")


class MetricsSink(Protocol):
    """Where plugin metrics go; the sidecar exports them."""

    def add(self, plugin: str, name: str, delta: int) -> None: ...

    def set(self, plugin: str, name: str, value: int) -> None: ...


@dataclass(frozen=True)
class HostEnv:
    """What the host knows about the plugin whose capabilities it binds."""

    plugin: str
    config: Mapping[str, str]
    log: PluginLog
    metrics: MetricsSink
    state: StateBackend  # where `shared-state` keeps the plugin's keys


class Grant(ABC):
    """A capability granted by a manifest, with its parameters."""

    name: ClassVar[str]
    functions: ClassVar[tuple[HostFunction, ...]]

    @classmethod
    @abstractmethod
    def parse(cls, table: Table) -> Grant:
        """Read the grant's parameters from `[grants.<name>]`."""

    @abstractmethod
    def bind(self, env: HostEnv) -> object:
        """The host object serving this plugin's calls; one per loaded plugin."""

    @property
    def interface(self) -> str:
        return interface_id(self.name)

    def describe(self) -> str:
        """The grant as an operator reads it: `metrics(counters=blocked)`."""
        params = [f"{f.name.replace('_', '-')}={_param(getattr(self, f.name))}"
                  for f in dataclasses.fields(self)]  # type: ignore[arg-type]
        return f"{self.name}({', '.join(params)})" if params else self.name


def _param(value: object) -> str:
    return "+".join(value) if isinstance(value, tuple) else str(value)
