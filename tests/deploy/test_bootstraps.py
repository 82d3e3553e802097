"""The Envoy bootstraps of both pods: committed as the project's templates render them now,
and loaded by the real Envoy (`--mode validate`: every field checked, nothing bound)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from deploy import envoy_bootstrap
from sidecar.envoy import envoy_binary
from tests.deploy.pod_files import documents


@pytest.mark.parametrize("path", envoy_bootstrap.RENDERED, ids=lambda p: p.name)
def test_the_committed_bootstrap_is_what_the_templates_render_now(path: Path) -> None:
    assert path.read_text() == envoy_bootstrap.RENDERED[path](), \
        f"{path} is stale: run python -m deploy.envoy_bootstrap"


@pytest.mark.integration
@pytest.mark.parametrize("path", envoy_bootstrap.RENDERED, ids=lambda p: p.name)
def test_envoy_accepts_the_bootstrap(path: Path, tmp_path: Path) -> None:
    (document,) = documents(path)
    if document.get("kind") == "ConfigMap":  # the bootstrap is its envoy.yaml
        path = tmp_path / "envoy.yaml"
        path.write_text(document["data"]["envoy.yaml"])
    checked = subprocess.run([str(envoy_binary()), "--mode", "validate", "-c", str(path)],
                             capture_output=True, text=True, timeout=60, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"configuration '{path}' OK" in checked.stdout
