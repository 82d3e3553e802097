"""`hyperfilter plugin build`: compile a plugin directory's sources into its .wasm.

The language is told by the sources: `app.py` (Python, as a component with componentize-py)
or `*.c` (C, as a core module with zig cc). A Python plugin's world is generated from its
manifest: the `filter` world plus exactly the granted capability interfaces, so the component
imports nothing the manifest does not grant. Builds are skipped when the .wasm is newer than
every input.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from vmm.capabilities import interface_id
from vmm.manifest import MANIFEST_FILE, Manifest, load_manifest

PLUGINS_DIR = Path(__file__).resolve().parent.parent / "plugins"
WIT_FILE = PLUGINS_DIR / "wit" / "hyperfilter.wit"
C_SDK = PLUGINS_DIR / "sdk" / "c"
PYTHON_SDK = PLUGINS_DIR / "sdk" / "python"
FILTER_WORLD = interface_id("filter")


class BuildError(Exception):
    """The plugin's sources did not build; the message has the toolchain's output."""


def build_plugin(directory: Path, force: bool = False) -> tuple[Path, bool]:
    """Build the plugin in `directory`; returns the .wasm and whether it was (re)built."""
    manifest = load_manifest(directory)
    if (directory / "app.py").exists():
        sources, build = _python_sources(directory), _build_python
    elif list(directory.glob("*.c")):
        sources, build = _c_sources(directory), _build_c
    else:
        raise BuildError(f"{directory}: no app.py or *.c sources to build")
    inputs = [*sources, directory / MANIFEST_FILE]
    if not force and _up_to_date(manifest.wasm, inputs):
        return manifest.wasm, False
    build(directory, manifest)
    return manifest.wasm, True


def _python_sources(directory: Path) -> list[Path]:
    return [*directory.glob("*.py"), *PYTHON_SDK.glob("*.py"), WIT_FILE]


def _c_sources(directory: Path) -> list[Path]:
    return [*directory.glob("*.c"), *directory.glob("*.h"), *C_SDK.iterdir()]


def _up_to_date(output: Path, inputs: list[Path]) -> bool:
    if not output.exists():
        return False
    built = output.stat().st_mtime
    return all(path.stat().st_mtime <= built for path in inputs)


def plugin_world(manifest: Manifest) -> str:
    """The WIT world of a component plugin: the filter world plus its granted capabilities."""
    imports = "".join(f"    import {interface_id(name)};\n" for name, grant in
                      sorted(manifest.grants.items()) if grant.functions)  # not `route`
    return (f"package hyperfilter-plugin:{manifest.name};\n\n"
            f"world plugin {{\n    include {FILTER_WORLD};\n{imports}}}\n")


def _run(command: list[str], what: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BuildError(f"{what} failed:\n{result.stdout}{result.stderr}".rstrip())


def _tool(name: str) -> str:
    """A console script of this Python environment, even when it is not on PATH."""
    found = shutil.which(name, path=f"{Path(sys.executable).parent}{os.pathsep}"
                                    f"{os.environ.get('PATH', '')}")
    if found is None:
        raise BuildError(f"{name} is not installed (pip install 'hyperfilter[plugins]')")
    return found


def _build_python(directory: Path, manifest: Manifest) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        wit = Path(tmp) / "wit"
        (wit / "deps" / "hyperfilter").mkdir(parents=True)
        shutil.copy(WIT_FILE, wit / "deps" / "hyperfilter" / WIT_FILE.name)
        (wit / "world.wit").write_text(plugin_world(manifest))
        _run([_tool("componentize-py"), "--quiet", "-d", str(wit), "-w", "plugin",
              "componentize", "app", "-p", str(directory), "-p", str(PYTHON_SDK),
              "-o", str(manifest.wasm)], f"componentize-py for {manifest.name}")


def _build_c(directory: Path, manifest: Manifest) -> None:
    _run([sys.executable, "-m", "ziglang", "cc", "--target=wasm32-freestanding", "-O2",
          "-nostdlib", "-ffreestanding", "-mbulk-memory", "-Wl,--no-entry", "-Wl,--strip-debug",
          "-Wl,--export=hyperfilter_input",
          f"-I{C_SDK}", *map(str, sorted(directory.glob("*.c"))), str(C_SDK / "hyperfilter.c"),
          "-o", str(manifest.wasm)], f"zig cc for {manifest.name}")
