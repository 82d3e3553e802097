"""Telling a core module from a component by the header of the binary."""

from __future__ import annotations

import enum

MAGIC = b"\0asm"


class WasmKind(enum.Enum):
    CORE = "core"
    COMPONENT = "component"


def wasm_kind(wasm: bytes) -> WasmKind | None:
    """None when `wasm` is not WebAssembly at all."""
    if len(wasm) < 8 or wasm[:4] != MAGIC:
        return None
    # A core module's version is 1; a component's layer field (bytes 6-7) is 1.
    return WasmKind.COMPONENT if wasm[6:8] == b"\x01\x00" else WasmKind.CORE
