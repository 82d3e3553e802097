"""`hyperfilter plugin new`: a plugin directory from a template, ready to build.

Every language's template has a TCP hook and an HTTP hook, its manifest wants one event of
each and its `tests.toml` tests both; `--kind tcp` or `--kind http` keeps the manifest's and
the tests' half of that kind (the other hook stays in the source, unused, for later).
"""

from __future__ import annotations

import re
from pathlib import Path
from string import Template

from sidecar.plugin.files import TEMPLATES_DIR

_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
KINDS = ("tcp", "http", "both")
_EVENTS_LINE = re.compile(r'^events = \[.*\]$', re.MULTILINE)
_EVENTS = {"tcp": '["tcp.data"]', "http": '["http.request-headers"]'}
_CASE = "[[case]]\n"


def template_languages() -> tuple[str, ...]:
    return tuple(sorted(path.name for path in TEMPLATES_DIR.iterdir() if path.is_dir()))


def new_plugin(name: str, language: str, parent: Path, kind: str = "both") -> Path:
    """Create `parent/name` from the language's template; refuses to overwrite anything."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"{name!r}: a plugin name is lower-case letters, digits and '-'")
    known = template_languages()
    if language not in known:
        raise ValueError(f"no template for {language!r} (there are: {', '.join(known)})")
    if kind not in KINDS:
        raise ValueError(f"no kind {kind!r} (there are: {', '.join(KINDS)})")
    target = parent / name
    if target.exists():
        raise ValueError(f"{target} exists already")
    target.mkdir(parents=True)
    template = TEMPLATES_DIR / language
    for source in sorted(template.rglob("*")):
        if source.is_file():
            text = Template(source.read_text()).safe_substitute(name=name)
            if kind != "both" and source.name == "manifest.toml":
                text = _EVENTS_LINE.sub(f"events = {_EVENTS[kind]}", text, count=1)
            if kind != "both" and source.name == "tests.toml":
                text = _cases_of(kind, text)
            destination = target / source.relative_to(template)
            destination.parent.mkdir(parents=True, exist_ok=True)
            destination.write_text(text)
    return target


def _cases_of(kind: str, tests: str) -> str:
    """The test file with only the cases of `kind` (its [[case]] blocks say their protocol)."""
    preamble, *cases = tests.split(_CASE)
    kept = [case for case in cases if f'protocol = "{kind}"' in case]
    return preamble + "".join(_CASE + case for case in kept)
