"""The languages plugins are written in: how each one's sources are found and built.

A language is told by its sources (`app.py`, `*.c`, ...); each module here describes one, and
`plugins/templates/<name>/` is its `plugin new` template.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vmm.manifest import Manifest


@dataclass(frozen=True)
class Language:
    name: str  # as `plugin new --lang` takes it, and its template's folder
    claims: Callable[[Path], bool]  # whether a plugin directory's sources are in it
    sources: Callable[[Path], list[Path]]  # every input of a build, SDK included
    build: Callable[[Path, Manifest], None]  # writes manifest.wasm; raises BuildError


def languages() -> tuple[Language, ...]:
    from sidecar.plugin.languages import c, go, javascript, python, rust, zig

    return (python.LANGUAGE, javascript.LANGUAGE, c.LANGUAGE, zig.LANGUAGE, rust.LANGUAGE,
            go.LANGUAGE)


def language_of(directory: Path) -> Language | None:
    return next((lang for lang in languages() if lang.claims(directory)), None)
