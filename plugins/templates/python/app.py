"""${name}: a hyperfilter plugin (built with componentize-py).

Hooks not defined here forward everything. A hook that raises, or returns what is not a
verdict, fails its event under the manifest's failure policy: the sidecar's log shows why,
with this file's line numbers and the Python traceback."""

from hyperfilter import Direction, close, forward, forward_http, header, respond
from hyperfilter import HttpFilter as HttpBase
from hyperfilter import TcpFilter as TcpBase
from wit_world.imports import config, log


class TcpFilter(TcpBase):
    def on_data(self, direction, data, end_of_stream):
        if direction == Direction.INBOUND and b"forbidden" in data:
            log.log(log.Level.WARN, "closing a connection")
            return close()
        return forward()


class HttpFilter(HttpBase):
    def on_headers(self, direction, headers, end_of_stream):
        if header(headers, "x-block") is not None:
            return respond(403, b"blocked\n")
        greeting = (config.get("greeting") or "hello").encode()
        return forward_http(set_headers={"x-greeting": greeting})

