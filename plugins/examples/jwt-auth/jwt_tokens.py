"""JSON Web Tokens (RFC 7519) in JWS compact form (RFC 7515), signed HS256 or RS256: parsed
strictly, the signature checked with the configured key of the token's own algorithm and no
other, then the time, issuer and audience claims.

Nothing here raises on what a client sends except `Rejected`: an exception would be a fault,
and under a fail-open policy a fault lets the request through.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from dataclasses import dataclass

from rsa_pkcs1 import RsaPublicKey, verify_sha256

MAX_TOKEN = 8 << 10  # characters: bounds the work a request can ask for
BASE64URL = re.compile(r"[A-Za-z0-9_-]*")
SHOWN_ALG = re.compile(r"[A-Za-z0-9+-]{1,16}")  # an alg is named back only when it is this tame

Claims = dict[str, object]


class Rejected(Exception):
    """The request is refused; the message is the reason the client is told."""


class NoToken(Rejected):
    """The request carries no bearer token at all (RFC 6750: no error code then)."""


@dataclass(frozen=True)
class Verifier:
    hs256_secret: bytes | None = None
    rs256_key: RsaPublicKey | None = None
    issuer: str | None = None
    audience: str | None = None
    leeway: float = 0.0  # seconds of clock skew allowed on exp and nbf
    require_exp: bool = True

    @property
    def algorithms(self) -> tuple[str, ...]:
        """The algorithms a key is configured for: only those are accepted."""
        keys = (("HS256", self.hs256_secret), ("RS256", self.rs256_key))
        return tuple(alg for alg, key in keys if key is not None)

    def claims(self, token: str, now: float) -> Claims:
        """The claims of `token` at `now` (seconds since the epoch); Rejected otherwise."""
        if len(token) > MAX_TOKEN:
            raise Rejected("token too long")
        parts = token.split(".")
        if len(parts) != 3:
            raise Rejected("malformed token: not three dot-separated parts")
        header = _json_object(_base64url(parts[0], "header"), "header")
        payload = _json_object(_base64url(parts[1], "payload"), "payload")
        signature = _base64url(parts[2], "signature")
        self._check_signature(header, f"{parts[0]}.{parts[1]}".encode("ascii"), signature)
        self._check_claims(payload, now)
        return payload

    def _check_signature(self, header: Claims, signed: bytes, signature: bytes) -> None:
        alg = header.get("alg")
        if not isinstance(alg, str):
            raise Rejected("malformed token: no alg in its header")
        if alg.lower() == "none":
            raise Rejected("unsigned token (alg none)")
        if alg not in self.algorithms:
            shown = alg if SHOWN_ALG.fullmatch(alg) else "its alg"
            raise Rejected(f"alg {shown} is not accepted (accepted: {', '.join(self.algorithms)})")
        if "crit" in header:  # RFC 7515 section 4.1.11: extensions we do not implement
            raise Rejected("token has critical header parameters")
        if alg == "HS256":
            assert self.hs256_secret is not None
            expected = hmac.new(self.hs256_secret, signed, hashlib.sha256).digest()
            valid = hmac.compare_digest(expected, signature)
        else:
            assert self.rs256_key is not None
            valid = verify_sha256(self.rs256_key, signed, signature)
        if not valid:
            raise Rejected("bad signature")

    def _check_claims(self, payload: Claims, now: float) -> None:
        expires, not_before = _time(payload, "exp"), _time(payload, "nbf")
        if expires is None and self.require_exp:
            raise Rejected("token has no expiry (exp)")
        if expires is not None and now >= expires + self.leeway:
            raise Rejected("token expired")
        if not_before is not None and now + self.leeway < not_before:
            raise Rejected("token not valid yet (nbf)")
        if self.issuer is not None and payload.get("iss") != self.issuer:
            raise Rejected("token from another issuer (iss)")
        if self.audience is not None:
            audience = payload.get("aud")
            audiences = [audience] if isinstance(audience, str) else audience
            if not isinstance(audiences, list) or self.audience not in audiences:
                raise Rejected("token for another audience (aud)")


def _base64url(text: str, part: str) -> bytes:
    """Unpadded base64url (RFC 7515 section 2), nothing else."""
    if not BASE64URL.fullmatch(text) or len(text) % 4 == 1:
        raise Rejected(f"malformed token: its {part} is not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _json_object(raw: bytes, part: str) -> Claims:
    try:
        value = json.loads(raw.decode("utf-8"), object_pairs_hook=_unique_members,
                           parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise Rejected(f"malformed token: its {part} is not JSON") from None
    if not isinstance(value, dict):
        raise Rejected(f"malformed token: its {part} is not a JSON object")
    return value


def _unique_members(pairs: list[tuple[str, object]]) -> Claims:
    """A member given twice is refused: parsers disagree on which one counts."""
    members = dict(pairs)
    if len(members) != len(pairs):
        raise Rejected("malformed token: a JSON member appears twice")
    return members


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _time(payload: Claims, claim: str) -> float | None:
    value = payload.get(claim)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Rejected(f"{claim} is not a number")
    try:
        return float(value)
    except OverflowError:
        raise Rejected(f"{claim} is out of range") from None
