"""Shared fixtures: plugins built from source, a compile cache per test session, backends of
every isolation tier this machine can run (a tier it cannot run is skipped, saying why)."""

from __future__ import annotations

import functools
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sidecar.config import DEFAULT_CACHE_DIR
from sidecar.plugin.build import build_plugin
from sidecar.plugin.languages import rust
from sidecar.plugin.toolchain import ToolchainMissing
from sidecar.plugin.world import WORLD_NAME, write_plugin_wit
from sidecar.upstreams import RedisServer
from vmm.capabilities import MetricsSink
from vmm.kvm import backend as kvm
from vmm.kvm.watchdog import install_kick_handler
from vmm.loader import load_plugin
from vmm.manifest import load_manifest
from vmm.sandbox import Backend, LoadedPlugin
from vmm.wasmtime import WasmtimeBackend

TIERS = ("wasmtime", "kvm")
ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "plugins" / "examples"
WASM_TOOLS = Path(sys.executable).parent / "wasm-tools"
TEST_PLUGINS = ROOT / "tests" / "plugins"


# Plugins whose language's toolchain this machine lacks, with what would bring it: the tests
# that use one skip, saying so.
UNBUILT: dict[str, str] = {}


def plugin_dir(name: str) -> Path:
    """An example plugin's directory, or a test plugin's."""
    example = EXAMPLES / name
    directory = example if example.is_dir() else TEST_PLUGINS / name
    if directory.name in UNBUILT:
        pytest.skip(f"plugin {directory.name} is not built: {UNBUILT[directory.name]}")
    return directory


@functools.cache
def component_of(name: str) -> bytes:
    """The C plugin `name`'s module made a component as a component toolchain would
    (wit-component, by `wasm-tools component new`): several core modules, a shim and a
    fixup, against the plugin's own world (its manifest's grants)."""
    manifest = load_manifest(plugin_dir(name))
    with tempfile.TemporaryDirectory() as scratch:
        wit = write_plugin_wit(manifest, Path(scratch))
        embedded = Path(scratch) / "embedded.wasm"
        subprocess.run([WASM_TOOLS, "component", "embed", wit, "--world", WORLD_NAME,
                        manifest.wasm, "-o", embedded], check=True)
        return subprocess.run([WASM_TOOLS, "component", "new", embedded],
                              capture_output=True, check=True).stdout


def as_component(name: str, tmp_path: Path) -> Path:
    """A copy of the C plugin `name` whose module is wrapped as a component: the same code,
    in several core modules the host links (vmm/component_linking.py)."""
    copy = tmp_path / f"{name}-component"
    shutil.copytree(plugin_dir(name), copy)
    (copy / f"{name}.wasm").write_bytes(component_of(name))
    return copy


def _rewritten_component(tmp_path: Path, rewrite: Callable[[bytes], bytes]) -> Path:
    """A copy of tcp-blocker as a component, its text rewritten."""
    copy = as_component("tcp-blocker", tmp_path)
    text = subprocess.run([WASM_TOOLS, "print", "-"], input=component_of("tcp-blocker"),
                          capture_output=True, check=True).stdout
    (copy / "tcp-blocker.wasm").write_bytes(subprocess.run(
        [WASM_TOOLS, "parse", "-"], input=rewrite(text), capture_output=True,
        check=True).stdout)
    return copy


def kvm_refused_component(tmp_path: Path) -> Path:
    """A copy of tcp-blocker as a component with a second linear memory (an extra module's),
    which the kvm guest does not handle: that tier refuses the plugin at load, naming why;
    the wasmtime tier links it."""
    extra = b'(core module $extra (memory (export "m") 1 1)) (core instance (instantiate $extra))'

    def with_extra(text: bytes) -> bytes:
        body, end, producers = text.rpartition(b"\n  (@producers")  # the component's own
        return body + b"\n  " + extra + end + producers

    return _rewritten_component(tmp_path, with_extra)


def unlinkable_component(tmp_path: Path) -> Path:
    """A copy of tcp-blocker as a component whose lifts use UTF-16, which the host does not
    lift: every tier refuses it at load, naming why."""
    return _rewritten_component(tmp_path, lambda text: text.replace(
        b"string-encoding=utf8", b"string-encoding=utf16"))


class RecordingMetrics(MetricsSink):
    """A metrics sink that remembers what plugins reported."""

    def __init__(self) -> None:
        self.counters: dict[tuple[str, str], int] = {}
        self.gauges: dict[tuple[str, str], int] = {}

    def add(self, plugin: str, name: str, delta: int) -> None:
        self.counters[plugin, name] = self.counters.get((plugin, name), 0) + delta

    def set(self, plugin: str, name: str, value: int) -> None:
        self.gauges[plugin, name] = value


@pytest.fixture(scope="session", autouse=True)
def built_plugins() -> None:
    """Every plugin the tests use, built from source (a no-op when `make plugins` ran)."""
    for directory in sorted([*EXAMPLES.iterdir(), *TEST_PLUGINS.iterdir()]):
        if (directory / "manifest.toml").exists():
            try:
                build_plugin(directory)
            except ToolchainMissing as exc:
                UNBUILT[directory.name] = str(exc)


@pytest.fixture(scope="session")
def compile_cache() -> Path:
    """The sidecar's own default cache, which the CLI tests' `hyperfilter` processes use too:
    its entries are keyed by content and toolchain, and a component toolchain's interpreter
    compiled for kvm (minutes) is then compiled once per machine, not once per test run."""
    return DEFAULT_CACHE_DIR


def pytest_configure(config: pytest.Config) -> None:
    # Sidecars under test run on threads; the kvm tier's CPU bound needs this done in the
    # main thread first.
    install_kick_handler()


def skip_unless_tier_runs(tier: str) -> None:
    reason = kvm.unavailable() if tier == "kvm" else None
    if reason is not None:
        pytest.skip(f"the {tier} tier cannot run here: {reason}")


def skip_unless_rustc() -> None:
    """Rust plugins need a rustc with the wasm32 target (Debian's, which `make` installs)."""
    try:
        rust.find_rustc()
    except ToolchainMissing as missing:
        pytest.skip(str(missing))


@pytest.fixture(scope="session")
def wasmtime_backend(compile_cache: Path) -> Iterator[WasmtimeBackend]:
    backend = WasmtimeBackend(compile_cache)
    yield backend
    backend.close()


@pytest.fixture(scope="session")
def kvm_backend(compile_cache: Path) -> Iterator[kvm.KvmBackend]:
    skip_unless_tier_runs("kvm")
    backend = kvm.KvmBackend(compile_cache)
    yield backend
    backend.close()


@pytest.fixture(params=TIERS)
def tier(request: pytest.FixtureRequest) -> str:
    skip_unless_tier_runs(request.param)
    return request.param


@pytest.fixture
def backend(tier: str, request: pytest.FixtureRequest) -> Backend:
    """The backend of each tier in turn: tests using it are backend-neutral."""
    return request.getfixturevalue(f"{tier}_backend")


@pytest.fixture
def metrics() -> RecordingMetrics:
    return RecordingMetrics()


Loader = Callable[..., LoadedPlugin]


def loader_for(backend: Backend, metrics: RecordingMetrics) -> Loader:
    def loader(name: str | Path, **overrides: object) -> LoadedPlugin:
        location = name if isinstance(name, Path) else plugin_dir(name)
        return load_plugin(location, backend, metrics, **overrides)  # type: ignore[arg-type]

    return loader


@pytest.fixture
def load(backend: Backend, metrics: RecordingMetrics) -> Loader:
    """Load a plugin (by name, or from a directory) on each tier in turn."""
    return loader_for(backend, metrics)


@pytest.fixture
def load_wasmtime(wasmtime_backend: WasmtimeBackend, metrics: RecordingMetrics) -> Loader:
    return loader_for(wasmtime_backend, metrics)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Redis server of its own on a Unix socket, for the session: its URL."""
    try:
        server = RedisServer(tmp_path_factory.mktemp("redis"))
    except FileNotFoundError as missing:
        pytest.skip(str(missing))
    yield server.url
    server.stop()
