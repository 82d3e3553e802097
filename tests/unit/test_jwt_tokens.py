"""The jwt-auth plugin's token checks (plugins/examples/jwt-auth), run by the host's Python: the
same modules the component runs, minus the filter glue (app.py, which needs the world). Keys
and signatures are made with the real openssl; behind Envoy: tests/integration/test_jwt_auth.py.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import sys
from collections.abc import Iterator
from types import ModuleType

import pytest

from tests.conftest import plugin_dir
from tests.jwt_signing import FUTURE, PAST, RsaSigner, b64url, hs256_token, openssl_signer

NOW = 1_700_000_000.0
SECRET = "a-secret-for-these-unit-tests-only-0123456789"


@pytest.fixture(scope="module")
def jwt() -> Iterator[ModuleType]:
    """The plugin's modules, imported from its directory (jwt_tokens imports rsa_pkcs1)."""
    directory = str(plugin_dir("jwt-auth"))
    sys.path.insert(0, directory)
    try:
        import jwt_settings
        yield jwt_settings
    finally:
        sys.path.remove(directory)
        for name in ("jwt_settings", "jwt_tokens", "rsa_pkcs1"):
            sys.modules.pop(name, None)


@pytest.fixture(scope="module")
def signer(tmp_path_factory: pytest.TempPathFactory) -> RsaSigner:
    return openssl_signer(tmp_path_factory.mktemp("jwt-key"))


def settings(jwt: ModuleType, **config: str) -> object:
    return jwt.load_settings(config.get)


def refusal(jwt: ModuleType, config: dict[str, str], token: str, now: float = NOW) -> str:
    verifier = jwt.load_settings(config.get).verifier
    with pytest.raises(sys.modules["jwt_tokens"].Rejected) as rejected:
        verifier.claims(token, now)
    return str(rejected.value)


def test_hs256_and_rs256_tokens_give_their_claims(jwt: ModuleType, signer: RsaSigner) -> None:
    config = {"hs256-secret": SECRET, "rs256-public-key": signer.pem}
    verifier = jwt.load_settings(config.get).verifier
    assert verifier.algorithms == ("HS256", "RS256")
    assert verifier.claims(hs256_token({"sub": "bob", "exp": FUTURE}, SECRET), NOW)["sub"] == "bob"
    assert verifier.claims(signer.token({"sub": "al", "exp": FUTURE}), NOW)["sub"] == "al"


def test_an_rsa_key_as_n_and_e_or_pkcs1_pem_verifies_the_same(jwt: ModuleType,
                                                             signer: RsaSigner) -> None:
    token = signer.token({"sub": "al", "exp": FUTURE})
    for config in ({"rs256-n": b64url(signer.n), "rs256-e": b64url(signer.e)},
                   {"rs256-public-key": signer.pkcs1_pem}):
        assert jwt.load_settings(config.get).verifier.claims(token, NOW)["sub"] == "al"


@pytest.mark.parametrize(("token", "reason"), [
    ("", "malformed token: not three dot-separated parts"),
    ("a.b", "malformed token: not three dot-separated parts"),
    ("a.b.c.d", "malformed token: not three dot-separated parts"),
    ("e30=.e30.", "malformed token: its header is not base64url"),  # padding is not JWS
    ("a.e30.", "malformed token: its header is not base64url"),  # one character: no byte
    (b64url(b"\xff\xfe") + ".e30.", "malformed token: its header is not JSON"),
    (b64url(b"[1]") + ".e30.", "malformed token: its header is not a JSON object"),
    (b64url(b"[" * 3000 + b"]" * 3000) + ".e30.", "malformed token: its header is not JSON"),
    (b64url(b'{"alg":NaN}') + ".e30.", "malformed token: its header is not JSON"),
    (b64url(b'{"alg":"HS256","alg":"none"}') + ".e30.",
     "malformed token: a JSON member appears twice"),
    ("e30.e30.", "malformed token: no alg in its header"),
    ("x" * 9000, "token too long"),
])
def test_malformed_tokens_are_rejected_never_raised(jwt: ModuleType, token: str,
                                                    reason: str) -> None:
    assert refusal(jwt, {"hs256-secret": SECRET}, token) == reason


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
def test_unsigned_tokens_are_refused_in_any_case(jwt: ModuleType, alg: str) -> None:
    header = b64url(json.dumps({"alg": alg}).encode())
    token = f"{header}.{b64url(json.dumps({'sub': 'x', 'exp': FUTURE}).encode())}."
    assert refusal(jwt, {"hs256-secret": SECRET}, token) == "unsigned token (alg none)"


def test_alg_confusion_with_the_rsa_public_key_as_hmac_secret_fails(
        jwt: ModuleType, signer: RsaSigner) -> None:
    forged = hs256_token({"sub": "mallory", "exp": FUTURE}, signer.pem)
    assert refusal(jwt, {"rs256-public-key": signer.pem}, forged) == (
        "alg HS256 is not accepted (accepted: RS256)")
    assert refusal(jwt, {"rs256-public-key": signer.pem, "hs256-secret": SECRET},
                   forged) == "bad signature"
    with pytest.raises(jwt.ConfigError, match="hs256-secret is a PEM key"):
        settings(jwt, **{"hs256-secret": signer.pem})


def test_an_rs256_token_is_not_checked_as_hs256(jwt: ModuleType, signer: RsaSigner) -> None:
    token = signer.token({"sub": "al", "exp": FUTURE})
    assert refusal(jwt, {"hs256-secret": SECRET}, token) == (
        "alg RS256 is not accepted (accepted: HS256)")


def test_an_untame_alg_is_not_echoed(jwt: ModuleType) -> None:
    token = f"{b64url(json.dumps({'alg': 'x<script>' * 3}).encode())}.e30."
    assert refusal(jwt, {"hs256-secret": SECRET}, token) == (
        "alg its alg is not accepted (accepted: HS256)")


def test_signatures_that_do_not_match_fail(jwt: ModuleType, signer: RsaSigner) -> None:
    config = {"rs256-public-key": signer.pem, "hs256-secret": SECRET}
    good = signer.token({"sub": "al", "exp": FUTURE})
    header, payload, signature = good.split(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=="))
    raw[len(raw) // 2] ^= 1
    other_payload = b64url(json.dumps({"sub": "admin", "exp": FUTURE}).encode())
    past_the_modulus = b64url(b"\xff" * 256)
    for token in (f"{header}.{payload}.{b64url(bytes(raw))}",  # one bit changed
                  f"{header}.{other_payload}.{signature}",  # another payload
                  f"{header}.{payload}.{signature[:-4]}",  # too short
                  f"{header}.{payload}.",  # none at all
                  f"{header}.{payload}.{past_the_modulus}",  # not below the modulus
                  hs256_token({"sub": "al", "exp": FUTURE}, SECRET + "x")):
        assert refusal(jwt, config, token) == "bad signature"


def test_time_claims(jwt: ModuleType) -> None:
    config = {"hs256-secret": SECRET, "leeway-seconds": "30"}

    def reason(claims: dict[str, object], now: float = NOW) -> str:
        return refusal(jwt, config, hs256_token(claims, SECRET), now)

    assert reason({"exp": PAST}) == "token expired"
    assert reason({"exp": NOW - 31}) == "token expired"
    assert jwt.load_settings(config.get).verifier.claims(
        hs256_token({"exp": NOW - 29}, SECRET), NOW)  # within the leeway
    assert reason({"exp": FUTURE, "nbf": NOW + 31}) == "token not valid yet (nbf)"
    assert reason({}) == "token has no expiry (exp)"
    assert reason({"exp": "tomorrow"}) == "exp is not a number"
    assert reason({"exp": True}) == "exp is not a number"
    assert reason({"exp": 10 ** 400}) == "exp is out of range"
    no_exp = {**config, "require-exp": "false"}
    assert jwt.load_settings(no_exp.get).verifier.claims(hs256_token({}, SECRET), NOW) == {}


def test_issuer_and_audience(jwt: ModuleType) -> None:
    config = {"hs256-secret": SECRET, "issuer": "https://id.example", "audience": "api"}
    good = {"exp": FUTURE, "iss": "https://id.example", "aud": ["web", "api"]}
    verifier = jwt.load_settings(config.get).verifier
    assert verifier.claims(hs256_token(good, SECRET), NOW)["aud"] == ["web", "api"]
    assert verifier.claims(hs256_token({**good, "aud": "api"}, SECRET), NOW)
    assert refusal(jwt, config, hs256_token({**good, "iss": "https://evil"}, SECRET)) == (
        "token from another issuer (iss)")
    for audience in ("web", ["web"], 7, None):
        assert refusal(jwt, config, hs256_token({**good, "aud": audience}, SECRET)) == (
            "token for another audience (aud)")


def test_crit_headers_are_refused(jwt: ModuleType) -> None:
    header = b64url(json.dumps({"alg": "HS256", "crit": ["exp"]}).encode())
    payload = b64url(json.dumps({"exp": FUTURE}).encode())
    signature = hmac.new(SECRET.encode(), f"{header}.{payload}".encode(), hashlib.sha256)
    token = f"{header}.{payload}.{b64url(signature.digest())}"
    assert refusal(jwt, {"hs256-secret": SECRET}, token) == "token has critical header parameters"


@pytest.mark.parametrize(("config", "problem"), [
    ({}, "no key configured"),
    ({"hs256-secret": "short"}, "hs256-secret is 5 bytes: at least 32"),
    ({"rs256-public-key": "not a key"}, "is not a PEM PUBLIC KEY or RSA PUBLIC KEY"),
    ({"rs256-n": "AQAB"}, "rs256-n and rs256-e go together"),
    ({"rs256-n": b64url((1 << 1023) | 1), "rs256-e": "AQAB"}, "has 1024 bits: at least 2048"),
    ({"rs256-n": b64url((1 << 2047) | 1), "rs256-e": "Ag"}, "exponent 2 is not an odd number"),
    ({"hs256-secret": SECRET, "leeway-seconds": "soon"}, "leeway-seconds 'soon' is not a number"),
    ({"hs256-secret": SECRET, "require-exp": "perhaps"}, "require-exp 'perhaps' is not true"),
    ({"hs256-secret": SECRET, "claim-headers": "sub=X-Sub"}, "claim-headers entry 'sub=X-Sub'"),
])
def test_a_configuration_it_cannot_use_is_an_error(jwt: ModuleType, config: dict[str, str],
                                                   problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        jwt.load_settings(config.get)


def test_a_truncated_der_key_is_an_error(jwt: ModuleType, signer: RsaSigner) -> None:
    body = "".join(signer.pem.strip().splitlines()[1:-1])
    der = base64.b64decode(body)[:100]
    pem = f"-----BEGIN PUBLIC KEY-----\n{base64.b64encode(der).decode()}\n-----END PUBLIC KEY-----"
    with pytest.raises(ValueError, match="rs256-public-key"):
        settings(jwt, **{"rs256-public-key": pem})
