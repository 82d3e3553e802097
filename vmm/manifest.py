"""A plugin's manifest (`manifest.toml` next to its .wasm): who it is, which events it wants,
what it may touch, its limits and failure policy, and its own configuration.

    name = "tcp-blocker"
    version = "0.1.0"
    events = ["tcp.data"]             # or "tcp" / "http" for all of one protocol
    failure-policy = "fail-closed"    # optional; the sidecar's default applies otherwise
    wasm = "tcp-blocker.wasm"         # optional, this is the default

    [limits]
    memory-mb = 16                    # linear memory cap
    cpu-ms = 20                       # CPU time per event
    verdict-kb = 1024                 # optional: most a verdict holds (default: memory-mb)

    [grants.log]
    rate = 10                         # messages per second

    [config]
    pattern = "DROP TABLE"
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from vmm.capabilities import Grant, parse_grants
from vmm.errors import ManifestError
from vmm.events import EventKind
from vmm.tables import Table, TableError, TomlError, read_toml

MANIFEST_FILE = "manifest.toml"
_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_EVENTS = {kind.value: frozenset({kind}) for kind in EventKind} | {
    protocol: frozenset(k for k in EventKind if k.protocol == protocol)
    for protocol in ("tcp", "http")
}


class FailurePolicy(enum.Enum):
    """What happens to the stream when the plugin traps, runs out of CPU time or memory."""

    FAIL_OPEN = "fail-open"  # drop the plugin from the stream, let traffic pass
    FAIL_CLOSED = "fail-closed"  # close the connection / answer 5xx


FAILURE_POLICIES = {policy.value: policy for policy in FailurePolicy}


# Tables are memory the host allocates for the plugin: wasmtime stores 8 bytes an element.
TABLE_ELEMENT_BYTES = 8
# All of a sandbox's tables together may take a quarter of its memory limit in elements...
TABLE_MEMORY_SHARE = 4
# ...and no more than it can grow and fill in a quarter of its CPU time per event (about 5 ns
# an element, measured): one table.grow or table.fill runs to its end, out of the CPU bound's
# reach.
TABLE_ELEMENTS_PER_CPU_MS = 50_000


@dataclass(frozen=True)
class Limits:
    memory_bytes: int = 16 << 20
    cpu_ms: int = 20
    verdict_limit: int | None = None  # bytes; None: memory_bytes

    @property
    def verdict_bytes(self) -> int:
        """The most a verdict may hold, counted as vmm/verdicts.py does (its bytes, and a
        fixed cost per list entry): what the host copies and sends on for one event."""
        return self.memory_bytes if self.verdict_limit is None else self.verdict_limit

    @property
    def table_elements(self) -> int:
        """The elements all of a sandbox's tables may hold together."""
        return min(self.memory_bytes // TABLE_MEMORY_SHARE // TABLE_ELEMENT_BYTES,
                   self.cpu_ms * TABLE_ELEMENTS_PER_CPU_MS)


@dataclass(frozen=True)
class Manifest:
    name: str
    version: str
    wasm: Path
    events: frozenset[EventKind]
    failure_policy: FailurePolicy | None = None
    limits: Limits = field(default_factory=Limits)
    grants: Mapping[str, Grant] = field(default_factory=dict)
    config: Mapping[str, str] = field(default_factory=dict)

    def wants(self, kind: EventKind) -> bool:
        return kind in self.events

    @cached_property
    def protocols(self) -> frozenset[str]:
        """"tcp", "http": what its events are about (asked once per stream and plugin)."""
        return frozenset(kind.protocol for kind in self.events)

    def handles(self, protocol: str) -> bool:
        return protocol in self.protocols


def config_value(value: Any, path: str) -> str:
    """A plugin configuration value as the string the `config` capability returns."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise TableError(f"{path}: config values are strings, numbers or booleans")


def parse_manifest(data: Mapping[str, Any], base: Path, where: str = "") -> Manifest:
    """Build a manifest from parsed TOML; `base` is the directory relative paths start from."""
    table = Table(data, where)
    name = table.get("name", str)
    if not _NAME.fullmatch(name):
        raise TableError(f"{table.path('name')}: {name!r} must be lower-case letters, digits, '-'")
    version = table.get("version", str)
    events: set[EventKind] = set()
    for event in table.get_strings("events"):
        if event not in _EVENTS:
            known = ", ".join(_EVENTS)
            raise TableError(f"{table.path('events')}: unknown event {event!r} (known: {known})")
        events |= _EVENTS[event]
    if not events:
        raise TableError(f"{table.path('events')}: a plugin must want at least one event")
    failure_policy = (
        table.get_choice("failure-policy", FAILURE_POLICIES)
        if table.has("failure-policy") else None
    )
    wasm = base / table.get("wasm", str, f"{name}.wasm")
    limits_table = table.sub("limits")
    memory_bytes = limits_table.get_positive("memory-mb", Limits.memory_bytes >> 20) << 20
    verdict_limit = None
    if limits_table.has("verdict-kb"):
        verdict_limit = limits_table.get_positive("verdict-kb", 1) << 10
        if verdict_limit > memory_bytes:
            raise TableError(f"{limits_table.path('verdict-kb')}: {verdict_limit >> 10} KiB "
                             f"is more than memory-mb ({memory_bytes >> 20} MiB)")
    limits = Limits(memory_bytes, limits_table.get_positive("cpu-ms", Limits.cpu_ms),
                    verdict_limit)
    limits_table.finish()
    grants = parse_grants(table.sub("grants"))
    config_table = table.sub("config")
    config = {k: config_value(v, config_table.path(k)) for k, v in config_table.items()}
    table.finish()
    return Manifest(name, version, wasm, frozenset(events), failure_policy, limits, grants, config)


def load_manifest(path: Path) -> Manifest:
    """Read a manifest file, or the `manifest.toml` of a plugin directory."""
    if path.is_dir():
        path = path / MANIFEST_FILE
    label = path.parent.name or str(path)
    try:
        data = read_toml(path.read_text())
    except FileNotFoundError:
        raise ManifestError(label, f"no manifest at {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(label, f"cannot read {path}: {exc}") from None
    except TomlError as exc:
        raise ManifestError(label, f"{path} is not valid TOML: {exc}") from None
    try:
        return parse_manifest(data, path.parent)
    except TableError as exc:
        raise ManifestError(data.get("name", label) if isinstance(data.get("name"), str)
                            else label, f"{path}: {exc}") from None
