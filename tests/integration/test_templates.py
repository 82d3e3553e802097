"""C, Python, Zig and Rust plugins as their authors make them: `hyperfilter plugin new --lang
L`, `hyperfilter plugin build` with the real toolchains, `hyperfilter plugin test`, then the
fresh template behind the real Envoy on each tier that runs it here. Also what an author sees
when a Zig or Rust build goes wrong. (Go and JavaScript: their own test files.)"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sidecar.plugin.languages import linking, rust
from sidecar.plugin.toolchain import BuildError
from tests.conftest import TIERS, skip_unless_rustc
from tests.integration.harness import Stack, StackSpec, http_request, stack_per_tier, tcp_exchange

pytestmark = pytest.mark.integration
HYPERFILTER = str(Path(sys.executable).parent / "hyperfilter")
LANGUAGES = ("zig", "rust")
TEMPLATE_LANGUAGES = ("c", "python", *LANGUAGES)


def hyperfilter(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([HYPERFILTER, "plugin", *args], capture_output=True, text=True,
                          timeout=120, check=False)


def new_plugin(language: str, parent: Path, name: str = "fresh") -> Path:
    if language == "rust":
        skip_unless_rustc()
    created = hyperfilter("new", name, "--lang", language, "--dir", str(parent))
    assert created.returncode == 0, created.stderr
    return parent / name


def skip_javascript_on_kvm(plugin: Path, tier: str) -> None:
    """On kvm a JavaScript plugin compiles componentize-js's engine (a minute): its template
    runs there under `-m heavy` (tests/integration/test_javascript_plugins.py)."""
    if tier == "kvm" and (plugin / "app.js").exists():
        pytest.skip("the JavaScript template on kvm runs under -m heavy "
                    "(test_javascript_plugins.py)")


@pytest.fixture(scope="module", params=TEMPLATE_LANGUAGES)
def fresh_plugin(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = new_plugin(request.param, tmp_path_factory.mktemp(request.param))
    built = hyperfilter("build", str(directory))
    assert built.returncode == 0, built.stderr
    assert (directory / "fresh.wasm").exists()
    return directory


@pytest.fixture(scope="module", params=TIERS)
def stack(fresh_plugin: Path, request: pytest.FixtureRequest,
          compile_cache: Path) -> Iterator[Stack]:
    skip_javascript_on_kvm(fresh_plugin, request.param)
    spec = StackSpec(plugins={"fresh": str(fresh_plugin)}, tcp={"tcp": "fresh"},
                     http={"http": ("fresh", {})})
    yield from stack_per_tier(spec, request.param, compile_cache)


def test_the_templates_own_tests_pass_in_the_sandbox(fresh_plugin: Path, tier: str) -> None:
    skip_javascript_on_kvm(fresh_plugin, tier)
    tested = hyperfilter("test", "--tier", tier, str(fresh_plugin))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "4 passed, 0 failed" in tested.stdout + tested.stderr


def test_the_template_forwards_tcp_and_closes_on_the_forbidden_word(stack: Stack) -> None:
    port = stack.ports["tcp"]
    assert tcp_exchange(port, [b"hello\n", b"again\n"]).replies == [b"hello\n", b"again\n"]
    refused = tcp_exchange(port, [b"hi\n", b"something forbidden\n", b"more\n"])
    assert refused.replies == [b"hi\n"] and refused.closed
    assert bytes(stack.echo.received[-1]) == b"hi\n"


def test_the_template_greets_http_requests_and_refuses_x_block(stack: Stack) -> None:
    port = stack.ports["http"]
    reply = http_request(port, path="/hello")
    assert reply.status == 200
    assert stack.headers_seen()["x-greeting"] == "hello"
    blocked = http_request(port, path="/hello", headers={"x-block": "yes"})
    assert (blocked.status, blocked.body) == (403, b"blocked\n")


BROKEN = {
    # language: (file, text replaced, replacement, what the toolchain's own message says)
    "zig": ("plugin.zig", "return .forward;", "return .forwrd;", "no member named 'forwrd'"),
    "rust": ("lib.rs", "TcpVerdict::Forward\n", "TcpVerdict::Forwrd\n", "Forwrd"),
}


@pytest.mark.parametrize("language", LANGUAGES)
def test_a_build_error_shows_the_toolchains_message(tmp_path: Path, language: str) -> None:
    directory = new_plugin(language, tmp_path)
    file, old, new, message = BROKEN[language]
    source = directory / file
    source.write_text(source.read_text().replace(old, new))
    built = hyperfilter("build", str(directory))
    assert built.returncode == 2
    assert message in built.stderr and file in built.stderr


def test_a_misspelt_zig_hook_stops_the_build(tmp_path: Path) -> None:
    directory = new_plugin("zig", tmp_path)
    source = directory / "plugin.zig"
    source.write_text(source.read_text().replace("pub fn onTcpData", "pub fn onTcpdata"))
    built = hyperfilter("build", str(directory))
    assert built.returncode == 2 and "onTcpdata is no hook" in built.stderr


def test_a_zig_hook_of_the_wrong_type_stops_the_build(tmp_path: Path) -> None:
    directory = new_plugin("zig", tmp_path)
    source = directory / "plugin.zig"
    source.write_text(source.read_text().replace("end_of_stream: bool) hf.TcpVerdict",
                                                 "end_of_stream: u8) hf.TcpVerdict"))
    built = hyperfilter("build", str(directory))
    assert built.returncode == 2 and "onTcpData must be fn" in built.stderr


def test_no_rustc_with_the_wasm_target_names_the_debian_packages(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A rustc without the target (as rustup's is until `rustup target add`) is passed over,
    and named when there is no other."""
    lacking = tmp_path / "rustc"
    lacking.write_text(f"#!/bin/sh\necho {tmp_path / 'no-such-libdir'}\n")
    lacking.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("RUSTC", raising=False)
    monkeypatch.setattr(rust, "DEBIAN_RUSTC", str(tmp_path / "not-installed"))
    with pytest.raises(BuildError) as raised:
        rust.find_rustc()
    assert str(raised.value) == (
        f"no rustc with the wasm32-unknown-unknown target is installed ({lacking} lacks it): "
        "apt-get install rustc libstd-rust-dev-wasm32, or with rustup: rustup target add "
        "wasm32-unknown-unknown")


def test_no_ziglang_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(linking.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(BuildError, match=r"zig is not installed \(pip install "
                                         r"'hyperfilter\[plugins\]', which brings PyPI ziglang\)"):
        linking.zig()
