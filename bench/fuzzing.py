"""`hyperfilter fuzz`'s own loop, for a fixed time and seed, on every tier that runs each plugin,
with coverage and without: streams and events a second, the corpus it grew and the counters
it reached. A plugin in each language family: C core modules, a Python and a JavaScript
component (their interpreters instrumented)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import Progress

from sidecar.fuzz.command import seeds_from_test_file
from sidecar.fuzz.run import Budget, fuzz
from sidecar.fuzz.target import Target
from sidecar.plugin.files import PLUGINS_DIR
from vmm.errors import PluginLoadError

PLUGINS = ("tcp-blocker", "redis-firewall", "jwt-auth", "pii-redactor")
SEED = 1


def fuzz_rows(tiers: tuple[str, ...], seconds: float, progress: Progress
              ) -> dict[str, dict[str, Any]]:
    """One row per plugin, tier and coverage; a tier that cannot load the plugin (kvm and a
    component) gets a row saying why."""
    runs = [(name, tier, coverage) for name in PLUGINS for tier in tiers
            for coverage in (True, False)]
    task = progress.add_task("fuzzing", total=len(runs))
    rows: dict[str, dict[str, Any]] = {}
    quiet = Console(quiet=True)
    for name, tier, coverage in runs:
        label = f"{tier}, {name}, {'coverage' if coverage else 'no coverage'}"
        directory = PLUGINS_DIR / "examples" / name
        try:
            target = Target(directory, tier, coverage=coverage)
        except PluginLoadError as exc:
            rows[label] = {"not_measured": exc.problem}
            progress.advance(task)
            continue
        try:
            run = fuzz(target, lambda case: None, Budget(seconds, None), SEED, None, {}, quiet,
                       seeds_from_test_file(directory))
        finally:
            target.close()
        rows[label] = {"streams_s": round(run.streams / run.seconds),
                       "events_s": round(run.events / run.seconds), "corpus": run.corpus,
                       "sites": (f"{run.sites:,} of {target.instrumented.counters:,}"
                                 if run.sites is not None and target.instrumented else "")}
        progress.advance(task)
    return rows
