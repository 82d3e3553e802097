"""A sandbox's linear memory as the host sees it: the guest pages at LINEAR_BASE, read and
written directly (no VM exit), every access checked against the memory's current size."""

from __future__ import annotations

import struct
from collections.abc import Callable

from vmm.checked_memory import CheckedMemory
from vmm.kvm.layout import COMMAND, LINEAR_BASE, MAILBOX, MEMORY_SIZE, RESULT, RESUME
from vmm.kvm.machine import Machine

_U64 = struct.Struct("<Q")
_U64_MASK = 2**64 - 1
Realloc = Callable[[int, int], int]  # (align, size) -> pointer, by calling the plugin


def answer_host_call(memory: memoryview, result: int | None) -> None:
    """Leave a host call's result and RESUME in the mailbox of a guest memory; the next run
    goes on where the guest asked."""
    _U64.pack_into(memory, MAILBOX + RESULT, (result or 0) & _U64_MASK)
    _U64.pack_into(memory, MAILBOX + COMMAND, RESUME)


class GuestMemory(CheckedMemory):
    __slots__ = ("_limit", "_machine", "_realloc")

    def __init__(self, machine: Machine, limit: int, realloc: Realloc) -> None:
        super().__init__()
        self._machine = machine
        self._limit = limit
        self._realloc = realloc

    def size(self) -> int:
        """The size the runtime reports, never more than the slot holds (the guest may lie)."""
        reported = _U64.unpack_from(self._machine.memory, MAILBOX + MEMORY_SIZE)[0]
        self._size = min(reported, self._limit)
        return self._size

    def read(self, ptr: int, length: int) -> bytes:
        self._check(ptr, length)
        start = LINEAR_BASE + ptr
        return bytes(self._machine.memory[start:start + length])

    def write(self, ptr: int, data: bytes) -> None:
        self._check(ptr, len(data))
        start = LINEAR_BASE + ptr
        self._machine.memory[start:start + len(data)] = data

    def view(self, ptr: int, length: int) -> memoryview:
        """(A machine's reset maps fresh pages at the same address: the view stays valid.)"""
        self._check(ptr, length)
        start = LINEAR_BASE + ptr
        return self._machine.memory[start:start + length]

    def _allocate(self, align: int, size: int) -> int:
        return self._realloc(align, size)
