"""The sidecar's configuration file (TOML): where to listen, which plugins to load, how they
form chains, and what happens when something fails.

    listen = "127.0.0.1:50051"            # or "unix:/run/hyperfilter/sidecar.sock"
    workers = 2                           # processes; worker i listens on port + i (unix: path.i)
    metrics = "127.0.0.1:9464"            # optional Prometheus endpoint: one, every worker's sum
    default-chain = "guard"               # for streams whose metadata names no chain
    default-failure-policy = "fail-closed"
    max-streams = 100000                  # live Envoy streams per worker (default: from memory)
    max-sandboxes = 20000                 # live sandboxes per worker (default: from memory)
    slow-plugin-cores = 1                 # slow plugins' events at once, all workers together
                                          # (default: every core but one)
    drain-seconds = 30                    # SIGTERM: how long open streams may still run
    pid-file = "/run/hyperfilter.pid"     # written by `serve`, read by `hyperfilter reload`
    log-format = "json"                   # JSON lines (default "text"); `serve --log-format`

    [shared-state]                        # optional: where plugins' shared-state lives
    backend = "lmdb"                      # one store for every worker (default); "memory":
                                          # each worker its own; "redis": shared by sidecars
    url = "redis://10.0.0.5:6379/0"       # redis: also rediss://… (TLS), unix:///path
    prefix = "hyperfilter"                # redis: the keys' first part
    timeout-ms = 20                       # redis: the longest a call waits for the server

    [tls]                                 # optional: TLS on `listen` (ALPN h2)
    cert = "tls/sidecar.pem"                         # the server's certificate chain
    key = "tls/sidecar.key"
    client-ca = "tls/envoy-ca.pem"                   # optional: mTLS, only clients it signed

    [plugins]
    tcp-blocker = "plugins/examples/tcp-blocker"      # a plugin directory, or a table:
    [plugins.auth]
    path = "plugins/examples/http-auth"
    failure-policy = "fail-open"                     # overrides the manifest's
    config = { keys = "k-123:alice" }                # overrides the manifest's [config]
    [plugins.guard]
    path = "plugins/examples/tcp-blocker"
    tier = "kvm"                                     # a micro-VM per stream (the default)
    fallback-tier = "wasmtime"                       # where it cannot run on kvm; else an error

    [chains]
    guard = ["tcp-blocker", "auth"]

Relative paths start at the configuration file's directory. Every plugin is also a chain of
one under its own name. A stream past `max-streams`, or needing sandboxes past
`max-sandboxes`, is refused with gRPC status RESOURCE_EXHAUSTED (Envoy's `failure_mode_allow`
decides what the connection or request then does).

SIGTERM drains: no new streams, open ones run until they end or `drain-seconds` pass, then the
process exits 0. SIGHUP (or `hyperfilter reload`) loads the plugins and this file again: new
streams get the new set, open ones keep their sandboxes; a reload that fails to load keeps the
old set and logs why. `listen`, `workers`, `metrics`, `cache-dir`, `pid-file`, `log-format`,
`slow-plugin-cores`, `[shared-state]` and `[tls]` are read at start only (a reload that
changes them says so in the log), and so are the isolation tiers in use. A reloaded plugin
keeps its shared-state keys (the store is the plugin name's).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vmm.manifest import FAILURE_POLICIES, FailurePolicy, config_value
from vmm.tables import Table, TableError, TomlError, read_toml

TIERS = ("wasmtime", "kvm")
DEFAULT_CACHE_DIR = Path("~/.cache/hyperfilter").expanduser()
# Defaults of the per-worker bounds, from the machine's memory shared by the workers: a live
# stream without sandboxes costs a few KiB; a sandbox at least tens of KiB and up to its
# plugin's memory-mb, so the default bound leaves each 1 MiB.
MEMORY_PER_STREAM = 64 << 10
MEMORY_PER_SANDBOX = 1 << 20


def physical_memory() -> int:
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def default_max_streams(workers: int) -> int:
    return max(1, physical_memory() // workers // MEMORY_PER_STREAM)


def default_max_sandboxes(workers: int) -> int:
    return max(1, physical_memory() // workers // MEMORY_PER_SANDBOX)


def default_slow_plugin_cores() -> int:
    """Every core this process may run on but one, left to the loops, Envoy and the
    upstreams (sidecar/slow_lanes.py says why); at least one."""
    return max(1, len(os.sched_getaffinity(0)) - 1)


class ConfigError(Exception):
    """The configuration cannot be used; the message names the file and the field."""


UNIX_PREFIX = "unix:"


@dataclass(frozen=True)
class TcpAddress:
    host: str  # "" for every interface
    port: int  # 0 for any free port

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class UnixAddress:
    path: Path

    def __str__(self) -> str:
        return f"{UNIX_PREFIX}{self.path}"


Address = TcpAddress | UnixAddress


def parse_address(text: str, base: Path = Path(".")) -> Address:
    """`unix:PATH` (a relative PATH starts at `base`) or `HOST:PORT` (`[v6]:PORT`); raises
    ValueError saying what is wrong."""
    if text.startswith(UNIX_PREFIX):
        path = text.removeprefix(UNIX_PREFIX)
        if not path:
            raise ValueError(f"{text!r}: expected unix:PATH")
        return UnixAddress(_path(base, path))
    host, colon, port = text.rpartition(":")
    if not colon or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"{text!r}: expected HOST:PORT or unix:PATH")
    return TcpAddress(host.removeprefix("[").removesuffix("]"), int(port))


@dataclass(frozen=True)
class TlsConfig:
    cert: Path  # PEM: the server's certificate, then any intermediates
    key: Path  # PEM: its private key
    client_ca: Path | None = None  # PEM: mTLS, clients must present a certificate it signed


STATE_BACKENDS = {"lmdb": "lmdb", "memory": "memory", "redis": "redis"}
LOG_FORMATS = {"text": "text", "json": "json"}
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


@dataclass(frozen=True)
class SharedStateConfig:
    """Where `shared-state` keeps plugins' keys (vmm/capabilities/state/)."""

    backend: str = "lmdb"  # every worker of this sidecar; "memory": each its own; "redis"
    url: str | None = None  # redis: redis://host:port/db, rediss://…, unix:///path
    prefix: str = "hyperfilter"  # redis: the keys' first part, apart from other users'
    timeout_ms: int = 20  # redis: the longest a call waits for the server


# A plugin whose entry names no tier runs in a micro-VM where it can, and on wasmtime where
# this machine (no /dev/kvm, no toolchain) or the plugin (a shape the kvm tier refuses) cannot.
DEFAULT_TIER, DEFAULT_FALLBACK_TIER = "kvm", "wasmtime"


@dataclass(frozen=True)
class PluginEntry:
    name: str
    path: Path
    tier: str = DEFAULT_TIER
    failure_policy: FailurePolicy | None = None
    fallback_tier: str | None = DEFAULT_FALLBACK_TIER
    config: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SidecarConfig:
    plugins: Mapping[str, PluginEntry]
    chains: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    listen: str = "127.0.0.1:50051"
    workers: int = 1
    metrics: str | None = None
    cache_dir: Path = DEFAULT_CACHE_DIR
    default_chain: str | None = None
    default_failure_policy: FailurePolicy = FailurePolicy.FAIL_CLOSED
    max_streams: int = field(default_factory=lambda: default_max_streams(1))
    max_sandboxes: int = field(default_factory=lambda: default_max_sandboxes(1))
    drain_seconds: float = 30.0
    slow_plugin_cores: int = field(default_factory=default_slow_plugin_cores)
    pid_file: Path | None = None
    log_format: str = "text"  # or "json": JSON lines (sidecar/logs.py)
    tls: TlsConfig | None = None
    shared_state: SharedStateConfig = SharedStateConfig()


def _path(base: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def _plugin_entry(name: str, value: Any, table: Table, base: Path) -> PluginEntry:
    if isinstance(value, str):
        return PluginEntry(name, _path(base, value))
    entry = Table(value, table.path(name))
    path = _path(base, entry.get("path", str))
    tiers = {t: t for t in TIERS}
    tier = entry.get_choice("tier", tiers, DEFAULT_TIER)
    # a tier named is that tier, with no fallback unless one is named too
    fallback = (entry.get_choice("fallback-tier", tiers) if entry.has("fallback-tier") else
                None if entry.has("tier") else DEFAULT_FALLBACK_TIER)
    if fallback == tier:
        raise TableError(f"{entry.path('fallback-tier')}: the same as tier")
    policy = (entry.get_choice("failure-policy", FAILURE_POLICIES)
              if entry.has("failure-policy") else None)
    config_table = entry.sub("config")
    config = {key: config_value(item, config_table.path(key)) for key, item in config_table.items()}
    entry.finish()
    return PluginEntry(name, path, tier, policy, fallback, config)


def _listen(table: Table, base: Path) -> str:
    try:
        return str(parse_address(table.get("listen", str, SidecarConfig.listen), base))
    except ValueError as exc:
        raise TableError(f"listen: {exc}") from None


def _metrics(table: Table) -> str | None:
    if not table.has("metrics"):
        return None
    value = table.get("metrics", str)
    try:
        address = parse_address(value)
    except ValueError as exc:
        raise TableError(f"metrics: {exc}") from None
    if isinstance(address, UnixAddress):
        raise TableError(f"metrics: {value!r}: expected HOST:PORT (Prometheus scrapes TCP)")
    return value


def _seconds(table: Table, key: str, default: float) -> float:
    value = table.get(key, object, default)  # an int or a float, checked here
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TableError(f"{table.path(key)}: expected a number of seconds, found "
                         f"{type(value).__name__}")
    if value < 0:
        raise TableError(f"{table.path(key)}: must not be negative, found {value}")
    return float(value)


def _tls(table: Table, base: Path) -> TlsConfig | None:
    if not table.has("tls"):
        return None
    tls = table.sub("tls")
    client_ca = _path(base, tls.get("client-ca", str)) if tls.has("client-ca") else None
    config = TlsConfig(_path(base, tls.get("cert", str)), _path(base, tls.get("key", str)),
                       client_ca)
    tls.finish()
    return config


def _shared_state(table: Table) -> SharedStateConfig:
    if not table.has("shared-state"):
        return SharedStateConfig()
    state = table.sub("shared-state")
    backend = state.get_choice("backend", STATE_BACKENDS, SharedStateConfig.backend)
    if backend != "redis":
        state.finish()
        return SharedStateConfig(backend)
    url = state.get("url", str)
    if not url.startswith(REDIS_SCHEMES):
        raise TableError(f"{state.path('url')}: {url!r}: expected a URL starting with "
                         f"{', '.join(REDIS_SCHEMES)}")
    config = SharedStateConfig(
        backend, url, state.get("prefix", str, SharedStateConfig.prefix),
        state.get_positive("timeout-ms", SharedStateConfig.timeout_ms))
    state.finish()
    return config


def parse_config(data: Mapping[str, Any], base: Path) -> SidecarConfig:
    table = Table(data, "")
    plugins_table = table.sub("plugins", required=True)
    plugins = {name: _plugin_entry(name, value, plugins_table, base)
               for name, value in plugins_table.items()}
    chains_table = table.sub("chains")
    chains: dict[str, tuple[str, ...]] = {}
    for name, _ in chains_table.items():
        members = chains_table.get_strings(name)
        if name in plugins:
            raise TableError(f"{chains_table.path(name)}: a plugin already has this name")
        for member in members:
            if member not in plugins:
                raise TableError(f"{chains_table.path(name)}: unknown plugin {member!r}")
        chains[name] = members
    default_chain = table.get("default-chain", str) if table.has("default-chain") else None
    if default_chain is not None and default_chain not in chains and default_chain not in plugins:
        raise TableError(f"default-chain: unknown chain or plugin {default_chain!r}")
    workers = table.get_positive("workers", SidecarConfig.workers)
    config = SidecarConfig(
        plugins=plugins,
        chains=chains,
        listen=_listen(table, base),
        workers=workers,
        metrics=_metrics(table),
        cache_dir=_path(base, table.get("cache-dir", str, str(DEFAULT_CACHE_DIR))),
        default_chain=default_chain,
        default_failure_policy=table.get_choice(
            "default-failure-policy", FAILURE_POLICIES, FailurePolicy.FAIL_CLOSED),
        max_streams=table.get_positive("max-streams", default_max_streams(workers)),
        max_sandboxes=table.get_positive("max-sandboxes", default_max_sandboxes(workers)),
        drain_seconds=_seconds(table, "drain-seconds", SidecarConfig.drain_seconds),
        slow_plugin_cores=table.get_positive("slow-plugin-cores", default_slow_plugin_cores()),
        pid_file=_path(base, table.get("pid-file", str)) if table.has("pid-file") else None,
        log_format=table.get_choice("log-format", LOG_FORMATS, SidecarConfig.log_format),
        tls=_tls(table, base),
        shared_state=_shared_state(table),
    )
    table.finish()
    return config


def load_config(path: Path) -> SidecarConfig:
    try:
        data = read_toml(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"no configuration file at {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    except TomlError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    try:
        return parse_config(data, path.resolve().parent)
    except TableError as exc:
        raise ConfigError(f"{path}: {exc}") from None
