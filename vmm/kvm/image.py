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
import subprocess
import tempfile
from pathlib import Path

from vmm.cache import CompileCache
from vmm.core_module import CoreModule
from vmm.errors import PluginLoadError
from vmm.kvm import glue
from vmm.kvm.layout import IMAGE, LINEAR_BASE, guest_header

GUEST_SOURCES = Path(__file__).parent / "guest"
CFLAGS = (
    "-std=gnu11", "-ffreestanding", "-fno-pic", "-no-pie", "-nostdlib", "-static",
    "-fno-stack-protector", "-fno-asynchronous-unwind-tables", "-fno-math-errno",
    "-msse4.1", "-mpopcnt", "-mno-avx", "-DNDEBUG", "-DWASM_RT_MEMCHECK_SIGNAL_HANDLER=0",
    "-Wl,--build-id=none", "-Wl,--oformat=binary",
)
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
_CODE_SECTION, _DATA_SECTION = 10, 11
_LINKER_LINE = re.compile(r"(\S*/)?ld(\.\w+)?: ")  # "/usr/bin/ld: ...", "ld.bfd: ..."


class Toolchain:
    """wasm2c and gcc, and the wasm-rt.h that matches this wasm2c."""

    def __init__(self, wasm2c: str, cc: str, runtime_header: Path) -> None:
        self.wasm2c = wasm2c
        self.cc = cc
        self.runtime_header = runtime_header

    @functools.cached_property
    def fingerprint(self) -> str:
        """What an image depends on besides the plugin: tool versions and the guest sources."""
        versions = [_output(self.wasm2c, "--version"), _output(self.cc, "-dumpfullversion")]
        digest = hashlib.sha256(guest_header().encode())
        for path in sorted(GUEST_SOURCES.rglob("*")):
            if path.is_file():
                digest.update(path.name.encode() + b"\0" + path.read_bytes())
        digest.update(self.runtime_header.read_bytes())
        return f"kvm-wasm2c-{versions[0]}-gcc-{versions[1]}-{digest.hexdigest()[:16]}"


def find_toolchain() -> Toolchain | str:
    """The toolchain, or why there is none."""
    wasm2c, cc = shutil.which("wasm2c"), shutil.which("gcc")
    if wasm2c is None or cc is None:
        missing = " and ".join(n for n, p in (("wasm2c", wasm2c), ("gcc", cc)) if p is None)
        return f"{missing} not found (Debian packages: wabt, gcc)"
    header = Path(wasm2c).resolve().parent.parent / "include" / "wasm-rt.h"
    if not header.exists():
        return f"wasm-rt.h not found next to {wasm2c} (at {header})"
    return Toolchain(wasm2c, cc, header)


def _output(*command: str) -> str:
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()


def build_image(plugin: str, wasm: bytes, core: CoreModule, functions: glue.GuestFunctions,
                toolchain: Toolchain, cache: CompileCache) -> bytes:
    glue_source = glue.generate(core, functions)
    return cache.load_or_compile(
        wasm + b"\0" + glue_source.encode(), "kvm-image",
        lambda: _compile(plugin, wasm, glue_source, toolchain), Path.read_bytes,
        f"plugin {plugin} into a kvm guest image")


def _compile(plugin: str, wasm: bytes, glue_source: str, toolchain: Toolchain) -> bytes:
    data = _section_size(wasm, _DATA_SECTION)
    if data > IMAGE_SPACE:  # refused now, before gcc spends minutes and gigabytes on it
        raise PluginLoadError(plugin, f"its data segments take {data / 2**20:.1f} MiB; a kvm "
                                      f"guest image has {IMAGE_SPACE >> 20} MiB for its code "
                                      f"and data")
    with tempfile.TemporaryDirectory(prefix="hyperfilter-kvm-") as tmp:
        build = Path(tmp)
        (build / "plugin.wasm").write_bytes(wasm)
        (build / "glue.c").write_text(glue_source)
        (build / "layout.h").write_text(guest_header())
        shutil.copy(toolchain.runtime_header, build / "wasm-rt.h")
        run_build_step(plugin, "wasm2c", [toolchain.wasm2c, *WASM2C_FLAGS, "-n",
                                          glue.MODULE_NAME, "plugin.wasm", "-o", "plugin.c"],
                       build)
        optimise, seconds = _gcc_plan(wasm)
        run_build_step(plugin, "gcc", [
            toolchain.cc, *CFLAGS, optimise, f"-Wl,--defsym=HF_LINEAR_BASE={LINEAR_BASE}",
            "-I", str(build), "-I", str(GUEST_SOURCES / "include"),
            "-T", str(GUEST_SOURCES / "guest.ld"), "-o", "image.bin",
            "plugin.c", "glue.c", str(GUEST_SOURCES / "runtime.c"), "-lgcc"], build, seconds)
        image = (build / "image.bin").read_bytes()
    if IMAGE + len(image) > LINEAR_BASE:
        raise PluginLoadError(plugin, f"its guest image is {len(image) >> 20} MiB, more than "
                                      f"fits below linear memory")
    return image


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
