"""Rust: a core module, the plugin crate (lib.rs, `#![no_std]`) and the Rust SDK
(plugins/sdk/rust) compiled by rustc for wasm32-unknown-unknown, no cargo and no crates, then
linked with the C SDK, which does the canonical-ABI lowering.

Any rustc with that target will do: $RUSTC, the one on PATH, then Debian's (/usr/bin/rustc,
1.63 with libstd-rust-dev-wasm32), which a rustup install earlier on PATH may hide.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from sidecar.plugin.files import SDK_DIR
from sidecar.plugin.languages import Language
from sidecar.plugin.languages.linking import c_sdk_files, link_with_c_sdk
from sidecar.plugin.toolchain import ToolchainMissing, run
from vmm.manifest import Manifest

RUST_SDK = SDK_DIR / "rust"
CRATE_ROOT = "lib.rs"
TARGET = "wasm32-unknown-unknown"
DEBIAN_RUSTC = "/usr/bin/rustc"
INSTALL_HINT = ("apt-get install rustc libstd-rust-dev-wasm32, or with rustup: rustup target "
                f"add {TARGET}")
# Overflow checks stay on: an overflow traps (the plugin's failure policy applies) instead
# of wrapping into a wrong length.
RUSTC_FLAGS = ("--edition", "2021", "--target", TARGET, "-C", "opt-level=2", "-C", "panic=abort",
               "-C", "overflow-checks=on", "-C", "codegen-units=1")


def _claims(directory: Path) -> bool:
    return (directory / CRATE_ROOT).exists()


def _sources(directory: Path) -> list[Path]:
    return [*directory.glob("*.rs"), *RUST_SDK.glob("*.rs"), *c_sdk_files()]


def _has_target(rustc: str) -> bool:
    result = subprocess.run([rustc, "--print", "target-libdir", "--target", TARGET],
                            capture_output=True, text=True, check=False)
    return result.returncode == 0 and any(Path(result.stdout.strip()).glob("libcore-*.rlib"))


def find_rustc() -> str:
    """The first rustc that can build for TARGET; ToolchainMissing naming the packages
    otherwise."""
    candidates = [os.environ.get("RUSTC"), shutil.which("rustc"), DEBIAN_RUSTC]
    lacking = []
    for rustc in dict.fromkeys(c for c in candidates if c and shutil.which(c)):
        if _has_target(rustc):
            return rustc
        lacking.append(rustc)
    found = f" ({', '.join(lacking)} lack{'s' if len(lacking) == 1 else ''} it)" if lacking else ""
    raise ToolchainMissing(f"no rustc with the {TARGET} target is installed{found}: {INSTALL_HINT}")


def _build(directory: Path, manifest: Manifest) -> None:
    rustc = find_rustc()
    version = subprocess.run([rustc, "--version"], capture_output=True, text=True,
                             check=False).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)

        def compile_crate(what: str, *args: str) -> None:
            run([rustc, *RUSTC_FLAGS, *args], f"{version} ({rustc}) for {what}", cwd=out)

        sdk = out / "libhyperfilter.rlib"
        compile_crate("the Rust SDK", "--crate-type", "rlib", "--crate-name", "hyperfilter",
                      "-o", str(sdk), str(RUST_SDK / CRATE_ROOT))
        # The crate's own object goes to the linker as an object, so that its hooks replace
        # the C SDK's weak defaults (from an archive they would never be pulled in); the
        # archive brings what it uses of the SDK, core and compiler_builtins.
        compile_crate(manifest.name, "--crate-type", "staticlib", "--crate-name", "plugin",
                      "--extern", f"hyperfilter={sdk}", "--emit=obj,link", "--out-dir", str(out),
                      str((directory / CRATE_ROOT).resolve()))
        link_with_c_sdk([out / "plugin.o", out / "libplugin.a"], manifest)


LANGUAGE = Language("rust", _claims, _sources, _build)
