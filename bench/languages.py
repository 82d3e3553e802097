"""Every plugin language on every tier that runs it, with the same trivial plugin (its fresh
`plugin new` template): build time, .wasm size, the tier's first load (its compile), a new
sandbox, one event's call."""

from __future__ import annotations

import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

from rich.progress import Progress

from bench.stats import summarize
from bench.workloads import timed
from sidecar.metrics import Metrics
from sidecar.plugin.build import build_plugin
from sidecar.plugin.new import new_plugin, template_languages
from sidecar.plugin.toolchain import BuildError
from vmm.errors import PluginLoadError
from vmm.events import Direction, HttpHeaders, TcpData
from vmm.loader import load_plugin
from vmm.manifest import load_manifest
from vmm.sandbox import Backend, LoadedPlugin

TCP_EVENT = TcpData(Direction.INBOUND, b"x" * 100, False)
HTTP_EVENT = HttpHeaders(Direction.INBOUND, ((":method", b"GET"), (":path", b"/"),
                                             ("user-agent", b"bench")), True)
WARM_EVENTS = 50  # before an event's call is timed: the sandbox's first touches are not


def language_rows(made: dict[str, Backend], sandboxes: int, calls: int,
                  progress: Progress) -> dict[str, dict[str, Any]]:
    """One row per language and tier; a language whose toolchain is missing, or a tier that
    refuses its kind of module, gets a row saying why instead of figures."""
    languages = template_languages()
    task = progress.add_task("plugin languages", total=len(languages))
    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="hyperfilter-bench-languages-") as tmp:
        for language in languages:
            rows |= _language(language, Path(tmp), made, sandboxes, calls)
            progress.advance(task)
    return rows


def _made_and_closed(plugin: LoadedPlugin) -> None:
    """A stream's sandbox: on kvm a VM reset and reused, as a busy sidecar makes them."""
    plugin.new_sandbox().close()


def _language(language: str, parent: Path, made: dict[str, Backend], sandboxes: int,
              calls: int) -> dict[str, dict[str, Any]]:
    directory = new_plugin(f"trivial-{language}", language, parent)
    start = time.perf_counter()
    try:
        wasm, _ = build_plugin(directory, force=True)
    except (BuildError, PluginLoadError) as exc:
        return {language: {"language": language, "not_measured": str(exc).splitlines()[0]}}
    built = {"language": language, "build_s": round(time.perf_counter() - start, 2),
             "wasm_KiB": round(wasm.stat().st_size / 1024, 1)}
    event = TCP_EVENT if load_manifest(directory).handles("tcp") else HTTP_EVENT
    rows = {}
    for tier, backend in made.items():
        label = f"{language}, {tier}"
        start = time.perf_counter()
        try:
            plugin = load_plugin(directory, backend, Metrics())
        except PluginLoadError as exc:
            rows[label] = built | {"tier": tier, "not_measured": str(exc).splitlines()[0]}
            continue
        first_load = round(time.perf_counter() - start, 2)  # the tier's compile, not cached
        creation = summarize(timed(partial(_made_and_closed, plugin), sandboxes))
        sandbox = plugin.new_sandbox()
        for _ in range(WARM_EVENTS):
            sandbox.deliver(event)
        call = summarize(timed(partial(sandbox.deliver, event), calls))
        sandbox.close()
        rows[label] = built | {"tier": tier, "load_s": first_load,
                               "sandbox_p50_us": creation["p50_us"],
                               "sandbox_p99_us": creation["p99_us"],
                               "event_p50_us": call["p50_us"], "event_p99_us": call["p99_us"]}
    return rows

