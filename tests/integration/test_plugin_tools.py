"""The plugin author's tools as a user runs them, on real plugins: `plugin test` (the examples'
own test files pass on every tier; a wrong expectation, a fault and a broken file are told
apart by exit code and message), `plugin check` (good and bad wasm, manifests and worlds),
`plugin run` (the plugin behind the real Envoy, a request through it, SIGINT stops everything);
the test files seeding `fuzz`; a first load saying that it compiles; `envoy-config` refusing a
body mode the real Envoy does not know."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from sidecar.envoy import BODY_MODES, envoy_binary
from tests.conftest import as_component, kvm_refused_component, plugin_dir
from tests.integration.harness import http_request, tcp_exchange
from tests.integration.test_cli import HYPERFILTER, plugin_copy

pytestmark = pytest.mark.integration
EXAMPLES_WITH_TESTS = ("tcp-blocker", "body-redactor", "http-rate-limit")
WASM_TOOLS = Path(sys.executable).parent / "wasm-tools"


def hyperfilter(*args: str, env: dict[str, str] | None = None,
                timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([HYPERFILTER, *args], capture_output=True, text=True, timeout=timeout,
                          check=False, env=None if env is None else os.environ | env)


def with_tests(tmp_path: Path, name: str, tests: str) -> Path:
    plugin = plugin_copy(tmp_path, name)
    (plugin / "tests.toml").write_text(tests)
    return plugin


# --- plugin test -----------------------------------------------------------------------------


@pytest.mark.parametrize("example", EXAMPLES_WITH_TESTS)
def test_the_examples_pass_their_own_tests_on_every_tier(example: str, tier: str) -> None:
    result = hyperfilter("plugin", "test", str(plugin_dir(example)), "--tier", tier)
    assert result.returncode == 0, result.stdout + result.stderr
    cases = len(re.findall(r"^\[\[case\]\]", (plugin_dir(example) / "tests.toml").read_text(),
                           re.MULTILINE))
    assert f"{example} (core module on {tier}): {cases} cases" in result.stdout
    assert result.stdout.count("\npass ") == cases
    assert f"{cases} passed, 0 failed" in result.stdout


BLOCKER_TESTS = """
[[case]]
name = "passes"
protocol = "tcp"
[[case.event]]
inbound = "hello"
expect = "forward"

[[case]]
name = "wrongly expected to pass"
protocol = "tcp"
[[case.event]]
inbound = "x DROP "
expect = "forward"
[[case.event]]
inbound = "TABLE y"
expect = "forward"
"""


def test_a_wrong_expectation_fails_naming_the_event_and_both_verdicts(tmp_path: Path) -> None:
    result = hyperfilter("plugin", "test", str(with_tests(tmp_path, "tcp-blocker",
                                                          BLOCKER_TESTS)))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "pass passes\n" in result.stdout
    assert ("FAIL wrongly expected to pass (line 9): event 2: expected forward, got close"
            in result.stdout)
    assert "1 passed, 1 failed" in result.stdout


FAULTY_TESTS = """
[[case]]
name = "a trap is the fault it expects"
protocol = "tcp"
[[case.event]]
inbound = "please trap"
expect = "fault"

[[case]]
name = "a loop was not expected"
protocol = "tcp"
[[case.event]]
inbound = "loop"
expect = "forward"

[[case]]
name = "over http too"
protocol = "http"
[[case.event]]
headers = [[":path", "/"], ["x-fault", "trap"]]
end-of-stream = true
expect = "fault"
"""


def test_faults_are_expected_or_reported(tmp_path: Path, tier: str) -> None:
    result = hyperfilter("plugin", "test", str(with_tests(tmp_path, "faulty", FAULTY_TESTS)),
                         "--tier", tier)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "pass a trap is the fault it expects" in result.stdout
    assert re.search(r"FAIL a loop was not expected \(line 9\): event 1: expected forward, "
                     r"got fault \(plugin 'faulty' exceeded its CPU bound", result.stdout)
    assert "pass over http too" in result.stdout


ANSWERER_TESTS = """
config = { greeting = "info" }

[[case]]
name = "on-open gets the addresses and the server name, and answers"
protocol = "tcp"
source-address = "10.1.2.3:40000"
destination-address = "10.0.0.1:6379"
server-name = "redis.example"
expect-open = { answer = "10.1.2.3:40000 10.0.0.1:6379 redis.example\\r\\n" }
[[case.event]]
inbound = "ASK time"
expect = { answer = "ANSWER time" }
[[case.event]]
inbound = "hello"
expect = "forward"
[[case.event]]
outbound = "SECRET 42"
expect = { answer = "[withheld]\\r\\n" }
[[case.event]]
inbound = "QUIT"
expect = { answer-and-close = "BYE\\r\\n" }

[[case]]
name = "a wrong answer"
protocol = "tcp"
[[case.event]]
inbound = "QUIT"
expect = { answer-and-close = "bye" }
"""


def test_answers_and_stream_info_reach_the_expectations(tmp_path: Path, tier: str) -> None:
    result = hyperfilter("plugin", "test", str(with_tests(tmp_path, "answerer", ANSWERER_TESTS)),
                         "--tier", tier)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "pass on-open gets the addresses and the server name, and answers" in result.stdout
    assert ('FAIL a wrong answer (line 24): event 1: expected answer-and-close "bye", got '
            'answer-and-close "BYE\\r\\n"') in result.stdout


def test_a_broken_test_file_exits_2_naming_file_line_and_problem(tmp_path: Path) -> None:
    plugin = with_tests(tmp_path, "tcp-blocker", BLOCKER_TESTS.replace(
        'inbound = "TABLE y"', 'inbound = "TABLE y"\noutbound = "z"'))
    result = hyperfilter("plugin", "test", str(plugin))
    assert result.returncode == 2
    assert (f"{plugin / 'tests.toml'}:15: case 2 (wrongly expected to pass): event 2: an event "
            "has exactly one of inbound, outbound" in result.stderr.replace("\n", ""))
    missing = hyperfilter("plugin", "test", str(plugin_dir("pass-through")))
    assert missing.returncode == 2 and "tests.toml: no test file" in missing.stderr


def test_a_component_the_kvm_tier_cannot_run_is_skipped_saying_why(tmp_path: Path) -> None:
    plugin = kvm_refused_component(tmp_path)  # with tcp-blocker's tests.toml
    result = hyperfilter("plugin", "test", str(plugin), "--tier", "kvm")
    assert result.returncode == 0, result.stdout + result.stderr
    said = " ".join(result.stdout.split())  # rich wraps long lines
    assert re.match(r"skipped on kvm: (is a component the kvm tier cannot run yet: its "
                    r"modules define 2 linear memories|the kvm tier cannot run here)", said)


def test_the_test_files_seed_the_fuzzer(tmp_path: Path) -> None:
    result = hyperfilter("fuzz", str(plugin_dir("tcp-blocker")), "--time", "2s", "--seed", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "6 cases from its tests.toml" in " ".join(result.stdout.split())
    broken = with_tests(tmp_path, "tcp-blocker", "[[case]]\n")
    refused = hyperfilter("fuzz", str(broken), "--time", "2s")
    assert refused.returncode == 2
    assert f"{broken / 'tests.toml'}:1: case 1: name: required field is missing" in refused.stdout


def test_a_first_load_says_it_compiles_and_how_long_it_took(tmp_path: Path) -> None:
    home = {"HOME": str(tmp_path)}  # a compile cache of its own: ~/.cache/hyperfilter
    first = hyperfilter("plugin", "test", str(plugin_dir("tcp-blocker")), env=home)
    assert first.returncode == 0, first.stderr
    assert re.search(r"compiling plugin tcp-blocker \(a core module\): [\d,]+ KiB, once per build",
                     first.stderr)
    assert re.search(r"compiled plugin tcp-blocker \(a core module\) in \d+\.\d s", first.stderr)
    again = hyperfilter("plugin", "test", str(plugin_dir("tcp-blocker")), env=home)
    assert again.returncode == 0 and "compiling" not in again.stderr


# --- plugin check ----------------------------------------------------------------------------


def test_check_shows_a_plugin_that_loads() -> None:
    for given in (plugin_dir("http-rate-limit"),
                  plugin_dir("http-rate-limit") / "http-rate-limit.wasm"):
        result = hyperfilter("plugin", "check", str(given))
        assert result.returncode == 0, result.stdout + result.stderr
        text = result.stdout
        assert re.search(r"http-rate-limit\.wasm: core module, [\d,]+ bytes; plugin "
                         r"http-rate-limit 0\.1\.0", text)
        assert "events wanted: http.request-headers" in text
        assert "http-filter (on-open, on-headers, on-body, on-trailers)" in text
        assert "hyperfilter:plugin/shared-state@0.1.0 (increment)" in text
        assert "grants used: config, log, metrics, shared-state" in text
        assert "grants unused: none" in text
        assert "ok: it loads with this manifest" in text


def test_check_names_missing_and_unused_grants(tmp_path: Path) -> None:
    missing = hyperfilter("plugin", "check", str(plugin_dir("ungranted")))
    assert missing.returncode == 2
    assert ("grants missing: log: these imports would be denied at load; add [grants.log]"
            in missing.stdout)
    assert ("refused at load: imports hyperfilter:plugin/log@0.1.0 but its manifest does not "
            "grant it") in missing.stdout
    plugin = plugin_copy(tmp_path, "tcp-blocker")
    manifest = plugin / "manifest.toml"
    manifest.write_text(manifest.read_text().replace("[grants.log]", "[grants.clock]\n"
                                                                     "[grants.log]"))
    unused = hyperfilter("plugin", "check", str(plugin))
    assert unused.returncode == 0, unused.stdout + unused.stderr
    assert "grants unused: clock" in unused.stdout


def test_check_refuses_what_is_not_a_plugin(tmp_path: Path) -> None:
    text_file = tmp_path / "notes.txt"
    text_file.write_text("hello")
    result = hyperfilter("plugin", "check", str(text_file))
    assert result.returncode == 2
    assert "notes.txt is not WebAssembly (no \\0asm header)" in result.stderr
    plugin = plugin_copy(tmp_path, "counter")
    (plugin / "counter.wasm").write_text("this is not webassembly either")
    result = hyperfilter("plugin", "check", str(plugin))
    assert result.returncode == 2 and "counter.wasm is not WebAssembly" in result.stderr
    manifest = plugin_copy(tmp_path, "tcp-blocker") / "manifest.toml"
    manifest.write_text(manifest.read_text().replace("[grants.config]", "[grants.network]"))
    result = hyperfilter("plugin", "check", str(manifest.parent))
    assert result.returncode == 2 and "unknown grant 'network'" in result.stderr
    result = hyperfilter("plugin", "check", str(tmp_path / "nowhere"))
    assert result.returncode == 2 and "no such file or directory" in result.stderr


def _wasm_tools(*args: str | Path) -> None:
    subprocess.run([str(WASM_TOOLS), *map(str, args)], check=True, capture_output=True)


def test_check_tells_a_component_of_another_world(tmp_path: Path) -> None:
    if not WASM_TOOLS.exists():
        pytest.skip("wasm-tools is not installed (pip install 'hyperfilter[plugins]')")
    plugin = tmp_path / "other"
    (plugin / "wit").mkdir(parents=True)
    (plugin / "wit" / "other.wit").write_text(
        "package test:other;\nworld other {\n  export run: func() -> u32;\n}\n")
    (plugin / "run.wat").write_text(
        '(module (func (export "run") (result i32) i32.const 1) (memory (export "memory") 1))')
    _wasm_tools("parse", plugin / "run.wat", "-o", plugin / "core.wasm")
    _wasm_tools("component", "embed", plugin / "wit", "--world", "other", plugin / "core.wasm",
                "-o", plugin / "embedded.wasm")
    _wasm_tools("component", "new", plugin / "embedded.wasm", "-o", plugin / "other.wasm")
    (plugin / "manifest.toml").write_text('name = "other"\nversion = "1.0.0"\n'
                                          'events = ["tcp.data"]\n')
    result = hyperfilter("plugin", "check", str(plugin / "other.wasm"))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "other.wasm: component" in result.stdout
    assert "a component for another world: it exports run, none of the hyperfilter world" \
        in result.stdout
    assert "refused at load: does not export hyperfilter:plugin/tcp-filter@0.1.0#on-data" \
        in result.stdout


def test_check_shows_a_component_of_the_world(tmp_path: Path) -> None:
    if not WASM_TOOLS.exists():
        pytest.skip("wasm-tools is not installed (pip install 'hyperfilter[plugins]')")
    result = hyperfilter("plugin", "check", str(as_component("pass-through", tmp_path)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "pass-through.wasm: component" in result.stdout
    assert "tcp-filter (on-open, on-data, on-close)" in result.stdout
    assert "ok: it loads with this manifest" in result.stdout


# --- plugin run ------------------------------------------------------------------------------


class Running:
    """`hyperfilter plugin run` in the background, its output collected line by line."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen([HYPERFILTER, "plugin", "run", *args],
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    def wait_for(self, pattern: str, timeout: float = 120) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(pattern, "".join(self.lines))
            if found:
                return found
            if self.process.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"no {pattern!r} in:\n{''.join(self.lines)}")

    def children(self) -> list[int]:
        """The processes it started (Envoy), from /proc."""
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rpartition(")")[2].split()
            except OSError:
                continue
            if int(fields[1]) == self.process.pid:
                found.append(int(stat.parent.name))
        return found

    def stop(self, signum: int) -> int:
        self.process.send_signal(signum)
        code = self.process.wait(timeout=60)
        self._reader.join(timeout=10)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_run_serves_http_behind_envoy_until_sigint(tier: str) -> None:
    running = Running(str(plugin_dir("body-redactor")), "--tier", tier)
    try:
        port = int(running.wait_for(r"curl http://127\.0\.0\.1:(\d+)/").group(1))
        started = running.children()
        assert started, "no Envoy process"
        reply = http_request(port, path="/account")
        assert reply.status == 200
        assert b'"card": "**** **** **** 1111"' in reply.body
        running.wait_for(r"stream \d+ http\.response-body ← forward \(new body\)")
        assert running.stop(signal.SIGINT) == 0, "".join(running.lines)
        assert "stopped" in "".join(running.lines)
        assert all(_gone(pid) for pid in started)
    finally:
        running.kill()


def test_run_serves_tcp_until_sigterm() -> None:
    running = Running(str(plugin_dir("tcp-blocker")))
    try:
        port = int(running.wait_for(r"nc 127\.0\.0\.1 (\d+)").group(1))
        started = running.children()
        assert tcp_exchange(port, [b"hello\n"]).replies == [b"hello\n"]
        assert tcp_exchange(port, [b"DROP TABLE users;\n"]).closed
        running.wait_for(r"stream \d+ tcp\.data → close")
        assert running.stop(signal.SIGTERM) == 0, "".join(running.lines)
        assert all(_gone(pid) for pid in started)
    finally:
        running.kill()


def test_run_refuses_a_body_mode_envoy_lacks() -> None:
    result = hyperfilter("plugin", "run", str(plugin_dir("body-redactor")), "--body-mode",
                         "BUFFER")
    assert result.returncode == 2
    assert "--body-mode: body mode 'BUFFER' is not one of Envoy's" in result.stderr


# --- envoy-config ----------------------------------------------------------------------------


def _validates(bootstrap: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "envoy.yaml"
    config.write_text(bootstrap)
    return subprocess.run([str(envoy_binary()), "--mode", "validate", "-c", str(config),
                           "--disable-hot-restart", "--log-level", "error"],
                          capture_output=True, text=True, timeout=60, check=False)


def test_envoy_config_takes_exactly_the_body_modes_envoy_knows(tmp_path: Path) -> None:
    http = ["envoy-config", "--admin-port", "0", "--http", "0/api/127.0.0.1:9"]
    for mode in BODY_MODES:
        printed = hyperfilter(*http, "--request-body-mode", mode, "--response-body-mode", mode)
        assert printed.returncode == 0, printed.stderr
        checked = _validates(printed.stdout, tmp_path)
        assert checked.returncode == 0, f"{mode}: {checked.stdout}{checked.stderr}"
    refused = hyperfilter(*http, "--response-body-mode", "BUFFER")
    assert refused.returncode == 2
    assert "response body mode 'BUFFER' is not one of Envoy's: NONE, STREAMED, BUFFERED" \
        in refused.stderr.replace("\n", "")
    # What would have happened: Envoy itself refuses the bootstrap, at start.
    good = hyperfilter(*http, "--response-body-mode", "BUFFERED").stdout
    envoy = _validates(good.replace("response_body_mode: BUFFERED",
                                    "response_body_mode: BUFFER"), tmp_path)
    assert envoy.returncode != 0 and "BUFFER" in envoy.stdout + envoy.stderr


def test_envoy_config_inspects_tls_when_asked(tmp_path: Path) -> None:
    tcp = ["envoy-config", "--admin-port", "0", "--tcp", "0/guard/127.0.0.1:9"]
    plain, inspecting = hyperfilter(*tcp).stdout, hyperfilter(*tcp, "--inspect-tls").stdout
    assert "tls_inspector" not in plain and "tls_inspector" in inspecting
    assert "connection.requested_server_name" in plain
    checked = _validates(inspecting, tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
