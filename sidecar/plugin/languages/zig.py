"""Zig: a core module, plugin.zig compiled with the Zig SDK (plugins/sdk/zig) by the Zig of
PyPI `ziglang`, then linked with the C SDK, which does the canonical-ABI lowering."""

from __future__ import annotations

import tempfile
from pathlib import Path

from sidecar.plugin.files import SDK_DIR
from sidecar.plugin.languages import Language
from sidecar.plugin.languages.linking import c_sdk_files, link_with_c_sdk, zig
from sidecar.plugin.toolchain import run
from vmm.manifest import Manifest

ZIG_SDK = SDK_DIR / "zig"
ROOT_FILE = "plugin.zig"
# Safety checks stay on: an out-of-bounds index or an overflow traps (the plugin's failure
# policy applies) instead of reading the wrong bytes.
OPTIMIZE = "ReleaseSafe"


def _claims(directory: Path) -> bool:
    return (directory / ROOT_FILE).exists()


def _sources(directory: Path) -> list[Path]:
    return [*directory.glob("*.zig"), *ZIG_SDK.glob("*.zig"), *c_sdk_files()]


def _build(directory: Path, manifest: Manifest) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        obj = Path(tmp) / "plugin.o"
        # Three modules: exports.zig, the root, sees the plugin and the SDK; the plugin sees
        # the SDK as `hyperfilter`.
        run([*zig(), "build-obj", "-target", "wasm32-freestanding", "-O", OPTIMIZE,
             "--dep", "hyperfilter", "--dep", "plugin", f"-Mroot={ZIG_SDK / 'exports.zig'}",
             "--dep", "hyperfilter", f"-Mplugin={(directory / ROOT_FILE).resolve()}",
             f"-Mhyperfilter={ZIG_SDK / 'hyperfilter.zig'}", f"-femit-bin={obj}"],
            f"zig build-obj for {manifest.name}", cwd=Path(tmp))
        link_with_c_sdk([obj], manifest)


LANGUAGE = Language("zig", _claims, _sources, _build)
