"""What the deployment files say, read the way their tools read them: YAML documents, the
Envoy bootstrap's listeners, upstreams and sidecar endpoints, the sidecar's worker sockets."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

from sidecar.config import SidecarConfig
from sidecar.workers import worker_address

ROOT = Path(__file__).resolve().parents[2]
IMAGE_APP_DIR = Path("/app")  # where the Dockerfile puts the repository's files
IMAGE_USER = 10001  # the Dockerfile's USER, whom the sidecar's sockets belong to

Yaml = dict[str, Any]


def documents(path: Path) -> list[Yaml]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


@dataclass(frozen=True)
class ListenerView:
    name: str
    host: str  # where it binds
    port: int
    chain: str
    upstream: tuple[str, int]  # the cluster it proxies or routes to: its one endpoint


def _socket_address(endpoint: Yaml) -> Yaml:
    return endpoint["endpoint"]["address"]


def _filters(listener: Yaml) -> Iterator[Yaml]:
    for chain in listener["filter_chains"]:
        for network_filter in chain["filters"]:
            yield network_filter
            yield from network_filter["typed_config"].get("http_filters", [])


def _upstream_cluster(listener: Yaml) -> str:
    for found in _filters(listener):
        config = found["typed_config"]
        if "cluster" in config:  # tcp_proxy
            return str(config["cluster"])
        if "route_config" in config:  # the HTTP connection manager's one route
            route = config["route_config"]["virtual_hosts"][0]["routes"][0]["route"]
            return str(route["cluster"])
    raise AssertionError(f"listener {listener['name']} proxies to no cluster")


def _chain(listener: Yaml) -> str:
    for found in _filters(listener):
        service = found["typed_config"].get("grpc_service")
        if service is not None:
            assert service["envoy_grpc"]["cluster_name"] == "hyperfilter"
            metadata = {m["key"]: m["value"] for m in service["initial_metadata"]}
            return str(metadata["x-hyperfilter-chain"])
    raise AssertionError(f"listener {listener['name']} has no ext_proc filter")


@dataclass(frozen=True)
class BootstrapView:
    listeners: list[ListenerView]
    sidecar_endpoints: list[str]  # as the sidecar writes them: unix:/path or host:port
    admin: tuple[str, int]

    @classmethod
    def of(cls, bootstrap: Yaml) -> BootstrapView:
        resources = bootstrap["static_resources"]
        clusters = {c["name"]: c for c in resources["clusters"]}
        endpoints = {name: [_socket_address(e) for group in c["load_assignment"]["endpoints"]
                            for e in group["lb_endpoints"]]
                     for name, c in clusters.items()}

        def upstream(name: str) -> tuple[str, int]:
            (address,) = endpoints[name]
            return address["socket_address"]["address"], address["socket_address"]["port_value"]

        listeners = [ListenerView(
            listener["name"], listener["address"]["socket_address"]["address"],
            listener["address"]["socket_address"]["port_value"], _chain(listener),
            upstream(_upstream_cluster(listener)))
            for listener in resources["listeners"]]
        sidecar = [f"unix:{a['pipe']['path']}" if "pipe" in a else
                   f"{a['socket_address']['address']}:{a['socket_address']['port_value']}"
                   for a in endpoints["hyperfilter"]]
        admin = bootstrap["admin"]["address"]["socket_address"]
        return cls(listeners, sidecar, (admin["address"], admin["port_value"]))


def worker_sockets(config: SidecarConfig) -> list[str]:
    """Where each of the sidecar's workers listens."""
    return [worker_address(config.listen, i, config.workers) for i in range(config.workers)]


def in_repository(image_path: Path) -> Path:
    """The repository's file that the image holds at `image_path` (under /app)."""
    return ROOT / image_path.relative_to(IMAGE_APP_DIR)
