"""Python: a component built with componentize-py against the plugin's own world.

componentize-py imports `app` at build time and snapshots the result, so a plugin's syntax
errors and import-time exceptions surface here: they are shown as Python's own traceback, with
the plugin's real paths (componentize-py's are /0/, /1/) and without componentize-py's Rust
backtrace; an import of a capability the manifest does not grant says which grant it needs.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from sidecar.plugin.files import SDK_DIR, WIT_FILE
from sidecar.plugin.languages import Language
from sidecar.plugin.toolchain import BuildError, run, tool
from sidecar.plugin.world import WORLD_NAME, write_plugin_wit
from vmm.capabilities import GRANTS
from vmm.manifest import MANIFEST_FILE, Manifest

PYTHON_SDK = SDK_DIR / "python"
# How componentize-py reports an exception raised while it imports the plugin.
PYTHON_ERROR = re.compile(r"^AssertionError: (?P<error>.*?)\n+Caused by:", re.S | re.M)
UNGRANTED = re.compile(r"cannot import name '(?P<name>\w+)' from 'wit_world\.imports'")
NO_BACKTRACE = {"RUST_BACKTRACE": "0", "RUST_LIB_BACKTRACE": "0"}


def _claims(directory: Path) -> bool:
    return (directory / "app.py").exists()


def _sources(directory: Path) -> list[Path]:
    return [*directory.glob("*.py"), *PYTHON_SDK.glob("*.py"), WIT_FILE]


def _build(directory: Path, manifest: Manifest) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        wit = write_plugin_wit(manifest, Path(tmp))
        what = f"componentize-py for {manifest.name}"
        try:
            run([tool("componentize-py"), "--quiet", "-d", str(wit), "-w", WORLD_NAME,
                 "componentize", "app", "-p", str(directory), "-p", str(PYTHON_SDK),
                 "-o", str(manifest.wasm)], what, env=NO_BACKTRACE)
        except BuildError as failure:
            python_error = python_error_of(str(failure), [directory, PYTHON_SDK])
            if python_error is None:
                raise
            raise BuildError(f"{what}: Python failed loading app.py:\n"
                             f"{python_error}") from None


def python_error_of(output: str, source_dirs: list[Path]) -> str | None:
    """The Python traceback in componentize-py's `output`, with componentize-py's paths of
    `source_dirs` (given to it in this order) made theirs again, and what to do about an
    ungranted capability; None when the output holds no Python error."""
    found = PYTHON_ERROR.search(output)
    if found is None:
        return None
    error = found["error"].rstrip()
    for index, source_dir in enumerate(source_dirs):
        error = error.replace(f'"/{index}/', f'"{source_dir.resolve()}/')
    ungranted = UNGRANTED.search(error)
    if ungranted is not None:
        grant = ungranted["name"].replace("_", "-")
        error += (f"\n`{grant}` is a capability: grant it in {MANIFEST_FILE} ([grants.{grant}])"
                  if grant in GRANTS else
                  f"\nwit_world.imports holds the capabilities {MANIFEST_FILE} grants "
                  f"(known: {', '.join(GRANTS)})")
    return error


LANGUAGE = Language("python", _claims, _sources, _build)
