"""Fast `list<u8>` conversion for wasmtime-py's component values.

wasmtime-py converts a `list<u8>` one element, and one ctypes call, at a time: about 2.3 µs per
byte, 150 ms for a 64 KiB body, long enough for one client with a large body to stall every
other stream. Each element is a `wasmtime_component_val_t` with its kind at a fixed offset and
its value at another, so a whole list converts with two strided copies in C instead.
"""

from __future__ import annotations

import ctypes
import logging
from ctypes import byref
from typing import Any

from wasmtime import _ffi as ffi
from wasmtime.component._types import ListType

log = logging.getLogger(__name__)

_VAL = ffi.wasmtime_component_val_t
_VAL_SIZE = ctypes.sizeof(_VAL)
_KIND_OFFSET = _VAL.kind.offset
_VALUE_OFFSET = _VAL.of.offset
_U8 = ffi.WASMTIME_COMPONENT_U8.value
_installed = False


def lower_bytes(data: bytes) -> ffi.wasmtime_component_vallist_t:
    """A component value list holding `data`, built without a per-byte loop."""
    raw = ffi.wasmtime_component_vallist_t()
    ffi.wasmtime_component_vallist_new_uninit(raw, len(data))
    if data:
        image = bytearray(len(data) * _VAL_SIZE)
        image[_KIND_OFFSET::_VAL_SIZE] = bytes([_U8]) * len(data)
        image[_VALUE_OFFSET::_VAL_SIZE] = data
        ctypes.memmove(raw.data, (ctypes.c_char * len(image)).from_buffer(image), len(image))
    return raw


def lift_bytes(raw: ffi.wasmtime_component_vallist_t) -> bytes:
    """The bytes of a component value list of u8; frees the list."""
    try:
        if not raw.size:
            return b""
        return ctypes.string_at(raw.data, raw.size * _VAL_SIZE)[_VALUE_OFFSET::_VAL_SIZE]
    finally:
        ffi.wasmtime_component_vallist_delete(byref(raw))


def install() -> None:
    """Route `list<u8>` through the strided copies; other lists keep wasmtime-py's path."""
    global _installed
    if _installed:
        return
    slow_to_c, slow_from_c = ListType.convert_to_c, ListType.convert_from_c

    def convert_to_c(self: ListType, store: Any, val: Any, ptr: Any) -> None:
        if not self._is_bytes():
            return slow_to_c(self, store, val, ptr)
        if not isinstance(val, bytes | bytearray):
            raise TypeError("expected bytes value")
        ptr.contents.kind = ffi.WASMTIME_COMPONENT_LIST
        ptr.contents.of.list = lower_bytes(bytes(val))
        return None

    def convert_from_c(self: ListType, c: Any) -> Any:
        if not self._is_bytes():
            return slow_from_c(self, c)
        return lift_bytes(c.of.list)

    ListType.convert_to_c = convert_to_c  # type: ignore[method-assign]
    ListType.convert_from_c = convert_from_c  # type: ignore[method-assign]
    _installed = True
