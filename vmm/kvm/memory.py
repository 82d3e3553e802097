"""A sandbox's linear memory as the host sees it: the guest pages at LINEAR_BASE, read and
written directly (no VM exit), every access checked against the memory's current size."""

from __future__ import annotations

import struct
from collections.abc import Callable

from vmm.canonical import AbiError
from vmm.kvm.layout import LINEAR_BASE, MAILBOX, MEMORY_SIZE
from vmm.kvm.machine import Machine

_U64 = struct.Struct("<Q")
Realloc = Callable[[int, int], int]  # (align, size) -> pointer, by calling the plugin


class GuestMemory:
    __slots__ = ("_limit", "_machine", "_realloc", "_size")

    def __init__(self, machine: Machine, limit: int, realloc: Realloc) -> None:
        self._machine = machine
        self._limit = limit
        self._realloc = realloc
        self._size = 0

    def size(self) -> int:
        """The size the runtime reports, never more than the slot holds (the guest may lie)."""
        reported = _U64.unpack_from(self._machine.memory, MAILBOX + MEMORY_SIZE)[0]
        self._size = min(reported, self._limit)
        return self._size

    def _at(self, ptr: int, length: int) -> int:
        if ptr < 0 or length < 0 or (ptr + length > self._size and ptr + length > self.size()):
            raise AbiError(f"{length} bytes at {ptr:#x} are outside linear memory")
        return LINEAR_BASE + ptr

    def read(self, ptr: int, length: int) -> bytes:
        start = self._at(ptr, length)
        return bytes(self._machine.memory[start:start + length])

    def write(self, ptr: int, data: bytes) -> None:
        start = self._at(ptr, len(data))
        self._machine.memory[start:start + len(data)] = data

    def start_arguments(self) -> None:
        """Arguments of a new event are coming (nothing to do: each goes through realloc)."""

    def realloc(self, align: int, size: int) -> int:
        ptr = self._realloc(align, size) & 0xFFFFFFFF
        if ptr % align:
            raise AbiError(f"cabi_realloc returned a misaligned pointer {ptr:#x}")
        self._at(ptr, size)
        return ptr
