"""What a case must not do, and the user's own properties.

Built in: the sidecar's code raises nothing; the plugin neither faults (traps, runs past its
CPU bound or memory limit, returns a verdict the host refuses) nor, when it can see nothing but
the stream (no clock, random or shared-state grant), decides differently on the same stream in
two fresh sandboxes. A `--property` file adds predicates: every top-level function whose name
starts with `property_` is called with the case and its outcome, and must return True:

    def property_no_flushall_upstream(case, outcome):
        return not any(b"FLUSHALL" in answer.data for answer in outcome.answers)
"""

from __future__ import annotations

import importlib.util
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sidecar.fuzz.cases import Case
from sidecar.fuzz.target import Outcome, Target

Property = Callable[[Case, Outcome], object]
PREFIX = "property_"


class PropertyFileError(Exception):
    """The property file cannot be used; the message says why."""


@dataclass(frozen=True)
class Finding:
    """A broken rule. `kind` identifies it while minimizing: a smaller case must break the
    same rule (the same fault class, the same property), not any."""

    kind: str
    detail: str


def load_properties(path: Path) -> dict[str, Property]:
    spec = importlib.util.spec_from_file_location(f"hyperfilter_properties_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise PropertyFileError(f"{path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - whatever the user's file raises, said at load
        raise PropertyFileError(f"{path}: {type(exc).__name__}: {exc}") from None
    found: dict[str, Property] = {name[len(PREFIX):]: value for name, value in vars(module).items()
             if name.startswith(PREFIX) and inspect.isfunction(value)}
    if not found:
        raise PropertyFileError(f"{path}: no function named {PREFIX}…")
    return found


def check(target: Target, case: Case, outcome: Outcome, properties: dict[str, Property],
          repeat: bool) -> Finding | None:
    """The first rule `outcome` breaks; with `repeat`, the case is run again in fresh
    sandboxes to compare (for a deterministic plugin)."""
    if outcome.error is not None:
        return Finding("sidecar raised", outcome.error.strip().splitlines()[-1])
    if outcome.faults:
        fault = outcome.faults[0]
        return Finding(f"fault {type(fault).__name__}", str(fault))
    for name, holds in properties.items():
        try:
            if not holds(case, outcome):
                return Finding(f"property {name}", f"property {name} does not hold")
        except Exception as exc:  # noqa: BLE001 - the property's own failure, the user's to see
            return Finding(f"property {name} raised", f"{type(exc).__name__}: {exc}")
    if repeat and target.deterministic:
        again = target.run(case)
        if again.signature() != outcome.signature() or again.answers != outcome.answers:
            return Finding("not deterministic", "the same stream, in two fresh sandboxes, got "
                           f"{_shape(outcome)} and then {_shape(again)}")
    return None


def _shape(outcome: Outcome) -> str:
    return ", ".join(sorted(outcome.signature())) or "nothing"
