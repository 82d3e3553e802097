"""Whether a plugin may import a host interface: the one place that says yes or no, for core
modules on every tier (vmm/core_module.py, before anything is compiled) and for components
(vmm/component_linking.py, for every tier). The kvm tier's exit table and the core
modules' host functions are then built from the granted capabilities only
(vmm/host_abi.granted_host_calls)."""

from __future__ import annotations

from vmm.capabilities import BY_INTERFACE, Grant
from vmm.errors import UngrantedImportError, WorldMismatchError
from vmm.manifest import Manifest


def grant_for(manifest: Manifest, interface: str, function: str | None = None) -> Grant:
    """The manifest's grant of the capability `interface` (imported for `function`, when
    named); WorldMismatchError when no capability has that interface, UngrantedImportError
    when the manifest does not grant it."""
    what = f"{interface}#{function}" if function else interface
    grant_type = BY_INTERFACE.get(interface)
    if grant_type is None:
        raise WorldMismatchError(manifest.name,
                                 f"imports {what}, which is not a hyperfilter capability")
    grant = manifest.grants.get(grant_type.name)
    if grant is None:
        raise UngrantedImportError(manifest.name, interface,
                                   f"function {function}" if function else "")
    return grant
