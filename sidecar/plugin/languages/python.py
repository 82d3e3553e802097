"""Python: a component built with componentize-py against the plugin's own world."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from sidecar.plugin.files import SDK_DIR, WIT_FILE
from sidecar.plugin.languages import Language
from sidecar.plugin.toolchain import run, tool
from sidecar.plugin.world import plugin_world
from vmm.manifest import Manifest

PYTHON_SDK = SDK_DIR / "python"


def _claims(directory: Path) -> bool:
    return (directory / "app.py").exists()


def _sources(directory: Path) -> list[Path]:
    return [*directory.glob("*.py"), *PYTHON_SDK.glob("*.py"), WIT_FILE]


def _build(directory: Path, manifest: Manifest) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        wit = Path(tmp) / "wit"
        (wit / "deps" / "hyperfilter").mkdir(parents=True)
        shutil.copy(WIT_FILE, wit / "deps" / "hyperfilter" / WIT_FILE.name)
        (wit / "world.wit").write_text(plugin_world(manifest))
        run([tool("componentize-py"), "--quiet", "-d", str(wit), "-w", "plugin",
             "componentize", "app", "-p", str(directory), "-p", str(PYTHON_SDK),
             "-o", str(manifest.wasm)], f"componentize-py for {manifest.name}")


LANGUAGE = Language("python", _claims, _sources, _build)
