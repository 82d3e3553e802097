"""A built plugin as a Kubernetes ConfigMap, for the sidecar to load without an image of its
own: its manifest.toml and its .wasm, which the Deployment mounts as the plugin's directory,
/etc/hyperfilter/plugins/NAME (deploy/k8s/deployment.yaml mounts http-rate-limit's):

    .venv/bin/hyperfilter plugin build plugins/examples/http-rate-limit
    .venv/bin/python -m deploy.k8s_plugin plugins/examples/http-rate-limit | kubectl apply -f -

A ConfigMap holds at most 1 MiB, so this suits core modules (a few KiB for the C examples);
a componentize-py component (about 18 MiB) goes into the image instead (Dockerfile)."""

from __future__ import annotations

import argparse
import base64
import json
import sys
from pathlib import Path

from vmm.manifest import MANIFEST_FILE, load_manifest

CONFIGMAP_LIMIT = 1 << 20  # Kubernetes refuses a larger ConfigMap (etcd's object limit)
NAME_PREFIX = "hyperfilter-plugin-"
MOUNT_DIR = Path("/etc/hyperfilter/plugins")


class TooLarge(Exception):
    """The plugin does not fit in a ConfigMap."""


def configmap_name(plugin: str) -> str:
    return f"{NAME_PREFIX}{plugin}"


def plugin_configmap(directory: Path) -> dict[str, object]:
    """The ConfigMap of the plugin in `directory` (its .wasm built)."""
    manifest = load_manifest(directory)
    configmap: dict[str, object] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": configmap_name(manifest.name),
                     "labels": {"app.kubernetes.io/part-of": "hyperfilter"}},
        "data": {MANIFEST_FILE: (directory / MANIFEST_FILE).read_text()},
        "binaryData": {manifest.wasm.name: base64.b64encode(manifest.wasm.read_bytes()).decode()},
    }
    size = len(json.dumps(configmap).encode())  # the .wasm as base64: a third larger
    if size > CONFIGMAP_LIMIT:
        raise TooLarge(f"{manifest.name}: {size} bytes as a ConfigMap, over the "
                       f"{CONFIGMAP_LIMIT} it may hold: build it into the image instead")
    return configmap


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", type=Path, help="a built plugin's directory")
    args = parser.parse_args()
    try:
        print(json.dumps(plugin_configmap(args.directory), indent=2))
    except TooLarge as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
