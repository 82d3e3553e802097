"""C: a core module built with zig cc against the C SDK (plugins/sdk/c)."""

from __future__ import annotations

from pathlib import Path

from sidecar.plugin.languages import Language
from sidecar.plugin.languages.linking import c_sdk_files, link_with_c_sdk
from vmm.manifest import Manifest


def _claims(directory: Path) -> bool:
    return any(directory.glob("*.c"))


def _sources(directory: Path) -> list[Path]:
    return [*directory.glob("*.c"), *directory.glob("*.h"), *c_sdk_files()]


def _build(directory: Path, manifest: Manifest) -> None:
    link_with_c_sdk(sorted(directory.glob("*.c")), manifest)


LANGUAGE = Language("c", _claims, _sources, _build)
