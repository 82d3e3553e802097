"""The input area a core module may lend for event arguments (plugins/sdk/c/hyperfilter.c).

A module exporting the i32 global `hyperfilter_input` points it at a descriptor
{u32 capacity; u32 address}. Each event's strings and lists are then bump-allocated in that
area, and only what does not fit goes through `cabi_realloc`: one call into the plugin per
event instead of one per argument. The export is the module's promise that argument memory is
borrowed: it never frees it. Every tier uses this over its own view of linear memory; writes
into the area go through one memoryview over it, checked once, instead of one bounds-checked
foreign call each (an HTTP header list is dozens of writes).
"""

from __future__ import annotations

import struct

from vmm.checked_memory import CheckedMemory

INPUT_AREA_EXPORT = "hyperfilter_input"
_DESCRIPTOR = struct.Struct("<II")  # capacity, address of the buffer


class ArgumentArea:
    __slots__ = ("_area", "_end", "_memory", "_start", "_top")

    def __init__(self, memory: CheckedMemory, descriptor: int) -> None:
        capacity, start = _DESCRIPTOR.unpack(memory.read(descriptor, _DESCRIPTOR.size))
        self._area = memory.view(start, capacity)  # the whole area lies inside linear memory
        self._memory = memory
        self._start = self._top = start
        self._end = start + capacity

    def start_arguments(self) -> None:
        self._top = self._start

    def read(self, ptr: int, length: int) -> bytes:
        return self._memory.read(ptr, length)

    def write(self, ptr: int, data: bytes) -> None:
        offset = ptr - self._start
        if offset >= 0 and ptr + len(data) <= self._end:
            self._area[offset:offset + len(data)] = data
        else:
            self._memory.write(ptr, data)

    def realloc(self, align: int, size: int) -> int:
        ptr = (self._top + align - 1) & ~(align - 1)
        if ptr + size <= self._end:
            self._top = ptr + size
            return ptr
        return self._memory.realloc(align, size)
