"""Shared fixtures: plugins built from source, a compile cache per test session, backends."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sidecar.plugin_build import build_plugin
from vmm.capabilities import MetricsSink
from vmm.loader import load_plugin
from vmm.sandbox import LoadedPlugin
from vmm.wasmtime import WasmtimeBackend

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "plugins" / "examples"
TEST_PLUGINS = ROOT / "tests" / "plugins"


def plugin_dir(name: str) -> Path:
    """An example plugin's directory, or a test plugin's."""
    example = EXAMPLES / name
    return example if example.is_dir() else TEST_PLUGINS / name


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
            build_plugin(directory)


@pytest.fixture(scope="session")
def compile_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("compile-cache")


@pytest.fixture(scope="session")
def wasmtime_backend(compile_cache: Path) -> Iterator[WasmtimeBackend]:
    backend = WasmtimeBackend(compile_cache)
    yield backend
    backend.close()


@pytest.fixture
def metrics() -> RecordingMetrics:
    return RecordingMetrics()


Loader = Callable[..., LoadedPlugin]


@pytest.fixture
def load(wasmtime_backend: WasmtimeBackend, metrics: RecordingMetrics) -> Loader:
    """Load a plugin by name on the wasmtime tier."""

    def loader(name: str, **overrides: object) -> LoadedPlugin:
        return load_plugin(plugin_dir(name), wasmtime_backend, metrics, **overrides)  # type: ignore[arg-type]

    return loader
