"""WASI preview 1 for core modules (vmm/wasi_preview1.py), on every tier: a Go plugin
(tests/plugins/go-probe) whose runtime imports it, asking for files, environment, arguments,
stdio, clocks, random bytes, and ending itself; a module importing all of it; and what is
refused at load: WASI functions that do not exist or have another type, and commands."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import wasmtime

from tests.conftest import Loader
from vmm.errors import MemoryLimitExceeded, PluginTrap, WorldMismatchError
from vmm.events import CLOSE, Direction, Replace, TcpData, Verdict
from vmm.sandbox import LoadedPlugin
from vmm.wasi_preview1 import FUNCTIONS

PROBE_LOG = "hyperfilter.plugin.go-probe"


@pytest.fixture
def probe(load: Loader) -> LoadedPlugin:
    return load("go-probe")


def ask(plugin: LoadedPlugin, command: str) -> Verdict | None:
    """One command in a fresh sandbox (as each connection gets one)."""
    sandbox = plugin.new_sandbox()
    try:
        return sandbox.deliver(TcpData(Direction.INBOUND, command.encode(), False))
    finally:
        sandbox.close()


def answer(plugin: LoadedPlugin, command: str) -> str:
    verdict = ask(plugin, command)
    assert isinstance(verdict, Replace), verdict
    return verdict.data.decode()


# ---- the deny answers, as Go's standard library sees them -----------------------------------


@pytest.mark.parametrize("command", ["open /etc/passwd", "open .", "create /tmp/hyperfilter-x",
                                     "open /proc/self/environ"])
def test_files_cannot_be_opened_or_created(probe: LoadedPlugin, command: str) -> None:
    assert answer(probe, command).endswith(": Bad file number")  # EBADF: nothing is open
    assert not Path("/tmp/hyperfilter-x").exists()


@pytest.mark.parametrize(("command", "expected"), [
    ("env", 'HOME="" environ=0'),
    ("args", "args=0"),
    ("stdin", "stdin=0 err=false"),  # empty: end of file at once
])
def test_environment_arguments_and_stdin_are_empty(probe: LoadedPlugin, command: str,
                                                   expected: str) -> None:
    assert answer(probe, command) == expected


def test_stdout_and_stderr_go_to_the_plugin_log_line_by_line(
        probe: LoadedPlugin, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger=PROBE_LOG):
        assert answer(probe, "stdout hello from stdout") == "ok"
        assert answer(probe, "stderr hello from stderr") == "ok"
    lines = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == PROBE_LOG]
    assert lines == [(logging.INFO, "hello from stdout"), (logging.WARNING, "hello from stderr")]


def test_clocks_and_random_bytes_are_the_hosts(probe: LoadedPlugin) -> None:
    assert answer(probe, "time") == "ok"
    first, second = answer(probe, "cryptorand"), answer(probe, "cryptorand")
    assert len(first) == 64 and first != second


def test_a_sleep_never_blocks_the_host(probe: LoadedPlugin) -> None:
    """poll_oneoff answers at once; Go's scheduler spins on the clock until the time is up
    (within the event's CPU time)."""
    assert answer(probe, "sleep 2").startswith("slept ")


# ---- how a Go plugin ends -----------------------------------------------------------------


def test_a_panic_is_a_trap_that_quotes_its_message(probe: LoadedPlugin,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger=PROBE_LOG), \
            pytest.raises(PluginTrap, match=r"it wrote to stderr: 'panic: boom'"):
        ask(probe, "panic boom")
    logged = [r.getMessage() for r in caplog.records if r.name == PROBE_LOG]
    assert "panic: boom" in logged
    assert any("go-probe/probe.go:" in line for line in logged)  # the traceback's file:line


def test_an_exit_ends_the_sandbox_not_the_sidecar(probe: LoadedPlugin) -> None:
    with pytest.raises(PluginTrap, match=r"proc_exit\(3\), which ends its sandbox"):
        ask(probe, "exit 3")
    assert answer(probe, "args") == "args=0"  # the plugin goes on serving


def test_the_memory_limit_holds_for_go(probe: LoadedPlugin) -> None:
    assert answer(probe, "hog 4") == "kept 4 MiB"
    with pytest.raises(MemoryLimitExceeded):
        ask(probe, "hog 32")


# ---- refused at load -----------------------------------------------------------------------


def write_module(directory: Path, body: str) -> Path:
    (directory / "manifest.toml").write_text(
        'name = "wasi-module"\nversion = "0.1.0"\nevents = ["tcp.close"]\n')
    (directory / "wasi-module.wasm").write_bytes(wasmtime.wat2wasm(f"""(module {body}
        (memory (export "memory") 1)
        (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) i32.const 8)
        (func (export "hyperfilter:plugin/tcp-filter@0.1.0#on-close")))"""))
    return directory


@pytest.mark.parametrize(("body", "refusal"), [
    ('(import "wasi_snapshot_preview1" "sock_open" (func (param i32 i32 i32) (result i32)))',
     r"imports wasi_snapshot_preview1#sock_open, which is no WASI preview 1 function"),
    ('(import "wasi_snapshot_preview1" "fd_write" (func (param i32) (result i32)))',
     r"imports wasi_snapshot_preview1#fd_write with the wrong type; WASI's is "
     r"\(\['i32', 'i32', 'i32', 'i32'\], \['i32'\]\)"),
    ('(import "wasi_unstable" "fd_write" (func (param i32 i32 i32 i32) (result i32)))',
     r"imports wasi_unstable#fd_write, which is not a hyperfilter capability"),
    ('(func (export "_start"))', r"exports _start: a WASI command.*-buildmode=c-shared"),
    ('(func (export "_initialize") (param i32))', r"exports _initialize with the wrong type"),
])
def test_what_a_module_may_not_import_or_be_is_refused_naming_it(
        load: Loader, tmp_path: Path, body: str, refusal: str) -> None:
    with pytest.raises(WorldMismatchError, match=refusal):
        load(write_module(tmp_path, body))


def test_a_reactor_is_initialised_before_its_first_event(load: Loader, tmp_path: Path) -> None:
    """`_initialize` runs once per instance, first (on kvm: at load, in the snapshot): here it
    sets the global that on-data answers with, the tcp-verdict's tag."""
    (tmp_path / "manifest.toml").write_text(
        'name = "reactor"\nversion = "0.1.0"\nevents = ["tcp.data"]\n')
    (tmp_path / "reactor.wasm").write_bytes(wasmtime.wat2wasm("""(module
        (memory (export "memory") 1)
        (global $tag (mut i32) (i32.const 0))
        (func (export "_initialize") (global.set $tag (i32.const 2)))
        (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) i32.const 64)
        (func (export "hyperfilter:plugin/tcp-filter@0.1.0#on-data")
              (param i32 i32 i32 i32) (result i32)
          (i32.store8 (i32.const 16) (global.get $tag)) (i32.const 16)))"""))
    assert ask(load(tmp_path), "anything") == CLOSE


# Calls into WASI and the errno each must answer: (function, WAT arguments, errno).
ANSWERS = [
    ("fd_prestat_get", "(i32.const 3) (i32.const 256)", 8),  # no preopened directory
    ("path_open", "(i32.const 3) (i32.const 0) (i32.const 300) (i32.const 4) (i32.const 0) "
                  "(i64.const -1) (i64.const -1) (i32.const 0) (i32.const 256)", 8),
    ("fd_close", "(i32.const 1)", 8),
    ("fd_write", "(i32.const 3) (i32.const 256) (i32.const 1) (i32.const 260)", 8),
    ("sock_accept", "(i32.const 0) (i32.const 0) (i32.const 256)", 8),
    ("proc_raise", "(i32.const 9)", 52),  # NOSYS
    ("clock_time_get", "(i32.const 2) (i64.const 0) (i32.const 256)", 28),  # no CPU clocks
    ("poll_oneoff", "(i32.const 256) (i32.const 512) (i32.const 0) (i32.const 260)", 28),
    ("sched_yield", "", 0),
    ("random_get", "(i32.const 0) (i32.const 65537)", 28),  # past MAX_RANDOM: nothing made
    ("environ_sizes_get", "(i32.const 256) (i32.const 260)", 0),
]


def test_every_wasi_function_links_on_every_tier_and_denies(load: Loader,
                                                            tmp_path: Path) -> None:
    """A module importing all of WASI preview 1 (46 functions) loads, and what it cannot be
    granted is denied with WASI's errno."""
    imports = "\n".join(
        f'(import "wasi_snapshot_preview1" "{f.name}" (func ${f.name}'
        f' (param {" ".join(f.params)}) (result {" ".join(f.results)})))'
        .replace(" (param )", "").replace(" (result )", "") for f in FUNCTIONS.values())
    stores = "\n".join(f"(i32.store8 (i32.const {64 + i}) (call ${name} {args}))"
                        for i, (name, args, _) in enumerate(ANSWERS))
    (tmp_path / "manifest.toml").write_text(
        'name = "all-of-wasi"\nversion = "0.1.0"\nevents = ["tcp.data"]\n')
    (tmp_path / "all-of-wasi.wasm").write_bytes(wasmtime.wat2wasm(f"""(module {imports}
        (memory (export "memory") 1)
        (data (i32.const 300) "/etc")
        (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) i32.const 1024)
        (func (export "hyperfilter:plugin/tcp-filter@0.1.0#on-data")
              (param i32 i32 i32 i32) (result i32)
          {stores}
          (i32.store8 (i32.const 16) (i32.const 1))  ;; replace(bytes at 64)
          (i32.store (i32.const 20) (i32.const 64))
          (i32.store (i32.const 24) (i32.const {len(ANSWERS)}))
          (i32.const 16)))"""))
    assert len(FUNCTIONS) == 46
    assert ask(load(tmp_path), "x") == Replace(bytes(errno for *_, errno in ANSWERS))
