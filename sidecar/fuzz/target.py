"""The plugin under test, loaded as `hyperfilter serve` loads it (its manifest, grants,
limits, tier and compile cache), and one case run through the sidecar's own session code:
TcpSession or HttpSession over StreamPlugins, fresh sandboxes for every case. No Envoy: the
case plays Envoy's part, stopping where Envoy would (a close, a reset, an answer)."""

from __future__ import annotations

import logging
import shutil
import tempfile
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sidecar.app import Sidecar
from sidecar.config import DEFAULT_CACHE_DIR, SidecarConfig, parse_config
from sidecar.fuzz.cases import Case
from sidecar.fuzz.coverage import (
    Instrumented,
    InstrumentError,
    instrument_cached,
    read_counters,
)
from sidecar.http_session import HttpResult, HttpSession
from sidecar.streams import Decision, DecisionRecorder, StreamPlugins
from sidecar.tcp_session import ConnectionAction, TcpResult, TcpSession
from vmm.errors import SandboxFault
from vmm.events import StreamInfo, TcpData
from vmm.manifest import load_manifest
from vmm.sandbox import LoadedPlugin

# Grants through which a plugin may see something other than the stream: its verdicts need
# not repeat, so determinism is not asked of it.
NONDETERMINISTIC_GRANTS = frozenset({"clock", "random", "shared-state"})
# Faults are findings here; the serving path's warnings about them would only repeat them.
QUIET_LOGGERS = ("sidecar.streams", "sidecar.http_session", "hyperfilter.plugin")


@dataclass(frozen=True)
class Outcome:
    """What one case did: the session's answer to each event delivered (`answers`), what the
    plugin decided (`decisions`: a verdict or a fault each), and an exception the sidecar's own
    code raised (`error`, a traceback), which is always a finding."""

    answers: tuple[TcpResult | HttpResult, ...]
    decisions: tuple[Decision, ...]
    error: str | None = None
    coverage: bytes | None = None  # the plugin's counters after the stream, when instrumented
    # How many decisions had been made when each answer was given: decisions[ends[i - 1]:
    # ends[i]] are event i's (the first event's include the on-open ones).
    ends: tuple[int, ...] = ()

    @property
    def faults(self) -> tuple[SandboxFault, ...]:
        return tuple(d.fault for d in self.decisions if d.fault is not None)

    def signature(self) -> frozenset[str]:
        """The shape of what happened, without its bytes or counts: which verdicts and
        faults the plugin gave, for which events, and how the answers ended events."""
        return frozenset(f"{d.event.value} {type(d.fault or d.verdict).__name__}"
                         for d in self.decisions) | {_ending(a) for a in self.answers}


def _ending(answer: TcpResult | HttpResult) -> str:
    if isinstance(answer, TcpResult):
        return answer.action.value
    return f"respond {answer.respond.status}" if answer.respond else "continue"


class Target:
    def __init__(self, plugin_dir: Path, tier: str, cache_dir: Path | None = None,
                 coverage: bool = False, config: Mapping[str, str] | None = None) -> None:
        """Loads the plugin; PluginLoadError (or ConfigError) names what is wrong. With
        `coverage`, a copy whose core modules count what they run (sidecar/fuzz/coverage.py;
        where they cannot, `instrumented` stays None and `uninstrumented` says why). `config`
        overrides entries of the manifest's `[config]`, as a sidecar's plugin entry can.
        Its shared-state is a store in memory of its own, empty at first."""
        manifest = load_manifest(plugin_dir)
        self.instrumented: Instrumented | None = None
        self.uninstrumented = "" if coverage else "--no-coverage"  # why there are no counters
        self._copy: tempfile.TemporaryDirectory[str] | None = None
        if coverage:
            plugin_dir = self._instrumented_copy(plugin_dir, manifest.wasm,
                                                 cache_dir or DEFAULT_CACHE_DIR)
        name = manifest.name
        entry = {"path": str(plugin_dir), "tier": tier, "config": dict(config or {})}
        table: dict[str, object] = {"plugins": {name: entry},
                                    "shared-state": {"backend": "memory"}}
        if cache_dir is not None:
            table["cache-dir"] = str(cache_dir)
        sidecar_config: SidecarConfig = parse_config(table, Path("."))
        self._sidecar = Sidecar(sidecar_config)
        self._chain = self._sidecar.registry.chains[name]
        self.plugin: LoadedPlugin = self._chain.links[0].plugin
        manifest = self.plugin.manifest
        self.protocols = tuple(p for p in ("tcp", "http") if manifest.handles(p))
        self.deterministic = not NONDETERMINISTIC_GRANTS & manifest.grants.keys()
        for name in QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)

    def _instrumented_copy(self, plugin_dir: Path, wasm: Path, cache_dir: Path) -> Path:
        """A copy of the plugin's directory with its wasm instrumented; the directory itself
        where the wasm cannot be instrumented or lives elsewhere (`uninstrumented` says)."""
        try:
            relative = wasm.resolve().relative_to(plugin_dir.resolve())
        except ValueError:
            self.uninstrumented = f"its wasm is outside {plugin_dir}"
            return plugin_dir
        try:
            self.instrumented = instrument_cached(wasm.read_bytes(), cache_dir)
        except InstrumentError as exc:
            self.uninstrumented = str(exc)
            return plugin_dir
        self._copy = tempfile.TemporaryDirectory(prefix="hyperfilter-fuzz-")
        copy = Path(self._copy.name) / plugin_dir.name
        shutil.copytree(plugin_dir, copy)
        (copy / relative).write_bytes(self.instrumented.wasm)
        return copy

    def _counters(self, plugins: StreamPlugins) -> bytes | None:
        if self.instrumented is None or not plugins.links or plugins.links[0].sandbox is None:
            return None
        try:
            return read_counters(plugins.links[0].sandbox, self.instrumented)
        except SandboxFault:  # it faulted and was closed: the fault is the finding
            return None

    def run(self, case: Case, info: StreamInfo | None = None) -> Outcome:
        """`case` as one stream; `info` is what the plugin's on-open gets (addresses, server
        name, metadata; empty by default)."""
        recorder = DecisionRecorder()
        plugins = StreamPlugins(self._chain, case.protocol, (recorder,))
        answers: list[TcpResult | HttpResult] = []
        ends: list[int] = []
        session: TcpSession | HttpSession
        session = (TcpSession if case.protocol == "tcp" else HttpSession)(
            plugins, info or StreamInfo())
        try:
            for event in case.events:
                if isinstance(session, TcpSession):
                    assert isinstance(event, TcpData)
                    tcp = session.data(event.direction, event.data, event.end_of_stream)
                    answers.append(tcp)
                    ends.append(len(recorder.decisions))
                    if tcp.action is not ConnectionAction.CONTINUE:
                        break  # Envoy closes the connection
                else:
                    assert not isinstance(event, TcpData)
                    http = session.handle(event)
                    answers.append(http)
                    ends.append(len(recorder.decisions))
                    if http.respond is not None:
                        break  # Envoy answers the client; nothing more comes
            counters = self._counters(plugins)
            session.close()
        except Exception:  # noqa: BLE001 - the sidecar's code failing is what this looks for
            return Outcome(tuple(answers), tuple(recorder.decisions), traceback.format_exc(),
                           ends=tuple(ends))
        return Outcome(tuple(answers), tuple(recorder.decisions), coverage=counters,
                       ends=tuple(ends))

    def close(self) -> None:
        self._sidecar.close()
        if self._copy is not None:
            self._copy.cleanup()
