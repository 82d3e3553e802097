"""Capability host functions in canonical-ABI terms, for plugins that are core modules: lift
the call's core arguments from the plugin's memory, run the host method, lower its result
(into the plugin's memory when it does not fit one core value)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from vmm.canonical import Enum, Memory, Result
from vmm.capabilities import CapabilityError, HostEnv, HostFunction
from vmm.manifest import Manifest

CoreHostCall = Callable[[Memory, list[int]], int | None]


def core_host_call(fn: HostFunction, method: Callable[..., Any]) -> CoreHostCall:
    signature = fn.signature
    result = signature.result

    def call(mem: Memory, flat: list[int]) -> int | None:
        values = iter(flat)
        args = [param.lift_flat(mem, values) for param in signature.params]
        if result is None:
            method(*args)
            return None
        if isinstance(result, Result):
            assert isinstance(result.err, Enum)
            try:
                value: Any = (0, method(*args))
            except CapabilityError as error:
                value = (1, result.err.names.index(error.case))
        else:
            value = method(*args)
        if signature.result_in_memory:
            result.store(mem, next(values) & 0xFFFFFFFF, value)
            return None
        return result.lower_flat(mem, value)[0]

    return call


class BoundHostFunction(NamedTuple):
    function: HostFunction
    call: CoreHostCall


def granted_host_calls(manifest: Manifest, env: HostEnv) -> dict[tuple[str, str],
                                                                  BoundHostFunction]:
    """Every function of every capability the manifest grants, keyed by (interface, name) and
    bound to this plugin's host objects (one per grant, shared by all its sandboxes)."""
    calls = {}
    for grant in manifest.grants.values():
        host = grant.bind(env)
        for function in grant.functions:
            calls[grant.interface, function.name] = BoundHostFunction(
                function, core_host_call(function, getattr(host, function.method)))
    return calls
