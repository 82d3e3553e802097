"""JavaScript: a component built with componentize-js (npm) against the plugin's own world.

The build runs in a folder of its own holding the plugin's scripts, the SDK as the module
`hyperfilter`, and a module `@hyperfilter/<capability>` for each granted capability (its WIT
interface, re-exported): a plugin can import only what its manifest grants, by short names.
componentize-js is pinned by plugins/sdk/javascript/package-lock.json and installed there
with `npm ci` (`make plugins` does it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from sidecar.plugin.files import SDK_DIR, WIT_FILE
from sidecar.plugin.languages import Language
from sidecar.plugin.toolchain import BuildError, ToolchainMissing, run, tool
from sidecar.plugin.world import WORLD_NAME, write_plugin_wit
from vmm.capabilities import GRANTS, interface_id
from vmm.manifest import Manifest

JS_SDK = SDK_DIR / "javascript"
SDK_MODULE = JS_SDK / "hyperfilter.js"
COMPONENTIZE_JS = "@bytecodealliance/componentize-js"
INSTALLED = JS_SDK / "node_modules" / COMPONENTIZE_JS
INSTALL = f"npm ci --prefix {JS_SDK}"
ENTRY = "app.js"
# The JS engine's WASI features a filter has no use for: fetch() (outgoing wasi:http) and the
# fetch event (an incoming wasi:http export). What stays, console.log (stdio), clocks and
# random, the wasmtime tier links with nothing outside the sandbox behind it.
DISABLED_FEATURES = ("http", "fetch-event")
# What Node prints around componentize-js's message, which says nothing of the plugin's code:
# the line of componentize-js that threw (its place, its text, a caret), the stack, the version.
_THROWN_AT = re.compile(r"^file://\S+:\d+\n.*\n\s*\^+\n", re.M)
_NODE_NOISE = re.compile(r"^(\s+at .*|Node\.js v\S+)$")
_MISSING_MODULE = re.compile(r'Error loading module "@hyperfilter/([a-z-]+)"')
CAPABILITIES = "@hyperfilter"  # where the capability modules are


def _claims(directory: Path) -> bool:
    return (directory / ENTRY).exists()


def _scripts(directory: Path) -> list[Path]:
    return sorted(path for path in directory.rglob("*.js")
                  if "node_modules" not in path.relative_to(directory).parts)


def _sources(directory: Path) -> list[Path]:
    return [*_scripts(directory), SDK_MODULE, WIT_FILE, JS_SDK / "package-lock.json"]


def componentize_js() -> list[str]:
    """node and componentize-js's command line; ToolchainMissing saying how to install
    either."""
    node = tool("node", "Debian: apt-get install nodejs npm")
    pinned = json.loads((JS_SDK / "package.json").read_text())["dependencies"][COMPONENTIZE_JS]
    try:
        installed = json.loads((INSTALLED / "package.json").read_text())["version"]
    except FileNotFoundError:
        raise ToolchainMissing(f"componentize-js is not installed ({INSTALL}; make plugins "
                               f"runs it)") from None
    if installed != pinned:
        raise ToolchainMissing(f"componentize-js {installed} is installed, the SDK pins "
                               f"{pinned} ({INSTALL})")
    return [node, str(INSTALLED / "src" / "cli.js")]


def _workspace(directory: Path, manifest: Manifest, parent: Path) -> Path:
    """The folder componentize-js reads the modules from (its root is the modules' `/`)."""
    src = parent / "src"
    for script in _scripts(directory):
        target = src / script.relative_to(directory)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(script, target)
    shutil.copy(SDK_MODULE, src / SDK_MODULE.name)
    capabilities = src / CAPABILITIES
    capabilities.mkdir(exist_ok=True)
    for name, grant in manifest.grants.items():
        if grant.functions:  # not `route`, which only widens verdicts
            (capabilities / f"{name}.js").write_text(f'export * from "{interface_id(name)}";\n')
    return src


def _explained(message: str, manifest: Manifest) -> str:
    """The toolchain's message without Node's own lines, and why a capability is missing."""
    lines = [line for line in _THROWN_AT.sub("", message).splitlines()
             if not _NODE_NOISE.match(line)]
    for name in _MISSING_MODULE.findall(message):
        if name in GRANTS and name not in manifest.grants:
            lines.append(f"hint: `{name}` is a capability: grant it in manifest.toml "
                         f"([grants.{name}]) to import {CAPABILITIES}/{name}")
    return "\n".join(lines).rstrip()


def _check_syntax(node: str, directory: Path, src: Path) -> None:
    """Node's own syntax check of each of the plugin's scripts: componentize-js counts the
    syntax errors it finds but shows none."""
    (src / "package.json").write_text('{"type": "module"}\n')  # .js files are ES modules
    for script in _scripts(directory):
        run([node, "--check", str(src / script.relative_to(directory))],
            f"node --check {script}", cwd=src)


def _build(directory: Path, manifest: Manifest) -> None:
    command = componentize_js()
    with tempfile.TemporaryDirectory() as tmp:
        wit = write_plugin_wit(manifest, Path(tmp))
        src = _workspace(directory, manifest, Path(tmp))
        try:
            _check_syntax(command[0], directory, src)
            run([*command, ENTRY, "--wit", str(wit), "--world-name", WORLD_NAME,
                 "--disable", *DISABLED_FEATURES, "--out", str(manifest.wasm.resolve())],
                f"componentize-js for {manifest.name}", cwd=src, env={"TMPDIR": tmp})
        except BuildError as error:
            message = str(error).replace(f"{src}{os.sep}", f"{directory}{os.sep}")
            raise BuildError(_explained(message, manifest)) from None


LANGUAGE = Language("javascript", _claims, _sources, _build)
