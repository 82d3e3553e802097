"""JWT authentication for HTTP requests (a componentize-py plugin): see README.md."""

import json

from hyperfilter import Direction, TcpFilter, forward_http, header_values, respond
from hyperfilter import HttpFilter as Base
from jwt_settings import load_settings
from jwt_tokens import Claims, NoToken, Rejected
from wit_world.imports import clock, config

__all__ = ["HttpFilter", "TcpFilter"]

NANOSECONDS = 1_000_000_000
CHALLENGE = 'Bearer realm="hyperfilter"'


def bearer_token(headers: list[tuple[str, bytes]]) -> str:
    values = header_values(headers, "authorization")
    if not values:
        raise NoToken("no bearer token")
    if len(values) > 1:
        raise Rejected("more than one authorization header")
    scheme, _, token = values[0].strip().partition(b" ")
    if scheme.lower() != b"bearer" or not token.strip():
        raise NoToken("no bearer token")
    try:
        return token.strip().decode("ascii")
    except UnicodeDecodeError:
        raise Rejected("malformed token: not ASCII") from None


def claim_value(claims: Claims, claim: str) -> bytes | None:
    """A claim as a header value: strings as they are, anything else as compact JSON."""
    value = claims.get(claim)
    if value is None:
        return None
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise Rejected(f"claim {claim} has control characters")
    return text.encode()


def unauthorized(refusal: Rejected) -> object:
    reason = str(refusal)
    challenge = CHALLENGE if isinstance(refusal, NoToken) else (
        f'{CHALLENGE}, error="invalid_token", error_description="{reason}"')
    body = json.dumps({"error": "unauthorized", "reason": reason}).encode() + b"\n"
    return respond(401, body, [("content-type", b"application/json"),
                               ("www-authenticate", challenge.encode())])


class HttpFilter(Base):
    def on_headers(self, direction, headers, end_of_stream):
        if direction != Direction.INBOUND:
            return forward_http()
        settings = load_settings(config.get)  # a ConfigError fails the request: see jwt_settings.py
        try:
            claims = settings.verifier.claims(bearer_token(headers), clock.now() / NANOSECONDS)
            values = [(header, claim_value(claims, claim))
                      for claim, header in settings.claim_headers]
        except Rejected as refusal:
            return unauthorized(refusal)
        # Claim headers the token does not fill are removed: a client cannot send its own.
        return forward_http(set_headers=[(h, v) for h, v in values if v is not None],
                            remove_headers=[h for h, v in values if v is None])
