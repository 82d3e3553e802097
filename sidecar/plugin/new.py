"""`hyperfilter plugin new`: a plugin directory from a template, ready to build."""

from __future__ import annotations

import re
from pathlib import Path
from string import Template

from sidecar.plugin.files import TEMPLATES_DIR

_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


def template_languages() -> tuple[str, ...]:
    return tuple(sorted(path.name for path in TEMPLATES_DIR.iterdir() if path.is_dir()))


def new_plugin(name: str, language: str, parent: Path) -> Path:
    """Create `parent/name` from the language's template; refuses to overwrite anything."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"{name!r}: a plugin name is lower-case letters, digits and '-'")
    known = template_languages()
    if language not in known:
        raise ValueError(f"no template for {language!r} (there are: {', '.join(known)})")
    target = parent / name
    if target.exists():
        raise ValueError(f"{target} exists already")
    target.mkdir(parents=True)
    for source in sorted((TEMPLATES_DIR / language).rglob("*")):
        if source.is_file():
            destination = target / source.relative_to(TEMPLATES_DIR / language)
            destination.parent.mkdir(parents=True, exist_ok=True)
            destination.write_text(Template(source.read_text()).safe_substitute(name=name))
    return target
