"""A Python plugin's errors behind the real Envoy, and at build time.

At run time (tests/plugins/py-faulty, without a `log` grant): the event fails under the
plugin's failure policy, the sidecar's log gives the one-line cause with the plugin's file and
line and the Python traceback, and the next stream, and the other plugins, are served. At build
time: a syntax error or an import-time exception is Python's own report, with the plugin's
real paths and none of componentize-py's Rust backtrace.
"""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from sidecar.http_session import FAILURE_RESPONSE
from sidecar.plugin.build import build_plugin
from sidecar.plugin.toolchain import BuildError
from tests.conftest import TIERS, plugin_dir
from tests.integration.harness import (
    Stack,
    StackSpec,
    http_request,
    stack_per_tier,
    tcp_exchange,
)
from tests.vmm.test_python_errors import HTTP_CAUSES, TCP_CAUSES, line_of

pytestmark = pytest.mark.integration

PLUGIN = "py-faulty"
SPEC = StackSpec(
    plugins={"closed": {"path": PLUGIN, "failure-policy": "fail-closed"},
             "open": {"path": PLUGIN, "failure-policy": "fail-open"},
             "traced": PLUGIN,  # a log of its own: its rate untouched by the other tests
             "counter": "counter"},
    http={"closed": ("closed", {}), "open": ("open", {}), "traced": ("traced", {}),
          "counter": ("counter", {})},
    tcp={"tcp-closed": "closed"},
)


@pytest.fixture(scope="module", params=TIERS)
def stack(request: pytest.FixtureRequest, compile_cache: Path) -> Iterator[Stack]:
    yield from stack_per_tier(SPEC, request.param, compile_cache)


def logged(caplog: pytest.LogCaptureFixture, logger: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger]


def bug(name: str) -> dict[str, str]:
    return {"x-bug": name}


@pytest.mark.parametrize(("case", "cause"), HTTP_CAUSES)
def test_fail_closed_answers_500_and_the_log_says_why(
        stack: Stack, caplog: pytest.LogCaptureFixture, case: str, cause: str) -> None:
    before = len(stack.web.requests)
    with caplog.at_level(logging.WARNING):
        reply = http_request(stack.ports["closed"], headers=bug(case))
    assert (reply.status, reply.body) == (500, FAILURE_RESPONSE.body)
    assert len(stack.web.requests) == before
    faults = "\n".join(logged(caplog, "sidecar.streams"))
    assert f"plugin 'closed' failed: {cause} on http.request-headers; fail-closed" in faults
    neighbour = http_request(stack.ports["closed"], headers=bug("no"))
    assert neighbour.status == 200 and stack.headers_seen()["x-python"] == "ok"
    assert http_request(stack.ports["counter"]).status == 200


@pytest.mark.parametrize(("case", "cause"), HTTP_CAUSES)
def test_fail_open_passes_the_request_unchanged(
        stack: Stack, caplog: pytest.LogCaptureFixture, case: str, cause: str) -> None:
    with caplog.at_level(logging.WARNING):
        reply = http_request(stack.ports["open"], headers=bug(case))
    assert reply.status == 200 and "x-python" not in stack.headers_seen()
    assert f"failed: {cause} on http.request-headers; fail-open" in "\n".join(
        logged(caplog, "sidecar.streams"))


def test_the_traceback_is_in_the_sidecars_log(stack: Stack,
                                              caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        http_request(stack.ports["traced"], headers=bug("raise"))
    (message,) = logged(caplog, "hyperfilter.plugin.traced")
    lines = message.split("\n")
    assert lines[0] == HTTP_CAUSES[0][1] and lines[1] == "    Traceback (most recent call last):"
    assert f'      File "app.py", line {line_of("raises: ValueError")}, in port_of' in lines
    assert lines[-1] == "    ValueError: invalid literal for int() with base 10: 'eighty'"
    assert not any("panicked" in line or "/0/" in line for line in lines)


@pytest.mark.parametrize(("data", "cause"), TCP_CAUSES)
def test_a_tcp_hook_error_closes_its_connection_only(
        stack: Stack, caplog: pytest.LogCaptureFixture, data: bytes, cause: str) -> None:
    with caplog.at_level(logging.WARNING):
        exchange = tcp_exchange(stack.ports["tcp-closed"], [b"hello ", data])
    assert exchange.replies == [b"hello "] and exchange.closed
    assert f"plugin 'closed' failed: {cause} on tcp.data" in "\n".join(
        logged(caplog, "sidecar.streams"))
    assert tcp_exchange(stack.ports["tcp-closed"], [b"next"]).replies == [b"next"]


# --- build time ---------------------------------------------------------------------------


@pytest.fixture
def broken(tmp_path: Path) -> Path:
    """A copy of the plugin to break."""
    copy = tmp_path / PLUGIN
    shutil.copytree(plugin_dir(PLUGIN), copy, ignore=shutil.ignore_patterns("*.wasm"))
    return copy


def build_error(directory: Path) -> str:
    with pytest.raises(BuildError) as failure:
        build_plugin(directory, force=True)
    message = str(failure.value)
    assert "/0/" not in message and "Stack backtrace" not in message
    assert "tokio" not in message and "Caused by" not in message
    return message


def test_a_syntax_error_shows_the_file_the_line_and_its_text(broken: Path) -> None:
    app = broken / "app.py"
    marked = line_of("raises: ValueError")
    lines = app.read_text().splitlines()
    lines[marked - 1] = "    return int(text"
    app.write_text("\n".join(lines) + "\n")
    message = build_error(broken)
    assert re.search(rf'File "{re.escape(str(app.resolve()))}", line {marked}\n'
                     r"    return int\(text\n", message)
    assert "SyntaxError: '(' was never closed" in message
    assert len(message.splitlines()) < 10


def test_an_import_time_exception_shows_pythons_traceback(broken: Path) -> None:
    app = broken / "app.py"
    app.write_text(app.read_text() + "\nLIMIT = port_of('many')\n")
    message = build_error(broken)
    assert f'File "{app.resolve()}", line {len(app.read_text().splitlines())}, in <module>' in (
        message)
    assert message.rstrip().endswith("ValueError: invalid literal for int() with base 10: 'many'")


def test_importing_an_ungranted_capability_names_the_grant(broken: Path) -> None:
    app = broken / "app.py"
    app.write_text("from wit_world.imports import shared_state\n" + app.read_text())
    message = build_error(broken)
    assert "cannot import name 'shared_state' from 'wit_world.imports'" in message
    assert message.endswith(
        "`shared-state` is a capability: grant it in manifest.toml ([grants.shared-state])")
