"""`hyperfilter plugin build`: compile a plugin directory's sources into its .wasm.

The language is told by the sources (sidecar/plugin/languages). Builds are skipped when the
.wasm is newer than every input.
"""

from __future__ import annotations

from pathlib import Path

from sidecar.plugin.languages import language_of, languages
from sidecar.plugin.toolchain import BuildError
from vmm.manifest import MANIFEST_FILE, load_manifest


def build_plugin(directory: Path, force: bool = False) -> tuple[Path, bool]:
    """Build the plugin in `directory`; returns the .wasm and whether it was (re)built."""
    manifest = load_manifest(directory)
    language = language_of(directory)
    if language is None:
        known = ", ".join(lang.name for lang in languages())
        raise BuildError(f"{directory}: no sources in a language plugins are built from "
                         f"({known})")
    inputs = [*language.sources(directory), directory / MANIFEST_FILE]
    if not force and _up_to_date(manifest.wasm, inputs):
        return manifest.wasm, False
    language.build(directory, manifest)
    return manifest.wasm, True


def _up_to_date(output: Path, inputs: list[Path]) -> bool:
    if not output.exists():
        return False
    built = output.stat().st_mtime
    return all(path.stat().st_mtime <= built for path in inputs)
