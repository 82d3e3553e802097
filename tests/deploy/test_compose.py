"""docker-compose.yml and deploy/compose/, checked without a container engine: against the
Compose Specification's JSON schema (the copy check-jsonschema ships, from the compose-spec
project, Apache-2.0), and against each other: the files they mount and build exist, and the
ports, socket paths, cluster endpoints and chains of Envoy's bootstrap agree with the
services and with the sidecar's configuration."""

from __future__ import annotations

import importlib.resources
import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType

import jsonschema
import pytest

from deploy import envoy_bootstrap
from sidecar.config import load_config
from tests.deploy.pod_files import (
    IMAGE_USER,
    ROOT,
    BootstrapView,
    Yaml,
    documents,
    in_repository,
    worker_sockets,
)

COMPOSE_FILE = ROOT / "docker-compose.yml"
KVM_OVERRIDE = ROOT / "deploy" / "compose" / "kvm.yml"
POD_SERVICES = ("hyperfilter", "redis", "app")  # in Envoy's network namespace
SIDECAR_CONFIG = Path("/etc/hyperfilter/sidecar.toml")


def compose_schema() -> Yaml:
    vendored = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    schema: Yaml = json.loads((vendored / "compose-spec.json").read_text())
    return schema


def compose(path: Path = COMPOSE_FILE) -> Yaml:
    (document,) = documents(path)
    return document


def services() -> Yaml:
    return compose()["services"]


def bootstrap() -> BootstrapView:
    (document,) = documents(envoy_bootstrap.COMPOSE_BOOTSTRAP)
    return BootstrapView.of(document)


def sidecar_config_path() -> Path:
    """The host file mounted where the sidecar's command reads its configuration."""
    sidecar = services()["hyperfilter"]
    command = sidecar["command"]
    assert Path(command[command.index("--config") + 1]) == SIDECAR_CONFIG
    return bind_mounts(sidecar)[SIDECAR_CONFIG]


def bind_mounts(service: Yaml) -> dict[Path, Path]:
    """Container path → host path of the service's bind mounts (short syntax)."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target, *_ = volume.split(":")
        if source.startswith((".", "/")):
            mounts[Path(target)] = (ROOT / source).resolve()
    return mounts


def named_volumes(service: Yaml) -> dict[str, Path]:
    """Volume name → where the service mounts it."""
    return {source: Path(target) for source, target, *_ in
            (volume.split(":") for volume in service.get("volumes", []))
            if not source.startswith((".", "/"))}


def load_client() -> ModuleType:
    spec = importlib.util.spec_from_file_location("load", ROOT / "deploy/compose/load.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("path", [COMPOSE_FILE, KVM_OVERRIDE], ids=lambda p: p.name)
def test_the_compose_files_follow_the_compose_specification(path: Path) -> None:
    validator = jsonschema.Draft202012Validator(compose_schema())
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
              for e in validator.iter_errors(compose(path))]
    assert errors == []


def test_the_schema_refuses_what_compose_refuses() -> None:
    """The check can fail: a misspelt key and a wrong type are caught."""
    validator = jsonschema.Draft202012Validator(compose_schema())
    broken = compose()
    broken["services"]["envoy"]["network"] = "host"
    broken["services"]["redis"]["ports"] = "7379"
    errors = list(validator.iter_errors(broken))
    assert any("'network' was unexpected" in error.message for error in errors)
    assert ["services", "redis", "ports"] in [list(error.absolute_path) for error in errors]


def test_every_file_mounted_or_built_exists() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    stages = set(re.findall(r"^FROM \S+ AS (\S+)$", dockerfile, re.MULTILINE))
    for document in (compose(), compose(KVM_OVERRIDE)):
        for name, service in document["services"].items():
            for source in bind_mounts(service).values():
                assert source.exists(), f"{name} mounts {source}, which is missing"
            for volume in named_volumes(service):
                assert volume in compose()["volumes"], f"{name}: undeclared volume {volume}"
            build = service.get("build")
            if build is not None:
                assert (ROOT / build["context"] / "Dockerfile").exists()
                assert build["target"] in stages, f"{name} builds {build['target']!r}"


def test_the_pod_shares_envoys_network_and_only_envoy_publishes() -> None:
    for name in POD_SERVICES:
        assert services()[name]["network_mode"] == "service:envoy"
        assert "ports" not in services()[name]
    published = {int(p.split(":")[0]): int(p.split(":")[1]) for p in services()["envoy"]["ports"]}
    listeners = {listener.port: listener for listener in bootstrap().listeners}
    assert published == {port: port for port in listeners}
    assert {listener.host for listener in listeners.values()} == {"0.0.0.0"}
    assert bootstrap().admin[0] == "127.0.0.1"  # the admin stays on the pod's loopback


def test_envoy_reaches_every_worker_of_the_sidecar_through_their_shared_volume() -> None:
    config = load_config(sidecar_config_path())
    assert bootstrap().sidecar_endpoints == worker_sockets(config)
    socket_dirs = {Path(s.removeprefix("unix:")).parent for s in worker_sockets(config)}
    assert config.pid_file is not None
    envoy, sidecar = named_volumes(services()["envoy"]), named_volumes(services()["hyperfilter"])
    shared = {volume: where for volume, where in envoy.items() if sidecar.get(volume) == where}
    assert set(shared.values()) == socket_dirs == {config.pid_file.parent}
    (volume,) = shared
    options = compose()["volumes"][volume]["driver_opts"]
    assert f"uid={IMAGE_USER}" in options["o"] and options["type"] == "tmpfs"
    assert services()["envoy"]["user"] == f"{IMAGE_USER}:{IMAGE_USER}"
    assert config.cache_dir in named_volumes(services()["hyperfilter"]).values()
    health = services()["hyperfilter"]["environment"]["HYPERFILTER_HEALTH_ADDRESS"]
    assert health.split() == worker_sockets(config)


def test_every_chain_envoy_names_is_the_sidecars_and_its_plugins_are_in_the_image() -> None:
    config = load_config(sidecar_config_path())
    assert sorted(listener.chain for listener in bootstrap().listeners) == sorted(config.chains)
    for entry in config.plugins.values():
        assert (in_repository(entry.path) / "manifest.toml").exists(), entry.path


def test_envoys_upstreams_are_the_pods_applications() -> None:
    def port_after(service: str, flag: str) -> int:
        command = services()[service]["command"]
        return int(command[command.index(flag) + 1])

    upstreams = {listener.chain: listener.upstream for listener in bootstrap().listeners}
    assert upstreams == {"redis": ("127.0.0.1", port_after("redis", "--port")),
                         "web": ("127.0.0.1", port_after("app", "http.server"))}
    for service, flag in (("redis", "--bind"), ("app", "--bind")):
        command = services()[service]["command"]
        assert command[command.index(flag) + 1] == "127.0.0.1"


def test_the_client_uses_envoys_listeners_and_the_sidecars_configuration() -> None:
    client = services()["client"]
    assert "network_mode" not in client  # outside the pod
    mounts = bind_mounts(client)
    script, *args = client["entrypoint"][1:] + client["command"]
    assert mounts[Path(script)] == ROOT / "deploy" / "compose" / "load.py"
    assert mounts[Path(args[args.index("--config") + 1])] == sidecar_config_path()
    assert args[args.index("--host") + 1] == "envoy"
    ports = {listener.chain: listener.port for listener in bootstrap().listeners}
    load = load_client()
    assert (ports["redis"], ports["web"]) == (load.REDIS_PORT, load.HTTP_PORT)
    assert client["depends_on"]["hyperfilter"] == {"condition": "service_healthy"}


def test_the_kvm_override_passes_the_device_to_the_sidecar_built_with_its_toolchain() -> None:
    sidecar = compose(KVM_OVERRIDE)["services"]["hyperfilter"]
    assert sidecar["devices"] == ["/dev/kvm:/dev/kvm"]
    assert sidecar["build"]["target"] == "kvm"
    assert compose(KVM_OVERRIDE)["services"]["client"]["image"] == sidecar["image"]
    tiers = {entry.tier for entry in load_config(sidecar_config_path()).plugins.values()}
    assert "kvm" in tiers
