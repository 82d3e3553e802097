"""C: a core module built with zig cc against the C SDK (plugins/sdk/c)."""

from __future__ import annotations

import sys
from pathlib import Path

from sidecar.plugin.files import SDK_DIR
from sidecar.plugin.languages import Language
from sidecar.plugin.toolchain import run
from vmm.manifest import Manifest

C_SDK = SDK_DIR / "c"
# What every core module is compiled with: freestanding, no libc, the C SDK's input area
# exported by address.
CORE_MODULE_FLAGS = ("--target=wasm32-freestanding", "-O2", "-nostdlib", "-ffreestanding",
                     "-mbulk-memory", "-Wl,--no-entry", "-Wl,--strip-debug",
                     "-Wl,--export=hyperfilter_input")


def _claims(directory: Path) -> bool:
    return any(directory.glob("*.c"))


def _sources(directory: Path) -> list[Path]:
    return [*directory.glob("*.c"), *directory.glob("*.h"), *C_SDK.iterdir()]


def _build(directory: Path, manifest: Manifest) -> None:
    run([sys.executable, "-m", "ziglang", "cc", *CORE_MODULE_FLAGS, f"-I{C_SDK}",
         *map(str, sorted(directory.glob("*.c"))), str(C_SDK / "hyperfilter.c"),
         "-o", str(manifest.wasm)], f"zig cc for {manifest.name}")


LANGUAGE = Language("c", _claims, _sources, _build)
