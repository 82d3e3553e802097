"""`hyperfilter fuzz PLUGIN_DIR`: what the user sees. Exit 0 when the budget ends with
nothing found, 1 with a finding (minimized, saved, a replay command printed), 2 when the
plugin, a property file or a replayed case cannot be loaded."""

from __future__ import annotations

import re
import shlex
import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from sidecar.config import ConfigError
from sidecar.fuzz import cases
from sidecar.fuzz.oracles import Property, PropertyFileError, check, load_properties
from sidecar.fuzz.run import Budget, fuzz, minimized, replay
from sidecar.fuzz.target import Target
from sidecar.plugin.expectations import TEST_FILE, CaseFileError, Fault, load_cases
from vmm.errors import PluginLoadError

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)?")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def seconds_of(text: str) -> float:
    """"90", "90s", "1.5m", "500ms" in seconds; ValueError otherwise."""
    found = _DURATION.fullmatch(text.strip())
    if found is None:
        raise ValueError(f"{text!r}: expected a duration such as 60s, 5m or 500ms")
    return float(found.group(1)) * _UNIT_SECONDS[found.group(2)]


def seeds_from_test_file(plugin_dir: Path) -> list[cases.Case]:
    """The streams of the plugin's own test cases, where it has a test file; not those that
    expect a fault, which would only be found again."""
    if not (plugin_dir / TEST_FILE).is_file():
        return []
    return [cases.Case(case.protocol, case.events) for case in load_cases(plugin_dir).cases
            if not any(isinstance(e, Fault) for e in (case.expect_open, *case.expects))]


def main(plugin_dir: Path, tier: str, duration: str, events: int | None, seed: int | None,
         corpus: Path | None, property_file: Path | None, replay_file: Path | None,
         coverage: bool, console: Console) -> int:
    try:
        budget = Budget(seconds_of(duration), events)
        properties: dict[str, Property] = load_properties(property_file) if property_file \
            else {}
        case = cases.load(replay_file) if replay_file is not None else None
        seeds = seeds_from_test_file(plugin_dir)
        with console.status(f"loading {plugin_dir} on {tier} (a first load compiles it, and "
                            "instruments it: a minute or two for an interpreter's component)"):
            plain = Target(plugin_dir, tier)
            target = Target(plugin_dir, tier, coverage=coverage and case is None)
    except (ValueError, PropertyFileError, cases.CaseError, CaseFileError, ConfigError,
            PluginLoadError) as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
        return 2
    try:
        if case is not None:
            return _replay(plain, case, properties, replay_file, console)
        seed = seed if seed is not None else time.time_ns() % 1_000_000
        counted = (f"{target.instrumented.counters:,} coverage counters" if target.instrumented
                   else f"no coverage counters: {target.uninstrumented}")
        console.print(f"fuzzing {target.plugin.name} on {target.plugin.tier} "
                      f"({', '.join(target.protocols)} streams; {counted}; {len(seeds)} cases "
                      f"from its {TEST_FILE}), seed {seed}")
        found = fuzz(target, lambda candidate: check(plain, candidate, plain.run(candidate),
                                                     properties, repeat=True),
                     budget, seed, corpus, properties, console, seeds).found
        if found is None:
            console.print("[green]nothing found[/]")
            return 0
        failing, finding = found
        console.print(f"[bold red]finding:[/] {escape(finding.detail)}; minimizing "
                      f"({failing.size():,} events and bytes)")
        small = minimized(plain, failing, finding, properties)
        where = corpus or plugin_dir / "fuzz-findings"
        where.mkdir(parents=True, exist_ok=True)
        path = where / f"finding-{seed}.json"
        cases.save(small, path, finding.detail)
        console.print(f"saved {path} ({len(small.events)} events, {small.size():,} in all)",
                      soft_wrap=True)
        console.print("replay: " + shlex.join(  # one line, to copy
            ["hyperfilter", "fuzz", str(plugin_dir), "--tier", tier, "--replay", str(path)]
            + (["--property", str(property_file)] if property_file else [])), soft_wrap=True,
            markup=False, highlight=False)
        return 1
    finally:
        target.close()
        plain.close()


def _replay(target: Target, case: cases.Case, properties: dict[str, Property],
            path: Path | None, console: Console) -> int:
    finding = replay(target, case, properties)
    if finding is None:
        console.print(f"[green]{path}: every rule holds[/]")
        return 0
    console.print(f"[bold red]{path}:[/] {escape(finding.detail)}")
    return 1
