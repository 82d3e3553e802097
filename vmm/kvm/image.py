"""Building a plugin's guest image: wasm → C (wasm2c) → with the guest runtime and the glue,
one freestanding x86-64 binary (gcc), loaded at IMAGE. Built once per plugin and toolchain and
kept in the compile cache.

The plugin's C keeps wasm's semantics, bounds checks included (no guard-page tricks: there is
no signal handler in the guest), so a plugin is confined by wasm inside the VM and by the VM
inside the host.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import shutil
import signal
import struct
import subprocess
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from vmm.cache import CompileCache
from vmm.component_linking import Linking
from vmm.core_module import CoreModule
from vmm.errors import PluginLoadError
from vmm.kvm import component_glue, glue, split_c
from vmm.kvm.component_glue import imports_of
from vmm.kvm.glue import mangle
from vmm.kvm.layout import IMAGE, LINEAR_BASE, guest_header
from vmm.kvm.positional_imports import IMPORTS_NAME, positional

GUEST_SOURCES = Path(__file__).parent / "guest"
COMPILE_FLAGS = (
    "-std=gnu11", "-ffreestanding", "-fno-pic", "-no-pie", "-nostdlib", "-static",
    "-fno-stack-protector", "-fno-asynchronous-unwind-tables", "-fno-math-errno",
    "-msse4.1", "-mpopcnt", "-mno-avx", "-DNDEBUG", "-DWASM_RT_MEMCHECK_SIGNAL_HANDLER=0",
)
CFLAGS = (*COMPILE_FLAGS, "-Wl,--build-id=none", "-Wl,--oformat=binary")
# wasm2c's defaults: MVP, bulk memory, reference types, multi-value; SIMD modules fail to build
# (wasm2c's SIMD needs the simde headers), exceptions are off.
WASM2C_FLAGS: tuple[str, ...] = ()
# Each build step (wasm2c, gcc) is stopped past this: a plugin that takes gcc longer is refused
# rather than holding the loader (and gigabytes of the host's memory) on and on.
BUILD_STEP_SECONDS = 120
IMAGE_SPACE = LINEAR_BASE - IMAGE  # the image's code and data, below linear memory
# gcc's optimisation level and time bound, by the size of the module's code: -O2 on wasm2c's
# C for a Go module (1.9 MiB of code, most of it Go's runtime) took gcc 4 minutes and 2 GB
# here; -O1 74 s and 1.4 GB; -O0 24 s, its events (a new sandbox's first, a shared-state call
# in it) 1.15 ms at p50 against -O1's 0.99 (measured side by side on a busy machine). A module
# with more code than LARGE_CODE_BYTES is built at -O0, its bound grown by
# GCC_SECONDS_PER_CODE_MIB.
OPTIMISE = "-O2"
OPTIMISE_LARGE = "-O0"
LARGE_CODE_BYTES = 512 << 10
GCC_SECONDS_PER_CODE_MIB = 150
# Modules' C is compiled with clang where there is one: at -O0, libpython's 74 MB
# of C took clang 14 52 s and 1.9 GB, gcc 12 113 s and 3.6 GB (-O1: clang had not finished
# after 5 minutes). A large module is cut into units of about CODE_PER_UNIT of wasm code each
# (vmm/kvm/split_c.py), compiled on every core: libpython in 6, 38 s on two cores. A Go module
# (1.9 MiB of code and Go's data) takes clang 13 s whole, 15 s in three units: its data is the
# first unit's.
MODULE_COMPILERS = ("clang", "clang-14")
CODE_PER_UNIT = 1 << 19
MAX_UNITS = 16
# A component's modules are translated under this one name and renamed once compiled, so that
# two modules differing in a few places have the same C elsewhere, and a unit compiled once
# serves both: a JavaScript plugin edited differs in its engine's data alone, and its next
# build compiles the unit holding the data, not the engine's 60 MB of code.
TRANSLATION_NAME = "hfmodule"
# The compilers running at once, over every module being built.
_COMPILERS = threading.BoundedSemaphore(os.cpu_count() or 1)
_CODE_SECTION, _DATA_SECTION = 10, 11
_U64 = struct.Struct("<Q")
_LINKER_LINE = re.compile(r"(\S*/)?ld(\.\w+)?: ")  # "/usr/bin/ld: ...", "ld.bfd: ..."


class Toolchain:
    """wasm2c and gcc, and the wasm-rt.h that matches this wasm2c; the compiler of modules'
    C (clang where there is one: see MODULE_COMPILERS)."""

    def __init__(self, wasm2c: str, cc: str, runtime_header: Path,
                 module_cc: str | None = None) -> None:
        self.wasm2c = wasm2c
        self.cc = cc
        self.runtime_header = runtime_header
        self.module_cc = module_cc or cc

    @functools.cached_property
    def fingerprint(self) -> str:
        """What an image depends on besides the plugin: tool versions and the guest sources,
        and how modules are compiled."""
        digest = hashlib.sha256(guest_header().encode() + self.module_fingerprint.encode())
        for path in sorted(GUEST_SOURCES.rglob("*")):
            if path.is_file():
                digest.update(path.name.encode() + b"\0" + path.read_bytes())
        digest.update(self.runtime_header.read_bytes())
        return f"kvm-{self._versions}-{digest.hexdigest()[:16]}"

    @functools.cached_property
    def module_fingerprint(self) -> str:
        """What a component's core module compiled on its own depends on besides the module:
        the tools, wasm2c's runtime header and the flags, not the guest runtime, so an
        interpreter stays compiled when the runtime or the glue changes."""
        digest = hashlib.sha256(self.runtime_header.read_bytes())
        digest.update(repr((COMPILE_FLAGS, WASM2C_FLAGS, OPTIMISE, OPTIMISE_LARGE,
                            LARGE_CODE_BYTES, CODE_PER_UNIT, TRANSLATION_NAME,
                            IMPORTS_NAME)).encode())
        digest.update(_output(self.module_cc, "--version").encode())
        return f"kvm-module-{self._versions}-{digest.hexdigest()[:16]}"

    @functools.cached_property
    def _versions(self) -> str:
        versions = [_output(self.wasm2c, "--version"), _output(self.cc, "-dumpfullversion")]
        return f"wasm2c-{versions[0]}-gcc-{versions[1]}"


def find_toolchain() -> Toolchain | str:
    """The toolchain, or why there is none."""
    wasm2c, cc = shutil.which("wasm2c"), shutil.which("gcc")
    if wasm2c is None or cc is None:
        missing = " and ".join(n for n, p in (("wasm2c", wasm2c), ("gcc", cc)) if p is None)
        return f"{missing} not found (Debian packages: wabt, gcc)"
    header = Path(wasm2c).resolve().parent.parent / "include" / "wasm-rt.h"
    if not header.exists():
        return f"wasm-rt.h not found next to {wasm2c} (at {header})"
    module_cc = next(filter(None, map(shutil.which, MODULE_COMPILERS)), None)
    return Toolchain(wasm2c, cc, header, module_cc)


def _output(*command: str) -> str:
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()


def build_image(plugin: str, wasm: bytes, core: CoreModule, functions: glue.GuestFunctions,
                toolchain: Toolchain, cache: CompileCache) -> bytes:
    glue_source = glue.generate(core, functions)
    return cache.load_or_compile(
        wasm + b"\0" + glue_source.encode(), "kvm-image",
        lambda: _compile(plugin, wasm, glue_source, toolchain), Path.read_bytes,
        f"plugin {plugin} into a kvm guest image")


def _check_data(plugin: str, wasm: bytes) -> None:
    data = _section_size(wasm, _DATA_SECTION)
    if data > IMAGE_SPACE:  # refused now, before gcc spends minutes and gigabytes on it
        raise PluginLoadError(plugin, f"its data segments take {data / 2**20:.1f} MiB; a kvm "
                                      f"guest image has {IMAGE_SPACE >> 20} MiB for its code "
                                      f"and data")


def _compile(plugin: str, wasm: bytes, glue_source: str, toolchain: Toolchain) -> bytes:
    with tempfile.TemporaryDirectory(prefix="hyperfilter-kvm-") as tmp:
        build = Path(tmp)
        _translate(plugin, wasm, glue.MODULE_NAME, toolchain, build)
        _object(plugin, wasm, glue.MODULE_NAME, toolchain, build)
        (build / "glue.c").write_text(glue_source)
        return _link(plugin, toolchain, build, OPTIMISE, BUILD_STEP_SECONDS,
                     [f"{glue.MODULE_NAME}.o", "glue.c"])


def _translate(plugin: str, wasm: bytes, name: str, toolchain: Toolchain, build: Path,
               *flags: str) -> None:
    """wasm2c: `wasm` into `build`/NAME.c and NAME.h, the headers they need beside them."""
    _check_data(plugin, wasm)
    (build / f"{name}.wasm").write_bytes(wasm)
    _write_headers(build, toolchain)
    run_build_step(plugin, "wasm2c", [toolchain.wasm2c, *WASM2C_FLAGS, *flags, "-n", name,
                                      f"{name}.wasm", "-o", f"{name}.c"], build)


def _link(plugin: str, toolchain: Toolchain, build: Path, optimise: str, seconds: float,
          inputs: list[str]) -> bytes:
    """gcc: the inputs in `build` (with its glue.c and layout.h), the runtime, one image."""
    run_build_step(plugin, "gcc", [
        toolchain.cc, *CFLAGS, optimise, f"-Wl,--defsym=HF_LINEAR_BASE={LINEAR_BASE}",
        "-I", str(build), "-I", str(GUEST_SOURCES / "include"),
        "-T", str(GUEST_SOURCES / "guest.ld"), "-o", "image.bin",
        *inputs, str(GUEST_SOURCES / "runtime.c"), "-lgcc"], build, seconds)
    image = (build / "image.bin").read_bytes()
    if IMAGE + len(image) > LINEAR_BASE:
        raise PluginLoadError(plugin, f"its guest image is {len(image) >> 20} MiB, more than "
                                      f"fits below linear memory")
    return image


def build_component_image(plugin: str, wasm: bytes, linking: Linking,
                          functions: glue.GuestFunctions, toolchain: Toolchain,
                          cache: CompileCache, module_cache: CompileCache) -> bytes:
    """A component's image: each core module compiled on its own (and cached on its own, so
    a module that many plugins share, an interpreter, is compiled once), then linked with
    the glue that instantiates them (vmm/kvm/component_glue.py)."""
    problem = component_glue.check_imports(linking)
    if problem:
        raise PluginLoadError(plugin, f"is a component the kvm tier cannot run: {problem}")

    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        modules = list(pool.map(
            lambda instance: _compiled_module(plugin, instance.module, toolchain,
                                              module_cache),
            linking.instances))
    glue_source = component_glue.generate(linking, functions,
                                          [module.params for module in modules])

    def compile_image() -> bytes:
        with tempfile.TemporaryDirectory(prefix="hyperfilter-kvm-") as tmp:
            build = Path(tmp)
            inputs = ["glue.c", str(GUEST_SOURCES / "wasi.c")]
            for instance, module in zip(linking.instances, modules, strict=True):
                name = component_glue.c_name(instance.module)
                (build / f"{name}.h").write_text(module.header)
                (build / f"{name}.o").write_bytes(module.object)
                inputs.append(f"{name}.o")
            (build / "glue.c").write_text(glue_source)
            _write_headers(build, toolchain)
            return _link(plugin, toolchain, build, OPTIMISE, BUILD_STEP_SECONDS, inputs)

    return cache.load_or_compile(wasm + b"\0" + glue_source.encode(), "kvm-component-image",
                                 compile_image, Path.read_bytes,
                                 f"component {plugin} into a kvm guest image")


@dataclass(frozen=True)
class CompiledModule:
    """A core module compiled for the guest: its object and wasm2c's header for it."""

    header: str
    object: bytes
    params: component_glue.InstanceParams


def _compiled_module(plugin: str, module: bytes, toolchain: Toolchain,
                     cache: CompileCache) -> CompiledModule:
    name = component_glue.c_name(module)
    return cache.load_or_compile(
        module, "kvm-module", lambda: _compile_module(plugin, module, name, toolchain, cache),
        lambda path: _read_compiled(name, path.read_bytes()),
        f"a {len(module) >> 10:,} KiB core module of {plugin} for the kvm tier")


def _compile_module(plugin: str, module: bytes, name: str, toolchain: Toolchain,
                    cache: CompileCache) -> bytes:
    """The module's header and object, its symbols named `name` and its imports
    `imports_of(name)`#N (see TRANSLATION_NAME)."""
    with tempfile.TemporaryDirectory(prefix="hyperfilter-kvm-") as tmp:
        build = Path(tmp)
        translated = positional(module)
        _translate(plugin, translated, TRANSLATION_NAME, toolchain, build, "--no-debug-names")
        _object(plugin, translated, TRANSLATION_NAME, toolchain, build, cache)
        rename = _renaming(name)
        obj = _renamed(plugin, build, f"{TRANSLATION_NAME}.o", rename)
        header = rename((build / f"{TRANSLATION_NAME}.h").read_text()).replace(
            _TRANSLATED_GUARD, f"{name.upper()}_H_GENERATED_").encode()
        return _U64.pack(len(header)) + header + obj


_TRANSLATED_SYMBOL = re.compile(rf"\b({mangle(TRANSLATION_NAME)}|{mangle(IMPORTS_NAME)})(?=[_Z])")
_TRANSLATED_GUARD = f"{TRANSLATION_NAME.upper()}_H_GENERATED_"  # wasm2c's include guard


def _renaming(name: str) -> Callable[[str], str]:
    """Text with the translation's names made the module's own: its symbols `name`'s, its
    imports `imports_of(name)`'s."""
    names = {mangle(TRANSLATION_NAME): mangle(name), mangle(IMPORTS_NAME): mangle(imports_of(name))}
    return partial(_TRANSLATED_SYMBOL.sub, lambda found: names[found[1]])


def _renamed(plugin: str, build: Path, obj: str, rename: Callable[[str], str]) -> bytes:
    """The object with its global symbols, defined or imported, renamed by `rename`."""
    listing = subprocess.run(["nm", "-g", "--format=posix", obj], cwd=build,
                             capture_output=True, text=True, check=True).stdout
    symbols = [line.split()[0] for line in listing.splitlines() if line.strip()]
    (build / "renames").write_text("".join(f"{symbol} {rename(symbol)}\n" for symbol in symbols))
    run_build_step(plugin, "objcopy", ["objcopy", "--redefine-syms=renames", obj], build)
    return (build / obj).read_bytes()


def _object(plugin: str, wasm: bytes, name: str, toolchain: Toolchain, build: Path,
            unit_cache: CompileCache | None = None) -> None:
    """NAME.c (wasm2c's, for `wasm`) into NAME.o: a large module in units, on every core,
    each unit's object kept in `unit_cache` by its text (and the header it includes)."""
    optimise, seconds = _gcc_plan(wasm)
    units = min(MAX_UNITS, _section_size(wasm, _CODE_SECTION) // CODE_PER_UNIT)
    parts = split_c.split((build / f"{name}.c").read_text(), units) if units > 1 else None
    sources = [f"{name}.c"]
    if parts is not None:
        sources = [f"unit{n}.c" for n in range(len(parts))]
        for source, part in zip(sources, parts, strict=True):
            (build / source).write_text(part)
    compile_c = partial(_compile_unit, plugin, toolchain, build, optimise, seconds)
    if parts is not None and unit_cache is not None:
        header = (build / f"{name}.h").read_bytes()
        compile_c = partial(_cached_unit, unit_cache, build, optimise, header, compile_c)
    with ThreadPoolExecutor(len(sources)) as pool:
        objects = list(pool.map(compile_c, sources))
    if parts is not None:
        run_build_step(plugin, "ld", ["ld", "-r", "-o", f"{name}.o", *objects], build)
        run_build_step(plugin, "objcopy", ["objcopy", "--localize-hidden", f"{name}.o"], build)


def _compile_unit(plugin: str, toolchain: Toolchain, build: Path, optimise: str,
                  seconds: float, source: str) -> str:
    """Compile one C file of a module (waiting for a free core); its object's name."""
    target = source.removesuffix(".c") + ".o"
    with _COMPILERS:
        run_build_step(plugin, Path(toolchain.module_cc).name, [
            toolchain.module_cc, *COMPILE_FLAGS, optimise, "-w", "-c", "-I", str(build),
            "-I", str(GUEST_SOURCES / "include"), "-o", target, source], build, seconds)
    return target


def _cached_unit(units: CompileCache, build: Path, optimise: str, header: bytes,
                 compile_c: Callable[[str], str], source: str) -> str:
    """`compile_c(source)` in `build`, or its object from `units`, kept by the source, the
    optimisation and the header; the object's name."""
    target = source.removesuffix(".c") + ".o"

    def compiled() -> bytes:
        return (build / compile_c(source)).read_bytes()

    text = (build / source).read_bytes()
    key = b"\0".join([optimise.encode(), text, _header_seen_by(text, header)])
    obj = units.load_or_compile(key, "kvm-unit", compiled, Path.read_bytes,
                                f"a unit of C ({source})")
    (build / target).write_bytes(obj)
    return target


def _header_seen_by(unit: bytes, header: bytes) -> bytes:
    """The header as far as it can change `unit`'s object. A unit cannot refer to a
    declaration but by its name: the prototypes of functions it does not call, and comments,
    are left out, and other names it does not use made one placeholder, the declarations'
    types and order (the instance's layout) kept, the preprocessor's lines as they are. So a
    unit calling none of the imports two plugins differ in (a JavaScript engine's bindings)
    is compiled once."""
    used = set(_WASM2C_NAME.findall(unit))

    def seen(line: bytes) -> bytes:
        if line.startswith(b"#"):
            return line
        return _WASM2C_NAME.sub(lambda name: name[0] if name[0] in used else b"Z_", line)

    return b"\n".join(seen(line) for line in header.split(b"\n")
                      if not _COMMENT.fullmatch(line) and not (
                          (prototype := _PROTOTYPE.fullmatch(line)) and prototype[1] not in used))


_WASM2C_NAME = re.compile(rb"\bZ_\w+")
_PROTOTYPE = re.compile(rb"[\w* ]+ (Z_\w+)\(.*\);")
_COMMENT = re.compile(rb"/\*.*\*/")


def _read_compiled(name: str, blob: bytes) -> CompiledModule:
    (length,) = _U64.unpack_from(blob)
    header = blob[_U64.size:_U64.size + length].decode()
    found = re.search(rf"void {mangle(name)}_instantiate\({mangle(name)}_instance_t\*"
                      r"((?:, struct \w+_instance_t\*)*)\);", header)
    if found is None:
        raise ValueError(f"wasm2c's header for {name} declares no instantiate function")
    params = tuple(re.findall(r"struct (\w+)_instance_t", found.group(1)))
    return CompiledModule(header, blob[_U64.size + length:],
                          component_glue.InstanceParams(params))


def _write_headers(build: Path, toolchain: Toolchain) -> None:
    (build / "layout.h").write_text(guest_header())
    shutil.copy(toolchain.runtime_header, build / "wasm-rt.h")


def _gcc_plan(wasm: bytes) -> tuple[str, float]:
    """gcc's optimisation flag and time bound for this module."""
    code = _section_size(wasm, _CODE_SECTION)
    if code <= LARGE_CODE_BYTES:
        return OPTIMISE, BUILD_STEP_SECONDS
    return OPTIMISE_LARGE, BUILD_STEP_SECONDS + GCC_SECONDS_PER_CODE_MIB * code / 2**20


def _section_size(wasm: bytes, wanted: int) -> int:
    """Bytes of the module's section `wanted` (all of its entries and their headers), 0 if it
    has none. The section layout was checked when the module was read (vmm/wasm_types.py)."""
    at = 8  # past the magic and version
    while at < len(wasm):
        section = wasm[at]
        size, at = _uleb(wasm, at + 1)
        if section == wanted:
            return size
        at += size
    return 0


def _uleb(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, at


def run_build_step(plugin: str, tool: str, command: list[str], cwd: Path,
                   timeout: float = BUILD_STEP_SECONDS) -> None:
    """Run one step of a build; a failure is a PluginLoadError with the tool's own reason.
    The step runs in a process group of its own, killed whole past `timeout`: gcc leaves its
    work to children (cc1, ld), which would outlive it."""
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise PluginLoadError(plugin, f"cannot be built for the kvm tier: {tool} did not finish "
                                      f"within {timeout:g} s") from None
    if process.returncode != 0:
        raise PluginLoadError(plugin, f"cannot be built for the kvm tier ({tool}): "
                                      f"{_reason(stderr, process.returncode)}")


def _reason(stderr: str, returncode: int) -> str:
    """The lines that say why: errors, and the linker's messages, which gcc only sums up as
    "collect2: error: ld returned 1 exit status"."""
    lines = [line.strip() for line in stderr.splitlines()
             if line.strip() and not line.startswith("collect2:")]
    reasons = [line for line in lines if "error" in line.lower() or _LINKER_LINE.match(line)]
    return "; ".join((reasons or lines)[:3]) or f"exit status {returncode}, no output"
