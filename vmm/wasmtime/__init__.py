"""The `wasmtime` isolation tier: one Store and instance per sandbox, on an Engine shared by
the plugins whose memory limits round to the same reservation."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import wasmtime
import wasmtime.component as wc

from vmm.cache import CompileCache
from vmm.capabilities import HostEnv
from vmm.component_linking import link
from vmm.core_module import check_core_module
from vmm.errors import NotWasmError
from vmm.manifest import Manifest
from vmm.memory_plan import memory_plan
from vmm.sandbox import Backend, LoadedPlugin
from vmm.wasm_kind import WasmKind, wasm_kind
from vmm.wasmtime.core import CorePlugin
from vmm.wasmtime.engine import EpochTicker, new_engine, reservation_for, runtime_fingerprint
from vmm.wasmtime.linked import LinkedPlugin


class WasmtimeBackend(Backend):
    tier = "wasmtime"

    def __init__(self, cache_dir: Path) -> None:
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
                    lambda path: wasmtime.Module.deserialize_file(engine, str(path)),
                    f"plugin {manifest.name} (a core module)")
                return CorePlugin(manifest, core, module, env, engine, self.ticker,
                                  memory_plan(wasm))
            if kind is WasmKind.COMPONENT:
                return self._linked(manifest, wasm, env)
        except wasmtime.WasmtimeError as exc:
            raise NotWasmError(manifest.name, f"{manifest.wasm} does not compile: "
                                              f"{str(exc).splitlines()[0]}") from None
        raise NotWasmError(manifest.name, f"{manifest.wasm} is not WebAssembly (no \\0asm header)")

    def _linked(self, manifest: Manifest, wasm: bytes, env: HostEnv) -> LinkedPlugin:
        """The component as its core modules, linked by the host, each compiled through the
        cache."""
        linking = link(manifest, wasm, guest=False)
        engine, reservation = self.engine_for(manifest.limits.memory_bytes)
        count = len(linking.instances)
        modules = [self.cache.load_or_compile(
            instance.module, f"{reservation >> 20}m.cwasm",
            partial(_compiled, engine, instance.module),
            lambda path: wasmtime.Module.deserialize_file(engine, str(path)),
            f"plugin {manifest.name} (core module {instance.number + 1} of {count} of a "
            "component)") for instance in linking.instances]
        return LinkedPlugin(manifest, linking, modules, env, engine, self.ticker,
                            memory_plan(wasm))

    def compile_component(self, manifest: Manifest, wasm: bytes) -> wc.Component:
        """The component compiled by wasmtime's component model, for its types; through the
        compile cache; wasmtime.WasmtimeError when it does not compile."""
        engine, reservation = self.engine_for(manifest.limits.memory_bytes)
        return self.cache.load_or_compile(
            wasm, f"{reservation >> 20}m.ccwasm",
            lambda: bytes(wc.Component(engine, wasm).serialize()),
            lambda path: wc.Component.deserialize_file(engine, str(path)),
            f"plugin {manifest.name} (a component: about 20 s with an interpreter inside)")

    def component_interfaces(self, manifest: Manifest, wasm: bytes) -> ComponentInterfaces:
        """The instances a component imports and exports, each with its functions' names
        (`hyperfilter plugin check` shows them); compiled through the cache. NotWasmError
        when it does not compile."""
        engine, _ = self.engine_for(manifest.limits.memory_bytes)
        try:
            component_type = self.compile_component(manifest, wasm).type
        except wasmtime.WasmtimeError as exc:
            raise NotWasmError(manifest.name, f"{manifest.wasm} does not compile: "
                                              f"{str(exc).splitlines()[0]}") from None
        return ComponentInterfaces(_functions(component_type.imports(engine), engine),
                                   _functions(component_type.exports(engine), engine))

    def close(self) -> None:
        self.ticker.close()


def _compiled(engine: wasmtime.Engine, module: bytes) -> bytes:
    return bytes(wasmtime.Module(engine, module).serialize())


@dataclass(frozen=True)
class ComponentInterfaces:
    imports: dict[str, tuple[str, ...]]  # instance name → its functions
    exports: dict[str, tuple[str, ...]]


def _functions(items: Mapping[str, Any], engine: wasmtime.Engine
               ) -> dict[str, tuple[str, ...]]:
    """Each item's functions (wasmtime's ComponentExtern items): an instance's, or a
    top-level function as its own name."""
    found = {}
    for name, item in items.items():
        item_type = item.ty
        if isinstance(item_type, wc.ComponentInstanceType):
            found[name] = tuple(function for function, inner in
                                item_type.exports(engine).items()
                                if isinstance(inner.ty, wc.FuncType))
        elif isinstance(item_type, wc.FuncType):
            found[name] = (name,)
    return found
