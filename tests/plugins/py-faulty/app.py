"""Fails as the request's x-bug header (HTTP) or the bytes' first word (TCP) say; otherwise
marks the request (x-python: ok) or forwards the bytes. `mark WORD` keeps WORD in the
interpreter's memory and `marks` answers what it holds: what one stream leaves there, no other
stream's sandbox may see."""

from hyperfilter import HttpFilter as HttpBase
from hyperfilter import TcpFilter as TcpBase
from hyperfilter import forward, forward_http, header, replace
from wit_world.imports import types

MARKS = []


def port_of(text):
    return int(text)  # raises: ValueError


class HttpFilter(HttpBase):
    def on_headers(self, direction, headers, end_of_stream):  # returns: None
        bug = header(headers, "x-bug")
        if bug == b"raise":
            port = port_of("eighty")  # calls: port_of
            return forward_http(set_headers=[("x-port", b"%d" % port)])
        if bug == b"none":
            return None
        if bug == b"str":
            return forward_http(set_headers=[("x-bug", "text")])  # helper: str
        if bug == b"raw-str":
            return types.HttpVerdict_Forward(types.Mutation([], [], "text"))
        if bug == b"exit":
            raise SystemExit(2)  # raises: SystemExit
        return forward_http(set_headers={"x-python": b"ok"})


class TcpFilter(TcpBase):
    def on_data(self, direction, data, end_of_stream):  # returns: TCP None
        if data.startswith(b"raise"):
            raise LookupError("no rule for " + data.split()[0].decode())  # raises: LookupError
        if data.startswith(b"none"):
            return None
        if data.startswith(b"str"):
            return replace(data.decode().upper())  # helper: TCP str
        if data.startswith(b"mark "):
            MARKS.append(data[5:])
        if data == b"marks":
            return replace(b",".join(MARKS) or b"none")
        return forward()
