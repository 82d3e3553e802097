"""The jwt-auth example (plugins/examples/jwt-auth) behind the real Envoy: good HS256 and RS256
tokens pass with their claims as request headers and a client's own claim headers gone; bad
signatures, expired or not yet valid tokens, alg none, alg confusion and malformed tokens are
answered 401 with the reason and never reach the upstream; a configuration the plugin cannot
use fails closed with the cause in the log. Keys are made by the real openssl."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from sidecar.http_session import FAILURE_RESPONSE
from tests.conftest import TIERS
from tests.integration.harness import HttpReply, Stack, StackSpec, http_request, stack_per_tier
from tests.jwt_signing import FUTURE, PAST, RsaSigner, b64url, hs256_token, openssl_signer

pytestmark = pytest.mark.integration

SECRET = "integration-tests-secret-of-jwt-auth-0123456789"
GOOD = {"sub": "alice", "email": "alice@example.com", "scope": ["read"], "exp": FUTURE}
CHALLENGE = 'Bearer realm="hyperfilter"'


@pytest.fixture(scope="module")
def signer(tmp_path_factory: pytest.TempPathFactory) -> RsaSigner:
    return openssl_signer(tmp_path_factory.mktemp("jwt-key"))


@pytest.fixture(scope="module", params=TIERS)
def stack(request: pytest.FixtureRequest, signer: RsaSigner,
          compile_cache: Path) -> Iterator[Stack]:
    spec = StackSpec(
        plugins={
            "jwt": {"path": "jwt-auth",
                    "config": {"hs256-secret": SECRET, "rs256-public-key": signer.pem}},
            "jwt-rs256": {"path": "jwt-auth",  # the same key as n and e, RS256 only
                          "config": {"rs256-public-key": "", "rs256-n": b64url(signer.n),
                                     "rs256-e": b64url(signer.e)}},
            "jwt-misconfigured": {"path": "jwt-auth", "config": {"hs256-secret": "short"}},
        },
        http={"jwt": ("jwt", {}), "rs256": ("jwt-rs256", {}),
              "misconfigured": ("jwt-misconfigured", {})})
    yield from stack_per_tier(spec, request.param, compile_cache)


def bearer(token: str, **headers: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}", **headers}


def refused(stack: Stack, listener: str, headers: dict[str, str]) -> HttpReply:
    """The reply to a request that must not reach the upstream."""
    before = len(stack.web.requests)
    reply = http_request(stack.ports[listener], path="/api", headers=headers)
    assert len(stack.web.requests) == before
    return reply


def test_a_good_hs256_token_passes_with_its_claims_as_headers(stack: Stack) -> None:
    token = hs256_token({"sub": "bob", "scope": ["read", "write"], "exp": FUTURE}, SECRET)
    reply = http_request(stack.ports["jwt"], path="/api",
                         headers=bearer(token, **{"x-jwt-email": "spoofed@evil"}))
    assert reply.status == 200
    seen = stack.headers_seen()
    assert (seen["x-jwt-sub"], seen["x-jwt-scope"]) == ("bob", '["read","write"]')
    assert "x-jwt-email" not in seen  # the token has no email: the client's own is removed


@pytest.mark.parametrize("listener", ["jwt", "rs256"])
def test_a_good_rs256_token_passes_with_a_pem_or_n_e_key(
        stack: Stack, signer: RsaSigner, listener: str) -> None:
    reply = http_request(stack.ports[listener], path="/api",
                         headers=bearer(signer.token(GOOD), **{"x-jwt-sub": "admin"}))
    assert reply.status == 200
    seen = stack.headers_seen()
    assert (seen["x-jwt-sub"], seen["x-jwt-email"]) == ("alice", "alice@example.com")


def bad_tokens(signer: RsaSigner) -> dict[str, tuple[str, str]]:
    """name: (token, the reason the client is told)."""
    good = signer.token(GOOD)
    header, payload, signature = good.split(".")
    flipped = signature[:100] + ("A" if signature[100] != "A" else "B") + signature[101:]
    unsigned = b64url(json.dumps({"alg": "none"}).encode())
    return {
        "bad signature": (f"{header}.{payload}.{flipped}", "bad signature"),
        "another payload": (f"{header}.{b64url(b'{}')}.{signature}", "bad signature"),
        "expired": (signer.token({**GOOD, "exp": PAST}), "token expired"),
        "not yet valid": (signer.token({**GOOD, "nbf": FUTURE - 60}),
                          "token not valid yet (nbf)"),
        "alg none": (f"{unsigned}.{payload}.", "unsigned token (alg none)"),
        "alg confusion": (hs256_token(GOOD, signer.pem), "bad signature"),
        "malformed": ("not-a-token", "malformed token: not three dot-separated parts"),
        "not base64url": (f"{header}.{payload}.@@@", "malformed token: its signature is not "
                                                      "base64url"),
        "not JSON": (f"{b64url(b'{alg')}.{payload}.{signature}",
                     "malformed token: its header is not JSON"),
    }


@pytest.mark.parametrize("case", ["bad signature", "another payload", "expired",
                                  "not yet valid", "alg none", "alg confusion", "malformed",
                                  "not base64url", "not JSON"])
def test_a_bad_token_is_answered_401_with_the_reason(stack: Stack, signer: RsaSigner,
                                                     case: str) -> None:
    token, reason = bad_tokens(signer)[case]
    reply = refused(stack, "jwt", bearer(token))
    assert reply.status == 401
    assert json.loads(reply.body) == {"error": "unauthorized", "reason": reason}
    assert reply.headers["www-authenticate"] == (
        f'{CHALLENGE}, error="invalid_token", error_description="{reason}"')


def test_alg_confusion_against_an_rs256_only_plugin_is_refused_by_name(
        stack: Stack, signer: RsaSigner) -> None:
    reply = refused(stack, "rs256", bearer(hs256_token(GOOD, signer.pem)))
    assert reply.status == 401
    assert json.loads(reply.body)["reason"] == "alg HS256 is not accepted (accepted: RS256)"


def test_no_token_is_answered_401_with_a_bare_challenge(stack: Stack) -> None:
    reply = refused(stack, "jwt", {"x-jwt-sub": "admin"})
    assert (reply.status, reply.headers["www-authenticate"]) == (401, CHALLENGE)
    assert json.loads(reply.body)["reason"] == "no bearer token"


def test_a_configuration_it_cannot_use_fails_closed_and_says_why(
        stack: Stack, signer: RsaSigner, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="sidecar.streams"):
        reply = refused(stack, "misconfigured", bearer(signer.token(GOOD)))
    assert (reply.status, reply.body) == (500, FAILURE_RESPONSE.body)
    faults = "\n".join(r.getMessage() for r in caplog.records if r.name == "sidecar.streams")
    assert ("plugin 'jwt-misconfigured' failed: on_headers raised ConfigError: hs256-secret "
            "is 5 bytes: at least 32 (jwt_settings.py, line") in faults
