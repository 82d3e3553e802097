"""A component plugin's own WIT world, generated from its manifest."""

from __future__ import annotations

import shutil
from pathlib import Path

from sidecar.plugin.files import WIT_FILE
from vmm.capabilities import interface_id
from vmm.manifest import Manifest

FILTER_WORLD = interface_id("filter")
WORLD_NAME = "plugin"


def plugin_world(manifest: Manifest) -> str:
    """The filter world plus exactly the granted capability interfaces, so the component
    imports nothing the manifest does not grant."""
    imports = "".join(f"    import {interface_id(name)};\n" for name, grant in
                      sorted(manifest.grants.items()) if grant.functions)  # not `route`
    return (f"package hyperfilter-plugin:{manifest.name};\n\n"
            f"world {WORLD_NAME} {{\n    include {FILTER_WORLD};\n{imports}}}\n")


def write_plugin_wit(manifest: Manifest, parent: Path) -> Path:
    """`parent/wit`, as the component toolchains read a WIT folder: the plugin's world
    (`WORLD_NAME`) with the project's WIT package as its dependency."""
    wit = parent / "wit"
    (wit / "deps" / "hyperfilter").mkdir(parents=True)
    shutil.copy(WIT_FILE, wit / "deps" / "hyperfilter" / WIT_FILE.name)
    (wit / "world.wit").write_text(plugin_world(manifest))
    return wit
