"""`hyperfilter plugin new`: a plugin directory from a template, ready to build."""

from __future__ import annotations

import re
from pathlib import Path
from string import Template

from sidecar.plugin_build import PLUGINS_DIR

TEMPLATES = PLUGINS_DIR / "templates"
LANGUAGES = tuple(sorted(path.name for path in TEMPLATES.iterdir() if path.is_dir()))
_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


def new_plugin(name: str, language: str, parent: Path) -> Path:
    """Create `parent/name` from the language's template; refuses to overwrite anything."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"{name!r}: a plugin name is lower-case letters, digits and '-'")
    if language not in LANGUAGES:
        raise ValueError(f"no template for {language!r} (there are: {', '.join(LANGUAGES)})")
    target = parent / name
    if target.exists():
        raise ValueError(f"{target} exists already")
    target.mkdir(parents=True)
    for source in sorted((TEMPLATES / language).iterdir()):
        (target / source.name).write_text(Template(source.read_text()).safe_substitute(name=name))
    return target
