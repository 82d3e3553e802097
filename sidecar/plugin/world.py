"""A component plugin's own WIT world, generated from its manifest."""

from __future__ import annotations

from vmm.capabilities import interface_id
from vmm.manifest import Manifest

FILTER_WORLD = interface_id("filter")


def plugin_world(manifest: Manifest) -> str:
    """The filter world plus exactly the granted capability interfaces, so the component
    imports nothing the manifest does not grant."""
    imports = "".join(f"    import {interface_id(name)};\n" for name, grant in
                      sorted(manifest.grants.items()) if grant.functions)  # not `route`
    return (f"package hyperfilter-plugin:{manifest.name};\n\n"
            f"world plugin {{\n    include {FILTER_WORLD};\n{imports}}}\n")
