"""Core wasm calls and host functions over wasmtime's unchecked C API.

wasmtime-py's `Func.__call__` re-reads the function's type and converts every value on each
call (about 50 µs). The hyperfilter world's core signatures are checked once when a plugin is
loaded; after that a call is a few integer stores and one FFI call (about 5 µs). Host
functions get their own trampoline, which turns a Python exception into a wasm trap and keeps
the exception, so the sandbox can say why the plugin stopped.
"""

from __future__ import annotations

import ctypes
import struct
from collections.abc import Callable, Sequence
from ctypes import POINTER, byref
from dataclasses import dataclass
from typing import Any

import wasmtime
from wasmtime import _ffi as ffi

from vmm.canonical import AbiError
from vmm.checked_memory import CheckedMemory
from vmm.core_module import REALLOC_TYPES
from vmm.cpu_clock import check_event_budget

CoreTypes = Sequence[str]  # "i32" | "i64"
_VALTYPES = {"i32": wasmtime.ValType.i32, "i64": wasmtime.ValType.i64}


def func_type(params: CoreTypes, results: CoreTypes) -> wasmtime.FuncType:
    return wasmtime.FuncType([_VALTYPES[t]() for t in params], [_VALTYPES[t]() for t in results])


class WasmTrap(Exception):
    """A call ended in a trap or a wasmtime error; `code` is the trap code when there is one."""

    def __init__(self, message: str, code: wasmtime.TrapCode | None) -> None:
        super().__init__(message)
        self.code = code


def _trap(trap_ptr: ctypes._Pointer) -> WasmTrap:
    trap = wasmtime.Trap._from_ptr(trap_ptr)  # owns and frees the pointer
    return WasmTrap(trap.message, trap.trap_code)


def _error(error_ptr: ctypes._Pointer) -> WasmTrap:
    return WasmTrap(str(wasmtime.WasmtimeError._from_ptr(error_ptr)), None)


# Our own prototypes of the hot C functions, taking plain integers: no per-call argument
# conversion, and wasmtime-py's shared function objects are left as they are.
_call_unchecked = ctypes.CFUNCTYPE(
    ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t,
    ctypes.c_void_p)(("wasmtime_func_call_unchecked", ffi.dll))
_memory_size = ctypes.CFUNCTYPE(ctypes.c_size_t, ctypes.c_void_p, ctypes.c_void_p)(
    ("wasmtime_memory_data_size", ffi.dll))
_memory_data = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)(
    ("wasmtime_memory_data", ffi.dll))
_set_epoch_deadline = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint64)(
    ("wasmtime_context_set_epoch_deadline", ffi.dll))


def set_epoch_deadline(ctx_address: int, ticks: int) -> None:
    """Trap with INTERRUPT once the engine's epoch is `ticks` past the current one."""
    _set_epoch_deadline(ctx_address, ticks)


def address(pointer: Any) -> int:
    """A ctypes pointer as a plain integer: what our own prototypes take, with no
    conversion per call."""
    return ctypes.cast(pointer, ctypes.c_void_p).value or 0


class RawFunc:
    """A core function of known type, called with ints and returning an int (or None)."""

    __slots__ = ("_args", "_buffer", "_ctx", "_func", "_pack", "_result", "_size", "_trap",
                 "_trap_address")

    def __init__(self, ctx: ctypes._Pointer, func: ffi.wasmtime_func_t,
                 params: CoreTypes, results: CoreTypes) -> None:
        self._ctx = address(ctx)
        self._func = func  # kept alive: its address is passed on every call
        self._size = max(len(params), len(results), 1)
        self._buffer = (ffi.wasmtime_val_raw_t * self._size)()
        self._args = ctypes.addressof(self._buffer)
        # Each raw value is a 16-byte slot; i32 and i64 sit at its start.
        layout = "".join("I12x" if t == "i32" else "q8x" for t in params)
        self._pack = struct.Struct("<" + layout).pack_into if params else None
        self._result = (struct.Struct("<i" if results[0] == "i32" else "<q").unpack_from
                        if results else None)
        self._trap = ctypes.c_void_p()
        self._trap_address = ctypes.addressof(self._trap)

    def __call__(self, *args: int) -> int | None:
        if self._pack is not None:
            self._pack(self._buffer, 0, *args)
        error = _call_unchecked(self._ctx, ctypes.addressof(self._func), self._args,
                                self._size, self._trap_address)
        if error:
            raise _error(ctypes.cast(error, POINTER(ffi.wasmtime_error_t)))
        if self._trap.value:
            trap, self._trap.value = self._trap.value, None
            raise _trap(ctypes.cast(trap, POINTER(ffi.wasm_trap_t)))
        return self._result(self._buffer, 0)[0] if self._result is not None else None


def instance_func(store: wasmtime.Store, instance: wasmtime.Instance,
                  name: str) -> ffi.wasmtime_func_t | None:
    item = _export(store._context(), instance, name)
    if item is None or item.kind != ffi.WASMTIME_EXTERN_FUNC.value:
        return None
    return item.of.func


def instance_global_i32(store: wasmtime.Store, instance: wasmtime.Instance,
                        name: str) -> int | None:
    item = _export(store._context(), instance, name)
    if item is None or item.kind != ffi.WASMTIME_EXTERN_GLOBAL.value:
        return None
    value = ffi.wasmtime_val_t()
    ffi.wasmtime_global_get(store._context(), byref(item.of.global_), byref(value))
    return value.of.i32 & 0xFFFFFFFF if value.kind == ffi.WASMTIME_I32.value else None


def instance_memory(store: wasmtime.Store, instance: wasmtime.Instance,
                    name: str = "memory") -> ffi.wasmtime_memory_t | None:
    item = _export(store._context(), instance, name)
    if item is None or item.kind != ffi.WASMTIME_EXTERN_MEMORY.value:
        return None
    return item.of.memory


def _export(ctx: ctypes._Pointer, instance: wasmtime.Instance,
            name: str) -> ffi.wasmtime_extern_t | None:
    encoded = name.encode()
    item = ffi.wasmtime_extern_t()
    found = ffi.wasmtime_instance_export_get(ctx, byref(instance._instance), encoded,
                                            len(encoded), byref(item))
    return item if found else None


class LinearMemory(CheckedMemory):
    """A plugin's linear memory and its `cabi_realloc`, every access bounds-checked.

    The engine is configured so that memories never move (`memory_may_move = False`): the base
    address is read once, and accesses go through a memoryview over the memory's current size
    (made again when it has grown), with no foreign call. No view outlives the sandbox."""

    __slots__ = ("_base", "_bytes", "_ctx", "_memory", "_realloc")

    def __init__(self, ctx: ctypes._Pointer, memory: ffi.wasmtime_memory_t,
                 realloc: RawFunc | None) -> None:
        super().__init__()
        self._ctx = address(ctx)
        self._memory = memory
        self._realloc = realloc
        self._base = _memory_data(self._ctx, ctypes.addressof(memory)) or 0
        self._bytes = memoryview(b"")
        self.size()

    def size(self) -> int:
        size = _memory_size(self._ctx, ctypes.addressof(self._memory))
        if size != self._size:
            self._bytes = memoryview((ctypes.c_char * size).from_address(self._base)).cast("B")
            self._size = size
        return size

    def read(self, ptr: int, length: int) -> bytes:
        self._check(ptr, length)
        return bytes(self._bytes[ptr:ptr + length])

    def write(self, ptr: int, data: bytes) -> None:
        self._check(ptr, len(data))
        self._bytes[ptr:ptr + len(data)] = data

    def view(self, ptr: int, length: int) -> memoryview:
        self._check(ptr, length)
        return self._bytes[ptr:ptr + length]

    def _allocate(self, align: int, size: int) -> int:
        if self._realloc is None:
            raise AbiError("the plugin exports no cabi_realloc")
        return self._realloc(0, 0, align, size)  # type: ignore[return-value]


HostCallback = Callable[[LinearMemory, list[int]], int | None]
_NO_FINALIZER = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(lambda _env: None)


@dataclass(frozen=True)
class HostFunction:
    """A host function's trampoline and core type, for a linker or for one store."""

    native: Any  # ffi.wasmtime_func_unchecked_callback_t
    type: wasmtime.FuncType

    def make(self, ctx: ctypes._Pointer, into: ffi.wasmtime_extern_t) -> None:
        """The function in the store `ctx`, written into `into`."""
        into.kind = ffi.WASMTIME_EXTERN_FUNC
        ffi.wasmtime_func_new_unchecked(ctx, self.type.ptr(), self.native, None, _NO_FINALIZER,
                                        byref(into.of.func))


MemoryOf = Callable[[ctypes._Pointer, ctypes._Pointer], LinearMemory]


class HostCalls:
    """Host functions for one plugin's linker or stores. A Python exception inside one becomes
    a trap; `take_cause()` returns that exception so the sandbox can report it."""

    def __init__(self) -> None:
        self._keep: list[object] = []  # ctypes callbacks must outlive the linker and stores
        self._cause: BaseException | None = None

    def take_cause(self) -> BaseException | None:
        cause, self._cause = self._cause, None
        return cause

    def function(self, module: str, name: str, params: CoreTypes, results: CoreTypes,
                 callback: HostCallback, memory_of: MemoryOf | None = None) -> HostFunction:
        """`callback` as a host function; it gets the memory `memory_of(caller, context)`
        names (by default the calling instance's exported memory and realloc)."""
        kinds = tuple(params)
        result = results[0] if results else None
        memory = memory_of or caller_memory

        def trampoline(_env: int, caller: ctypes._Pointer, values: ctypes.Array,
                       _count: int) -> int:
            try:
                check_event_budget()
                ctx = ffi.wasmtime_caller_context(caller)
                args = [values[i].i32 if k == "i32" else values[i].i64
                        for i, k in enumerate(kinds)]
                out = callback(memory(caller, ctx), args)
                if result == "i32":
                    values[0].i32 = out
                elif result == "i64":
                    values[0].i64 = out
                return 0
            except BaseException as exc:  # noqa: BLE001 - every failure must become a trap
                self._cause = exc
                message = f"host call {module}#{name} failed".encode()
                return ctypes.cast(ffi.wasmtime_trap_new(message, len(message)),
                                   ctypes.c_void_p).value or 0

        native = ffi.wasmtime_func_unchecked_callback_t(trampoline)
        self._keep.append(native)
        return HostFunction(native, func_type(params, results))

    def define(self, linker: wasmtime.Linker, module: str, name: str,
               params: CoreTypes, results: CoreTypes, callback: HostCallback) -> None:
        function = self.function(module, name, params, results, callback)
        module_b, name_b = module.encode(), name.encode()
        error = ffi.wasmtime_linker_define_func_unchecked(
            linker.ptr(), module_b, len(module_b), name_b, len(name_b), function.type.ptr(),
            function.native, None, _NO_FINALIZER)
        if error:
            raise _error(error)


def caller_memory(caller: ctypes._Pointer, ctx: ctypes._Pointer) -> LinearMemory:
    """The calling instance's memory and allocator, as the canonical ABI needs them."""
    memory = _caller_export(caller, "memory")
    if memory is None or memory.kind != ffi.WASMTIME_EXTERN_MEMORY.value:
        raise AbiError("the plugin exports no memory")
    realloc = _caller_export(caller, "cabi_realloc")
    raw_realloc = None
    if realloc is not None and realloc.kind == ffi.WASMTIME_EXTERN_FUNC.value:
        raw_realloc = RawFunc(ctx, realloc.of.func, *REALLOC_TYPES)
    return LinearMemory(ctx, memory.of.memory, raw_realloc)


def _caller_export(caller: ctypes._Pointer, name: str) -> ffi.wasmtime_extern_t | None:
    encoded = name.encode()
    item = ffi.wasmtime_extern_t()
    if not ffi.wasmtime_caller_export_get(caller, encoded, len(encoded), byref(item)):
        return None
    return item
