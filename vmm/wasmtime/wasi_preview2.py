"""WASI preview 2 for a component the wasmtime tier runs as its core modules
(vmm/wasmtime/linked.py): the kvm guest's answers (vmm/kvm/wasi_glue.py, which says what each
is), given by the host as core functions of the types the component lowers them to, behind
the same host services (vmm/kvm/wasi_services.py: clocks, random bytes, stdout and stderr to
the plugin's log, exit). Deny-all: no files, sockets, environment or arguments, stdin at its
end, pollables always ready. Handles live in the sandbox's own table, as in the guest's; a
call on a handle that does not exist, or is of another resource, traps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from vmm.canonical import AbiError, Memory
from vmm.component_linking import ModuleExport, WasiImport
from vmm.component_types import Flags, ListOf, Primitive, Record, Variant, WitType
from vmm.kvm.layout import TRAPS
from vmm.kvm.wasi_glue import KINDS, WRITE_PERMIT, deny_case, method_of
from vmm.kvm.wasi_services import PROC_EXIT, RANDOM_GET, SERVICES
from vmm.wasi_preview1 import MAX_RANDOM, STDERR, STDIN, STDOUT, WasiFunction, WasiStreams

MAX_HANDLES = 1024  # as the guest's table (vmm/kvm/guest/wasi.c)
_HANDLE, _HANDLES = TRAPS[20], TRAPS[21]
_CLOCK_NOW, _RANDOM_U64, _WRITE = SERVICES["clock-now"], SERVICES["random-u64"], SERVICES["write"]
_WALL, _MONOTONIC = 0, 1


class WasiTrap(AbiError):
    """A WASI call the component model would trap on: a bad handle, too many, a length past
    what the call can return."""


class WasiState:
    """One sandbox's WASI: its handles, its output streams, its memory and allocators."""

    def __init__(self, realloc_of: Callable[[ModuleExport], Callable[..., int | None]]) -> None:
        # The sandbox's, once it has them: WASI called while its modules are instantiated
        # (a start function) is refused.
        self.streams: WasiStreams | None = None
        self.memory: Memory | None = None
        self._realloc_of = realloc_of
        self._handles: dict[int, tuple[int, int]] = {}  # handle -> (kind, rep)

    def new(self, kind: int, rep: int) -> int:
        handle = next((h for h in range(1, MAX_HANDLES) if h not in self._handles), None)
        if handle is None:
            raise WasiTrap(_HANDLES)
        self._handles[handle] = (kind, rep)
        return handle

    def rep(self, handle: int, kind: int) -> int:
        found = self._handles.get(handle)
        if found is None or found[0] != kind or not kind:
            raise WasiTrap(_HANDLE)
        return found[1]

    def drop(self, handle: int, kind: int) -> None:
        self.rep(handle, kind)
        del self._handles[handle]

    def realloc(self, export: ModuleExport | None, align: int, size: int) -> int:
        if export is None:
            raise AbiError("a WASI function returns a list but is lowered without realloc")
        ptr = self._realloc_of(export)(0, 0, align, size)
        assert isinstance(ptr, int)
        ptr &= 0xFFFFFFFF
        if ptr % align:
            raise AbiError(f"realloc returned a misaligned pointer {ptr:#x}")
        return ptr


@dataclass
class _Call:
    state: WasiState
    binding: WasiImport
    args: list[int]
    memory: Memory

    @property
    def retptr(self) -> int:
        return self.args[-1]

    def store(self, ptr: int, size: int, value: int) -> None:
        self.memory.write(ptr, (value & ((1 << 8 * size) - 1)).to_bytes(size, "little"))

    def realloc(self, align: int, size: int) -> int:
        return self.state.realloc(self.binding.realloc, align, size)

    def serve(self, service: WasiFunction, *args: int) -> int:
        assert self.state.streams is not None  # checked before the call
        return service.call(self.state.streams, self.memory, list(args)) or 0

    def ok(self, value: int | None = None) -> None:
        """`ok` of a result<T, E> at retptr, with T's value (a scalar) if it has one."""
        result = self.binding.function.result
        assert isinstance(result, Variant)
        self.store(self.retptr, result.discriminant_size, 0)
        payload = result.cases[0][1]
        if payload is not None and value is not None:
            self.store(self.retptr + result.payload_offset, payload.size, value)

    def store_list(self, ptr: int, length: int) -> None:
        self.store(self.retptr, 4, ptr)
        self.store(self.retptr + 4, 4, length)


Answer = Callable[[_Call], int | None]


def host_function(binding: WasiImport, state_of: Callable[[], WasiState]
                  ) -> Callable[[Memory, list[int]], int | None]:
    """The host function answering `binding`, as a tier calls its host functions."""
    function = binding.function
    name = f"{binding.interface}#{function.name}"
    if binding.unprovided is not None:
        def unprovided(_memory: Memory, _args: list[int]) -> None:
            raise WasiTrap(f"it called {name}, which the sandbox does not provide")
        return unprovided
    special = _ANSWERS.get((binding.interface.partition("@")[0], function.name))
    answer = _deny if special is None else special
    resource = method_of(function.name)
    kind = KINDS.get(resource, 0) if resource is not None else None

    def call(_memory: Memory, args: list[int]) -> int | None:
        state = state_of()
        memory = state.memory
        if memory is None or state.streams is None:
            raise AbiError(f"{name} was called while the component was instantiated")
        if kind is not None:
            args = [state.rep(args[0], kind), *args[1:]]  # a method: `self` as its rep
        return answer(_Call(state, binding, args, memory))

    return call


def drop_function(resource: str, state_of: Callable[[], WasiState]
                  ) -> Callable[[Memory, list[int]], None]:
    """`[resource-drop]resource`: the handle must be live and of that resource."""
    kind = KINDS.get(resource, 0)
    return lambda _memory, args: state_of().drop(args[0], kind)


# ---- deny-all, by type -----------------------------------------------------------------------


def _deny(call: _Call) -> int | None:
    function = call.binding.function
    result = function.result
    if result is None:
        return None
    if call.binding.sig.results:  # one value, returned
        if isinstance(result, Variant):
            return deny_case(function.name, result)
        return 0
    _deny_stores(call, result, call.retptr)
    return None


def _deny_stores(call: _Call, t: WitType, ptr: int) -> None:
    if isinstance(t, Primitive | Flags):
        call.memory.write(ptr, bytes(t.size))
    elif isinstance(t, ListOf):  # empty, allocated as the canonical ABI allocates one
        list_ptr = call.realloc(t.element.align, 0)
        call.store(ptr, 4, list_ptr)
        call.store(ptr + 4, 4, 0)
    elif isinstance(t, Record):
        for _, field, offset in t.fields:
            _deny_stores(call, field, ptr + offset)
    elif isinstance(t, Variant):
        case = deny_case(call.binding.function.name, t)
        call.store(ptr, t.discriminant_size, case)
        payload = t.cases[case][1]
        if payload is not None:
            _deny_stores(call, payload, ptr + t.payload_offset)
    else:  # the linker found a deny-all answer for every function it did not mark unprovided
        raise AbiError(f"no deny-all answer for {t}")


# ---- answers of their own ------------------------------------------------------------------


def _new(kind: str, rep: int = 0) -> Answer:
    return lambda call: call.state.new(KINDS[kind], rep)


def _write(call: _Call) -> None:
    """stdout or stderr (the handle's rep is its descriptor): to the host, a permit at a time."""
    fd, ptr, length, _ = call.args
    for done in range(0, length, WRITE_PERMIT):
        call.serve(_WRITE, fd, ptr + done, min(WRITE_PERMIT, length - done))
    call.ok()


def _poll(call: _Call) -> None:
    """Every pollable is ready: the indices of them all."""
    ptr, length, _ = call.args
    if length > 0x3FFFFFFF:
        raise WasiTrap(f"{length} pollables are more than one list holds")
    pollable = KINDS["pollable"]
    for handle in memoryview(call.memory.read(ptr, 4 * length)).cast("I"):
        call.state.rep(handle, pollable)
    listed = call.realloc(4, 4 * length)
    call.memory.write(listed, b"".join(i.to_bytes(4, "little") for i in range(length)))
    call.store_list(listed, length)


def _exit(call: _Call) -> None:
    status = call.args[0]
    code = status if call.binding.function.name == "exit-with-code" else int(bool(status))
    call.serve(PROC_EXIT, code)  # raises: the sandbox ends


def _wall_now(call: _Call) -> None:
    ns = call.serve(_CLOCK_NOW, _WALL)
    call.store(call.retptr, 8, ns // 1_000_000_000)
    call.store(call.retptr + 8, 4, ns % 1_000_000_000)


def _wall_resolution(call: _Call) -> None:
    call.store(call.retptr, 8, 0)
    call.store(call.retptr + 8, 4, 1)


def _random_bytes(call: _Call) -> None:
    length = call.args[0]
    if length > 0xFFFFFFFF:
        raise WasiTrap(f"{length} random bytes are more than one list holds")
    listed = call.realloc(1, length)
    for done in range(0, length, MAX_RANDOM):
        call.serve(RANDOM_GET, listed + done, min(MAX_RANDOM, length - done))
    call.store_list(listed, length)


def _seed(call: _Call) -> None:
    for offset in (0, 8):
        call.store(call.retptr + offset, 8, call.serve(_RANDOM_U64))


_OUTPUT, _INPUT = "[method]output-stream.", "[method]input-stream."
_ANSWERS: dict[tuple[str, str], Answer] = {
    ("wasi:io/streams", _OUTPUT + "check-write"): lambda call: call.ok(WRITE_PERMIT),
    ("wasi:io/streams", _OUTPUT + "write"): _write,
    ("wasi:io/streams", _OUTPUT + "blocking-write-and-flush"): _write,
    ("wasi:io/streams", _OUTPUT + "flush"): _Call.ok,
    ("wasi:io/streams", _OUTPUT + "blocking-flush"): _Call.ok,
    ("wasi:io/streams", _OUTPUT + "subscribe"): _new("pollable"),
    ("wasi:io/streams", _INPUT + "subscribe"): _new("pollable"),
    ("wasi:io/poll", "[method]pollable.ready"): lambda _call: 1,
    ("wasi:io/poll", "[method]pollable.block"): lambda _call: None,
    ("wasi:io/poll", "poll"): _poll,
    ("wasi:cli/stdin", "get-stdin"): _new("input-stream", STDIN),
    ("wasi:cli/stdout", "get-stdout"): _new("output-stream", STDOUT),
    ("wasi:cli/stderr", "get-stderr"): _new("output-stream", STDERR),
    ("wasi:cli/exit", "exit"): _exit,
    ("wasi:cli/exit", "exit-with-code"): _exit,
    ("wasi:clocks/monotonic-clock", "now"): lambda call: call.serve(_CLOCK_NOW, _MONOTONIC),
    ("wasi:clocks/monotonic-clock", "resolution"): lambda _call: 1,
    ("wasi:clocks/monotonic-clock", "subscribe-instant"): _new("pollable"),
    ("wasi:clocks/monotonic-clock", "subscribe-duration"): _new("pollable"),
    ("wasi:clocks/wall-clock", "now"): _wall_now,
    ("wasi:clocks/wall-clock", "resolution"): _wall_resolution,
    ("wasi:random/random", "get-random-bytes"): _random_bytes,
    ("wasi:random/random", "get-random-u64"): lambda call: call.serve(_RANDOM_U64),
    ("wasi:random/insecure", "get-insecure-random-bytes"): _random_bytes,
    ("wasi:random/insecure", "get-insecure-random-u64"): lambda call: call.serve(_RANDOM_U64),
    ("wasi:random/insecure-seed", "insecure-seed"): _seed,
    ("wasi:sockets/instance-network", "instance-network"): _new("network"),
}
ANSWERED = frozenset(_ANSWERS)  # the same functions as the guest's (tests compare them)
