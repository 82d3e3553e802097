"""Hostile verdicts and tables, on every tier: what the host does for a plugin stays within the
plugin's limits (sizes refused as declared, before anything is copied; tables bounded), and a
verdict Envoy would refuse or misread is a typed fault naming the rule, poisoning only its own
sandbox."""

from __future__ import annotations

import re
import shutil
import tracemalloc
from pathlib import Path

import pytest
import wasmtime

from tests.conftest import Loader, as_component, plugin_dir
from vmm.errors import (
    PluginLoadError,
    PluginTrap,
    SandboxFault,
    SandboxPoisoned,
    UnacceptableVerdict,
    UngrantedMutation,
    VerdictTooLarge,
)
from vmm.events import (
    Direction,
    Event,
    HttpForward,
    HttpHeaders,
    Mutation,
    Replace,
    Respond,
    TcpData,
    Verdict,
)
from vmm.sandbox import Sandbox
from vmm.wasmtime.linked import LinkedPlugin

IN, OUT = Direction.INBOUND, Direction.OUTBOUND
PLUGIN = "hostile-verdicts"
REQUEST = ((":authority", b"test"), (":path", b"/"), (":method", b"GET"), (":scheme", b"http"),
           ("user-agent", b"test"))
RESPONSE = ((":status", b"200"), ("content-length", b"237"))
FINE = HttpForward(Mutation((("x-hostile", b"ok"),)))


def asking(case: str) -> HttpHeaders:
    return HttpHeaders(IN, (*REQUEST, ("x-verdict", case.encode())), True)


Outcome = Verdict | SandboxFault | None


def delivered_with_peak(sandbox: Sandbox, event: Event) -> tuple[Outcome, int]:
    """The verdict (or fault) for `event`, and the most memory the host allocated meanwhile."""
    tracemalloc.start()
    try:
        try:
            outcome: Outcome = sandbox.deliver(event)
        except SandboxFault as fault:
            outcome = fault
        return outcome, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


REFUSED = [
    # sizes: refused on what the verdict declares
    ("alias-3000", VerdictTooLarge, "set-headers has 3000 entries; Envoy takes at most 100"),
    ("alias-100", VerdictTooLarge, "declares 100.0 MiB in 100 list entries, more than the "
                                   "16.0 MiB a verdict may hold"),
    ("alias-respond", VerdictTooLarge, "respond headers has 3000 entries"),
    ("many", VerdictTooLarge, "set-headers has 100000 entries"),
    ("removes", VerdictTooLarge, "remove-headers has 101 entries"),
    ("big", VerdictTooLarge, "the headers it sets come to 80.0 KiB; Envoy takes at most 60.0 KiB"),
    ("fill", VerdictTooLarge, "it leaves 105 headers; Envoy takes at most 100"),
    # what Envoy's header validation refuses
    ("ctrl", UnacceptableVerdict, "the value of 'x-ctrl' has byte 0x01"),
    ("del", UnacceptableVerdict, "has byte 0x7f"),
    ("escape", UnacceptableVerdict, "has byte 0x1b"),
    ("upper", UnacceptableVerdict, "'X-Upper' is not a lower-case header name"),
    # what Envoy ignores or misreads
    ("content-length", UnacceptableVerdict, "content-length frames the message"),
    ("transfer-encoding", UnacceptableVerdict, "transfer-encoding frames the message"),
    ("connection", UnacceptableVerdict, "connection is connection-specific"),
    ("envoy", UnacceptableVerdict, "Envoy ignores changes to x-envoy-* headers"),
    ("scheme", UnacceptableVerdict, ":scheme cannot be set here"),
    ("remove-host", UnacceptableVerdict, "Envoy never removes host"),
    ("remove-path", UnacceptableVerdict, "Envoy never removes :path"),
    ("204-body", UnacceptableVerdict, "a 204 response carries no body"),
    ("304-body", UnacceptableVerdict, "a 304 response carries no body"),
    ("respond-content-length", UnacceptableVerdict, "content-length frames the message"),
    # what only a grant allows
    ("path", UngrantedMutation, "setting :path needs the `route` grant"),
    ("authority", UngrantedMutation, "setting :authority needs the `route` grant"),
    ("host", UngrantedMutation, "setting host needs the `route` grant"),
    ("method", UngrantedMutation, "setting :method needs the `route` grant with `method = true`"),
]


@pytest.mark.parametrize(("case", "fault", "reason"), REFUSED)
def test_a_verdict_past_the_rules_is_a_typed_fault_and_nothing_of_it_is_copied(
        load: Loader, case: str, fault: type[SandboxFault], reason: str) -> None:
    plugin = load(PLUGIN)
    victim, neighbour = plugin.new_sandbox(), plugin.new_sandbox()
    outcome, peak = delivered_with_peak(victim, asking(case))
    assert type(outcome) is fault and re.search(re.escape(reason), str(outcome)), outcome
    # The largest of these declare 3,000 MiB and 100 MiB: lifted entry by entry, that much.
    assert peak < 1 << 20
    with pytest.raises(SandboxPoisoned):
        victim.deliver(asking("fine"))
    assert neighbour.deliver(asking("fine")) == FINE


def test_what_envoy_accepts_passes(load: Loader) -> None:
    sandbox = load(PLUGIN).new_sandbox()
    assert sandbox.deliver(asking("fine")) == FINE
    assert load(PLUGIN).new_sandbox().deliver(asking("204")) == Respond(204)


@pytest.mark.parametrize(("case", "reason"), [
    ("response-content-length", "content-length frames the message"),  # the keep-alive desync
    ("response-path", ":path cannot be set here"),
    ("response-status", ":status cannot be set here"),
])
def test_response_headers_are_held_to_the_same_rules(load: Loader, case: str,
                                                     reason: str) -> None:
    sandbox = load(PLUGIN).new_sandbox()
    assert sandbox.deliver(asking(case)) == HttpForward()
    with pytest.raises(UnacceptableVerdict, match=re.escape(reason)):
        sandbox.deliver(HttpHeaders(OUT, RESPONSE, False))


def granted(tmp_path: Path, grant: str) -> Path:
    """The hostile plugin with `grant` (a TOML table) added to its manifest."""
    copy = tmp_path / PLUGIN
    shutil.copytree(plugin_dir(PLUGIN), copy)
    manifest = copy / "manifest.toml"
    manifest.write_text(manifest.read_text() + grant)
    return copy


def test_the_route_grant_lets_a_plugin_choose_where_a_request_goes(tmp_path: Path,
                                                                   load: Loader) -> None:
    plugin = load(granted(tmp_path, "\n[grants.route]\n"))
    for case, header, value in [("path", ":path", b"/rewritten"),
                                ("authority", ":authority", b"elsewhere.example"),
                                ("host", "host", b"elsewhere.example")]:
        assert plugin.new_sandbox().deliver(asking(case)) == HttpForward(
            Mutation(((header, value),)))
    with pytest.raises(UngrantedMutation, match="with `method = true`"):
        plugin.new_sandbox().deliver(asking("method"))
    with pytest.raises(UnacceptableVerdict, match=":scheme cannot be set here"):
        plugin.new_sandbox().deliver(asking("scheme"))
    sandbox = plugin.new_sandbox()  # a grant for the request, not the response
    sandbox.deliver(asking("response-path"))
    with pytest.raises(UnacceptableVerdict, match=":path cannot be set here"):
        sandbox.deliver(HttpHeaders(OUT, RESPONSE, False))


def test_a_method_is_set_only_with_method_granted(tmp_path: Path, load: Loader) -> None:
    plugin = load(granted(tmp_path, "\n[grants.route]\nmethod = true\n"))
    assert plugin.new_sandbox().deliver(asking("method")) == HttpForward(
        Mutation(((":method", b"DELETE"),)))


def test_a_huge_replace_is_refused_on_its_declared_length(load: Loader) -> None:
    """900 MiB from a plugin with 16 MiB: the length alone refuses it, before the host looks
    for the bytes (which are not there)."""
    outcome, peak = delivered_with_peak(load(PLUGIN).new_sandbox(),
                                        TcpData(IN, b"huge-replace", False))
    assert isinstance(outcome, VerdictTooLarge) and "declares 900.0 MiB" in str(outcome)
    assert peak < 1 << 20


def test_the_manifest_can_bound_a_verdict_below_memory(tmp_path: Path, load: Loader) -> None:
    assert load(PLUGIN).new_sandbox().deliver(TcpData(IN, b"big-replace", False)) == Replace(
        b"b" * (2 << 20))
    limited = granted(tmp_path, "")
    manifest = limited / "manifest.toml"
    manifest.write_text(manifest.read_text().replace("[limits]\n", "[limits]\nverdict-kb = 1024\n"))
    outcome, peak = delivered_with_peak(load(limited).new_sandbox(),
                                        TcpData(IN, b"big-replace", False))
    assert isinstance(outcome, VerdictTooLarge)
    assert "declares 2.0 MiB, more than the 1.0 MiB a verdict may hold" in str(outcome)
    assert peak < 1 << 20


# --- components: the host links their modules and lifts their verdicts, on wasmtime too ----


@pytest.mark.parametrize(("case", "fault", "reason"), REFUSED)
def test_a_components_verdict_is_held_to_the_same_rules(
        tmp_path: Path, load_wasmtime: Loader, case: str, fault: type[SandboxFault],
        reason: str) -> None:
    """The same C module wrapped as a component, on wasmtime: its modules linked by the host,
    which lifts the verdict as it declares itself, so that entries aliasing one 1 MiB buffer
    are refused before anything is copied (wasmtime's component model copied each, up to
    128 MiB of its values)."""
    plugin = load_wasmtime(as_component(PLUGIN, tmp_path))
    assert isinstance(plugin, LinkedPlugin)
    victim, neighbour = plugin.new_sandbox(), plugin.new_sandbox()
    outcome, peak = delivered_with_peak(victim, asking(case))
    assert type(outcome) is fault and re.search(re.escape(reason), str(outcome)), outcome
    assert peak < 1 << 20
    with pytest.raises(SandboxPoisoned):
        victim.deliver(asking("fine"))
    assert neighbour.deliver(asking("fine")) == FINE


# --- tables, start functions -----------------------------------------------------------------

ON_DATA = "hyperfilter:plugin/tcp-filter@0.1.0#on-data"


def module(tmp_path: Path, body: str, memory_mb: int = 16) -> Path:
    """A core-module plugin from WAT: its on-data replaces the data with the one byte
    `body` leaves at address 64 (and `body` reads the data at `$data`)."""
    (tmp_path / "manifest.toml").write_text(
        f'name = "wat"\nversion = "0"\nevents = ["tcp.data"]\n'
        f'[limits]\nmemory-mb = {memory_mb}\ncpu-ms = 20\n')
    (tmp_path / "wat.wasm").write_bytes(wasmtime.wat2wasm(f"""(module
      (memory (export "memory") 1)
      (global $top (mut i32) (i32.const 1024))
      (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
        (global.get $top)
        (global.set $top (i32.add (global.get $top) (local.get 3))))
      {body}
      (func (export "{ON_DATA}") (param i32) (param $data i32) (param i32 i32) (result i32)
        (global.set $top (i32.const 1024))
        (call $act (local.get $data))
        (i32.store8 (i32.const 32) (i32.const 1))
        (i32.store (i32.const 36) (i32.const 64))
        (i32.store (i32.const 40) (i32.const 1))
        (i32.const 32)))"""))
    return tmp_path


# Grows its table by the u32 the data starts with, then fills all of it: 1 when it grew, 0
# when the grow was refused.
GROW_AND_FILL = """(table $t 0 externref)
      (func $act (param $data i32)
        (i32.store8 (i32.const 64)
          (i32.ne (table.grow $t (ref.null extern) (i32.load (local.get $data))) (i32.const -1)))
        (table.fill $t (i32.const 0) (ref.null extern) (table.size $t)))"""


def elements(count: int) -> TcpData:
    return TcpData(IN, count.to_bytes(4, "little"), False)


def test_a_table_grows_only_as_far_as_its_limits(tmp_path: Path, load: Loader) -> None:
    """100M elements, one table.grow and one table.fill: 763 MiB and 707 ms for a plugin with
    16 MiB and 20 ms, when tables were unbounded. Now the grow fails (the plugin is told), or
    on kvm the guest runtime's heap cannot hold it (a trap)."""
    plugin = load(module(tmp_path, GROW_AND_FILL))
    assert plugin.new_sandbox().deliver(elements(1000)) == Replace(b"\1")
    sandbox = plugin.new_sandbox()
    try:
        outcome = sandbox.deliver(elements(100_000_000))
    except PluginTrap as trap:
        assert plugin.tier == "kvm" and "tables too large" in str(trap)
    else:
        assert outcome == Replace(b"\0")
        assert sandbox.deliver(elements(1000)) == Replace(b"\1")  # still a working sandbox


def test_wasmtime_tables_count_against_memory_and_cpu(tmp_path: Path,
                                                      load_wasmtime: Loader) -> None:
    """16 MiB: a quarter of it in 8-byte elements is 512Ki, shared by up to four tables."""
    plugin = load_wasmtime(module(tmp_path, GROW_AND_FILL))
    assert plugin.manifest.limits.table_elements == 512 << 10
    assert plugin.new_sandbox().deliver(elements(128 << 10)) == Replace(b"\1")
    assert plugin.new_sandbox().deliver(elements((128 << 10) + 1)) == Replace(b"\0")


def test_a_module_declaring_too_large_a_table_is_refused_at_load(tmp_path: Path,
                                                                 load_wasmtime: Loader) -> None:
    body = "(table 100000000 externref) (func $act (param i32))"
    with pytest.raises(PluginLoadError, match="table minimum size of 100000000 elements"):
        load_wasmtime(module(tmp_path, body))


def test_a_looping_start_function_is_named_as_such(tmp_path: Path,
                                                   load_wasmtime: Loader) -> None:
    """wasmtime reports it as "error while executing at wasm backtrace:" (its first line)."""
    body = "(func $act (param i32)) (func $start (loop br 0)) (start $start)"
    with pytest.raises(PluginLoadError, match="its start function ran past its 20 ms of CPU"):
        load_wasmtime(module(tmp_path, body))
