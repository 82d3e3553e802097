"""HTTP through the real Envoy (ext_proc + router) and the sidecar's sandboxes."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from sidecar.upstreams import CARD
from tests.conftest import TIERS, as_component
from tests.integration.harness import (
    Stack,
    StackSpec,
    chunked_request,
    http_request,
    stack_per_tier,
)

pytestmark = pytest.mark.integration

BODY_MODES = ("STREAMED", "BUFFERED", "BUFFERED_PARTIAL", "FULL_DUPLEX_STREAMED")


def body_mode(mode: str) -> dict[str, str]:
    # Envoy asks for trailers to be sent in full-duplex mode.
    trailers = "SEND" if mode == "FULL_DUPLEX_STREAMED" else "SKIP"
    return {"request_body_mode": mode, "response_body_mode": mode, "trailer_mode": trailers}


SPEC = StackSpec(
    plugins={
        "http-auth": "http-auth",  # a Python component
        "body-redactor": "body-redactor",
        "counter": "counter",
        "rewrite": "rewrite",
        "faulty-open": {"path": "faulty", "failure-policy": "fail-open"},
        "faulty-closed": {"path": "faulty", "failure-policy": "fail-closed"},
        "abi-probe": "abi-probe",  # its on-open sets x-info
    },
    chains={"api": ["http-auth", "body-redactor"]},
    http={
        "auth": ("http-auth", {}),
        "api": ("api", {"response_body_mode": "BUFFERED"}),
        "counter": ("counter", {}),
        "faulty-open": ("faulty-open", {}),
        "faulty-closed": ("faulty-closed", {}),
        "trailers": ("rewrite", {"trailer_mode": "SEND"}),
        "unknown": ("no-such-chain", {}),
        "open": ("abi-probe", {}),
        "open-skip-headers": ("abi-probe", {"request_header_mode": "SKIP"}),
        "open-skip-headers-body": ("abi-probe", {"request_header_mode": "SKIP",
                                                 "request_body_mode": "BUFFERED"}),
    } | {f"rewrite-{mode}": ("rewrite", body_mode(mode)) for mode in BODY_MODES},
)


@pytest.fixture(scope="module", params=TIERS)
def stack(request: pytest.FixtureRequest, compile_cache: Path,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # Two C plugins also as components (on kvm: their core modules instantiated by the
    # guest as their shells say).
    components = tmp_path_factory.mktemp("components")
    spec = replace(
        SPEC, plugins={**SPEC.plugins, **{f"{name}-component": str(as_component(name, components))
                                          for name in ("counter", "rewrite")}},
        http={**SPEC.http, "counter-component": ("counter-component", {}),
              "rewrite-component": ("rewrite-component", body_mode("STREAMED"))})
    yield from stack_per_tier(spec, request.param, compile_cache)


def test_a_request_without_a_key_is_answered_401(stack: Stack) -> None:
    before = len(stack.web.requests)
    reply = http_request(stack.ports["auth"], path="/account")
    assert reply.status == 401
    assert json.loads(reply.body) == {"error": "unauthorized"}
    assert reply.headers["www-authenticate"] == 'ApiKey realm="hyperfilter"'
    assert len(stack.web.requests) == before  # the upstream never saw it


def test_a_wrong_key_is_answered_401(stack: Stack) -> None:
    assert http_request(stack.ports["auth"], headers={"x-api-key": "guess"}).status == 401


def test_the_right_key_passes_with_the_user_added_and_the_key_removed(stack: Stack) -> None:
    reply = http_request(stack.ports["auth"], path="/account", headers={"x-api-key": "k-bob-456"})
    assert reply.status == 200
    seen = stack.headers_seen()
    assert seen["x-auth-user"] == "bob" and "x-api-key" not in seen


def test_card_numbers_are_masked_in_response_bodies(stack: Stack) -> None:
    reply = http_request(stack.ports["api"], path="/account", headers={"x-api-key": "k-alice-123"})
    answer = json.loads(reply.body)
    assert answer["card"] == "**** **** **** 1111" and answer["user"] == "alice"
    assert int(reply.headers["content-length"]) == len(reply.body)
    assert CARD not in reply.body.decode()


def test_every_request_gets_a_fresh_sandbox(stack: Stack) -> None:
    for _ in range(3):
        assert http_request(stack.ports["counter"]).status == 200
        assert stack.headers_seen()["x-count"] == "1"


def test_a_component_filters_requests_as_its_module_does(stack: Stack) -> None:
    for _ in range(3):  # a fresh sandbox per request
        assert http_request(stack.ports["counter-component"]).status == 200
        assert stack.headers_seen()["x-count"] == "1"
    body = b"hello envoy, " * 500
    reply = http_request(stack.ports["rewrite-component"], "POST", "/echo", body=body)
    assert stack.web.requests[-1]["body"] == body.upper()
    assert reply.body == body.upper().replace(b"E", b"3")


@pytest.mark.parametrize("fault", ["trap", "loop", "hog", "oob"])
def test_fail_open_passes_the_request(stack: Stack, fault: str) -> None:
    reply = http_request(stack.ports["faulty-open"], headers={"x-fault": fault})
    assert reply.status == 200
    assert stack.headers_seen()["x-fault"] == fault


@pytest.mark.parametrize("fault", ["trap", "loop", "hog", "oob"])
def test_fail_closed_answers_500(stack: Stack, fault: str) -> None:
    before = len(stack.web.requests)
    reply = http_request(stack.ports["faulty-closed"], headers={"x-fault": fault})
    assert reply.status == 500 and reply.body == b"request refused: a filter failed\n"
    assert len(stack.web.requests) == before


@pytest.mark.parametrize("mode", BODY_MODES)
def test_bodies_are_rewritten_in_every_body_mode(stack: Stack, mode: str) -> None:
    body = b"hello envoy, " * 500  # several chunks on the way
    reply = http_request(stack.ports[f"rewrite-{mode}"], "POST", "/echo", body=body)
    assert reply.status == 200
    assert stack.web.requests[-1]["body"] == body.upper()
    assert reply.body == body.upper().replace(b"E", b"3")


def test_request_trailers_reach_the_plugin(stack: Stack) -> None:
    denied = chunked_request(stack.ports["trailers"], "/echo", [b"abc"], {"x-verdict": "deny"})
    assert denied.status == 403 and denied.body == b"denied by trailer\n"
    allowed = chunked_request(stack.ports["trailers"], "/echo", [b"abc"], {"x-verdict": "ok"})
    assert allowed.status == 200
    assert stack.web.requests[-1]["trailers"] == {"x-verdict": "ok", "x-checked": "yes"}


def test_an_unknown_chain_fails_under_the_default_policy(stack: Stack) -> None:
    assert http_request(stack.ports["unknown"]).status == 500


def test_an_open_mutation_reaches_the_request_headers(stack: Stack) -> None:
    assert http_request(stack.ports["open"]).status == 200
    assert stack.headers_seen()["x-info"].startswith("127.0.0.1:")


@pytest.mark.parametrize("listener", ["open-skip-headers", "open-skip-headers-body"])
def test_an_open_mutation_with_request_headers_skipped_is_dropped_with_one_warning(
        stack: Stack, caplog: pytest.LogCaptureFixture, listener: str) -> None:
    # Envoy's first message is then the response headers, or the request body: neither
    # response can change the request headers.
    with caplog.at_level(logging.WARNING, logger="sidecar.http_session"):
        reply = http_request(stack.ports[listener], "POST", "/echo", body=b"abc")
    assert reply.status == 200
    seen, seen_body = stack.headers_seen(), stack.web.requests[-1]["body"]
    assert "x-info" not in seen and "x-info" not in reply.headers
    assert seen_body == (b"ABC" if listener.endswith("body") else b"abc")
    assert reply.headers["x-seen-content-type"] == "application/json"  # the plugin still ran
    warnings = [r.getMessage() for r in caplog.records if r.name == "sidecar.http_session"]
    assert len(warnings) == 1 and "on-open mutation of abi-probe not applied" in warnings[0]
