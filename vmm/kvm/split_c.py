"""wasm2c's C for one module cut into translation units, so that a large module (an
interpreter: libpython is 74 MB of C) compiles on every core at once.

wasm2c 1.0.32 writes one file: helpers, the function types' table, a prototype of every
function (all `static`), then the initialisation code, the function bodies and the exports.
Each unit gets the helpers and the prototypes, made hidden instead of static, and a share of
the bodies; the first also gets everything else. The units compiled, `ld -r` joins them and
`objcopy --localize-hidden` makes the functions local again: the object is what the single
file would have given, and two modules' `w2c_f12` never meet. Output not of that shape (a
wasm2c that writes differently) is not cut.
"""

from __future__ import annotations

import re

HIDDEN = '__attribute__((visibility("hidden")))'
_PROTOTYPE = re.compile(r"static (u32|u64|f32|f64|void) w2c_\w+\(.*\);")
# A body's first line: its parameters may go on over more lines (wasm2c wraps long ones).
_BODY = re.compile(r"static (u32|u64|f32|f64|void) w2c_\w+\((?!.*;$).*")
_FUNC_TYPES = re.compile(r"static u32 func_types\[\d+\];")
# Segments a body may name (memory.init, table.init); defined in the first unit.
_SEGMENT = re.compile(r"static (const (?:u8|wasm_elem_segment_expr_t) \w+\[\]) = \{")


def split(source: str, units: int) -> list[str] | None:
    """`units` translation units together equivalent to `source`, or None when it is not the
    shape described above (compile it whole)."""
    lines = source.split("\n")
    first = next((i for i, line in enumerate(lines) if _PROTOTYPE.fullmatch(line)), None)
    if first is None or units < 2:
        return None
    end = first
    while end < len(lines) and _PROTOTYPE.fullmatch(lines[end]):
        end += 1
    prologue = lines[:first]
    types = [i for i, line in enumerate(prologue) if _FUNC_TYPES.fullmatch(line)]
    if len(types) != 1:
        return None
    prototypes = [line.replace("static ", f"{HIDDEN} ", 1) for line in lines[first:end]]
    rest, bodies, segments = _separate(lines[end:])
    if rest is None:
        return None
    shared_types = prologue[types[0]].replace("static ", f"{HIDDEN} ", 1)
    own = [*prologue[:types[0]], shared_types, *prologue[types[0] + 1:]]
    other = [*prologue[:types[0]], "extern " + shared_types, *prologue[types[0] + 1:]]
    declarations = [f"extern {HIDDEN} {segment};" for segment in segments]
    shares = _shares(bodies, units - 1)
    head = "\n".join([*own, *prototypes, *declarations, *rest])
    return [head, *("\n".join([*other, *prototypes, *declarations, *share]) for share in shares)]


def _separate(lines: list[str]) -> tuple[list[str] | None, list[list[str]], list[str]]:
    """The lines that stay in the first unit (segments made hidden), the function bodies, and
    the segments' declarations."""
    rest: list[str] = []
    bodies: list[list[str]] = []
    segments: list[str] = []
    at = 0
    while at < len(lines):
        line = lines[at]
        if _BODY.fullmatch(line):
            close = _closing(lines, at)
            if close is None:
                return None, [], []
            bodies.append([line.replace("static ", "", 1), *lines[at + 1:close + 1]])
            at = close + 1
            continue
        segment = _SEGMENT.fullmatch(line)
        if segment:
            segments.append(segment.group(1))
            line = line.replace("static ", f"{HIDDEN} ", 1)
        rest.append(line)
        at += 1
    return rest, bodies, segments


def _closing(lines: list[str], start: int) -> int | None:
    """The line of the brace closing the function opened at `start`: wasm2c puts it alone
    at the start of a line."""
    for at in range(start + 1, len(lines)):
        if lines[at] == "}":
            return at
        if _BODY.fullmatch(lines[at]):
            return None
    return None


def _shares(bodies: list[list[str]], units: int) -> list[list[str]]:
    """The bodies in order, cut into `units` runs of about as many functions each: by count,
    not size, so that two modules with a few bodies changed are cut in the same places and
    their other units are the same text (vmm/kvm/image.py compiles those once)."""
    shares: list[list[str]] = [[] for _ in range(units)]
    for index, body in enumerate(bodies):
        shares[index * units // len(bodies)].extend(body)
    return [share for share in shares if share]
