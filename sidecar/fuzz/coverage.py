"""Coverage counters in a plugin's core module, for `hyperfilter fuzz`.

`instrument` rewrites the module through wasm-tools' text form, where each instruction is one
line, adding a counter at each place control can arrive that the module's structure shows:
each function's entry, the start of every block, loop, `if` and `else` body, the false branch
of an `if` that has no `else` (an empty `else` is added for it), the join after every `end`
(where branches out of a block land), the fall-through of every `br_if`, and every call's
return. A `br_table` has no fall-through; its edges arrive at its targets' counters.

Where the counters live: in pages at the top of the module's own linear memory that the module
never sees. A new start function grows the memory by enough pages before the module's own
start function runs, and points the exported mutable global `hyperfilter_coverage` at them.
Every `memory.size` and `memory.grow` of the module is rewritten to leave those pages out: its
memory looks exactly as large as it would without them, and when it grows the counters move
up to the new top (`memory.copy`), the bytes they leave zeroed as fresh pages are. Growing the
memory alone would not do: the C SDK's arena takes everything below `memory.size` as its own
and would allocate over the counters. A memory the module imports is handled the same way; a
declared maximum is raised by the counters' pages.

Counters are 8 bits and saturate at 255 rather than wrap: a wrapping counter reads 0 after
exactly 256 hits, and an edge taken that often would look never taken. Fuzzers bucket hit
counts (1, 2, 3, 4-7, ... 128+), so nothing past 255 is lost; saturating costs one more load
and compare per counter than wrapping.
"""

from __future__ import annotations

import enum
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from vmm.sandbox import Sandbox
from vmm.wasm_kind import WasmKind, wasm_kind

COVERAGE_EXPORT = "hyperfilter_coverage"
WASM_TOOLS = Path(sys.executable).parent / "wasm-tools"  # the project installs it in the venv
PAGE = 65536
MAX_PAGES = 65536  # wasm32's 4 GiB
_GLOBAL = f"${COVERAGE_EXPORT}"
_START = f"${COVERAGE_EXPORT}_start"
_SIZE = f"${COVERAGE_EXPORT}_memory_size"
_GROW = f"${COVERAGE_EXPORT}_memory_grow"


class InstrumentError(ValueError):
    """The module cannot be instrumented (a component, no memory or several, ...)."""


class Edge(enum.StrEnum):
    """Where a counter sits."""

    ENTRY = "entry"          # a function's first instruction
    BLOCK = "block"          # a block's (or try's) body
    LOOP = "loop"            # a loop's body, on every iteration
    THEN = "then"            # an if's true branch
    ELSE = "else"            # an if's false branch (added when the if had none), or a catch
    JOIN = "join"            # after an end: fall-through and branches out of the block
    FALL_THROUGH = "br_if"   # a br_if not taken
    RETURN = "return"        # a call returned


@dataclass(frozen=True)
class CounterSite:
    function: str  # as the text form names it: "$name", or the function's index
    edge: Edge


@dataclass(frozen=True)
class Instrumented:
    wasm: bytes
    counters: int          # bytes in the counter area, one a site
    sites: tuple[CounterSite, ...]  # sites[i] is counter i
    pages: int             # linear memory the counters take beyond the module's own
    export: str = COVERAGE_EXPORT  # the i32 global holding the counter area's address


def instrument(wasm: bytes) -> Instrumented:
    """`wasm`, a core module, with a coverage counter at each site the module docstring lists;
    raise InstrumentError if it cannot be instrumented."""
    if wasm_kind(wasm) is not WasmKind.CORE:
        raise InstrumentError("only core modules can be instrumented, not components")
    text = _wasm_tools(["print"], wasm).decode()
    rewriter = _Rewriter(text)
    binary = _wasm_tools(["parse"], rewriter.module().encode())
    _wasm_tools(["validate"], binary)  # a rewriting mistake shows here, not at load
    return Instrumented(binary, len(rewriter.sites), tuple(rewriter.sites), rewriter.pages)


def _wasm_tools(arguments: list[str], data: bytes) -> bytes:
    done = subprocess.run([WASM_TOOLS, *arguments, "-"], input=data, capture_output=True,
                          check=False)
    if done.returncode != 0:
        raise InstrumentError(f"wasm-tools {arguments[0]}: {done.stderr.decode().strip()}")
    return done.stdout


_OPENERS = {"block": Edge.BLOCK, "loop": Edge.LOOP, "if": Edge.THEN, "try": Edge.BLOCK,
            "try_table": Edge.BLOCK}
_MIDDLES = {"else": Edge.ELSE, "catch": Edge.ELSE, "catch_all": Edge.ELSE}
_CLOSERS = {"end", "delegate"}
_CALLS = {"call", "call_indirect", "call_ref"}
_ID = r'\$(?:"(?:[^"\\]|\\.)*"|\S+)'  # `$name`, or `$"any name"`
# A memory's definition or import: `(memory $name? (;0;) min max? shared?)`.
_MEMORY = re.compile(rf"\(memory (?:{_ID} )?\(;\d+;\) (?P<limits>[^()]*)\)")
_FUNCTION = re.compile(rf"  \(func (?:(?P<name>{_ID}) )?\(;(?P<index>\d+);\)")
_START_FIELD = re.compile(r"  \(start (?P<function>\S+)\)")


class _Rewriter:
    """The printed module, rewritten: counters in every function, the memory's instructions
    redirected, and the start function, the global and the helpers added."""

    def __init__(self, text: str) -> None:
        self._lines = text.splitlines()
        if not self._lines or not self._lines[0].startswith("(module") or self._lines[-1] != ")":
            raise InstrumentError("wasm-tools printed something other than one module")
        if _GLOBAL in text or f'(export "{COVERAGE_EXPORT}"' in text:
            raise InstrumentError(f"the module is instrumented already ({COVERAGE_EXPORT})")
        self.sites: list[CounterSite] = []
        self.pages = 0

    def module(self) -> str:
        out: list[str] = []
        memories: list[int] = []
        start: str | None = None
        lines = self._lines[:-1]
        i = 0
        while i < len(lines):
            line = lines[i]
            if line.startswith("  (func "):
                i = self._function(lines, i, out)
                continue
            if line.startswith(("  (memory ", "  (import ")) and _MEMORY.search(line):
                memories.append(len(out))
            if (field := _START_FIELD.fullmatch(line)) is not None:
                start = field["function"]
                line = f"  (start {_START})"
            out.append(line)
            i += 1
        if len(memories) != 1:
            raise InstrumentError(f"the module has {len(memories)} memories; a plugin has one")
        self.pages = max(1, -(-len(self.sites) // PAGE))
        out[memories[0]] = self._memory_with_room(out[memories[0]])
        return "\n".join([*out, *self._additions(start), ")", ""])

    def _function(self, lines: list[str], i: int, out: list[str]) -> int:
        """Rewrite the function whose header is lines[i]; the index of the line after it."""
        header = _FUNCTION.match(lines[i])
        if header is None:
            raise InstrumentError(f"unexpected function header: {lines[i].strip()}")
        name = header["name"] or header["index"]
        if i + 1 == len(lines) or not lines[i + 1].startswith("    "):  # `(func ... (type 0))`
            out.append(lines[i][:-1])
            self._count(name, Edge.ENTRY, out)
            out.append("  )")
            return i + 1
        out.append(lines[i])
        i += 1
        while lines[i].startswith("    (local"):
            out.append(lines[i])
            i += 1
        self._count(name, Edge.ENTRY, out)
        open_ifs: list[bool] = []  # per open construct: an if still without its else
        while lines[i] != "  )":
            line = lines[i]
            words = line.split(";;", 1)[0].split()
            op = words[0] if words else ""
            if ((op in _CLOSERS or op in _MIDDLES) and not open_ifs) or i + 1 == len(lines):
                raise InstrumentError(f"function {name} is not one the rewriter understands "
                                      f"(at `{line.strip()}`)")
            if op in _CLOSERS:
                if open_ifs.pop():
                    out.append("    else")
                    self._count(name, Edge.ELSE, out)
                out.append(line)
                self._count(name, Edge.JOIN, out)
            elif op in _OPENERS:
                open_ifs.append(op == "if")
                out.append(line)
                self._count(name, _OPENERS[op], out)
            elif op in _MIDDLES:
                if op == "else":
                    open_ifs[-1] = False
                out.append(line)
                self._count(name, _MIDDLES[op], out)
            elif op == "memory.size":
                out.append(f"    call {_SIZE}")
            elif op == "memory.grow":
                out.append(f"    call {_GROW}")
            else:
                out.append(line)
                if op == "br_if":
                    self._count(name, Edge.FALL_THROUGH, out)
                elif op in _CALLS:
                    self._count(name, Edge.RETURN, out)
            i += 1
        out.append(lines[i])
        return i + 1

    def _count(self, function: str, edge: Edge, out: list[str]) -> None:
        """Counter len(sites) += 1, saturating at 255; stack-neutral, so valid anywhere."""
        at = f"offset={len(self.sites)}"
        self.sites.append(CounterSite(function, edge))
        out.extend([f"    global.get {_GLOBAL}", f"    global.get {_GLOBAL}",
                    f"    i32.load8_u {at}", f"    global.get {_GLOBAL}",
                    f"    i32.load8_u {at}", "    i32.const 255", "    i32.ne", "    i32.add",
                    f"    i32.store8 {at}"])

    def _memory_with_room(self, line: str) -> str:
        """The memory's declaration with its maximum, if it has one, raised by `pages`."""
        match = _MEMORY.search(line)
        assert match is not None
        limits = match["limits"].split()
        if not limits[0].isdigit():
            raise InstrumentError(f"unsupported memory type: {match['limits']}")
        numbers = [word for word in limits if word.isdigit()]
        if len(numbers) == 2:
            raised = int(numbers[1]) + self.pages
            if raised > MAX_PAGES:
                raise InstrumentError(f"the memory's maximum leaves no room for "
                                      f"{self.pages} pages of counters")
            limits[1] = str(raised)
        start, end = match.span("limits")
        return line[:start] + " ".join(limits) + line[end:]

    def _additions(self, start: str | None) -> list[str]:
        counters, pages = len(self.sites), self.pages
        # The module's start field, if it had one, names ours already (see `module`).
        start_field = [f"  (start {_START})"] if start is None else []
        original_start = [f"    call {start}"] if start is not None else []
        return [
            *start_field,
            f"  (global {_GLOBAL} (mut i32) i32.const 0)",
            f'  (export "{COVERAGE_EXPORT}" (global {_GLOBAL}))',
            # Before the module's own start: its first look at its memory sees it as usual.
            f"  (func {_START} (local $old i32)",
            f"    i32.const {pages}", "    memory.grow", "    local.tee $old",
            "    i32.const -1", "    i32.eq", "    if", "      unreachable", "    end",
            "    local.get $old", "    i32.const 16", "    i32.shl",
            f"    global.set {_GLOBAL}", *original_start, "  )",
            f"  (func {_SIZE} (result i32)",
            "    memory.size", f"    i32.const {pages}", "    i32.sub", "  )",
            f"  (func {_GROW} (param $delta i32) (result i32) (local $old i32) (local $bytes i32)",
            "    local.get $delta", "    memory.grow", "    local.tee $old",
            "    i32.const -1", "    i32.eq", "    if", "      i32.const -1", "      return",
            "    end",
            "    local.get $delta", "    i32.const 16", "    i32.shl", "    local.set $bytes",
            # The counters move up by what was added ...
            f"    global.get {_GLOBAL}", "    local.get $bytes", "    i32.add",
            f"    global.get {_GLOBAL}", f"    i32.const {counters}", "    memory.copy",
            # ... and the bytes they leave, now the module's, are zero as new memory is.
            f"    global.get {_GLOBAL}", "    i32.const 0",
            "    local.get $bytes", f"    i32.const {counters}",
            "    local.get $bytes", f"    i32.const {counters}", "    i32.lt_u", "    select",
            "    memory.fill",
            f"    global.get {_GLOBAL}", "    local.get $bytes", "    i32.add",
            f"    global.set {_GLOBAL}",
            "    local.get $old", f"    i32.const {pages}", "    i32.sub", "  )",
        ]


@runtime_checkable
class ExportedAreas(Protocol):
    """A sandbox that can show the memory an exported address global points at (core-module
    sandboxes on either tier: vmm/wasmtime/core.py, vmm/kvm/sandbox.py)."""

    def exported_area(self, address_global: str, length: int) -> memoryview: ...


def read_counters(sandbox: Sandbox, instrumented: Instrumented) -> bytes:
    """The counters of a sandbox made from `instrumented.wasm`, as they are now."""
    return bytes(_area(sandbox, instrumented))


def reset_counters(sandbox: Sandbox, instrumented: Instrumented) -> None:
    """Zero the counters, e.g. between streams delivered to one sandbox (a new sandbox starts
    with zeros, but for what its start function counted)."""
    area = _area(sandbox, instrumented)
    area[:] = bytes(len(area))


def _area(sandbox: Sandbox, instrumented: Instrumented) -> memoryview:
    if not isinstance(sandbox, ExportedAreas):
        raise TypeError(f"coverage cannot be read from a {type(sandbox).__name__}: only from "
                        "core-module sandboxes")
    return sandbox.exported_area(instrumented.export, instrumented.counters)
