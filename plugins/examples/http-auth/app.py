"""API-key authentication for HTTP requests (a componentize-py plugin)."""

from hyperfilter import Direction, TcpFilter, forward_http, header, respond
from hyperfilter import HttpFilter as Base
from wit_world.imports import config, log

__all__ = ["HttpFilter", "TcpFilter"]


def _users() -> dict[bytes, str]:
    pairs = (entry.split(":", 1) for entry in (config.get("keys") or "").split(",") if entry)
    return {key.strip().encode(): user.strip() for key, user in pairs}


class HttpFilter(Base):
    def on_headers(self, direction, headers, end_of_stream):
        if direction != Direction.INBOUND:
            return forward_http()
        key = header(headers, "x-api-key")
        user = _users().get(key) if key is not None else None
        if user is None:
            log.log(log.Level.INFO, "rejected: missing key" if key is None else "rejected: bad key")
            return respond(401, b'{"error": "unauthorized"}\n',
                           [("content-type", b"application/json"),
                            ("www-authenticate", b'ApiKey realm="hyperfilter"')])
        return forward_http(set_headers=[("x-auth-user", user.encode())],
                            remove_headers=["x-api-key"])
