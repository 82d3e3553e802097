"""A Python plugin's errors (tests/plugins/py-faulty) in its real sandbox: the fault says why in
one line, with the plugin's file and line; the Python traceback reaches the plugin's log with
the plugin's paths and lines, and no Rust panic; the plugin has no `log` grant; the next
sandbox is unaffected."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from tests.conftest import Loader, plugin_dir
from vmm.capabilities import PluginLog
from vmm.errors import CpuLimitExceeded, PluginError
from vmm.events import Direction, HttpForward, HttpHeaders, Mutation, TcpData
from vmm.fault_notes import FAULT_NOTE, PluginStderr

PLUGIN = "py-faulty"
IN = Direction.INBOUND
SOURCE = (plugin_dir(PLUGIN) / "app.py").read_text().splitlines()


def line_of(marker: str) -> int:
    """The line of app.py that carries `marker` (a comment there), so edits keep the tests."""
    return next(n for n, line in enumerate(SOURCE, 1) if line.endswith(f"# {marker}"))


def request(bug: str) -> HttpHeaders:
    return HttpHeaders(IN, ((":path", b"/"), ("x-bug", bug.encode())), True)


HTTP_CAUSES = [
    ("raise", "on_headers raised ValueError: invalid literal for int() with base 10: 'eighty' "
              f"(app.py, line {line_of('raises: ValueError')})"),
    ("none", "on_headers returned None: return a verdict such as forward_http() "
             f"(app.py, line {line_of('returns: None')})"),
    ("str", "on_headers: set_headers value of 'x-bug' is str: give bytes (str.encode() makes "
            f"them) (app.py, line {line_of('helper: str')})"),
    ("raw-str", "on_headers returned a verdict whose body is str: give bytes (str.encode() "
                f"makes them) (app.py, line {line_of('returns: None')})"),
    ("exit", f"on_headers raised SystemExit: 2 (app.py, line {line_of('raises: SystemExit')})"),
]
TCP_CAUSES = [
    (b"raise now", "on_data raised LookupError: no rule for raise "
                   f"(app.py, line {line_of('raises: LookupError')})"),
    (b"none", "on_data returned None: return a verdict such as forward() "
              f"(app.py, line {line_of('returns: TCP None')})"),
    (b"str", "on_data: replace data is str: give bytes (str.encode() makes them) "
             f"(app.py, line {line_of('helper: TCP str')})"),
]


def plugin_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == f"hyperfilter.plugin.{PLUGIN}"]


@pytest.mark.parametrize(("bug", "cause"), HTTP_CAUSES)
def test_an_http_hook_error_is_a_fault_that_says_why_and_where(
        load_wasmtime: Loader, bug: str, cause: str) -> None:
    plugin = load_wasmtime(PLUGIN)
    sandbox = plugin.new_sandbox()
    with pytest.raises(PluginError) as fault:
        sandbox.deliver(request(bug))
    assert str(fault.value) == f"plugin '{PLUGIN}' failed: {cause}"
    neighbour = plugin.new_sandbox()
    assert neighbour.deliver(request("no")) == HttpForward(Mutation((("x-python", b"ok"),)))


@pytest.mark.parametrize(("data", "cause"), TCP_CAUSES)
def test_a_tcp_hook_error_is_a_fault_that_says_why_and_where(
        load_wasmtime: Loader, data: bytes, cause: str) -> None:
    with pytest.raises(PluginError) as fault:
        load_wasmtime(PLUGIN).new_sandbox().deliver(TcpData(IN, data, False))
    assert fault.value.detail == cause


def report(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The one message the plugin's error made in its log: the cause, then the traceback
    (indented, so no line passes for one of the log's own)."""
    (message,) = plugin_lines(caplog)
    cause, *trace = message.split("\n")
    assert all(line.startswith("    ") for line in trace)
    return [cause, *(line[4:] for line in trace)]


def test_the_traceback_reaches_the_log_with_the_plugins_own_lines(
        load_wasmtime: Loader, caplog: pytest.LogCaptureFixture) -> None:
    sandbox = load_wasmtime(PLUGIN).new_sandbox()
    with caplog.at_level(logging.WARNING), pytest.raises(PluginError) as fault:
        sandbox.deliver(request("raise"))
    cause, *lines = report(caplog)
    assert cause == fault.value.detail
    assert lines[:3] == [
        "Traceback (most recent call last):",
        f'  File "app.py", line {line_of("calls: port_of")}, in on_headers',
        '    port = port_of("eighty")  # calls: port_of',  # source lines, kept from the build
    ]
    assert f'  File "app.py", line {line_of("raises: ValueError")}, in port_of' in lines
    assert lines[-1] == "ValueError: invalid literal for int() with base 10: 'eighty'"
    text = "\n".join(lines)
    assert "hyperfilter_errors.py" not in text  # the SDK's own frames are left out
    assert "/0/" not in text and "panicked" not in text and FAULT_NOTE.decode() not in text


def test_a_report_costs_one_message_of_the_log_rate(
        tmp_path: Path, load_wasmtime: Loader, caplog: pytest.LogCaptureFixture) -> None:
    """At one message a second, the first error's report is whole and the next one's is
    dropped whole: never a traceback cut short."""
    copy = tmp_path / PLUGIN
    shutil.copytree(plugin_dir(PLUGIN), copy)
    (copy / "manifest.toml").write_text((copy / "manifest.toml").read_text() +
                                        "\n[grants.log]\nrate = 1\n")
    plugin = load_wasmtime(copy)
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            with pytest.raises(PluginError):
                plugin.new_sandbox().deliver(request("raise"))
    assert report(caplog)[-1] == "ValueError: invalid literal for int() with base 10: 'eighty'"


def test_a_verdict_of_the_wrong_type_logs_its_cause_and_no_panic(
        load_wasmtime: Loader, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING), pytest.raises(PluginError) as fault:
        load_wasmtime(PLUGIN).new_sandbox().deliver(request("none"))
    assert report(caplog) == [fault.value.detail]  # no traceback: the verdict is the problem


def test_a_fault_note_and_what_follows_are_kept_out_of_the_log(
        caplog: pytest.LogCaptureFixture) -> None:
    stderr = PluginStderr(PluginLog("noted"))
    with caplog.at_level(logging.INFO, logger="hyperfilter.plugin.noted"):
        stderr.write(b"before\n")
        stderr.write(FAULT_NOTE + b"on_data raised\x1b[2J it\nTraceback\n  File")
        stderr.write(b' "app.py"\n')
    assert [r.getMessage() for r in caplog.records] == ["before"]
    assert stderr.note == "on_data raised\\x1b[2J it"  # one printable line
    assert stderr.report == ["Traceback", '  File "app.py"']
    stderr.begin_event()
    assert (stderr.note, stderr.report) == (None, [])


def test_a_report_the_cpu_bound_cuts_short_still_names_its_cause(
        caplog: pytest.LogCaptureFixture) -> None:
    """The note comes first: the CPU bound stopping the traceback after it leaves the cause,
    and the log says the report was cut short; with no note, running out of time is that."""
    stderr = PluginStderr(PluginLog("noted"))
    out_of_time = CpuLimitExceeded("noted", "more than 50 ms of CPU time for one event")
    assert stderr.explained("noted", out_of_time) is out_of_time
    stderr.write(FAULT_NOTE + b"on_data raised KeyError\nTraceback (most")
    with caplog.at_level(logging.ERROR, logger="hyperfilter.plugin.noted"):
        fault = stderr.explained("noted", out_of_time)
    assert isinstance(fault, PluginError) and fault.detail == "on_data raised KeyError"
    assert "(the report was cut short: more than 50 ms of CPU time" in caplog.text
