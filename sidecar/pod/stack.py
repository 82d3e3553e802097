"""The pod's processes inside its namespace: Redis and the HTTP application on the pod's
loopback, the sidecar (two workers, Unix sockets) and the real Envoy, whose listeners alone
bind the pod's address. Also the sidecar's configuration before and after the mid-way reload,
which brings in a hostile plugin, and the scraping of the sidecar's metrics (every worker's,
summed, on one endpoint)."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from sidecar.envoy import Envoy, HttpListener, TcpListener, Upstream, render_bootstrap
from sidecar.metrics import FLUSH_SECONDS
from sidecar.plugin.files import PLUGINS_DIR
from sidecar.pod.netns import PodNetwork
from sidecar.pod.services import Service
from vmm.manifest import load_manifest

# The pod has a network namespace of its own: fixed ports clash with nothing.
REDIS_PORT = 6379
ENVOY_REDIS_PORT = 7379
ENVOY_HTTP_PORT = 8000
ADMIN_PORT = 9901
METRICS_PORT = 9464  # the sidecar's one endpoint, every worker's figures summed
WORKERS = 2
# The first start compiles every plugin (then cached on disk); later ones take seconds.
START_SECONDS = 180.0
RELOAD_SECONDS = 60.0

HOSTILE_PLUGIN = PLUGINS_DIR.parent / "tests" / "plugins" / "faulty"
RATE_LIMIT = 40  # requests per window and user, counted in the sidecar's shared-state
RATE_WINDOW_MS = 5000
# alice: the steady traffic; bob: a burst past the rate limit; mallory: the hostile requests.
API_KEYS = {"alice": "k-alice-123", "bob": "k-bob-456", "mallory": "k-mallory-789"}
HTTP_AUTH_KEYS = ",".join(f"{key}:{user}" for user, key in API_KEYS.items())


# Core modules run in a micro-VM per stream where /dev/kvm exists; the Python component
# (http-auth) on wasmtime.
ON_KVM = 'tier = "kvm"\nfallback-tier = "wasmtime"\n'


@dataclass(frozen=True)
class PluginSpec:
    path: Path
    table: str = ""  # the rest of its entry in the sidecar's configuration, TOML


PLUGINS = {
    "redis-firewall": PluginSpec(PLUGINS_DIR / "examples" / "redis-firewall", ON_KVM),
    "http-auth": PluginSpec(PLUGINS_DIR / "examples" / "http-auth",
                            f'config = {{ keys = "{HTTP_AUTH_KEYS}" }}\n'),
    "http-rate-limit": PluginSpec(
        PLUGINS_DIR / "examples" / "http-rate-limit",
        f'{ON_KVM}config = {{ limit = {RATE_LIMIT}, window-ms = {RATE_WINDOW_MS}, '
        'key-header = "x-auth-user" }\n'),
    # Misbehaves on demand (see its manifest): loops, traps, eats its memory.
    "hostile": PluginSpec(HOSTILE_PLUGIN, ON_KVM),
}
CHAINS = {"redis": ("redis-firewall",), "web": ("http-auth", "http-rate-limit")}
CHAINS_WITH_HOSTILE = {chain: (*plugins, "hostile") for chain, plugins in CHAINS.items()}
PROTOCOL_OF_CHAIN = {"redis": "tcp", "web": "http"}


def sidecar_config(workdir: Path, chains: Mapping[str, tuple[str, ...]]) -> str:
    """The sidecar's TOML: workers on Unix sockets in `workdir`, metrics on the pod's
    loopback, the plugins the chains use."""
    quoted = json.dumps  # a JSON string is a TOML string
    used = dict.fromkeys(name for plugins in chains.values() for name in plugins)
    lines = [f"listen = {quoted('unix:' + str(workdir / 'sidecar.sock'))}",
             f"workers = {WORKERS}", f'metrics = "127.0.0.1:{METRICS_PORT}"',
             f"pid-file = {quoted(str(workdir / 'sidecar.pid'))}",
             "drain-seconds = 1", 'default-failure-policy = "fail-closed"', ""]
    for name in used:
        spec = PLUGINS[name]
        lines += [f"[plugins.{name}]", f"path = {quoted(str(spec.path))}", spec.table]
    lines += ["[chains]", *(f"{chain} = {json.dumps(list(plugins))}"
                            for chain, plugins in chains.items())]
    return "\n".join(lines) + "\n"


def sandboxes_per_stream(chains: Mapping[str, tuple[str, ...]]) -> dict[str, int]:
    """A stream of each chain gets a sandbox for each of its plugins handling the protocol."""
    return {chain: sum(load_manifest(PLUGINS[name].path).handles(PROTOCOL_OF_CHAIN[chain])
                       for name in plugins)
            for chain, plugins in chains.items()}


def hyperfilter_command() -> str:
    """This environment's `hyperfilter` (its name is what `hyperfilter reload` checks)."""
    found = shutil.which("hyperfilter", path=str(Path(sys.executable).parent))
    if found is None:
        raise FileNotFoundError(f"no hyperfilter command beside {sys.executable}")
    return found


@dataclass(frozen=True)
class SidecarMetrics:
    """The sidecar's metrics: (sample name, labels) → value."""

    values: Mapping[tuple[str, frozenset[tuple[str, str]]], float]

    def total(self, name: str, **labels: str) -> float:
        wanted = set(labels.items())
        return sum(value for (sample, have), value in self.values.items()
                   if sample == name and wanted <= have)

    def labels(self, name: str, key: str, **where: str) -> set[str]:
        """The values label `key` takes in the samples `name` that have the labels `where`."""
        wanted = set(where.items())
        return {dict(have)[key] for (sample, have) in self.values
                if sample == name and wanted <= have and key in dict(have)}


def parse_metrics(text: str) -> SidecarMetrics:
    return SidecarMetrics({
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text) for sample in family.samples})


class Pod:
    """Started in dependency order by `start`; `stop` ends whatever was started, in reverse,
    and may be called at any point (also after a failed start)."""

    def __init__(self, network: PodNetwork, workdir: Path) -> None:
        self.network = network
        self.workdir = workdir
        self.config_path = workdir / "sidecar.toml"
        self.hyperfilter = hyperfilter_command()
        self.services: list[Service] = []
        self.envoy: Envoy | None = None
        self.app_port = 0
        self.metrics = ""  # host:port
        self.worker_pids: list[int] = []

    def _service(self, name: str, args: list[str]) -> Service:
        service = Service(name, args, self.network.pod, self.workdir / f"{name}.log")
        self.services.append(service)
        return service

    @property
    def sidecar(self) -> Service:
        return next(s for s in self.services if s.name == "sidecar")

    def start(self, say: Callable[[str], None]) -> None:
        redis = self._service("redis", [
            "redis-server", "--bind", "127.0.0.1", "--port", str(REDIS_PORT), "--save", "",
            "--appendonly", "no", "--dir", str(self.workdir), "--daemonize", "no"])
        redis.wait_for(r"Ready to accept connections", 30)
        say(f"redis-server on the pod's 127.0.0.1:{REDIS_PORT}")
        app = self._service("app", [sys.executable, "-m", "sidecar.pod.http_app"])
        self.app_port = int(app.wait_for(r"listening on 127\.0\.0\.1:(\d+)", 30)[0].group(1))
        say(f"HTTP application on the pod's 127.0.0.1:{self.app_port}")
        self.config_path.write_text(sidecar_config(self.workdir, CHAINS))
        sidecar = self._service("sidecar", [self.hyperfilter, "serve", "--config",
                                            str(self.config_path)])
        workers = sidecar.wait_for(r"worker (\d+) \(pid (\d+)\) listening on (\S+)",
                                   START_SECONDS, count=WORKERS)
        self.worker_pids = [int(found.group(2)) for found in workers]
        self.metrics = sidecar.wait_for(r"metrics on http://(\S+)/metrics", START_SECONDS)[
            0].group(1)
        sockets = [found.group(3) for found in workers]
        say(f"hyperfilter serve: {WORKERS} workers on {', '.join(sockets)}")
        bootstrap = render_bootstrap(sockets, [
            TcpListener("redis", "redis", Upstream("127.0.0.1", REDIS_PORT),
                        port=ENVOY_REDIS_PORT, listen_host=self.network.pod_ip),
            HttpListener("web", "web", Upstream("127.0.0.1", self.app_port),
                         port=ENVOY_HTTP_PORT, listen_host=self.network.pod_ip),
        ], admin_port=ADMIN_PORT)
        self.envoy = Envoy(bootstrap)  # stopped by `stop` from here on, even half started
        self.network.pod.call(self.envoy.start)
        say(f"Envoy: Redis on {self.network.pod_ip}:{ENVOY_REDIS_PORT} (chain redis), HTTP on "
            f"{self.network.pod_ip}:{ENVOY_HTTP_PORT} (chain web), admin on the pod's "
            f"127.0.0.1:{ADMIN_PORT}")

    def reload_with_hostile_plugin(self) -> None:
        """The configuration swapped for one whose chains end with the hostile plugin, then
        `hyperfilter reload`; returns once every worker has reloaded."""
        done_before = len(self._reloads())
        self.config_path.write_text(sidecar_config(self.workdir, CHAINS_WITH_HOSTILE))
        asked = subprocess.run([self.hyperfilter, "reload", "--config", str(self.config_path)],
                               capture_output=True, text=True, timeout=30, check=False)
        if asked.returncode != 0:
            raise RuntimeError(f"hyperfilter reload: {asked.stdout}{asked.stderr}".strip())
        self.sidecar.wait_for(r"w\d+ hyperfilter: (reloaded|reload failed)", RELOAD_SECONDS,
                              count=done_before + WORKERS)
        failed = [line for line in self._reloads() if "failed" in line]
        if failed:
            raise RuntimeError(f"the reload failed: {failed[0]}")

    def _reloads(self) -> list[str]:
        return [line for line in self.sidecar.log().splitlines()
                if " hyperfilter: reloaded" in line or " hyperfilter: reload failed" in line]

    def restarts(self) -> int:
        return self.sidecar.log().count("starting it again")

    def scrape(self) -> SidecarMetrics:
        """The sidecar's metrics, read from inside the pod once the workers have handed in
        what they counted until now (every FLUSH_SECONDS)."""
        time.sleep(FLUSH_SECONDS + 0.1)

        def read() -> SidecarMetrics:
            with urllib.request.urlopen(f"http://{self.metrics}/metrics", timeout=5) as answer:
                return parse_metrics(answer.read().decode())
        return self.network.pod.call(read)

    def stop(self) -> None:
        """Everything started, stopped; every log left in the work directory."""
        if self.envoy is not None:
            if self.envoy.log_path.exists():
                shutil.copy(self.envoy.log_path, self.workdir / "envoy.log")
            self.envoy.stop()
            self.envoy = None
        for service in reversed(self.services):
            # the sidecar stops at once on SIGINT; the others end on SIGTERM
            service.stop(signal.SIGINT if service.name == "sidecar" else signal.SIGTERM)
        self.services.clear()
