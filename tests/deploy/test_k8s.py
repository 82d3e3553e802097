"""deploy/k8s/, validated offline against Kubernetes' own schemas (kubernetes-validate, strict:
no unknown fields), the plugin ConfigMaps `python -m deploy.k8s_plugin` makes and the kvm
patch included; and cross-checked: what the Deployment mounts exists, and Envoy's bootstrap,
the sidecar's configuration, the probes and the Services name the same sockets, ports,
chains and plugins."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml  # type: ignore[import-untyped]

from deploy import k8s_plugin
from sidecar.config import MEMORY_PER_SANDBOX, MEMORY_PER_STREAM, SidecarConfig, parse_config
from tests.conftest import plugin_dir
from tests.deploy.pod_files import (
    ROOT,
    BootstrapView,
    Yaml,
    documents,
    in_repository,
    worker_sockets,
)

K8S_DIR = ROOT / "deploy" / "k8s"
MANIFESTS = sorted(K8S_DIR.glob("*.yaml"))
KVM_PATCH = K8S_DIR / "patches" / "kvm.yaml"
# The oldest Kubernetes still commonly run, and the newest kubernetes-validate knows.
VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
QUANTITY = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}


def resources() -> dict[tuple[str, str], Yaml]:
    return {(doc["kind"], doc["metadata"]["name"]): doc
            for path in MANIFESTS for doc in documents(path)}


def deployment() -> Yaml:
    return resources()["Deployment", "hyperfilter-demo"]


def containers(pod: Yaml | None = None) -> dict[str, Yaml]:
    spec = (pod or deployment())["spec"]["template"]["spec"]
    return {c["name"]: c for c in spec["containers"]}


def mounts(container: Yaml) -> dict[str, Path]:
    """Volume name → where the container mounts it."""
    return {m["name"]: Path(m["mountPath"]) for m in container.get("volumeMounts", [])}


def volumes() -> dict[str, Yaml]:
    return {v["name"]: v for v in deployment()["spec"]["template"]["spec"]["volumes"]}


def configmap_file(container: str, path: Path) -> str:
    """The text the container reads at `path`, from the ConfigMap mounted above it."""
    for volume, where in mounts(containers()[container]).items():
        if path.parent == where and "configMap" in volumes()[volume]:
            name = volumes()[volume]["configMap"]["name"]
            text: str = resources()["ConfigMap", name]["data"][path.name]
            return text
    raise AssertionError(f"{container} mounts no ConfigMap holding {path}")


def sidecar_config() -> SidecarConfig:
    args = containers()["hyperfilter"]["args"]
    path = Path(args[args.index("--config") + 1])
    return parse_config(tomllib.loads(configmap_file("hyperfilter", path)), path.parent)


def bootstrap() -> BootstrapView:
    command = containers()["envoy"]["command"]
    path = Path(command[command.index("-c") + 1])
    return BootstrapView.of(yaml.safe_load(configmap_file("envoy", path)))


def strategic_merge(base: Any, patch: Any) -> Any:
    """kubectl patch's strategic merge, as far as the patch uses it: maps merged key by key,
    the containers list merged by name."""
    if isinstance(base, Mapping) and isinstance(patch, Mapping):
        return {**base, **{k: strategic_merge(base.get(k), v) for k, v in patch.items()}}
    if isinstance(base, list) and isinstance(patch, list):
        by_name = {item["name"]: item for item in base}
        return [strategic_merge(item, next((p for p in patch if p["name"] == item["name"]), {}))
                for item in base] + [p for p in patch if p["name"] not in by_name]
    return patch


def mounted_plugin_configmaps() -> dict[str, Yaml]:
    """The plugin ConfigMaps the Deployment mounts, made from the built example plugins."""
    made = {}
    for volume in volumes().values():
        name = volume.get("configMap", {}).get("name", "")
        if name.startswith(k8s_plugin.NAME_PREFIX):
            made[name] = k8s_plugin.plugin_configmap(
                plugin_dir(name.removeprefix(k8s_plugin.NAME_PREFIX)))
    return made


def bytes_of(quantity: str) -> int:
    return int(quantity[:-2]) * QUANTITY[quantity[-2:]]


def validate(resource: Yaml, version: str) -> None:
    kubernetes_validate.validate(resource, version, strict=True)


@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_is_valid_kubernetes(version: str) -> None:
    for resource in resources().values():
        validate(resource, version)
    for configmap in mounted_plugin_configmaps().values():
        validate(configmap, version)
    patched = strategic_merge(deployment(), documents(KVM_PATCH)[0])
    validate(patched, version)
    limits = containers(patched)["hyperfilter"]["resources"]["limits"]
    assert limits["devices.kubevirt.io/kvm"] == "1" and limits["memory"] == "1Gi"


def test_the_validator_refuses_what_kubernetes_refuses() -> None:
    broken = deployment()
    broken["spec"]["template"]["spec"]["containers"][0]["volumeMount"] = []
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(broken, VERSIONS[0])


def test_what_the_pod_mounts_exists() -> None:
    made = mounted_plugin_configmaps()
    for volume in volumes().values():
        if "configMap" in volume:
            name = volume["configMap"]["name"]
            assert ("ConfigMap", name) in resources() or name in made, name
    for configmap in made.values():
        assert len(json.dumps(configmap)) < k8s_plugin.CONFIGMAP_LIMIT
    assert set().union(*(mounts(c) for c in containers().values())) == set(volumes())


def test_envoy_reaches_every_worker_through_the_volume_they_share() -> None:
    config = sidecar_config()
    sockets = worker_sockets(config)
    assert bootstrap().sidecar_endpoints == sockets
    socket_dir = {Path(s.removeprefix("unix:")).parent for s in sockets}
    shared = {v for v, where in mounts(containers()["envoy"]).items()
              if mounts(containers()["hyperfilter"]).get(v) == where}
    assert {mounts(containers()["envoy"])[v] for v in shared} == socket_dir
    assert all("emptyDir" in volumes()[v] for v in shared)
    env = {e["name"]: e["value"] for e in containers()["hyperfilter"]["env"]}
    assert env["HYPERFILTER_HEALTH_ADDRESS"].split() == sockets
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert containers()["hyperfilter"][probe]["exec"]["command"] == ["hyperfilter", "health"]
    assert config.cache_dir in mounts(containers()["hyperfilter"]).values()


def test_envoys_listener_is_the_services_and_its_upstream_the_application() -> None:
    (listener,) = bootstrap().listeners
    (port,) = containers()["envoy"]["ports"]
    assert (listener.host, listener.port) == ("0.0.0.0", port["containerPort"])
    (service_port,) = resources()["Service", "hyperfilter-demo"]["spec"]["ports"]
    assert service_port["targetPort"] == port["name"]
    command = containers()["app"]["command"]
    assert listener.upstream == (command[command.index("--bind") + 1],
                                 int(command[command.index("http.server") + 1]))
    assert listener.chain in sidecar_config().chains
    assert bootstrap().admin[0] == "127.0.0.1"


def test_the_sidecars_plugins_are_in_the_image_or_mounted_from_their_configmap() -> None:
    sidecar_mounts = mounts(containers()["hyperfilter"])
    for entry in sidecar_config().plugins.values():
        mounted = [v for v, where in sidecar_mounts.items() if where == entry.path]
        if mounted:
            (volume,) = mounted
            assert volumes()[volume]["configMap"]["name"] == k8s_plugin.configmap_name(
                entry.name)
            assert entry.path.parent == k8s_plugin.MOUNT_DIR
        else:
            assert (in_repository(entry.path) / "manifest.toml").exists(), entry.path


def test_shared_state_is_the_redis_service_every_replica_reaches() -> None:
    state = sidecar_config().shared_state
    assert state.backend == "redis" and state.url is not None
    host, port = state.url.removeprefix("redis://").split("/")[0].split(":")
    (service_port,) = resources()["Service", host]["spec"]["ports"]
    assert service_port["port"] == int(port)
    policy = resources()["NetworkPolicy", host]["spec"]
    (allowed,) = policy["ingress"][0]["from"]
    assert allowed["podSelector"]["matchLabels"] == deployment()["spec"]["selector"]["matchLabels"]
    assert deployment()["spec"]["replicas"] > 1


def test_the_sidecars_bounds_fit_its_memory_limit() -> None:
    config = sidecar_config()
    limit = bytes_of(containers()["hyperfilter"]["resources"]["limits"]["memory"])
    assert config.workers * config.max_sandboxes * MEMORY_PER_SANDBOX <= limit
    assert config.workers * config.max_streams * MEMORY_PER_STREAM <= limit
    assert config.slow_plugin_cores < int(containers()["hyperfilter"]["resources"]["limits"]["cpu"])


def test_a_plugin_too_large_for_a_configmap_is_refused() -> None:
    with pytest.raises(k8s_plugin.TooLarge, match=r"http-auth: .* build it into the image"):
        k8s_plugin.plugin_configmap(plugin_dir("http-auth"))
