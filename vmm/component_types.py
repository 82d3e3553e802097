"""The WIT types of a component's imports, as `wasm-tools component wit --json` resolves them,
with the canonical ABI's layout of each (size, alignment, where a variant's payload goes).

The kvm tier answers a component's WASI imports inside the guest (vmm/kvm/wasi_glue.py): it
must write their results into the plugin's memory exactly where the plugin's bindings read
them, so it needs the types the component was built against. Every type the JSON names is
read; one this module does not know raises ComponentTypesError naming it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from vmm.wasm_tools import WasmToolsError, wasm_tools

_PRIMITIVES = {"bool": (1, 1), "u8": (1, 1), "s8": (1, 1), "u16": (2, 2), "s16": (2, 2),
               "u32": (4, 4), "s32": (4, 4), "f32": (4, 4), "char": (4, 4), "u64": (8, 8),
               "s64": (8, 8), "f64": (8, 8), "string": (8, 4)}


class ComponentTypesError(Exception):
    """The component's types cannot be read, or use a type not laid out here."""


def align_to(offset: int, alignment: int) -> int:
    return -(-offset // alignment) * alignment


@dataclass(frozen=True)
class WitType:
    size: int
    align: int


@dataclass(frozen=True)
class Primitive(WitType):
    name: str


@dataclass(frozen=True)
class ListOf(WitType):
    element: WitType


@dataclass(frozen=True)
class Handle(WitType):
    own: bool
    resource: str  # the resource's name, e.g. "output-stream"


@dataclass(frozen=True)
class Record(WitType):
    fields: tuple[tuple[str, WitType, int], ...]  # name, type, offset


@dataclass(frozen=True)
class Variant(WitType):
    """Also enum, option and result: cases of a discriminant, each with a payload or none."""

    cases: tuple[tuple[str, WitType | None], ...]
    payload_offset: int

    @property
    def discriminant_size(self) -> int:
        return _discriminant_size(len(self.cases))

    def case(self, name: str) -> int | None:
        return next((i for i, (case, _) in enumerate(self.cases) if case == name), None)


@dataclass(frozen=True)
class Flags(WitType):
    count: int


def _discriminant_size(cases: int) -> int:
    return 1 if cases <= 1 << 8 else 2 if cases <= 1 << 16 else 4


def _record(fields: list[tuple[str, WitType]]) -> Record:
    offset, alignment, laid = 0, 1, []
    for name, field in fields:
        offset = align_to(offset, field.align)
        laid.append((name, field, offset))
        offset += field.size
        alignment = max(alignment, field.align)
    return Record(align_to(offset, alignment), alignment, tuple(laid))


def _variant(cases: list[tuple[str, WitType | None]]) -> Variant:
    discriminant = _discriminant_size(len(cases))
    payloads = [case for _, case in cases if case is not None]
    alignment = max([discriminant, *(p.align for p in payloads)])
    offset = align_to(discriminant, max([1, *(p.align for p in payloads)]))
    size = align_to(offset + max([0, *(p.size for p in payloads)]), alignment)
    return Variant(size, alignment, tuple(cases), offset)


@dataclass(frozen=True)
class WitFunction:
    name: str
    params: tuple[WitType, ...]
    result: WitType | None

    def lowered(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The core type the canonical ABI lowers it to: parameters past MAX_FLAT_PARAMS in
        memory (one pointer), a result of more than one value through a return pointer."""
        params = [t for param in self.params for t in flat(param)]
        if len(params) > MAX_FLAT_PARAMS:
            params = ["i32"]
        results = flat(self.result) if self.result is not None else []
        if len(results) > MAX_FLAT_RESULTS:
            params, results = [*params, "i32"], []
        return tuple(params), tuple(results)


MAX_FLAT_PARAMS, MAX_FLAT_RESULTS = 16, 1


def flat(t: WitType) -> list[str]:
    """A value's core values, as the canonical ABI flattens it."""
    if isinstance(t, Primitive):
        return [{"u64": "i64", "s64": "i64", "f32": "f32", "f64": "f64"}.get(t.name, "i32")]
    if isinstance(t, ListOf):
        return ["i32", "i32"]
    if isinstance(t, Handle):
        return ["i32"]
    if isinstance(t, Record):
        return [value for _, field, _ in t.fields for value in flat(field)]
    if isinstance(t, Flags):
        return ["i32"] * max(1, -(-t.count // 32))
    assert isinstance(t, Variant)
    joined: list[str] = []
    for _, payload in t.cases:
        for i, value in enumerate(flat(payload) if payload is not None else []):
            if i == len(joined):
                joined.append(value)
            elif joined[i] != value:
                joined[i] = "i32" if {joined[i], value} == {"i32", "f32"} else "i64"
    return ["i32", *joined]


class ComponentTypes:
    """The functions of a component's imported interfaces, by interface id and name."""

    def __init__(self, resolved: dict[str, Any]) -> None:
        self._types = resolved["types"]
        self._packages = resolved["packages"]
        self._memo: dict[int, WitType] = {}
        self._resources: dict[int, str] = {}
        self.functions: dict[tuple[str, str], WitFunction] = {}
        for interface in resolved["interfaces"]:
            if interface.get("name") is None:
                continue
            interface_id = self._interface_id(interface)
            for name, function in interface["functions"].items():
                self.functions[interface_id, name] = self._function(name, function)

    def _interface_id(self, interface: dict[str, Any]) -> str:
        package = self._packages[interface["package"]]["name"]  # "wasi:io@0.2.9"
        name, at, version = package.partition("@")
        return f"{name}/{interface['name']}{at}{version}"

    def _function(self, name: str, function: dict[str, Any]) -> WitFunction:
        params = tuple(self.type(p["type"]) for p in function["params"])
        result = function.get("result")
        if "results" in function:  # older wasm-tools: a list of results
            results = function["results"]
            result = results[0]["type"] if results else None
        return WitFunction(name, params, None if result is None else self.type(result))

    def type(self, ref: str | int) -> WitType:
        if isinstance(ref, str):
            if ref not in _PRIMITIVES:
                raise ComponentTypesError(f"type {ref!r}")
            size, alignment = _PRIMITIVES[ref]
            return Primitive(size, alignment, ref) if ref != "string" else \
                ListOf(8, 4, Primitive(1, 1, "u8"))
        if ref not in self._memo:
            self._memo[ref] = self._defined(ref)
        return self._memo[ref]

    def resource(self, ref: int) -> str:
        """The name of resource `ref`, through type aliases."""
        while True:
            kind = self._types[ref]["kind"]
            if kind == "resource":
                return str(self._types[ref]["name"])
            if isinstance(kind, dict) and "type" in kind and isinstance(kind["type"], int):
                ref = kind["type"]
                continue
            raise ComponentTypesError(f"type {ref} is not a resource")

    def _defined(self, ref: int) -> WitType:
        kind = self._types[ref]["kind"]
        if not isinstance(kind, dict) or len(kind) != 1:
            raise ComponentTypesError(f"type {ref} of kind {kind!r}")
        ((form, body),) = kind.items()
        if form == "type":
            return self.type(body)
        if form == "list":
            return ListOf(8, 4, self.type(body))
        if form == "handle":
            ((ownership, resource),) = body.items()
            return Handle(4, 4, ownership == "own", self.resource(resource))
        if form == "record":
            return _record([(f["name"], self.type(f["type"])) for f in body["fields"]])
        if form == "tuple":
            return _record([(str(i), self.type(t)) for i, t in enumerate(body["types"])])
        if form == "variant":
            return _variant([(c["name"], None if c.get("type") is None else self.type(c["type"]))
                             for c in body["cases"]])
        if form == "enum":
            return _variant([(c["name"], None) for c in body["cases"]])
        if form == "option":
            return _variant([("none", None), ("some", self.type(body))])
        if form == "result":
            return _variant([(case, None if body.get(case) is None else self.type(body[case]))
                             for case in ("ok", "err")])
        if form == "flags":
            count = len(body["flags"])
            size = 1 if count <= 8 else 2 if count <= 16 else 4 * -(-count // 32)
            return Flags(size, min(size, 4), count)
        raise ComponentTypesError(f"type {ref} is a {form}")


def component_types(wasm: bytes) -> ComponentTypes:
    """The types of component `wasm`'s world, from wasm-tools."""
    try:
        return ComponentTypes(json.loads(wasm_tools("component", "wit", "--json", given=wasm)))
    except (WasmToolsError, ValueError, KeyError, IndexError, TypeError) as exc:
        raise ComponentTypesError(str(exc)) from None
