"""gRPC over sidecar/http2.py: length-prefixed messages, routing by method path, status
trailers, and the standard health service.

Handlers are synchronous: a message in, at most one message out, called from the connection's
`data_received`. Everything the sidecar does per message is synchronous anyway (a plugin call),
so there is no coroutine, queue or thread hop per message.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import socket
from collections.abc import Callable, Mapping
from typing import Protocol
from urllib.parse import quote

from google.protobuf.message import DecodeError
from grpc_health.v1 import health_pb2

from sidecar.http2 import Connection, HeaderList, Headers, header_list

log = logging.getLogger(__name__)
Metadata = tuple[tuple[str, str], ...]
MAX_MESSAGE = 64 << 20  # Envoy sends a buffered body as one message
HEALTH_CHECK = "/grpc.health.v1.Health/Check"


class Status(enum.IntEnum):
    OK = 0
    INVALID_ARGUMENT = 3
    NOT_FOUND = 5
    RESOURCE_EXHAUSTED = 8
    UNIMPLEMENTED = 12
    INTERNAL = 13


class GrpcError(Exception):
    """Ends a call with a status other than OK."""

    def __init__(self, status: Status, message: str) -> None:
        super().__init__(message)
        self.status = status


class CallHandler(Protocol):
    def message(self, payload: bytes) -> bytes | None:
        """One request message; the response message, or None for none."""

    def close(self) -> None:
        """The call is over: the client ended it, reset it, or went away."""


Opener = Callable[[Metadata], CallHandler]


_RESPONSE_FIELDS = ((":status", "200"), ("content-type", "application/grpc"))
RESPONSE_HEADERS = header_list(_RESPONSE_FIELDS)
OK_TRAILERS = header_list([("grpc-status", "0")])
# gRPC's percent-encoding of grpc-message: printable ASCII stays, except '%' itself.
_MESSAGE_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")


def status_trailers(status: Status, message: str, headers_sent: bool) -> HeaderList:
    fields = [("grpc-status", str(int(status))), ("grpc-message", quote(message, _MESSAGE_SAFE))]
    if not headers_sent:  # trailers-only response
        fields = [*_RESPONSE_FIELDS, *fields]
    return header_list(fields)


class Call:
    """One gRPC call on one HTTP/2 stream."""

    __slots__ = ("_buffer", "_connection", "_done", "_handler", "_headers_sent", "_stream")

    def __init__(self, connection: Connection, stream_id: int, handler: CallHandler) -> None:
        self._connection = connection
        self._stream = stream_id
        self._handler = handler
        self._buffer = bytearray()
        self._headers_sent = False
        self._done = False

    def data(self, payload: bytes, end_stream: bool) -> None:
        if self._done:
            return
        buffer = self._buffer
        try:
            if not buffer and len(payload) >= 5 and not payload[0] \
                    and int.from_bytes(payload[1:5], "big") == len(payload) - 5:
                # the usual case: exactly one whole message in this DATA frame, no copying
                response = self._handler.message(payload[5:])
                if response is not None:
                    self._send(response)
                payload = b""
            buffer += payload
            while len(buffer) >= 5:
                if buffer[0]:
                    raise GrpcError(Status.UNIMPLEMENTED, "compressed messages are not supported")
                length = int.from_bytes(buffer[1:5], "big")
                if length > MAX_MESSAGE:
                    raise GrpcError(Status.RESOURCE_EXHAUSTED, f"a {length}-byte message")
                if len(buffer) < 5 + length:
                    break
                message = bytes(buffer[5:5 + length])
                del buffer[:5 + length]
                response = self._handler.message(message)
                if response is not None:
                    self._send(response)
        except GrpcError as error:
            self._finish(error.status, str(error))
            return
        except Exception:  # a bug of ours must not take the connection down
            log.exception("gRPC handler failed on stream %d", self._stream)
            self._finish(Status.INTERNAL, "internal error")
            return
        if end_stream:
            self._finish(Status.OK, "")

    def _send(self, response: bytes) -> None:
        if not self._headers_sent:
            self._connection.respond(self._stream, RESPONSE_HEADERS)
            self._headers_sent = True
        self._connection.send_data(
            self._stream, b"\0" + len(response).to_bytes(4, "big") + response)

    def _finish(self, status: Status, message: str) -> None:
        self._done = True
        self._handler.close()
        trailers = (OK_TRAILERS if status is Status.OK and self._headers_sent
                    else status_trailers(status, message, self._headers_sent))
        self._connection.finish(self._stream, trailers)

    def reject(self, status: Status, message: str) -> Call:
        """End the call before any message: a trailers-only response."""
        self._finish(status, message)
        return self

    def reset(self) -> None:
        if not self._done:
            self._done = True
            self._handler.close()


class NoHandler:
    """The handler of a call refused when it opened."""

    def message(self, payload: bytes) -> bytes | None:
        return None

    def close(self) -> None:
        pass


class HealthCheck:
    """grpc.health.v1.Health/Check: SERVING for the server ("") and each of its services."""

    def __init__(self, services: frozenset[str]) -> None:
        self._services = services

    def message(self, payload: bytes) -> bytes:
        try:
            service = health_pb2.HealthCheckRequest.FromString(payload).service
        except DecodeError:
            raise GrpcError(Status.INVALID_ARGUMENT, "not a HealthCheckRequest") from None
        if service and service not in self._services:
            raise GrpcError(Status.NOT_FOUND, f"unknown service {service!r}")
        return health_pb2.HealthCheckResponse(
            status=health_pb2.HealthCheckResponse.SERVING).SerializeToString()

    def close(self) -> None:
        pass


class GrpcServer:
    def __init__(self, methods: Mapping[str, Opener],
                 on_bytes: Callable[[], None] = lambda: None) -> None:
        """`on_bytes()` is told whenever bytes arrive, on any connection."""
        services = frozenset(path.strip("/").split("/")[0] for path in methods)
        self._methods = {**methods, HEALTH_CHECK: lambda metadata: HealthCheck(services)}
        self._on_bytes = on_bytes
        self._server: asyncio.Server | None = None

    def _open(self, connection: Connection, stream_id: int,
              headers: Headers) -> Call:
        path = next((v for k, v in headers if k == ":path"), "")
        metadata = tuple((k, v) for k, v in headers if not k.startswith(":"))
        opener = self._methods.get(path)
        if opener is None:
            return Call(connection, stream_id, NoHandler()).reject(
                Status.UNIMPLEMENTED, f"unknown method {path}")
        try:
            return Call(connection, stream_id, opener(metadata))
        except GrpcError as error:  # refused: over a bound, say
            return Call(connection, stream_id, NoHandler()).reject(error.status, str(error))
        except Exception:
            log.exception("opening a call to %s failed", path)
            return Call(connection, stream_id, NoHandler()).reject(Status.INTERNAL,
                                                                   "internal error")

    async def start(self, host: str, port: int) -> int:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: Connection(self._open, self._on_bytes), host, port, family=socket.AF_UNSPEC,
            backlog=1024)
        return self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
