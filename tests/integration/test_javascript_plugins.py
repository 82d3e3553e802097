"""JavaScript plugins (componentize-js) behind the real Envoy: the PII redactor of the library
with bodies streamed, and a fresh `plugin new --lang javascript` template built and served."""

from __future__ import annotations

import http.client
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sidecar.upstreams import CARD
from tests.conftest import TIERS
from tests.integration.harness import (
    HttpReply,
    Stack,
    StackSpec,
    chunked_request,
    http_request,
    stack_per_tier,
    tcp_exchange,
)
from tests.vmm.test_javascript_components import KVM_HEAVY

pytestmark = pytest.mark.integration

HYPERFILTER = Path(sys.executable).parent / "hyperfilter"
STREAMED = {"request_body_mode": "STREAMED", "response_body_mode": "STREAMED",
            "trailer_mode": "SEND"}  # as its manifest asks
# Long enough apart that Envoy reads, and streams to the sidecar, each chunk on its own.
CHUNK_PAUSE_SECONDS = 0.3
REDACTOR = "pii-redactor"


@pytest.fixture(scope="module", params=TIERS)
def redactor(request: pytest.FixtureRequest, compile_cache: Path) -> Iterator[Stack]:
    spec = StackSpec(plugins={REDACTOR: REDACTOR}, http={"pii": (REDACTOR, STREAMED)})
    yield from stack_per_tier(spec, request.param, compile_cache)


def body_events(stack: Stack, event: str) -> float:
    """How many `event`s (e.g. http.request-body) the redactor has decided so far."""
    total = 0.0
    for metric in stack.sidecar.metrics.registry.collect():
        for sample in metric.samples:
            if (sample.name == "hyperfilter_verdicts_total" and
                    sample.labels.get("plugin") == REDACTOR and
                    sample.labels.get("event") == event):
                total += sample.value
    return total


def paced_request(port: int, path: str, chunks: list[bytes]) -> HttpReply:
    """A POST whose chunked body is sent one chunk at a time, pausing between them."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(f"POST {path} HTTP/1.1\r\nhost: test\r\n"
                     "transfer-encoding: chunked\r\n\r\n".encode())
        for chunk in chunks:
            conn.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            time.sleep(CHUNK_PAUSE_SECONDS)
        conn.sendall(b"0\r\n\r\n")
        response = http.client.HTTPResponse(conn)
        response.begin()
        return HttpReply(response.status, {k.lower(): v for k, v in response.getheaders()},
                         response.read())


def test_a_card_number_in_a_response_keeps_its_last_four_digits(redactor: Stack) -> None:
    reply = http_request(redactor.ports["pii"], path="/account")
    assert reply.status == 200
    assert CARD not in reply.body.decode()
    assert b'"card": "**** **** **** 1111"' in reply.body


def test_a_request_body_reaches_the_upstream_redacted(redactor: Stack) -> None:
    body = b"name=Ann&email=ann.lee@example.org&card=5500-0000-0000-0004&note=thanks"
    reply = http_request(redactor.ports["pii"], "POST", "/echo", body=body)
    masked = b"name=Ann&email=*******@***********&card=****-****-****-0004&note=thanks"
    assert redactor.web.requests[-1]["body"] == masked
    assert reply.status == 200 and reply.body == masked  # the echo, redacted on its way in


def test_a_number_that_fails_the_luhn_check_passes_both_ways(redactor: Stack) -> None:
    body = b"order 4111 1111 1111 1112 shipped"
    reply = http_request(redactor.ports["pii"], "POST", "/echo", body=body)
    assert redactor.web.requests[-1]["body"] == body
    assert reply.body == body


def test_a_card_number_split_across_streamed_chunks_is_masked_whole(redactor: Stack) -> None:
    chunks = [b"card 4111 11", b"11 1111 1", b"111 and mail jo@exa", b"mple.com done"]
    before = body_events(redactor, "http.request-body")
    reply = paced_request(redactor.ports["pii"], "/echo", chunks)
    masked = b"card **** **** **** 1111 and mail **@*********** done"
    assert redactor.web.requests[-1]["body"] == masked
    assert reply.status == 200 and reply.body == masked
    # The sandbox saw the chunks one by one (and the end of the body), not joined by Envoy.
    assert body_events(redactor, "http.request-body") - before >= len(chunks)


def test_a_non_luhn_number_split_across_chunks_is_passed_on_whole(redactor: Stack) -> None:
    chunks = [b"ref 4111 1111 ", b"1111 1112 end"]
    reply = paced_request(redactor.ports["pii"], "/echo", chunks)
    assert redactor.web.requests[-1]["body"] == b"".join(chunks)
    assert reply.body == b"".join(chunks)


def test_a_large_body_is_redacted_in_the_chunks_envoy_streams(redactor: Stack) -> None:
    page = b"x" * 4000 + b" card 4111-1111-1111-1111 to ann@example.org\n"
    reply = http_request(redactor.ports["pii"], "POST", "/echo", body=page * 64)
    masked = b"x" * 4000 + b" card ****-****-****-1111 to ***@***********\n"
    assert reply.status == 200
    assert redactor.web.requests[-1]["body"] == masked * 64 and reply.body == masked * 64


def test_trailers_after_a_body_that_ended_cleanly_pass(redactor: Stack) -> None:
    reply = chunked_request(redactor.ports["pii"], "/echo", [b"card 4111 1111 1111 1111.\n"],
                            {"x-checksum": "abc"})
    assert reply.status == 200 and reply.body == b"card **** **** **** 1111.\n"
    assert redactor.web.requests[-1]["trailers"] == {"x-checksum": "abc"}


def test_trailers_while_bytes_are_held_back_refuse_the_request(redactor: Stack) -> None:
    """Envoy streams no last chunk before trailers, and their answer carries no body: the
    redactor refuses the request rather than pass it on without the held-back bytes."""
    reply = chunked_request(redactor.ports["pii"], "/echo", [b"card 4111 1111 1111 1111"],
                            {"x-checksum": "abc"})
    assert reply.status == 500
    assert reply.body == b"refused: the body ended in trailers before it could be redacted\n"


# --- a fresh template -------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["wasmtime", KVM_HEAVY])
def template(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
             compile_cache: Path) -> Iterator[Stack]:
    """`plugin new x --lang javascript`, `plugin build` and `plugin test` (its own tests), as
    an author runs them; then served."""
    parent = tmp_path_factory.mktemp("js-template")
    for command in (["new", "x", "--lang", "javascript", "--dir", str(parent)],
                    ["build", str(parent / "x")], ["test", str(parent / "x")]):
        done = subprocess.run([HYPERFILTER, "plugin", *command], capture_output=True,
                              text=True, check=False, timeout=600)
        if "is not installed" in done.stderr:
            pytest.skip(done.stderr.strip())
        assert done.returncode == 0, done.stderr
    spec = StackSpec(plugins={"x": str(parent / "x")}, tcp={"x-tcp": "x"},
                     http={"x-http": ("x", {})})
    yield from stack_per_tier(spec, request.param, compile_cache)


def test_the_template_greets_http_requests(template: Stack) -> None:
    reply = http_request(template.ports["x-http"], path="/hello")
    assert reply.status == 200
    assert template.headers_seen()["x-greeting"] == "hello"  # from its [config]


def test_the_template_blocks_a_request_with_x_block(template: Stack) -> None:
    before = len(template.web.requests)
    reply = http_request(template.ports["x-http"], headers={"x-block": "1"})
    assert reply.status == 403 and reply.body == b"blocked\n"
    assert len(template.web.requests) == before


def test_the_template_closes_a_connection_that_says_forbidden(template: Stack) -> None:
    assert tcp_exchange(template.ports["x-tcp"], [b"hello"]).replies == [b"hello"]
    exchange = tcp_exchange(template.ports["x-tcp"], [b"hello", b"a forbidden word"])
    assert exchange.replies == [b"hello"] and exchange.closed

