"""The kvm tier's backend: whether it can run here, and loading a plugin into a snapshot
its sandboxes' VMs map (vmm/kvm/plugin.py)."""

from __future__ import annotations

import resource
import threading
from pathlib import Path

from vmm.cache import CompileCache
from vmm.capabilities import HostEnv
from vmm.component_linking import link
from vmm.core_module import check_core_module
from vmm.errors import NotWasmError, TierMismatchError, TierUnavailableError
from vmm.kvm import api
from vmm.kvm.glue import GuestFunctions
from vmm.kvm.image import build_component_image, build_image, find_toolchain
from vmm.kvm.layout import MAX_MEMORY_LIMIT
from vmm.kvm.machine import Kvm, missing_cpu_flags
from vmm.kvm.plugin import KvmPlugin
from vmm.kvm.watchdog import Watchdog, install_kick_handler, kick_handler_installed
from vmm.manifest import Manifest
from vmm.sandbox import Backend, LoadedPlugin
from vmm.wasm_kind import WasmKind, wasm_kind


def unavailable() -> str | None:
    """None when the kvm tier can run here; otherwise why not."""
    reason = api.available()
    if reason is None and (missing := missing_cpu_flags()):
        reason = f"the CPU lacks {', '.join(missing)}"
    if reason is None:
        toolchain = find_toolchain()
        reason = toolchain if isinstance(toolchain, str) else None
    return reason


class KvmBackend(Backend):
    tier = "kvm"

    def __init__(self, cache_dir: Path) -> None:
        reason = unavailable()
        if reason is not None:
            raise TierUnavailableError("kvm", reason)
        toolchain = find_toolchain()
        assert not isinstance(toolchain, str)
        self.toolchain = toolchain
        if threading.current_thread() is threading.main_thread():
            install_kick_handler()
        elif not kick_handler_installed():
            raise TierUnavailableError("kvm", "its CPU bound needs a signal handler: create the "
                                              "backend in the main thread, or call "
                                              "vmm.kvm.watchdog.install_kick_handler() there")
        self.kvm = Kvm()
        _raise_file_limit()  # two descriptors per live VM
        self.cache = CompileCache(cache_dir, toolchain.fingerprint)
        self.module_cache = CompileCache(cache_dir, toolchain.module_fingerprint)
        self.watchdog = Watchdog()
        self.plugins: list[KvmPlugin] = []

    def load(self, manifest: Manifest, wasm: bytes, env: HostEnv) -> LoadedPlugin:
        kind = wasm_kind(wasm)
        if kind is None:
            raise NotWasmError(manifest.name,
                               f"{manifest.wasm} is not WebAssembly (no \\0asm header)")
        if manifest.limits.memory_bytes > MAX_MEMORY_LIMIT:
            raise TierMismatchError(
                manifest.name, f"its memory limit is above the kvm tier's "
                               f"{MAX_MEMORY_LIMIT >> 20} MiB")
        if kind is WasmKind.COMPONENT:
            linking = link(manifest, wasm)
            image = build_component_image(manifest.name, wasm, linking,
                                          GuestFunctions.of(linking.core), self.toolchain,
                                          self.cache, self.module_cache)
            plugin = KvmPlugin(manifest, linking.core, image, env, self.kvm, self.watchdog,
                               "component", linking.preload, linking.unprovided)
        else:
            core = check_core_module(manifest, wasm)
            image = build_image(manifest.name, wasm, core, GuestFunctions.of(core),
                                self.toolchain, self.cache)
            plugin = KvmPlugin(manifest, core, image, env, self.kvm, self.watchdog)
        self.plugins.append(plugin)
        return plugin

    def close(self) -> None:
        for plugin in self.plugins:
            plugin.close()
        self.plugins.clear()
        self.watchdog.close()
        self.kvm.close()


def _raise_file_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
