"""The `wasmtime` isolation tier: one Store and instance per sandbox, on an Engine shared by
the plugins whose memory limits round to the same reservation."""

from __future__ import annotations

from pathlib import Path

import wasmtime
import wasmtime.component as wc

from vmm.cache import CompileCache
from vmm.capabilities import HostEnv
from vmm.core_module import check_core_module
from vmm.errors import NotWasmError
from vmm.manifest import Manifest
from vmm.sandbox import Backend, LoadedPlugin
from vmm.wasm_kind import WasmKind, wasm_kind
from vmm.wasmtime import component_bytes
from vmm.wasmtime.component import ComponentPlugin
from vmm.wasmtime.core import CorePlugin
from vmm.wasmtime.engine import EpochTicker, new_engine, reservation_for, runtime_fingerprint


class WasmtimeBackend(Backend):
    tier = "wasmtime"

    def __init__(self, cache_dir: Path) -> None:
        component_bytes.install()
        self.cache = CompileCache(cache_dir, runtime_fingerprint())
        self.ticker = EpochTicker()
        self._engines: dict[int, wasmtime.Engine] = {}

    def engine_for(self, memory_limit: int) -> tuple[wasmtime.Engine, int]:
        """The engine whose memories reserve enough for the limit, and that reservation."""
        reservation = reservation_for(memory_limit)
        if reservation not in self._engines:
            self._engines[reservation] = engine = new_engine(reservation)
            self.ticker.add(engine)
        return self._engines[reservation], reservation

    def load(self, manifest: Manifest, wasm: bytes, env: HostEnv) -> LoadedPlugin:
        kind = wasm_kind(wasm)
        engine, reservation = self.engine_for(manifest.limits.memory_bytes)
        variant = f"{reservation >> 20}m"  # code compiled for one reservation
        try:
            if kind is WasmKind.CORE:
                core = check_core_module(manifest, wasm)
                module = self.cache.load_or_compile(
                    wasm, f"{variant}.cwasm", lambda: wasmtime.Module(engine, wasm).serialize(),
                    lambda path: wasmtime.Module.deserialize_file(engine, str(path)))
                return CorePlugin(manifest, core, module, env, engine, self.ticker)
            if kind is WasmKind.COMPONENT:
                component = self.cache.load_or_compile(
                    wasm, f"{variant}.ccwasm",
                    lambda: bytes(wc.Component(engine, wasm).serialize()),
                    lambda path: wc.Component.deserialize_file(engine, str(path)))
                return ComponentPlugin(manifest, component, env, engine, self.ticker)
        except wasmtime.WasmtimeError as exc:
            raise NotWasmError(manifest.name, f"{manifest.wasm} does not compile: "
                                              f"{str(exc).splitlines()[0]}") from None
        raise NotWasmError(manifest.name, f"{manifest.wasm} is not WebAssembly (no \\0asm header)")

    def close(self) -> None:
        self.ticker.close()
