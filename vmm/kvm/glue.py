"""The C that joins a wasm2c-compiled plugin to the guest runtime, generated per plugin.

Exports the host calls are numbered (`GuestFunctions`): the host puts a number and arguments
in the mailbox, the glue's `hf_dispatch` calls the plugin's function. Each capability function
the plugin imports becomes a C function that passes its arguments to the host through exit
EXIT_HOST_CALL + its number in `HOST_FUNCTIONS`: a fixed numbering of every capability
function of the world, then of every WASI preview 1 function (vmm/wasi_preview1.py), then
of the guest's WASI preview 2 services (vmm/kvm/wasi_services.py), so an exit means the same
thing in every image, and the host can refuse an exit its plugin's
manifest does not grant or its module does not import. A reactor's `_initialize` runs at
instantiation, once, at load (its WASI calls are served then: vmm/kvm/snapshot.py). Then the
glue publishes where each exported i32 global lives (`published_globals`): wasm2c keeps them
in the instance, at an address fixed in the image, so the host reads one's current value with
no exit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from vmm.capabilities import GRANTS, interface_id
from vmm.core_module import REALLOC, CoreModule
from vmm.input_area import INPUT_AREA_EXPORT
from vmm.kvm.layout import EXIT_HOST_CALL, EXIT_KINDS, MAX_EXPORTED_GLOBALS
from vmm.kvm.wasi_services import MODULE as GUEST_WASI
from vmm.kvm.wasi_services import SERVICES
from vmm.wasi_preview1 import FUNCTIONS as WASI_FUNCTIONS
from vmm.wasi_preview1 import INITIALIZE, WASI_MODULE

MODULE_NAME = "plugin"  # wasm2c -n
HOST_FUNCTIONS: tuple[tuple[str, str], ...] = tuple(
    (interface_id(name), function.name) for name, grant in GRANTS.items()
    for function in grant.functions) + tuple((WASI_MODULE, name) for name in WASI_FUNCTIONS) \
    + tuple((GUEST_WASI, name) for name in SERVICES)
HOST_FUNCTION_EXITS = {key: EXIT_HOST_CALL + n for n, key in enumerate(HOST_FUNCTIONS)}
assert EXIT_HOST_CALL + len(HOST_FUNCTIONS) <= EXIT_KINDS
_C_TYPES = {"i32": "u32", "i64": "u64"}


def mangle(name: str) -> str:
    """wasm2c's C name for a wasm name: letters, digits and _ kept, other bytes (and Z) as
    Z + two hex digits."""
    return "Z_" + "".join(
        chr(b) if (chr(b).isalnum() and b < 0x80 and b != 0x5A) or b == 0x5F else f"Z{b:02X}"
        for b in name.encode())


@dataclass(frozen=True)
class GuestFunctions:
    """The plugin's functions the host calls, in the order that numbers them."""

    names: tuple[str, ...]

    @classmethod
    def of(cls, core: CoreModule) -> GuestFunctions:
        names = [REALLOC]
        for handler in core.handlers.values():
            names.append(handler.export.core_name)
            if handler.has_post_return:
                names.append(handler.export.post_return_name)
        return cls(tuple(names))

    def number(self, name: str) -> int:
        return self.names.index(name)


def published_globals(core: CoreModule) -> dict[str, int]:
    """The exported i32 globals whose address the glue publishes, and the mailbox slot of
    each (layout.EXPORTED_GLOBALS)."""
    return {name: slot for slot, name in enumerate(core.i32_globals[:MAX_EXPORTED_GLOBALS])}


PRELUDE = (
    "uint64_t hf_host_call(uint32_t function, uint32_t count, const uint64_t *args);",
    "void hf_publish_input_area(uint32_t address);",
    "void hf_publish_global(uint32_t index, const uint32_t *value);",
    "__attribute__((noreturn)) void hf_no_function(void);",
    "",
)


def c_type(valtype: str) -> str:
    return _C_TYPES.get(valtype) or valtype  # f32 and f64 keep their names in wasm2c's C


def c_function(result_types: Sequence[str], name: str, params: Sequence[str],
               first: str) -> str:
    """A C function header: `first` (the instance parameter), then a0, a1, ..."""
    result = c_type(result_types[0]) if result_types else "void"
    args = "".join(f", {c_type(t)} a{i}" for i, t in enumerate(params))
    return f"{result} {name}({first}{args})"


def host_call(interface: str, name: str, params: Sequence[str],
              results: Sequence[str]) -> str:
    """The statement that makes host function (interface, name) an exit, returning its
    result if it has one."""
    values = ", ".join(f"a{i}" for i in range(len(params))) or "0"
    number = HOST_FUNCTIONS.index((interface, name))
    call = f"hf_host_call({number}, {len(params)}, (const uint64_t[]){{{values}}})"
    return f"return ({c_type(results[0])}){call};" if results else f"{call};"


def dispatch(calls: Sequence[tuple[str, Sequence[str], Sequence[str]]]) -> list[str]:
    """hf_dispatch: call number n runs calls[n], (C function and instance, params,
    results), with the mailbox's arguments."""
    lines = ["uint64_t hf_dispatch(uint64_t function, volatile const uint64_t *a) {",
             "  switch (function) {"]
    for number, (function, params, results) in enumerate(calls):
        args = "".join(f", ({c_type(t)})a[{i}]" for i, t in enumerate(params))
        call = f"{function}{args})"
        lines.append(f"    case {number}: " +
                     (f"return {call};" if results else f"{call}; return 0;"))
    return [*lines, "    default: hf_no_function();", "  }", "}", ""]


def signatures(core: CoreModule) -> dict[str, tuple[list[str], list[str]]]:
    """The core types of the functions the host calls, by contract name."""
    types = {REALLOC: (["i32"] * 4, ["i32"])}
    for handler in core.handlers.values():
        export = handler.export
        types[export.core_name] = export.signature.core_export()
        types[export.post_return_name] = (["i32"], [])
    return types


def generate(core: CoreModule, functions: GuestFunctions) -> str:
    lines = ["/* Generated by vmm/kvm/glue.py. */", '#include "plugin.h"', *PRELUDE,
             "static Z_plugin_instance_t instance;", ""]
    imports = [(item.interface, item.function.name, *item.core_types) for item in core.imports]
    imports += [(WASI_MODULE, f.name, list(f.params), list(f.results)) for f in core.wasi]
    for interface, name, params, results in imports:
        module = mangle(interface)
        header = c_function(results, f"{module}{mangle(name)}", params,
                            f"struct {module}_instance_t *unused")
        lines += [f"{header} {{", "  (void)unused;",
                  f"  {host_call(interface, name, params, results)}", "}"]
    types = signatures(core)
    lines += ["", *dispatch([(f"{mangle(MODULE_NAME)}{mangle(name)}(&instance", *types[name])
                             for name in functions.names]),
              "void hf_instantiate(void) {",
              f"  {mangle(MODULE_NAME)}_init_module();",
              f"  {mangle(MODULE_NAME)}_instantiate(&instance"
              + ", NULL" * len({interface for interface, *_ in imports}) + ");"]
    if core.initialize:
        lines.append(f"  {mangle(MODULE_NAME)}{mangle(INITIALIZE)}(&instance);")
    if core.has_input_area:
        lines.append(f"  hf_publish_input_area(*{mangle(MODULE_NAME)}"
                     f"{mangle(INPUT_AREA_EXPORT)}(&instance));")
    lines += [f"  hf_publish_global({slot}, {mangle(MODULE_NAME)}{mangle(name)}(&instance));"
              for name, slot in published_globals(core).items()]
    lines += ["}", ""]
    return "\n".join(lines)
