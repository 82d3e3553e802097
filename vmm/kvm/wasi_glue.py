"""WASI preview 2 for a component on the kvm tier, answered inside the guest: the C of each
WASI function a component lowers, generated from its WIT type (vmm/component_types.py).

Deny-all, as on the wasmtime tier: no files (no preopened directory; every filesystem call
fails with `access`), no sockets (`access-denied`), an empty environment, no arguments, stdin
at its end. stdout and stderr are output streams whose bytes go to the plugin's log through
the host (vmm/kvm/wasi_services.py), as does exit; clocks and random bytes are the host's.
Pollables are always ready: a sandbox never sleeps. A function without an answer of its own
gets the deny-all answer of its result type: `err` of a result (its error's `access`,
`access-denied` or `closed` case, else the first case without a payload), `none`, an empty
list or string, zero. A method's `self` must be a live handle of its resource: handles of
resources the guest never makes (descriptors, sockets) cannot exist, so calls on them trap.
A function whose result has no deny-all answer (one returning a resource the guest does not
make, as wasi:http's constructors do) traps when called, naming it, as the wasmtime tier's
unlinked WASI does; one not of WASI's type is refused at load.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from vmm.component_types import (
    Flags,
    Handle,
    ListOf,
    Primitive,
    Record,
    Variant,
    WitFunction,
    WitType,
)
from vmm.kvm import glue
from vmm.kvm.layout import TRAP_UNPROVIDED
from vmm.kvm.wasi_services import MODULE as GUEST_WASI
from vmm.kvm.wasi_services import PROC_EXIT, RANDOM_GET
from vmm.wasi_preview1 import MAX_RANDOM, MAX_WRITE, STDERR, STDIN, STDOUT, WASI_MODULE
from vmm.wasm_types import FuncSig

# The resources the guest makes, and the number each handle's kind says (0: any other).
KINDS = {"output-stream": 1, "input-stream": 2, "pollable": 3, "network": 4}
# An error case naming the denial, in the order looked for.
DENIALS = ("access", "access-denied", "not-permitted", "closed")
WRITE_PERMIT = MAX_WRITE  # what check-write allows at once: the most one host write logs
DECLARATIONS = (
    "uint32_t hf_handle_new(uint32_t kind, uint32_t rep);",
    "uint32_t hf_handle_rep(uint32_t handle, uint32_t kind);",
    "void hf_handle_drop(uint32_t handle, uint32_t kind);",
    "void hf_store8(uint32_t ptr, uint8_t value);",
    "void hf_store16(uint32_t ptr, uint16_t value);",
    "void hf_store32(uint32_t ptr, uint32_t value);",
    "void hf_store64(uint32_t ptr, uint64_t value);",
    "uint32_t hf_load32(uint32_t ptr);",
    "__attribute__((noreturn)) void hf_trap(uint32_t code);",
    "",
)


class WasiUnsupported(Exception):
    """A WASI function this generator refuses: its type is not WASI's."""


class NoAnswer(WasiUnsupported):
    """A WASI function without a deny-all answer: calling it traps (`unprovided`)."""


def unprovided(name: str, sig: FuncSig, index: int) -> list[str]:
    """The C function `name` for the `index`th function the guest does not provide: a trap
    that tells the host which (TRAP_UNPROVIDED + index)."""
    header = glue.c_function(sig.results, name, sig.params, "void *unused")
    return [f"static {header} {{", "  (void)unused;",
            f"  hf_trap({TRAP_UNPROVIDED} + {index});", "}"]


@dataclass(frozen=True)
class WasiLowering:
    interface: str  # as the component imports it: "wasi:io/streams@0.2.9"
    function: WitFunction
    sig: FuncSig  # the core type it is lowered to
    realloc: str | None  # its realloc's C call, open for arguments: "Z_mZ_realloc(&instance1"


@dataclass
class _Call:
    """What an answer has to work with: the lowering, its arguments' C names, where a result
    that does not fit in one value goes."""

    lowering: WasiLowering
    args: list[str]
    retptr: str | None

    def realloc(self, align: int, size: str) -> str:
        if self.lowering.realloc is None:
            raise WasiUnsupported(f"{self.name} returns a list but is lowered without realloc")
        return f"{self.lowering.realloc}, 0, 0, {align}, (u32)({size}))"

    @property
    def name(self) -> str:
        return f"{self.lowering.interface}#{self.lowering.function.name}"


Answer = Callable[[_Call], list[str]]


def thunk(name: str, lowering: WasiLowering) -> list[str]:
    """The C function `name` answering `lowering`, of its core type."""
    sig = lowering.sig
    args = [f"a{i}" for i in range(len(sig.params))]
    result = lowering.function.result
    retptr = args[-1] if result is not None and not sig.results else None
    call = _Call(lowering, args, retptr)
    interface = lowering.interface.partition("@")[0]
    special = _ANSWERS.get((interface, lowering.function.name))
    answer = _deny if special is None else _checked(call, special)
    resource = method_of(lowering.function.name)
    if resource is not None and resource not in KINDS:
        body = ["hf_trap(HF_TRAP_HANDLE);  /* no handle of this resource can exist */"]
    elif resource is not None:
        body = [f"uint32_t rep = hf_handle_rep(a0, {KINDS[resource]});", "(void)rep;",
                *answer(call)]
    else:
        body = answer(call)
    return ["static " + glue.c_function(sig.results, name, sig.params, "void *unused") + " {",
            "  (void)unused;", *(f"  {line}" for line in body), "}"]


def drop_thunk(name: str, resource: str) -> list[str]:
    """`[resource-drop]resource`: the handle must be live and of that resource."""
    return [f"static void {name}(void *unused, u32 a0) {{", "  (void)unused;",
            f"  hf_handle_drop(a0, {KINDS.get(resource, 0)});", "}"]


def _checked(call: _Call, special: _Special) -> Answer:
    """The special's answer, if the function is of the type it answers."""
    params, _, results = special.core.partition("->")
    core = FuncSig(tuple(params.split()), tuple(results.split()))
    if call.lowering.sig != core or not special.result(call.lowering.function.result):
        raise WasiUnsupported(f"{call.name} is not of WASI's type")
    return special.answer


def method_of(function: str) -> str | None:
    """The resource whose method `function` is ("[method]pollable.block"), if it is one."""
    method, _, rest = function.partition("]")
    return rest.partition(".")[0] if method == "[method" else None


def _host(module: str, name: str, *args: str) -> str:
    """A host call's expression."""
    number = glue.HOST_FUNCTIONS.index((module, name))
    values = ", ".join(args) or "0"
    return f"hf_host_call({number}, {len(args)}, (const uint64_t[]){{{values}}})"


def _store(ptr: str, size: int, value: str) -> str:
    return f"hf_store{size * 8}({ptr}, {value});"


def _returning(call: _Call, value: str) -> list[str]:
    result = call.lowering.sig.results
    if not result:
        raise WasiUnsupported(f"{call.name}: its result does not fit one value")
    return [f"return ({glue.c_type(result[0])})({value});"]


# ---- deny-all, by type -----------------------------------------------------------------------


def _deny(call: _Call) -> list[str]:
    result = call.lowering.function.result
    if result is None:
        return []
    if call.retptr is None:
        return _returning(call, _deny_value(call, result))
    return _deny_stores(call, result, call.retptr)


def _deny_value(call: _Call, result: WitType) -> str:
    if isinstance(result, Primitive | Flags):
        return "0"
    if isinstance(result, Variant) and all(p is None for _, p in result.cases):
        return str(deny_case(call.name, result))
    raise NoAnswer(f"{call.name}: no deny-all answer for its result")


def deny_case(function: str, variant: Variant) -> int:
    """The case of `variant` that says no: `err`, `none`, else a denial without payload."""
    names = [name for name, _ in variant.cases]
    if names == ["ok", "err"]:
        return 1
    if names == ["none", "some"]:
        return 0
    bare = [i for i, (_, payload) in enumerate(variant.cases) if payload is None]
    for denial in DENIALS:
        found = variant.case(denial)
        if found is not None and found in bare:
            return found
    if not bare:
        raise NoAnswer(f"{function}: no case of its error has no payload")
    return bare[0]


def _deny_stores(call: _Call, t: WitType, ptr: str) -> list[str]:
    if isinstance(t, Primitive):
        return [_store(ptr, t.size, "0")]
    if isinstance(t, Flags):  # in 1, 2 or 4-byte words
        word = min(t.size, 4)
        return [_store(f"{ptr} + {offset}", word, "0") for offset in range(0, t.size, word)]
    if isinstance(t, ListOf):
        return _empty_list(call, ptr, t.element.align)
    if isinstance(t, Record):
        return [line for _, field, offset in t.fields
                for line in _deny_stores(call, field, f"{ptr} + {offset}")]
    if isinstance(t, Variant):
        case = deny_case(call.name, t)
        payload = t.cases[case][1]
        lines = [_store(ptr, t.discriminant_size, str(case))]
        if payload is not None:
            lines += _deny_stores(call, payload, f"{ptr} + {t.payload_offset}")
        return lines
    raise NoAnswer(f"{call.name}: no deny-all answer for its result ({t})")


def _empty_list(call: _Call, ptr: str, align: int) -> list[str]:
    """An empty list at ptr: allocated, as the canonical ABI allocates one, with no bytes."""
    return [f"{{ u32 list = {call.realloc(align, '0')}; {_store(ptr, 4, 'list')} "
            f"{_store(f'{ptr} + 4', 4, '0')} }}"]


# ---- answers of their own ------------------------------------------------------------------


def _ok(call: _Call, value: str | None = None) -> list[str]:
    """`ok` of a result<T, E> at retptr, with T's value (a scalar) if it has one."""
    result = call.lowering.function.result
    assert isinstance(result, Variant) and call.retptr is not None
    lines = [_store(call.retptr, result.discriminant_size, "0")]
    payload = result.cases[0][1]
    if payload is not None and value is not None:
        lines.append(_store(f"{call.retptr} + {result.payload_offset}", payload.size, value))
    return lines


def _new(kind: str, rep: int = 0) -> Answer:
    return lambda call: _returning(call, f"hf_handle_new({KINDS[kind]}, {rep})")


def _constant(value: str) -> Answer:
    return lambda call: _returning(call, value)


def _nothing(_call: _Call) -> list[str]:
    return []


def _write(call: _Call) -> list[str]:
    """stdout or stderr (the handle's rep is its descriptor): to the host, a permit at a
    time."""
    _, ptr, length, *_ = call.args
    return [f"for (u32 done = 0; done < {length};) {{",
            f"  u32 n = {length} - done < {WRITE_PERMIT} ? {length} - done : {WRITE_PERMIT};",
            f"  {_host(GUEST_WASI, 'write', 'rep', f'{ptr} + done', 'n')};",
            "  done += n;", "}", *_ok(call)]


def _poll(call: _Call) -> list[str]:
    """Every pollable is ready: the indices of them all."""
    ptr, length, retptr = call.args
    return [f"for (u32 i = 0; i < {length}; i++) "
            f"hf_handle_rep(hf_load32({ptr} + 4 * i), {KINDS['pollable']});",
            f"if ({length} > 0x3FFFFFFF) hf_trap(HF_TRAP_OOB);",
            f"u32 list = {call.realloc(4, f'4 * {length}')};",
            f"for (u32 i = 0; i < {length}; i++) hf_store32(list + 4 * i, i);",
            _store(retptr, 4, "list"), _store(f"{retptr} + 4", 4, length)]


def _exit(call: _Call) -> list[str]:
    status = call.args[0]
    code = status if call.lowering.function.name == "exit-with-code" else f"{status} ? 1 : 0"
    return [f"{_host(WASI_MODULE, PROC_EXIT.name, code)};",
            "hf_trap(HF_TRAP_UNREACHABLE);  /* the host never resumes an exit */"]


def _wall_now(call: _Call) -> list[str]:
    assert call.retptr is not None
    return [f"u64 ns = {_host(GUEST_WASI, 'clock-now', '0')};",
            _store(call.retptr, 8, "ns / 1000000000u"),
            _store(f"{call.retptr} + 8", 4, "(u32)(ns % 1000000000u)")]


def _wall_resolution(call: _Call) -> list[str]:
    assert call.retptr is not None
    return [_store(call.retptr, 8, "0"), _store(f"{call.retptr} + 8", 4, "1")]


def _random_bytes(call: _Call) -> list[str]:
    length, retptr = call.args
    return [f"if ({length} > 0xFFFFFFFFu) hf_trap(HF_TRAP_OOB);",
            f"u32 list = {call.realloc(1, length)};",
            f"for (u64 done = 0; done < {length}; done += {MAX_RANDOM}) {{",
            f"  u64 n = {length} - done < {MAX_RANDOM} ? {length} - done : {MAX_RANDOM};",
            f"  {_host(WASI_MODULE, RANDOM_GET.name, 'list + (u32)done', 'n')};", "}",
            _store(retptr, 4, "list"), _store(f"{retptr} + 4", 4, f"(u32){length}")]


def _random_u64(call: _Call) -> list[str]:
    return _returning(call, _host(GUEST_WASI, "random-u64"))


def _seed(call: _Call) -> list[str]:
    assert call.retptr is not None
    return [_store(call.retptr, 8, _host(GUEST_WASI, "random-u64")),
            _store(f"{call.retptr} + 8", 8, _host(GUEST_WASI, "random-u64"))]


@dataclass(frozen=True)
class _Special:
    """An answer of its own, for a function of WASI's type: the core type it is lowered to
    (parameters, results) and the result type it writes, checked before it is generated."""

    answer: Answer
    core: str  # "i32 i32 -> i32"
    result: Callable[[WitType | None], bool] = lambda result: result is None


def _is(kind: type, **fields: object) -> Callable[[WitType | None], bool]:
    return lambda t: isinstance(t, kind) and all(getattr(t, k) == v for k, v in fields.items())


def _result_of(ok: Callable[[WitType | None], bool]) -> Callable[[WitType | None], bool]:
    """result<T, E> whose T passes `ok`."""
    return lambda t: (isinstance(t, Variant) and [n for n, _ in t.cases] == ["ok", "err"]
                      and ok(t.cases[0][1]))


def _fields(*expected: tuple[str, int]) -> Callable[[WitType | None], bool]:
    """A record of these primitives at these offsets."""
    return lambda t: isinstance(t, Record) and [
        (field.name if isinstance(field, Primitive) else "", offset)
        for _, field, offset in t.fields] == list(expected)


_U64, _BOOL = _is(Primitive, name="u64"), _is(Primitive, name="bool")
_LIST_OF = {name: _is(ListOf, element=Primitive(size, size, name))
            for name, size in (("u8", 1), ("u32", 4))}
_OUTPUT, _INPUT = "[method]output-stream.", "[method]input-stream."
_DATETIME = _fields(("u64", 0), ("u32", 8))


def _own(resource: str) -> Callable[[WitType | None], bool]:
    return _is(Handle, own=True, resource=resource)


_WRITE = _Special(_write, "i32 i32 i32 i32 ->", _result_of(lambda t: t is None))
_FLUSH = _Special(_ok, "i32 i32 ->", _result_of(lambda t: t is None))
_SUBSCRIBE = _Special(_new("pollable"), "i32 -> i32", _own("pollable"))
_CLOCK_SUBSCRIBE = _Special(_new("pollable"), "i64 -> i32", _own("pollable"))
_BYTES = _Special(_random_bytes, "i64 i32 ->", _LIST_OF["u8"])
_U64_NOW = _Special(_random_u64, "-> i64", _U64)
# The functions answered otherwise than by denial, by (interface without version, name).
_ANSWERS: dict[tuple[str, str], _Special] = {
    ("wasi:io/streams", _OUTPUT + "check-write"): _Special(
        lambda c: _ok(c, str(WRITE_PERMIT)), "i32 i32 ->", _result_of(_U64)),
    ("wasi:io/streams", _OUTPUT + "write"): _WRITE,
    ("wasi:io/streams", _OUTPUT + "blocking-write-and-flush"): _WRITE,
    ("wasi:io/streams", _OUTPUT + "flush"): _FLUSH,
    ("wasi:io/streams", _OUTPUT + "blocking-flush"): _FLUSH,
    ("wasi:io/streams", _OUTPUT + "subscribe"): _SUBSCRIBE,
    ("wasi:io/streams", _INPUT + "subscribe"): _SUBSCRIBE,
    ("wasi:io/poll", "[method]pollable.ready"): _Special(_constant("1"), "i32 -> i32", _BOOL),
    ("wasi:io/poll", "[method]pollable.block"): _Special(_nothing, "i32 ->"),
    ("wasi:io/poll", "poll"): _Special(_poll, "i32 i32 i32 ->", _LIST_OF["u32"]),
    ("wasi:cli/stdin", "get-stdin"): _Special(_new("input-stream", STDIN), "-> i32",
                                              _own("input-stream")),
    ("wasi:cli/stdout", "get-stdout"): _Special(_new("output-stream", STDOUT), "-> i32",
                                                _own("output-stream")),
    ("wasi:cli/stderr", "get-stderr"): _Special(_new("output-stream", STDERR), "-> i32",
                                                _own("output-stream")),
    ("wasi:cli/exit", "exit"): _Special(_exit, "i32 ->"),
    ("wasi:cli/exit", "exit-with-code"): _Special(_exit, "i32 ->"),
    ("wasi:clocks/monotonic-clock", "now"): _Special(
        lambda c: _returning(c, _host(GUEST_WASI, "clock-now", "1")), "-> i64", _U64),
    ("wasi:clocks/monotonic-clock", "resolution"): _Special(_constant("1"), "-> i64", _U64),
    ("wasi:clocks/monotonic-clock", "subscribe-instant"): _CLOCK_SUBSCRIBE,
    ("wasi:clocks/monotonic-clock", "subscribe-duration"): _CLOCK_SUBSCRIBE,
    ("wasi:clocks/wall-clock", "now"): _Special(_wall_now, "i32 ->", _DATETIME),
    ("wasi:clocks/wall-clock", "resolution"): _Special(_wall_resolution, "i32 ->", _DATETIME),
    ("wasi:random/random", "get-random-bytes"): _BYTES,
    ("wasi:random/random", "get-random-u64"): _U64_NOW,
    ("wasi:random/insecure", "get-insecure-random-bytes"): _BYTES,
    ("wasi:random/insecure", "get-insecure-random-u64"): _U64_NOW,
    ("wasi:random/insecure-seed", "insecure-seed"): _Special(
        _seed, "i32 ->", _fields(("u64", 0), ("u64", 8))),
    ("wasi:sockets/instance-network", "instance-network"): _Special(
        _new("network"), "-> i32", _own("network")),
}
ANSWERED = frozenset(_ANSWERS)
