"""The `hyperfilter` command: bad input refused at load with exit code 2 and the problem named;
a good configuration served to the real Envoy; the demo end to end."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import wasmtime

from sidecar.envoy import Envoy, TcpListener, Upstream, render_bootstrap
from sidecar.metrics import FLUSH_SECONDS
from sidecar.upstreams import EchoServer
from tests.conftest import kvm_refused_component, plugin_dir, skip_unless_tier_runs
from tests.integration.harness import LoopThread, tcp_exchange
from vmm.kvm import backend as kvm

pytestmark = pytest.mark.integration
HYPERFILTER = str(Path(sys.executable).parent / "hyperfilter")


def serve(config: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([HYPERFILTER, "serve", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=timeout, check=False)


def write_config(tmp_path: Path, plugins: str, extra: str = "") -> Path:
    config = tmp_path / "sidecar.toml"
    config.write_text(f'cache-dir = "{tmp_path / "cache"}"\n{extra}\n[plugins]\n{plugins}\n')
    return config


def plugin_copy(tmp_path: Path, name: str) -> Path:
    target = tmp_path / name
    shutil.copytree(plugin_dir(name), target)
    return target


def broken_manifest(tmp_path: Path, old: str, new: str) -> Path:
    plugin = plugin_copy(tmp_path, "tcp-blocker")
    manifest = plugin / "manifest.toml"
    manifest.write_text(manifest.read_text().replace(old, new))
    return plugin


def not_wasm(tmp_path: Path) -> Path:
    plugin = plugin_copy(tmp_path, "counter")
    (plugin / "counter.wasm").write_text("this is not webassembly")
    return plugin


def wrong_world(tmp_path: Path) -> Path:
    plugin = plugin_copy(tmp_path, "counter")
    only_memory = wasmtime.wat2wasm('(module (memory (export "memory") 1))')
    (plugin / "counter.wasm").write_bytes(only_memory)
    return plugin


CASES = {
    "missing plugin": (lambda t: t / "nowhere", "no manifest at"),
    "not wasm": (not_wasm, "counter.wasm is not WebAssembly"),
    "wrong world": (wrong_world, "does not export cabi_realloc"),
    "ungranted import": (lambda t: plugin_dir("ungranted"),
                         "imports hyperfilter:plugin/log@0.1.0 but its manifest does not grant"),
    "unknown grant": (lambda t: broken_manifest(t, "[grants.config]", "[grants.sockets]"),
                      "unknown grant 'sockets'"),
    "malformed field": (lambda t: broken_manifest(t, 'events = ["tcp.data"]', 'events = "tcp"'),
                        "events: expected list, found str"),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_plugins_are_refused_at_load(tmp_path: Path, case: str) -> None:
    make, message = CASES[case]
    config = write_config(tmp_path, f'p = "{make(tmp_path)}"')
    result = serve(config, "--listen", "127.0.0.1:0")
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "listening" not in result.stderr


def test_a_configuration_naming_an_unknown_plugin_is_refused(tmp_path: Path) -> None:
    config = write_config(tmp_path, f'counter = "{plugin_dir("counter")}"',
                          extra='default-chain = "nope"')
    result = serve(config)
    assert result.returncode == 2 and "default-chain: unknown chain or plugin 'nope'" in \
        result.stderr
    config.write_text(config.read_text().replace('default-chain = "nope"', "")
                      + '[chains]\nguard = ["counter", "blocker"]\n')
    result = serve(config)
    assert result.returncode == 2 and "chains.guard: unknown plugin 'blocker'" in result.stderr


def test_a_configuration_that_is_not_toml_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "sidecar.toml"
    config.write_text("[plugins\n")
    result = serve(config)
    assert result.returncode == 2 and "is not valid TOML" in result.stderr


def test_a_component_the_kvm_tier_cannot_run_is_refused_saying_why(tmp_path: Path) -> None:
    skip_unless_tier_runs("kvm")
    refused = kvm_refused_component(tmp_path)
    result = serve(write_config(tmp_path, f'b = {{ path = "{refused}", tier = "kvm" }}'))
    assert result.returncode == 2, result.stderr
    assert "is a component the kvm tier cannot run yet: its modules define 2 linear memories" \
        in result.stderr
    assert '(run it on the wasmtime tier: tier = "wasmtime")' in result.stderr


def test_serve_attaches_to_envoy_and_stops_cleanly(tmp_path: Path, tier: str) -> None:
    """The counter runs on each tier in turn, in the real `hyperfilter serve` process."""
    config = write_config(tmp_path, f'blocker = "{plugin_dir("tcp-blocker")}"\n'
                                    f'counter = {{ path = "{plugin_dir("counter")}", '
                                    f'tier = "{tier}" }}',
                          extra='metrics = "127.0.0.1:0"')
    process = subprocess.Popen([HYPERFILTER, "serve", "--config", str(config), "--listen",
                                "127.0.0.1:0"], stderr=subprocess.PIPE, text=True)
    log: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while not any("listening on" in line for line in log) and time.monotonic() < deadline:
            line = process.stderr.readline()  # type: ignore[union-attr]
            if not line:
                break
            log.append(line)
        text = "".join(log)
        listening = re.search(r"listening on 127\.0\.0\.1:(\d+): network ext_proc, HTTP ext_proc",
                              text)
        assert listening, text
        port = int(listening.group(1))
        metrics = re.search(r"metrics on (http://127\.0\.0\.1:\d+/metrics)", text)
        assert metrics, text
        default = "kvm" if kvm.unavailable() is None else "wasmtime"  # it names no tier
        assert f"plugin blocker 0.1.0: core module on {default}; events tcp.data; grants " \
               "config, log(rate=10), metrics(counters=blocked, gauges=); fail-closed" in text
        assert f"plugin counter 0.1.0: core module on {tier};" in text
        loop = LoopThread()
        echo = EchoServer()
        echo_port = loop.run(echo.start)
        listeners = [TcpListener(name, name, Upstream("127.0.0.1", echo_port))
                     for name in ("blocker", "counter")]
        with Envoy(render_bootstrap([("127.0.0.1", port)], listeners)) as envoy:
            ports = envoy.listener_ports
            assert tcp_exchange(ports["counter"], [b"a", b"b"]).replies == [b"1:a", b"2:b"]
            assert tcp_exchange(ports["blocker"], [b"DROP TABLE x"]).closed
        exported = urllib.request.urlopen(metrics.group(1), timeout=5).read().decode()
        assert 'hyperfilter_plugin_counter_total{name="blocked",plugin="blocker"} 1.0' in exported
        assert 'hyperfilter_streams_total{chain="counter",protocol="tcp"} 1.0' in exported
        loop.run(echo.stop)
        loop.close()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def wait_for(log_path: Path, pattern: str, timeout: float = 60) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(pattern, log_path.read_text())
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"no {pattern!r} in:\n{log_path.read_text()}")


def test_workers_share_the_streams_and_a_dead_one_comes_back(tmp_path: Path) -> None:
    config = write_config(tmp_path, f'counter = "{plugin_dir("counter")}"',
                          extra='workers = 2\nmetrics = "127.0.0.1:0"')
    log_path = tmp_path / "serve.log"
    with log_path.open("w") as log:
        process = subprocess.Popen([HYPERFILTER, "serve", "--config", str(config), "--listen",
                                    "127.0.0.1:0"], stderr=log)
    loop = LoopThread()
    echo = EchoServer()
    try:
        wait_for(log_path, r"give Envoy's cluster every one")
        workers = re.findall(r"worker (\d) \(pid (\d+)\) listening on 127\.0\.0\.1:(\d+)\n",
                             log_path.read_text())
        assert len(workers) == 2
        listener = TcpListener("counter", "counter", Upstream("127.0.0.1", loop.run(echo.start)))
        sidecars = [("127.0.0.1", int(port)) for _, _, port in workers]
        with Envoy(render_bootstrap(sidecars, [listener])) as envoy:
            port = envoy.listener_ports["counter"]
            for _ in range(10):
                assert tcp_exchange(port, [b"a", b"b"]).replies == [b"1:a", b"2:b"]
            # one endpoint, every worker's streams (tests/integration/test_metrics.py: more)
            metrics = wait_for(log_path, r"metrics on (http://\S+/metrics)").group(1)
            time.sleep(FLUSH_SECONDS + 0.5)  # the workers hand their counts in
            exported = urllib.request.urlopen(metrics, timeout=5).read().decode()
            assert 'hyperfilter_streams_total{chain="counter",protocol="tcp"} 10.0' in exported
            os.kill(int(workers[1][1]), signal.SIGKILL)
            wait_for(log_path, r"worker 1 exited with -9; starting it again")
            wait_for(log_path, rf"worker 1 \(pid \d+\) listening on [\d.]+:{workers[1][2]} again")
            replies = [tcp_exchange(port, [b"c"]).replies for _ in range(6)]
            assert replies == [[b"1:c"]] * 6
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        loop.run(echo.stop)
        loop.close()
        if process.poll() is None:
            process.kill()


def test_workers_end_when_their_supervisor_is_killed(tmp_path: Path) -> None:
    config = write_config(tmp_path, f'counter = "{plugin_dir("counter")}"', extra="workers = 2")
    log_path = tmp_path / "serve.log"
    with log_path.open("w") as log:
        process = subprocess.Popen([HYPERFILTER, "serve", "--config", str(config), "--listen",
                                    "127.0.0.1:0"], stderr=log)
    try:
        wait_for(log_path, r"give Envoy's cluster every one")
        pids = [int(pid) for pid in re.findall(r"worker \d \(pid (\d+)\) listening",
                                               log_path.read_text())]
        assert len(pids) == 2
        process.kill()  # SIGKILL: it passes nothing on
        process.wait(timeout=10)
        deadline = time.monotonic() + 30
        while any(_running(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in pids if _running(pid)], log_path.read_text()
    finally:
        if process.poll() is None:
            process.kill()


def _running(pid: int) -> bool:
    """Whether `pid` is a process that has not ended (a zombie has ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_the_demo_runs_end_to_end() -> None:
    result = subprocess.run([HYPERFILTER, "demo"], capture_output=True, text=True, timeout=300,
                            check=False, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "7 of 7 behaved as the plugins promise" in result.stdout
