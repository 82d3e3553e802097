"""The plugin's configuration (the manifest's [config], or the operator's overrides), read
through the `config` capability. A configuration it cannot use raises ConfigError: every
request then fails under the plugin's failure policy, with the reason in the sidecar's log.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from jwt_tokens import Verifier
from rsa_pkcs1 import RsaPublicKey, key_from_n_e, key_from_pem

MIN_HMAC_SECRET = 32  # bytes: RFC 7518 section 3.2, a key at least as long as the hash
DEFAULT_CLAIM_HEADERS = "sub=x-jwt-sub"
DEFAULT_LEEWAY = 30.0
TRUE, FALSE = ("true", "yes", "1"), ("false", "no", "0")

Get = Callable[[str], "str | None"]


class ConfigError(ValueError):
    """The plugin's configuration cannot be used; the message names the entry."""


@dataclass(frozen=True)
class Settings:
    verifier: Verifier
    claim_headers: tuple[tuple[str, str], ...]  # (claim, header) pairs


def load_settings(get: Get) -> Settings:
    verifier = Verifier(_hs256_secret(get), _rs256_key(get), get("issuer") or None,
                        get("audience") or None, _leeway(get), _flag(get, "require-exp", True))
    if not verifier.algorithms:
        raise ConfigError("no key configured: set hs256-secret, rs256-public-key, or rs256-n "
                          "and rs256-e")
    return Settings(verifier, _claim_headers(get("claim-headers") or DEFAULT_CLAIM_HEADERS))


def _hs256_secret(get: Get) -> bytes | None:
    secret = (get("hs256-secret") or "").encode()
    if not secret:
        return None
    if len(secret) < MIN_HMAC_SECRET:
        raise ConfigError(f"hs256-secret is {len(secret)} bytes: at least {MIN_HMAC_SECRET}")
    if b"-----BEGIN" in secret:  # a public key as the HMAC secret: what alg confusion abuses
        raise ConfigError("hs256-secret is a PEM key: give a secret of its own")
    return secret


def _rs256_key(get: Get) -> RsaPublicKey | None:
    pem, n, e = get("rs256-public-key") or "", get("rs256-n") or "", get("rs256-e") or ""
    if pem and (n or e):
        raise ConfigError("set rs256-public-key or rs256-n and rs256-e, not both")
    if pem:
        return key_from_pem(pem)
    if n or e:
        if not (n and e):
            raise ConfigError("rs256-n and rs256-e go together")
        return key_from_n_e(n, e)
    return None


def _leeway(get: Get) -> float:
    text = get("leeway-seconds")
    try:
        leeway = DEFAULT_LEEWAY if text is None else float(text)
    except ValueError:
        raise ConfigError(f"leeway-seconds {text!r} is not a number") from None
    if not 0 <= leeway <= 3600:
        raise ConfigError(f"leeway-seconds {text} is not between 0 and 3600")
    return leeway


def _flag(get: Get, key: str, default: bool) -> bool:
    text = (get(key) or "").lower()
    if not text:
        return default
    if text not in TRUE + FALSE:
        raise ConfigError(f"{key} {text!r} is not true or false")
    return text in TRUE


def _claim_headers(text: str) -> tuple[tuple[str, str], ...]:
    """"claim=header, ..." pairs."""
    pairs = []
    for entry in filter(None, (part.strip() for part in text.split(","))):
        claim, _, header = (side.strip() for side in entry.partition("="))
        if not claim or not header or header != header.lower() or not header.isascii():
            raise ConfigError(f"claim-headers entry {entry!r}: give claim=header, the header "
                              f"lower-case")
        pairs.append((claim, header))
    return tuple(pairs)
