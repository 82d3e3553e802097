"""The `wasmtime` isolation tier: one Store and instance per sandbox on a shared Engine."""

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
from vmm.wasmtime.engine import EpochTicker, new_engine, runtime_fingerprint


class WasmtimeBackend(Backend):
    tier = "wasmtime"

    def __init__(self, cache_dir: Path) -> None:
        component_bytes.install()
        self.engine = new_engine()
        self.ticker = EpochTicker(self.engine)
        self.cache = CompileCache(cache_dir, runtime_fingerprint())

    def load(self, manifest: Manifest, wasm: bytes, env: HostEnv) -> LoadedPlugin:
        kind = wasm_kind(wasm)
        try:
            if kind is WasmKind.CORE:
                core = check_core_module(manifest, wasm)
                module = self.cache.load_or_compile(
                    wasm, "cwasm", lambda: wasmtime.Module(self.engine, wasm).serialize(),
                    lambda path: wasmtime.Module.deserialize_file(self.engine, str(path)))
                return CorePlugin(manifest, core, module, env, self.engine, self.ticker)
            if kind is WasmKind.COMPONENT:
                component = self.cache.load_or_compile(
                    wasm, "ccwasm", lambda: bytes(wc.Component(self.engine, wasm).serialize()),
                    lambda path: wc.Component.deserialize_file(self.engine, str(path)))
                return ComponentPlugin(manifest, component, env, self.engine, self.ticker)
        except wasmtime.WasmtimeError as exc:
            raise NotWasmError(manifest.name, f"{manifest.wasm} does not compile: "
                                              f"{str(exc).splitlines()[0]}") from None
        raise NotWasmError(manifest.name, f"{manifest.wasm} is not WebAssembly (no \\0asm header)")

    def close(self) -> None:
        self.ticker.close()
