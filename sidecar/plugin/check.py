"""`hyperfilter plugin check FILE_OR_DIR`: what a plugin's wasm is (core module or component,
size), which functions of the world it exports, what it imports, and how that compares with
what its manifest grants: grants used, imports the manifest does not grant (the loader would
refuse them), grants never used. The verdict is the loader's own: the plugin is loaded as
`hyperfilter serve` loads it, on the wasmtime tier, and its first refusal shown. Exit 0 when
it loads, 2 when it would be refused or cannot be read."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from sidecar.config import DEFAULT_CACHE_DIR
from vmm.capabilities import BY_INTERFACE
from vmm.errors import PluginLoadError, UngrantedImportError, WorldMismatchError
from vmm.grants import grant_for
from vmm.loader import load_plugin
from vmm.manifest import MANIFEST_FILE, Manifest, load_manifest
from vmm.wasm_kind import WasmKind, wasm_kind
from vmm.wasm_types import WasmFormatError, read_module_types
from vmm.wasmtime import WasmtimeBackend
from vmm.world import EXPORTS, TYPES_INTERFACE

# Interfaces the toolchains make every plugin import; the host links them to implementations
# that reach nothing (no files, sockets or environment).
WASI_PREFIXES = ("wasi:", "wasi_snapshot_preview1", "wasi_unstable")


class CheckError(Exception):
    """The input cannot be checked at all: the message names the file and the problem."""


@dataclass(frozen=True)
class Interfaces:
    """Imported and exported interfaces, each with its functions, whatever the wasm's kind."""

    imports: dict[str, tuple[str, ...]]
    exports: dict[str, tuple[str, ...]]


@dataclass(frozen=True)
class Report:
    wasm: Path
    manifest: Manifest
    kind: WasmKind
    size: int
    world_exports: dict[str, tuple[str, ...]]  # "tcp-filter": ("on-data", ...)
    foreign_exports: tuple[str, ...]  # exported interfaces that are no part of the world
    capabilities: dict[str, tuple[str, ...]]  # imported hyperfilter interfaces, functions
    wasi: tuple[str, ...]  # imported WASI interfaces (linked, denying)
    used: tuple[str, ...]  # grants its imports use
    missing: tuple[str, ...]  # grants its imports need and the manifest lacks
    unknown: tuple[str, ...]  # imports of no capability: refused
    unused: tuple[str, ...]  # granted, never imported (grants without functions aside)
    refusal: str | None  # the loader's reason for refusing it; None: it loads

    @property
    def ok(self) -> bool:
        return self.refusal is None and not self.missing and not self.unknown


class _NoMetrics:
    def add(self, plugin: str, name: str, delta: int) -> None:
        pass

    def set(self, plugin: str, name: str, value: int) -> None:
        pass


def locate(path: Path) -> tuple[Path, Path | None]:
    """(manifest file, the .wasm given) for a plugin directory or its manifest (no .wasm
    given: the manifest names it), or its .wasm (the manifest beside it); CheckError when
    `path` is none of those."""
    if not path.exists():
        raise CheckError(f"{path}: no such file or directory")
    if path.is_file() and path.name != MANIFEST_FILE:
        head = path.read_bytes()[:8]
        if wasm_kind(head) is None:
            raise CheckError(f"{path} is not WebAssembly (no \\0asm header): give a plugin's "
                             f".wasm, its {MANIFEST_FILE} or its directory")
        manifest_file = path.parent / MANIFEST_FILE
        if not manifest_file.exists():
            raise CheckError(f"{path}: no {MANIFEST_FILE} beside it, to compare its imports "
                             "with what a manifest grants")
        return manifest_file, path
    manifest_file = path / MANIFEST_FILE if path.is_dir() else path
    return manifest_file, None


def check(path: Path, cache_dir: Path = DEFAULT_CACHE_DIR) -> Report:
    """CheckError when there is nothing to check (no manifest, no wasm, not WebAssembly, a
    manifest that does not parse)."""
    manifest_file, wasm_file = locate(path)
    try:
        manifest = load_manifest(manifest_file)
    except PluginLoadError as exc:
        raise CheckError(str(exc)) from None
    if wasm_file is not None and wasm_file.resolve() != manifest.wasm.resolve():
        raise CheckError(f"{wasm_file} is not the wasm its manifest names ({manifest.wasm})")
    try:
        wasm = manifest.wasm.read_bytes()
    except OSError as exc:
        raise CheckError(f"{manifest.wasm}: {exc.strerror or exc}; build it with "
                         f"`hyperfilter plugin build {manifest_file.parent}`") from None
    kind = wasm_kind(wasm)
    if kind is None:
        raise CheckError(f"{manifest.wasm} is not WebAssembly (no \\0asm header)")
    with _backend(cache_dir) as backend:
        refusal = _refusal(manifest_file, backend)
        try:
            interfaces = _interfaces(manifest, wasm, kind, backend)
        except (WasmFormatError, PluginLoadError) as exc:
            raise CheckError(f"{manifest.wasm}: {refusal or exc}") from None
    return _compare(manifest, wasm, kind, interfaces, refusal)


@contextlib.contextmanager
def _backend(cache_dir: Path) -> Iterator[WasmtimeBackend]:
    backend = WasmtimeBackend(cache_dir)
    try:
        yield backend
    finally:
        backend.close()


def _refusal(manifest_file: Path, backend: WasmtimeBackend) -> str | None:
    """The loader's verdict: None when the plugin loads, else its reason."""
    try:
        load_plugin(manifest_file, backend, _NoMetrics())
    except PluginLoadError as exc:
        return exc.problem
    return None


def _interfaces(manifest: Manifest, wasm: bytes, kind: WasmKind,
                backend: WasmtimeBackend) -> Interfaces:
    if kind is WasmKind.COMPONENT:
        found = backend.component_interfaces(manifest, wasm)
        return Interfaces(found.imports, found.exports)
    types = read_module_types(wasm)
    imports: dict[str, tuple[str, ...]] = {}
    for item in types.imports:
        imports[item.module] = (*imports.get(item.module, ()), item.name)
    exports: dict[str, tuple[str, ...]] = {}
    for name in types.exports:  # world functions are "interface#function"
        interface, _, function = name.rpartition("#")
        if interface:
            exports[interface] = (*exports.get(interface, ()), function)
    return Interfaces(imports, exports)


def _compare(manifest: Manifest, wasm: bytes, kind: WasmKind, interfaces: Interfaces,
             refusal: str | None) -> Report:
    world = {export.interface_id for export in EXPORTS.values()}
    world_exports: dict[str, tuple[str, ...]] = {}
    for export in EXPORTS.values():
        if export.function in interfaces.exports.get(export.interface_id, ()):
            world_exports[export.interface] = (*world_exports.get(export.interface, ()),
                                               export.function)
    foreign = tuple(name for name in interfaces.exports if name not in world)
    capabilities, wasi, used, missing, unknown = {}, [], set(), [], []
    for interface, functions in interfaces.imports.items():
        if interface.startswith(WASI_PREFIXES):
            wasi.append(interface)
            continue
        if interface == TYPES_INTERFACE:
            continue  # the world's own types: nothing to grant
        capabilities[interface] = functions
        try:
            used.add(grant_for(manifest, interface).name)
        except UngrantedImportError:
            missing.append(BY_INTERFACE[interface].name)
        except WorldMismatchError:
            unknown.append(interface)
    unused = tuple(sorted(name for name, grant in manifest.grants.items()
                          if grant.functions and name not in used))
    return Report(manifest.wasm, manifest, kind, len(wasm), world_exports, foreign,
                  capabilities, tuple(wasi), tuple(sorted(used)), tuple(sorted(missing)),
                  tuple(unknown), unused, refusal)


def _listed(items: tuple[str, ...] | list[str]) -> str:
    return ", ".join(items) if items else "none"


def _grouped(functions: dict[str, tuple[str, ...]]) -> list[str]:
    return [f"{name} ({', '.join(names)})" for name, names in functions.items()]


def show(report: Report, out: Console) -> None:
    def line(text: str) -> None:
        out.print(escape(text), soft_wrap=True, highlight=False)

    kind = "component" if report.kind is WasmKind.COMPONENT else "core module"
    line(f"{report.wasm}: {kind}, {report.size:,} bytes; plugin {report.manifest.name} "
         f"{report.manifest.version}")
    line(f"  events wanted: {_listed(sorted(e.value for e in report.manifest.events))}")
    line(f"  exports: {_listed(_grouped(report.world_exports))}")
    if report.foreign_exports:
        line(f"  exports outside the hyperfilter world: {_listed(report.foreign_exports)}")
    line(f"  imports: {_listed(_grouped(report.capabilities))}")
    if report.wasi:
        packages = sorted({name.partition("/")[0] for name in report.wasi})
        line(f"  WASI imports: {len(report.wasi)} interfaces of {_listed(packages)}, linked to "
             "implementations that reach nothing")
    line(f"  grants used: {_listed(report.used)}")
    line(f"  grants unused: {_listed(report.unused)}")
    if report.missing:
        tables = ", ".join(f"[grants.{name}]" for name in report.missing)
        line(f"  grants missing: {_listed(report.missing)}: these imports would be denied at "
             f"load; add {tables} to the manifest")
    if report.unknown:
        line(f"  imports of no hyperfilter capability (refused): {_listed(report.unknown)}")
    if report.refusal is not None:
        if not report.world_exports and report.foreign_exports:
            line(f"  a component for another world: it exports "
                 f"{_listed(report.foreign_exports)}, none of the hyperfilter world")
        out.print(f"[bold red]refused at load:[/] {escape(report.refusal)}", soft_wrap=True,
                  highlight=False)
    else:
        out.print("[green]ok:[/] it loads with this manifest", highlight=False)


def main(path: Path, out: Console, err: Console) -> int:
    try:
        with err.status(f"checking {path} (a component's first check compiles it)"):
            report = check(path)
    except CheckError as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
        return 2
    show(report, out)
    return 0 if report.ok else 2
