"""Hostile verdicts through the real Envoy: ones Envoy would answer 500 to whatever the failure
policy says, or misread (a response's content-length), meet the plugin's failure policy
instead, with the cause in the log; the next request is served."""

from __future__ import annotations

import http.client
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from sidecar.http_session import FAILURE_RESPONSE
from tests.conftest import TIERS, plugin_dir
from tests.integration.harness import Stack, StackSpec, http_request, stack_per_tier

pytestmark = pytest.mark.integration

PLUGIN = "hostile-verdicts"
CASES = [
    ("ctrl", "has byte 0x01; Envoy takes no control characters"),
    ("many", "set-headers has 100000 entries; Envoy takes at most 100"),
    ("alias-3000", "set-headers has 3000 entries"),
    ("fill", "headers; Envoy takes at most 100 (max_headers_count)"),
    ("content-length", "content-length frames the message"),
    ("authority", "setting :authority needs the `route` grant"),
    ("204-body", "a 204 response carries no body"),
]


def spec(routed: Path) -> StackSpec:
    return StackSpec(
        plugins={"closed": {"path": PLUGIN, "failure-policy": "fail-closed"},
                 "open": {"path": PLUGIN, "failure-policy": "fail-open"},
                 "routed": {"path": str(routed), "failure-policy": "fail-closed"}},
        http={"closed": ("closed", {}), "open": ("open", {}), "routed": ("routed", {})})


@pytest.fixture(scope="module", params=TIERS)
def stack(request: pytest.FixtureRequest, compile_cache: Path,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    routed = tmp_path_factory.mktemp("routed") / PLUGIN
    shutil.copytree(plugin_dir(PLUGIN), routed)
    manifest = routed / "manifest.toml"
    manifest.write_text(manifest.read_text() + "\n[grants.route]\n")
    yield from stack_per_tier(spec(routed), request.param, compile_cache)


def faults_logged(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.name == "sidecar.streams")


@pytest.mark.parametrize(("case", "cause"), CASES)
def test_fail_closed_answers_500_says_why_and_serves_the_next(
        stack: Stack, caplog: pytest.LogCaptureFixture, case: str, cause: str) -> None:
    before = len(stack.web.requests)
    with caplog.at_level(logging.WARNING, logger="sidecar.streams"):
        reply = http_request(stack.ports["closed"], headers={"x-verdict": case})
    assert (reply.status, reply.body) == (500, FAILURE_RESPONSE.body)
    assert len(stack.web.requests) == before
    assert cause in faults_logged(caplog) and "fail-closed: stream stopped" in faults_logged(
        caplog)
    neighbour = http_request(stack.ports["closed"], headers={"x-verdict": "fine"})
    assert neighbour.status == 200 and stack.headers_seen()["x-hostile"] == "ok"


@pytest.mark.parametrize(("case", "cause"), CASES)
def test_fail_open_passes_the_request_unchanged_and_says_why(
        stack: Stack, caplog: pytest.LogCaptureFixture, case: str, cause: str) -> None:
    with caplog.at_level(logging.WARNING, logger="sidecar.streams"):
        reply = http_request(stack.ports["open"], headers={"x-verdict": case})
    assert reply.status == 200  # Envoy would have answered 500 to the verdict itself
    seen = stack.headers_seen()
    assert seen["x-verdict"] == case and "x-hostile" not in seen
    assert cause in faults_logged(caplog) and "fail-open: plugin skipped" in faults_logged(caplog)


def test_a_response_content_length_cannot_desync_a_keep_alive_connection(stack: Stack) -> None:
    """content-length: 1 on a 237-byte response: the client read one byte and took the rest
    as the start of the next response. Refused, the plugin fails open; both answers whole."""
    connection = http.client.HTTPConnection("127.0.0.1", stack.ports["open"], timeout=10)
    try:
        for case in ("response-content-length", "fine"):
            connection.request("GET", "/account", headers={"x-verdict": case})
            response = connection.getresponse()
            body = response.read()
            assert response.status == 200 and body.startswith(b'{"path": "/account"')
            assert int(response.headers["content-length"]) == len(body)
    finally:
        connection.close()


def test_the_route_grant_rewrites_the_path(stack: Stack) -> None:
    reply = http_request(stack.ports["routed"], path="/original", headers={"x-verdict": "path"})
    assert reply.status == 200 and stack.web.requests[-1]["path"] == "/rewritten"


def test_a_204_answer_goes_out_without_a_body(stack: Stack) -> None:
    reply = http_request(stack.ports["closed"], headers={"x-verdict": "204"})
    assert (reply.status, reply.body) == (204, b"")
    assert "content-length" not in reply.headers
