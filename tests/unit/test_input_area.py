"""ArgumentArea: arguments bump-allocated in the plugin's lent area, written through one view;
what does not fit goes through the plugin's own allocator."""

from __future__ import annotations

import struct

import pytest

from vmm.canonical import AbiError
from vmm.checked_memory import CheckedMemory
from vmm.input_area import ArgumentArea


class BytesMemory(CheckedMemory):
    """Linear memory as a bytearray; its allocator hands out addresses from 0x800 up."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.data = bytearray(size)
        self.next_free = 0x800
        self.foreign_writes = 0

    def size(self) -> int:
        self._size = len(self.data)
        return self._size

    def read(self, ptr: int, length: int) -> bytes:
        self._check(ptr, length)
        return bytes(self.data[ptr:ptr + length])

    def write(self, ptr: int, data: bytes) -> None:
        self._check(ptr, len(data))
        self.data[ptr:ptr + len(data)] = data
        self.foreign_writes += 1

    def view(self, ptr: int, length: int) -> memoryview:
        self._check(ptr, length)
        return memoryview(self.data)[ptr:ptr + length]

    def _allocate(self, align: int, size: int) -> int:
        ptr, self.next_free = self.next_free, self.next_free + size
        return ptr


def memory_with_area(capacity: int, start: int = 0x100) -> BytesMemory:
    memory = BytesMemory(0x1000)
    memory.data[0x10:0x18] = struct.pack("<II", capacity, start)
    return memory


def test_arguments_that_fit_are_written_in_the_area_without_a_call_into_the_plugin() -> None:
    memory = memory_with_area(capacity=16)
    area = ArgumentArea(memory, 0x10)
    first, second = area.realloc(1, 5), area.realloc(4, 4)
    area.write(first, b"hello")
    area.write(second, b"\1\2\3\4")
    assert (first, second) == (0x100, 0x108)  # bumped, second aligned to 4
    assert memory.read(0x100, 5) == b"hello" and memory.read(0x108, 4) == b"\1\2\3\4"
    assert memory.foreign_writes == 0 and memory.next_free == 0x800


def test_what_does_not_fit_goes_through_the_plugins_allocator_and_each_event_starts_over(
) -> None:
    memory = memory_with_area(capacity=8)
    area = ArgumentArea(memory, 0x10)
    assert area.realloc(1, 6) == 0x100
    spilled = area.realloc(1, 6)
    area.write(spilled, b"abcdef")
    assert spilled == 0x800 and memory.read(0x800, 6) == b"abcdef"
    assert memory.foreign_writes == 1
    area.start_arguments()
    assert area.realloc(1, 8) == 0x100


def test_an_area_reaching_past_memory_is_refused() -> None:
    with pytest.raises(AbiError):
        ArgumentArea(memory_with_area(capacity=0x1000, start=0x800), 0x10)
