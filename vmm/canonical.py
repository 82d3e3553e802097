"""The component model's canonical ABI, for the WIT types hyperfilter uses, over a core module.

A core-module plugin implements the lowering of the WIT world by hand (C, Zig, ...); this
module is the host's half of that contract: it lays values out in the plugin's linear memory
and reads them back exactly as the canonical ABI specifies (sizes, alignment, flattening,
realloc for every string and list). Every read is bounds-checked: memory belongs to a hostile
plugin, and a bad pointer, length, tag or UTF-8 sequence raises `AbiError`.

Values in Python: bool, int, str, bytes (list<u8>), list, tuple (record and tuple), and
`(case_index, payload)` for variants and results; option<T> is `None` or the value, an enum
is its case index.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

MAX_FLAT_PARAMS = 16
MAX_FLAT_RESULTS = 1


class AbiError(Exception):
    """The plugin's side of the ABI is broken: out-of-bounds pointer, bad tag, bad UTF-8."""


class Memory(Protocol):
    """A plugin's linear memory plus its allocator (`cabi_realloc`)."""

    def read(self, ptr: int, length: int) -> bytes: ...

    def write(self, ptr: int, data: bytes) -> None: ...

    def realloc(self, align: int, size: int) -> int: ...


def align_to(offset: int, alignment: int) -> int:
    return (offset + alignment - 1) & ~(alignment - 1)


class ValType:
    size: int
    align: int
    flat: tuple[str, ...]  # core value types: "i32" | "i64"

    def load(self, mem: Memory, ptr: int) -> Any:
        raise NotImplementedError

    def store(self, mem: Memory, ptr: int, value: Any) -> None:
        raise NotImplementedError

    def lift_flat(self, mem: Memory, values: Iterator[int]) -> Any:
        raise NotImplementedError

    def lower_flat(self, mem: Memory, value: Any) -> list[int]:
        raise NotImplementedError


class Int(ValType):
    """bool, u8 .. u64, s8 .. s64 (and enum discriminants)."""

    def __init__(self, size: int, signed: bool = False, is_bool: bool = False) -> None:
        self.size = self.align = size
        self.signed = signed
        self.is_bool = is_bool
        self.flat = ("i64",) if size == 8 else ("i32",)
        code = {1: "b", 2: "h", 4: "i", 8: "q"}[size]
        self._struct = struct.Struct("<" + (code if signed else code.upper()))
        self._bits = size * 8

    def _check(self, value: int) -> int:
        low, high = (-(1 << (self._bits - 1)), 1 << (self._bits - 1)) if self.signed else (
            0, 1 << self._bits)
        if not low <= value < high:
            raise AbiError(f"{value} does not fit in {self._bits} bits")
        return value

    def _from_core(self, raw: int) -> Any:
        mask = (1 << self._bits) - 1
        value = raw & mask
        if self.signed and value >= 1 << (self._bits - 1):
            value -= 1 << self._bits
        return bool(value) if self.is_bool else value

    def load(self, mem: Memory, ptr: int) -> Any:
        value = self._struct.unpack(mem.read(ptr, self.size))[0]
        return bool(value) if self.is_bool else value

    def store(self, mem: Memory, ptr: int, value: Any) -> None:
        mem.write(ptr, self._struct.pack(self._check(int(value))))

    def lift_flat(self, mem: Memory, values: Iterator[int]) -> Any:
        return self._from_core(next(values))

    def lower_flat(self, mem: Memory, value: Any) -> list[int]:
        return [self._check(int(value))]


BOOL = Int(1, is_bool=True)
U8 = Int(1)
U16 = Int(2)
U32 = Int(4)
U64 = Int(8)
S64 = Int(8, signed=True)

_PTR_LEN = struct.Struct("<II")


class _PointerLength(ValType):
    """What string, list<u8> and list<T> share: a (pointer, length) pair, as one memory word
    pair or two flat values, to something the subclass lifts and lowers."""

    size, align, flat = 8, 4, ("i32", "i32")

    def _lift(self, mem: Memory, ptr: int, length: int) -> Any:
        raise NotImplementedError

    def _lower(self, mem: Memory, value: Any) -> tuple[int, int]:
        raise NotImplementedError

    def load(self, mem: Memory, ptr: int) -> Any:
        return self._lift(mem, *_PTR_LEN.unpack(mem.read(ptr, 8)))

    def store(self, mem: Memory, ptr: int, value: Any) -> None:
        mem.write(ptr, _PTR_LEN.pack(*self._lower(mem, value)))

    def lift_flat(self, mem: Memory, values: Iterator[int]) -> Any:
        return self._lift(mem, next(values) & 0xFFFFFFFF, next(values) & 0xFFFFFFFF)

    def lower_flat(self, mem: Memory, value: Any) -> list[int]:
        return list(self._lower(mem, value))


def lower_buffer(mem: Memory, data: bytes) -> tuple[int, int]:
    """A string's or list<u8>'s bytes in memory: (pointer, length); nothing for none."""
    if not data:
        return 0, 0
    ptr = mem.realloc(1, len(data))
    mem.write(ptr, data)
    return ptr, len(data)


def lift_text(mem: Memory, ptr: int, length: int) -> str:
    """A string from memory: its bytes, which must be UTF-8."""
    try:
        return mem.read(ptr, length).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise AbiError(f"string is not valid UTF-8: {exc.reason}") from None


class _Buffer(_PointerLength):
    """string and list<u8>: the bytes themselves."""

    text = False

    def _lift(self, mem: Memory, ptr: int, length: int) -> Any:
        return lift_text(mem, ptr, length) if self.text else mem.read(ptr, length)

    def _lower(self, mem: Memory, value: Any) -> tuple[int, int]:
        return lower_buffer(mem, value.encode("utf-8") if self.text else bytes(value))


class Bytes(_Buffer):
    text = False


class String(_Buffer):
    text = True


BYTES = Bytes()
STRING = String()


class List(_PointerLength):
    """list<T> for T other than u8: `length` elements of T, each at the element's stride."""

    def __init__(self, element: ValType) -> None:
        self.element = element
        self.stride = align_to(element.size, element.align)

    def _lift(self, mem: Memory, ptr: int, length: int) -> list[Any]:
        if ptr % self.element.align:
            raise AbiError("list pointer is misaligned")
        mem.read(ptr, length * self.stride)  # one bounds check for the whole array
        return [self.element.load(mem, ptr + i * self.stride) for i in range(length)]

    def _lower(self, mem: Memory, value: Sequence[Any]) -> tuple[int, int]:
        if not value:
            return 0, 0
        ptr = mem.realloc(self.element.align, len(value) * self.stride)
        for i, item in enumerate(value):
            self.element.store(mem, ptr + i * self.stride, item)
        return ptr, len(value)


class Tuple(ValType):
    """tuple<...> and record { ... }: fields laid out in order, each at its alignment."""

    def __init__(self, *fields: ValType) -> None:
        self.fields = fields
        offset, self.offsets = 0, []
        for f in fields:
            offset = align_to(offset, f.align)
            self.offsets.append(offset)
            offset += f.size
        self.align = max((f.align for f in fields), default=1)
        self.size = align_to(offset, self.align)
        self.flat = tuple(t for f in fields for t in f.flat)

    def load(self, mem: Memory, ptr: int) -> Any:
        return tuple(f.load(mem, ptr + o) for f, o in zip(self.fields, self.offsets, strict=True))

    def store(self, mem: Memory, ptr: int, value: Any) -> None:
        for f, o, item in zip(self.fields, self.offsets, value, strict=True):
            f.store(mem, ptr + o, item)

    def lift_flat(self, mem: Memory, values: Iterator[int]) -> Any:
        return tuple(f.lift_flat(mem, values) for f in self.fields)

    def lower_flat(self, mem: Memory, value: Any) -> list[int]:
        return [v for f, item in zip(self.fields, value, strict=True)
                for v in f.lower_flat(mem, item)]


Record = Tuple


class Variant(ValType):
    """variant, enum, option and result: a discriminant, then the case's payload."""

    def __init__(self, *cases: ValType | None) -> None:
        self.cases = cases
        self.disc = U8 if len(cases) <= 256 else U16 if len(cases) <= 65536 else U32
        self.payload_align = max((c.align for c in cases if c), default=1)
        self.align = max(self.disc.align, self.payload_align)
        self.payload_offset = align_to(self.disc.size, self.payload_align)
        payload_size = max((c.size for c in cases if c), default=0)
        self.size = align_to(self.payload_offset + payload_size, self.align)
        self.flat = ("i32", *_join_flat([c.flat for c in cases if c]))

    def load(self, mem: Memory, ptr: int) -> Any:
        index = self.disc.load(mem, ptr)
        if index >= len(self.cases):
            raise AbiError(f"variant tag {index} is out of range ({len(self.cases)} cases)")
        case = self.cases[index]
        return index, (case.load(mem, ptr + self.payload_offset) if case else None)

    def store(self, mem: Memory, ptr: int, value: Any) -> None:
        index, payload = value
        self.disc.store(mem, ptr, index)
        case = self.cases[index]
        if case:
            case.store(mem, ptr + self.payload_offset, payload)


def _join_flat(case_flats: list[tuple[str, ...]]) -> tuple[str, ...]:
    joined: list[str] = []
    for flat in case_flats:
        for i, t in enumerate(flat):
            if i < len(joined):
                joined[i] = joined[i] if joined[i] == t else "i64"
            else:
                joined.append(t)
    return tuple(joined)


class Enum(Variant):
    """enum { a, b, ... }: a discriminant with named cases and no payloads."""

    def __init__(self, *names: str) -> None:
        super().__init__(*([None] * len(names)))
        self.names = names

    def load(self, mem: Memory, ptr: int) -> Any:
        return super().load(mem, ptr)[0]

    def store(self, mem: Memory, ptr: int, value: Any) -> None:
        super().store(mem, ptr, (value, None))

    def lift_flat(self, mem: Memory, values: Iterator[int]) -> Any:
        index = next(values) & 0xFFFFFFFF
        if index >= len(self.names):
            raise AbiError(f"enum value {index} is out of range ({len(self.names)} cases)")
        return index

    def lower_flat(self, mem: Memory, value: Any) -> list[int]:
        return [value]


class Option(Variant):
    """option<T>: `None` or the value (unambiguous for the T hyperfilter uses)."""

    def __init__(self, inner: ValType) -> None:
        super().__init__(None, inner)

    def load(self, mem: Memory, ptr: int) -> Any:
        return super().load(mem, ptr)[1]

    def store(self, mem: Memory, ptr: int, value: Any) -> None:
        super().store(mem, ptr, (0, None) if value is None else (1, value))


class Result(Variant):
    """result<ok, err>: `(0, ok_value)` or `(1, err_value)`."""

    def __init__(self, ok: ValType | None, err: ValType | None) -> None:
        super().__init__(ok, err)
        self.ok = ok
        self.err = err


class Signature:
    """A function's core-level shape: its flat params, and whether results go through memory."""

    def __init__(self, params: Sequence[ValType], result: ValType | None) -> None:
        self.params = tuple(params)
        self.result = result
        flat_params = [t for p in params for t in p.flat]
        if len(flat_params) > MAX_FLAT_PARAMS:
            raise ValueError("functions with more than 16 flat params are not used by the world")
        self.result_in_memory = result is not None and len(result.flat) > MAX_FLAT_RESULTS

    def core_export(self) -> tuple[list[str], list[str]]:
        """The core function type a plugin exports: (params, results)."""
        params = [t for p in self.params for t in p.flat]
        if self.result is None:
            return params, []
        return params, ["i32"] if self.result_in_memory else list(self.result.flat)

    def core_import(self) -> tuple[list[str], list[str]]:
        """The core function type a plugin imports: a result in memory adds a return pointer."""
        params = [t for p in self.params for t in p.flat]
        if self.result is None:
            return params, []
        if self.result_in_memory:
            return [*params, "i32"], []
        return params, list(self.result.flat)
