"""Linking a core module: a language's sources or objects with the C SDK, which does the
canonical-ABI lowering for every language that builds core modules on it (C, Zig, Rust), by
zig cc's wasm-ld."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from sidecar.plugin.files import SDK_DIR
from sidecar.plugin.toolchain import ToolchainMissing, run
from vmm.manifest import Manifest

C_SDK = SDK_DIR / "c"
# What every core module is compiled with: freestanding, no libc, the C SDK's input area
# exported by address.
CORE_MODULE_FLAGS = ("--target=wasm32-freestanding", "-O2", "-nostdlib", "-ffreestanding",
                     "-mbulk-memory", "-Wl,--no-entry", "-Wl,--strip-debug",
                     "-Wl,--export=hyperfilter_input")


def zig() -> list[str]:
    """The command of PyPI `ziglang`'s Zig; ToolchainMissing naming the package otherwise."""
    if importlib.util.find_spec("ziglang") is None:
        raise ToolchainMissing("zig is not installed (pip install 'hyperfilter[plugins]', which "
                         "brings PyPI ziglang)")
    return [sys.executable, "-m", "ziglang"]


def c_sdk_files() -> list[Path]:
    """What a build linked with the C SDK depends on."""
    return sorted(C_SDK.iterdir())


def link_with_c_sdk(inputs: list[Path], manifest: Manifest) -> None:
    """Write manifest.wasm from `inputs` (C sources, objects, archives) and the C SDK."""
    run([*zig(), "cc", *CORE_MODULE_FLAGS, f"-I{C_SDK}", *map(str, inputs),
         str(C_SDK / "hyperfilter.c"), "-o", str(manifest.wasm)],
        f"zig cc for {manifest.name}")
