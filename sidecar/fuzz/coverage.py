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

In a component (a Python or JavaScript plugin: the interpreter, libc and adapters are its
core modules, sharing one memory) every core module is rewritten where it sits in the printed
component, and its counters live in a memory of their own that the module adds (multi-memory):
the modules' shared memory, its size and growth stay exactly as they were. The host cannot see
a component's core instances, so the component gains one export per instance of an
instrumented module, `hyperfilter-coverage-i<N>: func() -> string`, lifted from that memory
as Latin-1 (the canonical ABI's `latin1+utf16` encoding: any byte is a character): the
counters, read by calling it, in one copy (a `list<u8>` would be lifted element by element,
32 bytes each in wasmtime: 15 ms for an interpreter's 700,000 counters).

Counters are 8 bits and saturate at 255 rather than wrap: a wrapping counter reads 0 after
exactly 256 hits, and an edge taken that often would look never taken. Fuzzers bucket hit
counts (1, 2, 3, 4-7, ... 128+), so nothing past 255 is lost; saturating costs one more load
and compare per counter than wrapping.
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
import subprocess
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Protocol, runtime_checkable

from vmm.cache import CompileCache
from vmm.memory_plan import memory_plan
from vmm.sandbox import Sandbox
from vmm.wasm_kind import WasmKind, wasm_kind
from vmm.wasm_tools import WASM_TOOLS
from vmm.wasmtime.plugin import allowed_memories

COVERAGE_EXPORT = "hyperfilter_coverage"
# A component's: one a core instance, `-i` and the instance's index (a kebab-case word).
COMPONENT_EXPORT = "hyperfilter-coverage"
COUNTERS_MEMORY = f"{COVERAGE_EXPORT}_memory"
PAGE = 65536
MAX_PAGES = 65536  # wasm32's 4 GiB
# In a counters memory of its own: the (address, length) a string is lifted from, then the
# counters.
LIST_HEADER = 8
_GLOBAL = f"${COVERAGE_EXPORT}"
_START = f"${COVERAGE_EXPORT}_start"
_SIZE = f"${COVERAGE_EXPORT}_memory_size"
_GROW = f"${COVERAGE_EXPORT}_memory_grow"
_MEMORY_ID = f"${COUNTERS_MEMORY}"


class InstrumentError(ValueError):
    """The module cannot be instrumented (no memory or several, instrumented already, ...)."""


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
    module: str = ""  # in a component: the core module's name or index, as printed


@dataclass(frozen=True)
class Instrumented:
    wasm: bytes
    counters: int          # bytes in the counter areas, one a site
    sites: tuple[CounterSite, ...]  # sites[i] is counter i
    pages: int             # memory pages the counters take beyond the plugin's own
    export: str = COVERAGE_EXPORT  # a core module's: the i32 global holding the area's address
    # A component's: its exports returning the counters, in the order of `sites`, with the
    # number of counters each returns.
    functions: tuple[tuple[str, int], ...] = ()


def instrument(wasm: bytes) -> Instrumented:
    """`wasm`, a core module or a component, with a coverage counter at each site the module
    docstring lists; raise InstrumentError if it cannot be instrumented."""
    kind = wasm_kind(wasm)
    if kind not in (WasmKind.CORE, WasmKind.COMPONENT):
        raise InstrumentError("not a WebAssembly module or component")
    text = _wasm_tools(["print"], wasm).decode()
    if kind is WasmKind.COMPONENT:
        component = _Component(text)
        binary = _wasm_tools(["parse"], component.text().encode())
        _wasm_tools(["validate"], binary)  # a rewriting mistake shows here, not at load
        plan = memory_plan(binary)
        if plan is None or allowed_memories(plan) != plan:
            raise InstrumentError(f"a sandbox would not allow its counters' memories ("
                                  f"{plan or 'a shape vmm/memory_plan.py does not read'})")
        return Instrumented(binary, len(component.sites), tuple(component.sites),
                            component.pages, functions=tuple(component.functions))
    rewriter = _TopOfMemory(text)
    binary = _wasm_tools(["parse"], rewriter.module().encode())
    _wasm_tools(["validate"], binary)
    return Instrumented(binary, len(rewriter.sites), tuple(rewriter.sites), rewriter.pages)


def instrument_cached(wasm: bytes, cache_dir: Path) -> Instrumented:
    """`instrument(wasm)`, kept in the compile cache in `cache_dir`: an interpreter's component
    takes about a minute. The entry is keyed by this module's code and wasm-tools' version."""
    version = subprocess.run([WASM_TOOLS, "--version"], capture_output=True, check=True).stdout
    code = resources.files(__package__).joinpath("coverage.py").read_bytes()
    runtime = hashlib.sha256(code + version).hexdigest()
    return CompileCache(cache_dir, f"coverage {runtime}").load_or_compile(
        wasm, "coverage", lambda: _pack(instrument(wasm)), lambda path: _unpack(path.read_bytes()),
        f"coverage counters into {len(wasm) >> 10:,} KiB of wasm (a minute for an interpreter)")


def _pack(result: Instrumented) -> bytes:
    """The result as one blob: its description's length, the description (JSON), the wasm."""
    description = json.dumps({
        "wasm": hashlib.sha256(result.wasm).hexdigest(),
        "counters": result.counters, "pages": result.pages, "export": result.export,
        "functions": result.functions,
        "sites": [(site.function, site.edge.value, site.module) for site in result.sites],
    }).encode()
    return len(description).to_bytes(8, "little") + description + result.wasm


def _unpack(blob: bytes) -> Instrumented:
    length = int.from_bytes(blob[:8], "little")
    description = json.loads(blob[8:8 + length])
    if hashlib.sha256(blob[8 + length:]).hexdigest() != description["wasm"]:
        raise ValueError("its wasm is not the one instrumented")  # the cache makes it again
    return Instrumented(
        blob[8 + length:], description["counters"],
        tuple(CounterSite(function, Edge(edge), module)
              for function, edge, module in description["sites"]),
        description["pages"], description["export"],
        tuple((name, count) for name, count in description["functions"]))


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
_ID = r'\$(?:"(?:[^"\\]|\\.)*"|[^\s()"]+)'  # `$name`, or `$"any name"`
# A memory's definition or import: `(memory $name? (;0;) min max? shared?)`.
_MEMORY = re.compile(rf"\(memory (?:{_ID} )?\(;\d+;\) (?P<limits>[^()]*)\)")
_AT_NAME = r'(?:\(@name "(?:[^"\\]|\\.)*"\) )?'  # a name the printer had to replace
_FUNCTION = re.compile(rf"  \(func (?:(?P<name>{_ID}) )?{_AT_NAME}\(;(?P<index>\d+);\)")
_START_FIELD = re.compile(r"  \(start (?P<function>\S+)\)")
# A component's core module with fields (one without is printed on one line) ...
_CORE_MODULE = re.compile(
    rf"  \(core module (?:(?P<name>{_ID}) )?{_AT_NAME}\(;(?P<index>\d+);\)")
# ... and the core instances made of one.
_CORE_INSTANCE = re.compile(rf"  \(core instance (?:{_ID} )?{_AT_NAME}\(;(?P<index>\d+);\) "
                            rf"\(instantiate (?P<module>{_ID}|\d+)")


class _Rewriter:
    """A printed module, rewritten: a counter at every site in every function; where the
    counters live is the subclass's."""

    _base = ""   # the instruction putting the counters' base address on the stack
    _memory = ""  # the memory operand of the counters' loads and stores
    _bias = 0     # where the first counter sits past that base

    def __init__(self, text: str, module: str = "") -> None:
        self._lines = text.splitlines()
        if not self._lines or not self._lines[0].startswith("(module") or self._lines[-1] != ")":
            raise InstrumentError("wasm-tools printed something other than one module")
        if _GLOBAL in text or f'(export "{COVERAGE_EXPORT}"' in text:
            raise InstrumentError(f"the module is instrumented already ({COVERAGE_EXPORT})")
        self._module = module
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
                line = self._start_field(start)
            out.append(line)
            i += 1
        additions = self._finish(out, memories, start)  # it may adjust lines of `out`
        return "\n".join([*out, *additions, ")", ""])

    def _start_field(self, start: str) -> str:
        return f"  (start {start})"

    def _memory_instruction(self, op: str, line: str) -> str:
        return line

    def _finish(self, out: list[str], memories: list[int], start: str | None) -> list[str]:
        """What the module gains at its end, the definitions `out` has adjusted."""
        raise NotImplementedError

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
            elif op in ("memory.size", "memory.grow"):
                out.append(self._memory_instruction(op, line))
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
        at = f"{self._memory} offset={self._bias + len(self.sites)}"
        self.sites.append(CounterSite(function, edge, self._module))
        base = f"    {self._base}"
        out.extend([base, base, f"    i32.load8_u{at}", base, f"    i32.load8_u{at}",
                    "    i32.const 255", "    i32.ne", "    i32.add", f"    i32.store8{at}"])


class _TopOfMemory(_Rewriter):
    """A core module's counters: in pages at the top of its one memory, hidden from it (the
    module docstring says how)."""

    _base = f"global.get {_GLOBAL}"

    def _start_field(self, start: str) -> str:
        return f"  (start {_START})"  # ours, which calls the module's own

    def _memory_instruction(self, op: str, line: str) -> str:
        return f"    call {_SIZE if op == 'memory.size' else _GROW}"

    def _finish(self, out: list[str], memories: list[int], start: str | None) -> list[str]:
        if len(memories) != 1:
            raise InstrumentError(f"the module has {len(memories)} memories; a plugin has one")
        self.pages = max(1, -(-len(self.sites) // PAGE))
        out[memories[0]] = self._memory_with_room(out[memories[0]])
        return self._additions(start)

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
        # The module's start field, if it had one, names ours already (see `_start_field`).
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


class _OwnMemory(_Rewriter):
    """A component's core module's counters: in a memory the module adds, after LIST_HEADER,
    which `hyperfilter_coverage` fills with the (address, length) it returns."""

    _base = "i32.const 0"
    _memory = f" {_MEMORY_ID}"
    _bias = LIST_HEADER

    def _finish(self, out: list[str], memories: list[int], start: str | None) -> list[str]:
        counters = len(self.sites)
        self.pages = -(-(LIST_HEADER + counters) // PAGE)
        return [
            f"  (memory {_MEMORY_ID} {self.pages} {self.pages})",
            f'  (export "{COUNTERS_MEMORY}" (memory {_MEMORY_ID}))',
            f"  (func {_GLOBAL} (result i32)",
            "    i32.const 0", f"    i32.const {LIST_HEADER}", f"    i32.store {_MEMORY_ID}",
            "    i32.const 0", f"    i32.const {counters}",
            f"    i32.store {_MEMORY_ID} offset=4",
            "    i32.const 0", "  )",
            f'  (export "{COVERAGE_EXPORT}" (func {_GLOBAL}))',
        ]


class _Component:
    """A printed component, every core module at its top level instrumented (`_OwnMemory`),
    and a coverage export for each core instance of one."""

    def __init__(self, text: str) -> None:
        self._lines = text.splitlines()
        if not self._lines or not self._lines[0].startswith("(component") \
                or self._lines[-1] != ")":
            raise InstrumentError("wasm-tools printed something other than one component")
        self.sites: list[CounterSite] = []
        self.pages = 0
        self.functions: list[tuple[str, int]] = []

    def text(self) -> str:
        out: list[str] = []
        modules: dict[str, list[CounterSite]] = {}  # by the module's index and its name
        lines = self._lines[:-1]
        i = 0
        while i < len(lines):
            header = _CORE_MODULE.fullmatch(lines[i])
            if header is None:
                out.append(lines[i])
                i += 1
                continue
            end = lines.index("  )", i)
            name = header["name"] or header["index"]
            rewriter = _OwnMemory("\n".join(["(module", *(line[2:] for line in
                                                           lines[i + 1:end]), ")"]), name)
            body = rewriter.module().splitlines()[1:-1]
            if rewriter.sites:  # a module without code (wit-component's fixups) stays as it is
                modules[header["index"]] = modules[name] = rewriter.sites
                self.pages += rewriter.pages
                out.extend([lines[i], *(f"  {line}" for line in body), "  )"])
            else:
                out.extend(lines[i:end + 1])
            i = end + 1
        exports = self._exports(out, modules)
        if not self.functions:
            raise InstrumentError("the component instantiates no core module")
        return "\n".join([*out, *exports, ")", ""])

    def _exports(self, lines: list[str], modules: dict[str, list[CounterSite]]) -> list[str]:
        """A coverage export for each core instance of an instrumented module; the sites in
        the order the exports' counters are read."""
        typed = f"${COMPONENT_EXPORT}-type"
        added = [f"  (type {typed} (func (result string)))"]
        instantiated: set[int] = set()
        for line in lines:
            made = _CORE_INSTANCE.match(line)
            if made is None or made["module"] not in modules:
                continue
            sites = modules[made["module"]]
            if id(sites) in instantiated:  # its counters would be read twice, as one site
                raise InstrumentError(f"core module {made['module']} is instantiated twice")
            instantiated.add(id(sites))
            instance = made["index"]
            name = f"{COMPONENT_EXPORT}-i{instance}"
            added += [
                f'  (alias core export {instance} "{COVERAGE_EXPORT}" (core func ${name}-read))',
                f'  (alias core export {instance} "{COUNTERS_MEMORY}" '
                f"(core memory ${name}-memory))",
                f"  (func ${name} (type {typed}) (canon lift (core func ${name}-read) "
                f"(memory ${name}-memory) string-encoding=latin1+utf16))",
                f'  (export "{name}" (func ${name}))',
            ]
            self.functions.append((name, len(sites)))
            self.sites += sites
        return added


@runtime_checkable
class ExportedAreas(Protocol):
    """A sandbox that can show the memory an exported address global points at (core-module
    sandboxes on either tier: vmm/wasmtime/core.py, vmm/kvm/sandbox.py)."""

    def exported_area(self, address_global: str, length: int) -> memoryview: ...


@runtime_checkable
class ExportedBytes(Protocol):
    """A sandbox that can call an export returning bytes (component sandboxes:
    vmm/wasmtime/linked.py)."""

    def exported_bytes(self, function: str) -> bytes: ...


def read_counters(sandbox: Sandbox, instrumented: Instrumented) -> bytes:
    """The counters of a sandbox made from `instrumented.wasm`, as they are now."""
    if not instrumented.functions:
        return bytes(_area(sandbox, instrumented))
    if not isinstance(sandbox, ExportedBytes):
        raise TypeError(f"coverage cannot be read from a {type(sandbox).__name__}: not a "
                        "component sandbox")
    counters = []
    for function, count in instrumented.functions:
        counted = sandbox.exported_bytes(function)
        if len(counted) != count:
            raise ValueError(f"{function} returned {len(counted)} counters, not {count}")
        counters.append(counted)
    return b"".join(counters)


def reset_counters(sandbox: Sandbox, instrumented: Instrumented) -> None:
    """Zero a core module's counters, e.g. between streams delivered to one sandbox (a new
    sandbox starts with zeros, but for what its start function counted)."""
    if instrumented.functions:
        raise TypeError("a component's counters are read through its exports, never written")
    area = _area(sandbox, instrumented)
    area[:] = bytes(len(area))


def _area(sandbox: Sandbox, instrumented: Instrumented) -> memoryview:
    if not isinstance(sandbox, ExportedAreas):
        raise TypeError(f"coverage cannot be read from a {type(sandbox).__name__}: only from "
                        "core-module sandboxes")
    return sandbox.exported_area(instrumented.export, instrumented.counters)
