"""JavaScript components on each tier: a plugin's mistakes told in one line with its file and
line, a capability it was not granted refused at build, and componentize-js's own WASI imports
(wasi:http among them) linked so that they deny."""

from __future__ import annotations

import socket
import subprocess
import textwrap
from pathlib import Path

import pytest

from sidecar.plugin.build import build_plugin
from sidecar.plugin.languages import javascript
from sidecar.plugin.toolchain import BuildError, ToolchainMissing
from sidecar.plugin.world import WORLD_NAME, write_plugin_wit
from tests.conftest import Loader, skip_unless_tier_runs
from vmm.errors import PluginError, PluginTrap
from vmm.events import (
    Answer,
    AnswerAndClose,
    Direction,
    Forward,
    Replace,
    StreamInfo,
    TcpData,
    TcpOpen,
)
from vmm.manifest import load_manifest

MANIFEST = """\
name = "{name}"
version = "0.1.0"
events = ["tcp.data"]
[limits]
memory-mb = 32
cpu-ms = 200
"""


# On kvm each JavaScript plugin's first load translates componentize-js's engine again and
# compiles the unit holding its bindings (about 30 s here): the default suite runs one
# JavaScript plugin there (pii-redactor, tests/integration/test_javascript_plugins.py),
# these under `-m heavy`.
KVM_HEAVY = pytest.param("kvm", marks=pytest.mark.heavy)


@pytest.fixture(params=["wasmtime", KVM_HEAVY])
def tier(request: pytest.FixtureRequest) -> str:
    skip_unless_tier_runs(request.param)
    return str(request.param)


def js_plugin(parent: Path, name: str, app: str, manifest: str = MANIFEST) -> Path:
    directory = parent / name
    directory.mkdir()
    (directory / "manifest.toml").write_text(manifest.format(name=name))
    (directory / "app.js").write_text(textwrap.dedent(app))
    return directory


def build_or_skip(directory: Path) -> None:
    try:
        build_plugin(directory)
    except BuildError as error:
        if "is not installed" in str(error):
            pytest.skip(str(error))
        raise


def data(text: bytes) -> TcpData:
    return TcpData(Direction.INBOUND, text, False)


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A plugin that answers each word it is sent with one of the SDK's verdicts, or with a
    mistake."""
    directory = js_plugin(tmp_path_factory.mktemp("js"), "js-probe", """\
        import { answer, answerAndClose, forward, http, replace, tcp, text } from "hyperfilter";

        function field(json) { return JSON.parse(json).outer.inner; }

        let serverName = "";
        export const tcpFilter = tcp({
          onOpen(info) {
            serverName = info.serverName;
            return forward();
          },
          onData(direction, data) {
            const word = text(data);
            if (word === "throw") return replace(field("{}"));
            if (word === "nothing") return undefined;
            if (word === "number") return replace(42);
            if (word === "sni") return replace(serverName);
            if (word === "ping") return answer("+PONG\\r\\n");
            if (word === "quit") return answerAndClose("bye\\n");
            return forward();
          },
        });
        export const httpFilter = http({});
        """, MANIFEST.replace('events = ["tcp.data"]', 'events = ["tcp.open", "tcp.data"]'))
    build_or_skip(directory)
    return directory


def test_an_exception_is_the_fault_with_the_plugins_file_and_line(
        probe: Path, load: Loader) -> None:
    plugin = load(probe)
    sandbox = plugin.new_sandbox()
    with pytest.raises(PluginError, match=r"onData threw TypeError: .*outer.* at app\.js:3$"):
        sandbox.deliver(data(b"throw"))
    sandbox.close()


@pytest.mark.parametrize(("word", "cause"), [
    (b"nothing", r"onData returned undefined: return a verdict \(forward\(\), "),
    (b"number", r"onData threw TypeError: expected a string or a Uint8Array, got 42 "
                r"at app\.js:15$"),
])
def test_a_wrong_verdict_is_told_in_one_line(probe: Path, load: Loader,
                                             word: bytes, cause: str) -> None:
    plugin = load(probe)
    sandbox = plugin.new_sandbox()
    with pytest.raises(PluginError, match=cause):
        sandbox.deliver(data(word))
    sandbox.close()
    fresh = plugin.new_sandbox()  # the next stream is not affected
    assert fresh.deliver(data(b"fine")) == Forward()
    fresh.close()


def test_the_sdks_verdicts_and_stream_info_reach_the_host(probe: Path,
                                                         load: Loader) -> None:
    plugin = load(probe)
    sandbox = plugin.new_sandbox()
    assert sandbox.deliver(TcpOpen(StreamInfo(server_name="db.example.com"))) == Forward()
    assert sandbox.deliver(data(b"sni")) == Replace(b"db.example.com")
    assert sandbox.deliver(data(b"ping")) == Answer(b"+PONG\r\n")
    assert sandbox.deliver(data(b"quit")) == AnswerAndClose(b"bye\n")
    sandbox.close()


def test_a_capability_not_granted_is_refused_at_build_saying_so(tmp_path: Path) -> None:
    directory = js_plugin(tmp_path, "js-ungranted", """\
        import { forward, http, tcp } from "hyperfilter";
        import { add } from "@hyperfilter/metrics";

        export const tcpFilter = tcp({ onData() { add("x", 1); return forward(); } });
        export const httpFilter = http({});
        """)
    with pytest.raises(BuildError) as refused:
        build_or_skip(directory)
    assert "hint: `metrics` is a capability: grant it in manifest.toml ([grants.metrics])" \
        in str(refused.value)
    assert "    at " not in str(refused.value)  # Node's own stack is left out


def test_a_syntax_error_stops_the_build_at_the_plugins_file_and_line(tmp_path: Path) -> None:
    directory = js_plugin(tmp_path, "js-syntax", """\
        import { forward, http, tcp } from "hyperfilter";

        export const tcpFilter = tcp({ onData() { return forward( } });
        export const httpFilter = http({});
        """)
    with pytest.raises(BuildError) as refused:
        build_or_skip(directory)
    assert f"{directory / 'app.js'}:3\n" in str(refused.value)
    assert "SyntaxError: Unexpected token '}'" in str(refused.value)


def test_wasi_http_of_a_component_built_with_fetch_is_linked_and_denies(
        tmp_path: Path, load: Loader) -> None:
    """componentize-js as it builds by default (fetch() included, importing wasi:http): the
    component loads, and its fetch() reaches nothing."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(0.5)
        directory = js_fetching(tmp_path, listener.getsockname()[1])
        plugin = load(directory)
        sandbox = plugin.new_sandbox()
        with pytest.raises(PluginTrap, match=r"(unknown import: `|it called )"
                                             r"wasi:http/types@[0-9.]+#"):
            sandbox.deliver(data(b"go"))  # each wasi:http function traps
        sandbox.close()
        with pytest.raises(TimeoutError):
            listener.accept()  # nobody connected


def js_fetching(parent: Path, port: int) -> Path:
    """A plugin that fetch()es from `port`, built with componentize-js's default features."""
    directory = js_plugin(parent, "js-fetch", f"""\
        export const tcpFilter = {{
          onOpen() {{ return {{ tag: "forward" }}; }},
          onData() {{
            fetch("http://127.0.0.1:{port}/");
            return {{ tag: "forward" }};
          }},
          onClose() {{}},
        }};
        const forward = {{ tag: "forward", val: {{ setHeaders: [], removeHeaders: [] }} }};
        export const httpFilter = {{
          onOpen: () => forward, onHeaders: () => forward, onBody: () => forward,
          onTrailers: () => forward,
        }};
        """)
    try:
        command = javascript.componentize_js()
    except BuildError as error:
        pytest.skip(str(error))
    manifest = load_manifest(directory)
    wit = write_plugin_wit(manifest, parent)
    subprocess.run([*command, "app.js", "--wit", str(wit), "--world-name", WORLD_NAME,
                    "--out", str(manifest.wasm)], cwd=directory, check=True,
                   capture_output=True, timeout=600)
    return directory


def test_a_missing_toolchain_is_named_with_the_command_that_installs_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    directory = js_plugin(tmp_path, "js-nothing", 'export const tcpFilter = {};\n')
    monkeypatch.setattr(javascript, "INSTALLED", tmp_path / "nowhere")
    with pytest.raises(ToolchainMissing,
                       match=r"componentize-js is not installed \(npm ci --prefix .*\)$"):
        build_plugin(directory)
    monkeypatch.setenv("PATH", str(tmp_path))  # no node on it
    with pytest.raises(ToolchainMissing,
                       match=r"node is not installed \(Debian: apt-get install nodejs npm\)"):
        build_plugin(directory)
