"""Every isolation tier with real plugins: verdicts, one fresh memory per sandbox, typed faults,
capabilities, plugins refused at load with a clear reason, and the host's canonical ABI
agreeing with wasmtime's component model. Each test runs on each tier this machine can run."""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Protocol, runtime_checkable

import pytest
import wasmtime

from sidecar.registry import Chain, ChainLink
from sidecar.streams import StreamPlugins
from sidecar.tiers import BACKENDS
from tests.conftest import (
    TEST_PLUGINS,
    Loader,
    RecordingMetrics,
    as_component,
    plugin_dir,
    unlinkable_component,
)
from tests.vmm.component_model import component_model_verdicts
from vmm.cache import CompileCache
from vmm.errors import (
    CpuLimitExceeded,
    InvalidVerdict,
    MemoryLimitExceeded,
    NotWasmError,
    PluginLoadError,
    PluginTrap,
    SandboxPoisoned,
    UngrantedImportError,
    UnlinkableComponentError,
    WorldMismatchError,
)
from vmm.events import (
    FORWARD,
    Answer,
    AnswerAndClose,
    Close,
    Direction,
    Event,
    Forward,
    HttpBody,
    HttpForward,
    HttpHeaders,
    HttpOpen,
    HttpTrailers,
    Replace,
    Reset,
    Respond,
    StreamInfo,
    TcpClose,
    TcpData,
    TcpOpen,
)
from vmm.loader import load_plugin
from vmm.manifest import FailurePolicy
from vmm.pool import SandboxPool
from vmm.sandbox import LoadedPlugin

IN, OUT = Direction.INBOUND, Direction.OUTBOUND


def data(text: bytes, direction: Direction = IN) -> TcpData:
    return TcpData(direction, text, False)


@pytest.fixture(params=["core module", "component"])
def form(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def load_either(form: str, load: Loader, tmp_path: Path) -> Loader:
    """Load a C plugin on each tier as it is built, a core module, and wrapped by wasm-tools
    as a component (on kvm: its core modules instantiated by the guest, as its shell says)."""
    def loader(name: str, **overrides: object) -> LoadedPlugin:
        if form == "core module":
            return load(name, **overrides)
        plugin = load(as_component(name, tmp_path), **overrides)
        assert plugin.kind == "component"
        return plugin

    return loader


def test_blocker_sees_a_pattern_split_across_segments(load_either: Loader) -> None:
    sandbox = load_either("tcp-blocker").new_sandbox()
    assert sandbox.deliver(data(b"SELECT 1; DROP")) == FORWARD
    assert sandbox.deliver(data(b"hello", OUT)) == FORWARD  # the other direction's own tail
    assert sandbox.deliver(data(b" TABLE users")) == Close()


def test_every_sandbox_starts_with_fresh_memory(load_either: Loader) -> None:
    plugin = load_either("counter")
    first, second = plugin.new_sandbox(), plugin.new_sandbox()
    assert [first.deliver(data(b"x")) for _ in range(3)] == [
        Replace(b"1:x"), Replace(b"2:x"), Replace(b"3:x")]
    assert second.deliver(data(b"y")) == Replace(b"1:y")
    first.close()
    assert plugin.new_sandbox().deliver(data(b"z")) == Replace(b"1:z")


def test_a_python_interpreters_memory_is_its_sandboxes_own(load: Loader) -> None:
    """What one stream leaves in a Python component's memory (a module global), no other
    stream's sandbox sees, on either tier (on kvm: the VM reset to the snapshot taken after
    the interpreter was instantiated)."""
    plugin = load("py-faulty")
    first, second = plugin.new_sandbox(), plugin.new_sandbox()
    assert first.deliver(data(b"mark secret")) == FORWARD
    assert first.deliver(data(b"marks")) == Replace(b"secret")
    assert second.deliver(data(b"marks")) == Replace(b"none")
    first.close()
    assert plugin.new_sandbox().deliver(data(b"marks")) == Replace(b"none")


@pytest.mark.parametrize(("trigger", "fault", "detail"), [
    (b"trap", PluginTrap, "unreachable"),
    (b"loop", CpuLimitExceeded, "more than 20 ms"),
    (b"hog", MemoryLimitExceeded, "of its 4 MiB"),
    (b"oob", PluginTrap, "out of bounds memory access"),
    (b"badptr", InvalidVerdict, "outside linear memory"),
])
def test_faults_are_typed_and_poison_only_their_sandbox(
        load_either: Loader, trigger: bytes, fault: type,
        detail: str) -> None:
    plugin = load_either("faulty")
    victim, neighbour = plugin.new_sandbox(), plugin.new_sandbox()
    with pytest.raises(fault, match=detail):
        victim.deliver(data(trigger))
    with pytest.raises(SandboxPoisoned):
        victim.deliver(data(b"fine"))
    assert neighbour.deliver(data(b"fine")) == FORWARD


def test_each_event_gets_its_own_cpu_time(load: Loader) -> None:
    """A sandbox idle for longer than its CPU limit still runs its next event, and a loop
    after that is still stopped: the deadline is renewed for each event."""
    sandbox = load("faulty").new_sandbox()
    assert sandbox.deliver(data(b"fine")) == FORWARD
    time.sleep(0.1)  # five times the plugin's 20 ms
    assert sandbox.deliver(data(b"fine")) == FORWARD
    with pytest.raises(CpuLimitExceeded):
        sandbox.deliver(data(b"loop"))


def post_return_counter(directory: Path) -> Path:
    """A module whose on-data verdict replaces the data with one byte: how many times its
    post-return has run so far. (The C SDK needs no post-return, so it exports none.)"""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "manifest.toml").write_text(
        'name = "post"\nversion = "0"\nevents = ["tcp.data"]\n')
    on_data = "hyperfilter:plugin/tcp-filter@0.1.0#on-data"
    (directory / "post.wasm").write_bytes(wasmtime.wat2wasm(f"""(module
      (memory (export "memory") 1)
      (global $post_returns (mut i32) (i32.const 0))
      (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) i32.const 1024)
      (func (export "{on_data}") (param i32 i32 i32 i32) (result i32)
        (i32.store8 (i32.const 64) (global.get $post_returns))
        (i32.store8 (i32.const 32) (i32.const 1))
        (i32.store (i32.const 36) (i32.const 64))
        (i32.store (i32.const 40) (i32.const 1))
        (i32.const 32))
      (func (export "cabi_post_{on_data}") (param i32)
        (global.set $post_returns (i32.add (global.get $post_returns) (i32.const 1)))))"""))
    return directory


def test_a_post_return_runs_once_after_each_verdict_before_the_next_event(
        tmp_path: Path, load: Loader) -> None:
    sandbox = load(post_return_counter(tmp_path)).new_sandbox()
    assert sandbox.deliver(data(b"a")) == Replace(b"\0")
    sandbox.settle()
    assert not sandbox.unsettled
    sandbox.settle()
    assert sandbox.deliver(data(b"b")) == Replace(b"\1")
    assert sandbox.deliver(data(b"c")) == Replace(b"\2")  # not settled: delivering does it


def test_what_an_event_allocates_is_released_by_the_next(load: Loader) -> None:
    """The C SDK frees a verdict's memory when the next event begins: 64 MiB of rewritten
    bodies pass through one sandbox whose memory limit is 16 MiB."""
    sandbox = load("rewrite").new_sandbox()
    body = b"e" * (64 << 10)
    for _ in range(1024):
        verdict = sandbox.deliver(HttpBody(IN, body, False))
        sandbox.settle()
    assert isinstance(verdict, HttpForward) and verdict.mutation.body == b"E" * (64 << 10)


def test_settling_after_close_is_harmless(tmp_path: Path, load: Loader) -> None:
    """The post-return a verdict defers (Sandbox.settle) may be scheduled for after the stream
    has closed its sandbox; it must then do nothing, not touch freed memory."""
    sandbox = load(post_return_counter(tmp_path)).new_sandbox()
    assert sandbox.deliver(data(b"a")) == Replace(b"\0")
    sandbox.close()
    sandbox.settle()
    assert sandbox.fault is None


def test_capabilities_reach_the_host(load_either: Loader, metrics: RecordingMetrics,
                                     caplog: pytest.LogCaptureFixture) -> None:
    plugin = load_either("caps", config={"colour": "green"})
    one, two = plugin.new_sandbox(), plugin.new_sandbox()
    assert one.deliver(data(b"config colour")) == Replace(b"green")
    assert one.deliver(data(b"config missing")) == Replace(b"none")
    assert one.deliver(data(b"clock")) == Replace(b"ok")
    random = one.deliver(data(b"random 16"))
    assert isinstance(random, Replace) and len(random.data) == 32
    assert random != one.deliver(data(b"random 16"))
    # shared state is one store per plugin, across its sandboxes
    assert one.deliver(data(b"count visits")) == Replace(b"1")
    assert two.deliver(data(b"count visits")) == Replace(b"2")
    assert two.deliver(data(b"set colour red")) == Replace(b"ok")
    assert one.deliver(data(b"get colour")) == Replace(b"red")
    assert one.deliver(data(b"set a " + b"x" * 60)) == Replace(b"quota")  # 64-byte quota
    assert one.deliver(data(b"del colour")) == Replace(b"ok")
    assert one.deliver(data(b"get colour")) == Replace(b"none")
    assert one.deliver(data(b"metric")) == Replace(b"ok")
    assert metrics.counters == {("caps", "hits"): 1} and metrics.gauges == {("caps", "level"): -7}
    with caplog.at_level(logging.INFO, logger="hyperfilter.plugin.caps"):
        assert one.deliver(data(b"log")) == Replace(b"ok")
    assert caplog.records[-1].getMessage() == "caps plugin says hello\\nforged line"
    with pytest.raises(PluginTrap, match="counter 'undeclared' is not declared"):
        two.deliver(data(b"badmetric"))


@runtime_checkable
class CachingBackend(Protocol):
    """A backend keeping what it compiles in a CompileCache, as every tier's does."""

    cache: CompileCache


def test_compiled_plugins_come_from_the_cache_after_a_restart(
        tier: str, compile_cache: Path, metrics: RecordingMetrics) -> None:
    """Compiled code (wasmtime) and guest images (kvm) are cached on disk by content."""
    for expected_misses in (None, 0):
        backend = BACKENDS[tier](compile_cache)
        try:
            assert isinstance(backend, CachingBackend)
            load_plugin(plugin_dir("pass-through"), backend, metrics)
            if expected_misses is not None:
                assert (backend.cache.hits, backend.cache.misses) == (1, expected_misses)
        finally:
            backend.close()


def copy_plugin(name: str, tmp_path: Path) -> Path:
    target = tmp_path / name
    shutil.copytree(plugin_dir(name), target)
    return target


def test_refused_at_load(tmp_path: Path, load: Loader) -> None:
    missing = copy_plugin("pass-through", tmp_path)
    (missing / "pass-through.wasm").unlink()
    with pytest.raises(PluginLoadError, match=r"no wasm file at .*pass-through\.wasm"):
        load(missing)

    garbage = copy_plugin("counter", tmp_path)
    (garbage / "counter.wasm").write_bytes(b"#!/bin/sh\necho not wasm\n")
    with pytest.raises(NotWasmError, match="is not WebAssembly"):
        load(garbage)

    broken = copy_plugin("tcp-blocker", tmp_path)
    (broken / "tcp-blocker.wasm").write_bytes(b"\0asm\x01\0\0\0\x99garbage")
    with pytest.raises(NotWasmError, match="cannot be read: unexpected end"):
        load(broken)

    ungranted = re.escape("imports hyperfilter:plugin/log@0.1.0 but")
    with pytest.raises(UngrantedImportError, match=ungranted):
        load(TEST_PLUGINS / "ungranted")


@pytest.mark.parametrize(("wat", "message"), [
    ('(module (memory (export "memory") 1))', "does not export cabi_realloc"),
    ('(module (memory (export "memory") 1) (func (export "cabi_realloc") (param i32 i32 i32 i32)'
     ' (result i32) i32.const 0))', "does not export hyperfilter:plugin/tcp-filter@0.1.0#on-data"),
    ('(module (memory (export "memory") 1) (func (export "cabi_realloc") (param i32 i32 i32 i32)'
     ' (result i32) i32.const 0) (func (export "hyperfilter:plugin/tcp-filter@0.1.0#on-data")'
     ' (param i32) (result i32) i32.const 0))', "exports hyperfilter.*on-data with the wrong type"),
    ('(module (import "env" "system" (func)) (memory (export "memory") 1))',
     "imports env#system, which is not a hyperfilter capability"),
    ('(module (import "hyperfilter:plugin/log@0.1.0" "log" (func (param i32)))'
     ' (memory (export "memory") 1))', "imports hyperfilter:plugin/log@0.1.0#log with the wrong"),
    ('(module (memory (export "memory") 1) (func (export "cabi_realloc") (param i32 i32 i32 i32)'
     ' (result i32) i32.const 0) (func (export "hyperfilter_input")))',
     "exports hyperfilter_input, but not as an i32 global"),
])
def test_modules_not_implementing_the_world(tmp_path: Path, load: Loader, wat: str,
                                            message: str) -> None:
    (tmp_path / "manifest.toml").write_text(
        'name = "odd"\nversion = "0"\nevents = ["tcp.data"]\n[grants.log]\n')
    (tmp_path / "odd.wasm").write_bytes(wasmtime.wat2wasm(wat))
    with pytest.raises(WorldMismatchError, match=message):
        load(tmp_path)


@pytest.mark.parametrize(("wat", "fault"), [
    ('(global (export "hyperfilter_input") i32 (i32.const 16))'
     ' (data (i32.const 16) "\\00\\00\\10\\00\\00\\00\\ff\\ff")',  # 1 MiB area at 0xffff0000
     "its input area is unusable"),
    ('(global (export "hyperfilter_input") i32 (i32.const 70000))', "its input area is unusable"),
])
def test_an_input_area_outside_memory_is_refused(tmp_path: Path, load: Loader, wat: str,
                                                 fault: str) -> None:
    (tmp_path / "manifest.toml").write_text('name = "odd"\nversion = "0"\nevents = ["tcp.data"]\n')
    module = ('(module (memory (export "memory") 1) (func (export "cabi_realloc")'
              ' (param i32 i32 i32 i32) (result i32) i32.const 0) (func (export'
              ' "hyperfilter:plugin/tcp-filter@0.1.0#on-data") (param i32 i32 i32 i32)'
              f' (result i32) i32.const 0) {wat})')
    (tmp_path / "odd.wasm").write_bytes(wasmtime.wat2wasm(module))
    with pytest.raises(PluginLoadError, match=fault):
        load(tmp_path)


PROBE_EVENTS: list[Event] = [
    TcpOpen(StreamInfo("10.0.0.1:5000", "10.0.0.2:80", "db.example", (("x-hyperfilter-chain", "c"),
                                                                     ("x-tenant", "ünïcode")))),
    TcpOpen(StreamInfo()),
    TcpData(IN, b"pass", False), TcpData(IN, b"close", False), TcpData(OUT, b"reset", True),
    TcpData(IN, b"answer", False), TcpData(OUT, b"bye", True),
    TcpData(IN, b"", True), TcpData(OUT, bytes(range(256)), False),
    TcpClose(),
    HttpOpen(StreamInfo("[::1]:1", "[::1]:2")),
    HttpHeaders(IN, ((":path", b"/a"), ("x-drop-me", b"1"), ("accept", b"*/*"),
                     ("x-bin", b"\tvalue \x80\xff")), True),
    HttpHeaders(OUT, (), False),
    HttpBody(IN, b"make me loud", False), HttpBody(OUT, b"", True),
    HttpBody(OUT, b"respond I am a teapot", True),
    HttpTrailers(IN, (("grpc-status", b"0"), ("x-sum", b"1"))), HttpTrailers(OUT, ()),
]


def without_input_area(tmp_path: Path) -> Path:
    """The probe built again without exporting its input area: the strict canonical ABI,
    every argument through cabi_realloc."""
    plain = copy_plugin("abi-probe", tmp_path / "plain")
    sdk = Path(__file__).resolve().parents[2] / "plugins" / "sdk" / "c"
    subprocess.run([sys.executable, "-m", "ziglang", "cc", "--target=wasm32-freestanding", "-O2",
                    "-nostdlib", "-ffreestanding", "-mbulk-memory", "-Wl,--no-entry", f"-I{sdk}",
                    plain / "probe.c", sdk / "hyperfilter.c", "-o", plain / "abi-probe.wasm"],
                   check=True)
    return plain


def test_a_component_the_host_cannot_link_is_refused_on_every_tier(
        load: Loader, tmp_path: Path) -> None:
    with pytest.raises(UnlinkableComponentError,
                       match="the host cannot link: it uses string encoding utf16"):
        load(unlinkable_component(tmp_path))


def test_core_abi_agrees_with_the_component_model(tmp_path: Path, load: Loader) -> None:
    """The same C module run four ways on each tier: as a core module through the host's
    canonical ABI, with its input area and without, and wrapped as a component by wasm-tools
    (several core modules, linked by the host: on kvm instantiated by the guest as its shell
    says); and that component on wasmtime's own component model, which lifts and lowers
    everything itself: the oracle."""
    core = load("abi-probe")
    plain = load(without_input_area(tmp_path))
    wrapped = as_component("abi-probe", tmp_path)
    component = load(wrapped)
    assert (core.kind, component.kind) == ("core module", "component")
    sandboxes = [core.new_sandbox(), plain.new_sandbox(), component.new_sandbox()]
    verdicts = [[sandbox.deliver(e) for sandbox in sandboxes] for e in PROBE_EVENTS]
    oracle = component_model_verdicts((wrapped / "abi-probe.wasm").read_bytes(), PROBE_EVENTS)
    for event, (from_core, from_plain, from_component), expected in zip(
            PROBE_EVENTS, verdicts, oracle, strict=True):
        assert from_core == from_plain == from_component == expected, event
    assert {type(v) for v, *_ in verdicts} == {Forward, Replace, Close, Reset, Answer,
                                              AnswerAndClose, HttpForward, Respond,
                                              type(None)}  # every case was exercised
    assert verdicts[0][0] == Replace("10.0.0.1:5000|10.0.0.2:80|db.example|"
                                     "x-hyperfilter-chain=c;x-tenant=ünïcode;".encode())


def test_a_plugin_fast_per_byte_stays_on_the_loop_on_the_largest_messages(load: Loader) -> None:
    """xor-rewrite on the largest messages Envoy sends (its per-connection buffer limit, 1 MiB,
    which its reads fill under load): milliseconds an event, yet it works through the bytes
    faster than the sidecar carries them, so its streams are not sent to the slow lanes
    (where, under 500 connections, events waited past Envoy's message timeout)."""
    plugin = load("xor-rewrite")
    chain = Chain("c", (ChainLink(plugin, plugin.manifest.failure_policy or
                                  FailurePolicy.FAIL_CLOSED, SandboxPool(plugin, 0)),))
    stream = StreamPlugins(chain, "tcp")
    data = bytes(1 << 20)
    try:
        for _ in range(20):
            stream.deliver(stream.links[0], TcpData(Direction.INBOUND, data, False))
        assert not stream.slow, f"average {stream.links[0].pace.average * 1000:.2f} ms"
    finally:
        stream.close()
