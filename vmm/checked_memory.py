"""What every tier's view of a plugin's linear memory shares: each access checked against the
memory's size (read again only when an access seems out of bounds: memories only grow), and
`cabi_realloc`'s answer checked before the host writes there."""

from __future__ import annotations

from abc import ABC, abstractmethod

from vmm.canonical import AbiError


class CheckedMemory(ABC):
    __slots__ = ("_size",)

    def __init__(self) -> None:
        self._size = 0

    @abstractmethod
    def size(self) -> int:
        """The current size in bytes; sets `_size`."""

    @abstractmethod
    def read(self, ptr: int, length: int) -> bytes:
        """`length` bytes at `ptr`, checked."""

    @abstractmethod
    def write(self, ptr: int, data: bytes) -> None:
        """`data` at `ptr`, checked."""

    @abstractmethod
    def view(self, ptr: int, length: int) -> memoryview:
        """A writable view of `length` bytes at `ptr`, checked once: linear memory never
        moves or shrinks while its sandbox lives, and the view must not outlive it."""

    @abstractmethod
    def _allocate(self, align: int, size: int) -> int:
        """Call the plugin's cabi_realloc(0, 0, align, size)."""

    def _check(self, ptr: int, length: int) -> None:
        if ptr < 0 or length < 0 or (ptr + length > self._size and ptr + length > self.size()):
            raise AbiError(f"{length} bytes at {ptr:#x} are outside linear memory")

    def start_arguments(self) -> None:  # noqa: B027 - a hook with nothing to do here
        """Arguments of a new event are coming (nothing to do: each goes through realloc)."""

    def realloc(self, align: int, size: int) -> int:
        ptr = self._allocate(align, size) & 0xFFFFFFFF
        if ptr % align:
            raise AbiError(f"cabi_realloc returned a misaligned pointer {ptr:#x}")
        self._check(ptr, size)
        return ptr
