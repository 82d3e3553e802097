"""Redacts a secret in both directions of a TCP connection (a componentize-py plugin)."""

from hyperfilter import HttpFilter, forward, replace
from hyperfilter import TcpFilter as Base
from wit_world.imports import config

__all__ = ["HttpFilter", "TcpFilter"]

_held: dict[int, bytes] = {}  # per direction: bytes that may be the start of the secret


def _secret() -> bytes:
    return (config.get("secret") or "").encode()


def redact(buffer: bytes, secret: bytes, end_of_stream: bool) -> tuple[bytes, bytes]:
    """(bytes to pass on, bytes to hold back) for `buffer`."""
    masked = buffer.replace(secret, b"*" * len(secret))
    if end_of_stream:
        return masked, b""
    for k in range(min(len(secret) - 1, len(masked)), 0, -1):
        if masked.endswith(secret[:k]):
            return masked[:-k], masked[-k:]
    return masked, b""


class TcpFilter(Base):
    def on_data(self, direction, data, end_of_stream):
        secret = _secret()
        if not secret:
            return forward()
        key = direction.value
        held = _held.pop(key, b"")
        out, _held[key] = redact(held + data, secret, end_of_stream)
        return forward() if out == data else replace(out)
