"""gRPC over sidecar/http2.py: length-prefixed messages, routing by method path, status
trailers, and the standard health service.

Handlers are synchronous: a message in, the messages answering it out (usually one, or none),
called from the connection's `data_received`. Everything the sidecar does per message is
synchronous anyway (a plugin call), so there is no coroutine, queue or thread hop per message.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import errno
import logging
import socket
import weakref
from collections.abc import Callable, Mapping
from pathlib import Path
from ssl import SSLContext
from typing import Protocol
from urllib.parse import quote

from google.protobuf.message import DecodeError
from grpc_health.v1 import health_pb2

from sidecar.http2 import MAX_STREAM_MESSAGE, Connection, HeaderList, Headers, header_list

log = logging.getLogger(__name__)
Metadata = tuple[tuple[str, str], ...]
# The largest message taken (gRPC's usual default; Envoy sends a BUFFERED body as one
# message, and buffers at most its per-connection buffer limit, 1 MiB by default).
MAX_MESSAGE = MAX_STREAM_MESSAGE
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


Answer = bytes | tuple[bytes, ...] | None  # one response message, several in order, or none


class CallHandler(Protocol):
    def message(self, payload: bytes) -> Answer | asyncio.Future[Answer]:
        """One request message; the response message (or a tuple of them), None for none, or
        a future of these (work done off the event loop): the call takes its next message
        once it is done."""

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
    """One gRPC call on one HTTP/2 stream. Its bytes count as processed for the stream's
    flow-control window once the message they belong to has been answered; a message declared
    but incomplete holds a reservation against the connection's budget until it is whole.
    Messages are handled one at a time, in order: while an answer is pending (off the event
    loop), the next ones wait in the buffer."""

    __slots__ = ("_buffer", "_connection", "_done", "_ended", "_handler", "_headers_sent",
                 "_pending", "_reserved", "_stream")

    def __init__(self, connection: Connection, stream_id: int, handler: CallHandler) -> None:
        self._connection = connection
        self._stream = stream_id
        self._handler = handler
        self._buffer = bytearray()
        self._headers_sent = False
        self._done = False
        self._ended = False  # the client ended its side
        self._pending = False  # an answer is being worked out off the loop
        self._reserved = 0  # bytes of the incomplete message in the buffer, once declared

    def data(self, payload: bytes, end_stream: bool) -> None:
        if self._done:
            self._connection.consumed(self._stream, len(payload))
            return
        self._ended = self._ended or end_stream
        if not self._buffer and not self._pending and len(payload) >= 5 and not payload[0] \
                and int.from_bytes(payload[1:5], "big") == len(payload) - 5:
            # the usual case: exactly one whole message in this DATA frame, no copying
            self._guarded(self._handle, payload[5:], len(payload))
        else:
            self._buffer += payload
            self._guarded(self._next_messages)

    def _guarded(self, step: Callable[..., None], *args: object) -> None:
        """Run `step`, then what follows once the buffer is through; a failure ends the
        call with its status."""
        try:
            step(*args)
            if not self._pending:
                self._next_messages()
        except GrpcError as error:
            self._finish(error.status, str(error))
            return
        except Exception:  # a bug of ours must not take the connection down
            log.exception("gRPC handler failed on stream %d", self._stream)
            self._finish(Status.INTERNAL, "internal error")
            return
        if self._ended and not self._pending and not self._done:
            self._finish(Status.OK, "")

    def _next_messages(self) -> None:
        buffer = self._buffer
        while not self._pending and not self._done and len(buffer) >= 5:
            if buffer[0]:
                raise GrpcError(Status.UNIMPLEMENTED, "compressed messages are not supported")
            length = int.from_bytes(buffer[1:5], "big")
            if length > MAX_MESSAGE:
                raise GrpcError(Status.RESOURCE_EXHAUSTED, f"a {length}-byte message")
            if len(buffer) < 5 + length:
                self._reserve(5 + length)
                return
            message = bytes(buffer[5:5 + length])
            del buffer[:5 + length]
            self._release()
            self._handle(message, 5 + length)

    def _handle(self, message: bytes, size: int) -> None:
        """One whole message (`size` bytes on the wire, framing included)."""
        answer = self._handler.message(message)
        if isinstance(answer, asyncio.Future):
            self._pending = True
            answer.add_done_callback(lambda done: self._answered(done, size))
        else:
            self._answer(answer, size)

    def _answer(self, answer: Answer, size: int) -> None:
        if isinstance(answer, tuple):
            for response in answer:
                self._send(response)
        elif answer is not None:
            self._send(answer)
        self._connection.consumed(self._stream, size)

    def _answered(self, done: asyncio.Future[Answer], size: int) -> None:
        """A pending answer is back, on the loop: send it, then go on with the buffer."""
        self._pending = False
        if self._done or done.cancelled():  # reset, or the server stopped, meanwhile
            return
        self._guarded(lambda: self._answer(done.result(), size))
        self._connection.flush()

    def _reserve(self, size: int) -> None:
        if size > self._reserved:
            if not self._connection.reserve(size - self._reserved):
                raise GrpcError(Status.RESOURCE_EXHAUSTED, "too many bytes of incomplete "
                                "messages on this connection")
            self._reserved = size

    def _release(self) -> None:
        self._connection.release(self._reserved)
        self._reserved = 0

    def _send(self, response: bytes) -> None:
        if not self._headers_sent:
            self._connection.respond(self._stream, RESPONSE_HEADERS)
            self._headers_sent = True
        self._connection.send_data(
            self._stream, b"\0" + len(response).to_bytes(4, "big") + response)

    def _finish(self, status: Status, message: str) -> None:
        self._done = True
        self._release()
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
            self._release()
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
        # Weakly held: a TLS connection whose handshake fails is never made, so never closed.
        self._connections: weakref.WeakSet[Connection] = weakref.WeakSet()
        self._unix_socket: tuple[Path, int] | None = None  # the socket file bound, its inode

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

    # --- listening and draining ---------------------------------------------------------

    # How often a drain looks at its connections (and drains ones whose TLS handshake ended).
    DRAIN_POLL_SECONDS = 0.05
    # After the drain deadline: how long the connections closed then may take to go.
    CLOSE_GRACE_SECONDS = 1.0

    async def start(self, host: str | None, port: int, ssl: SSLContext | None = None) -> int:
        """Listen on TCP (port 0: any free one), with TLS when `ssl` is given; returns the
        port."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._connection, host, port, family=socket.AF_UNSPEC, backlog=1024, ssl=ssl)
        return self._server.sockets[0].getsockname()[1]

    async def start_unix(self, path: Path, ssl: SSLContext | None = None) -> None:
        """Listen on a Unix domain socket at `path`, with TLS when `ssl` is given. A socket
        file left there by a process that is gone is replaced; one that a live process
        listens on is not (OSError)."""
        self._refuse_if_served(path)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_unix_server(self._connection, str(path),
                                                     backlog=1024, ssl=ssl)
        self._unix_socket = (path, path.stat().st_ino)

    @staticmethod
    def _refuse_if_served(path: Path) -> None:
        if not path.is_socket():
            return
        with socket.socket(socket.AF_UNIX) as probe:
            probe.settimeout(1.0)
            try:
                probe.connect(str(path))
            except (ConnectionRefusedError, FileNotFoundError):
                return  # nobody listens: a stale file, which the bind replaces
        raise OSError(errno.EADDRINUSE, f"another process listens on {path}")

    def _connection(self) -> Connection:
        connection = Connection(self._open, self._on_bytes, self._connections.discard)
        self._connections.add(connection)
        return connection

    @property
    def open_streams(self) -> int:
        return sum(connection.open_streams for connection in self._connections)

    async def drain(self, deadline_seconds: float) -> None:
        """Stop accepting; drain every connection (a shutdown notice, then the GOAWAY naming
        the last stream taken: sidecar/http2.py); return once all have closed, or once
        `deadline_seconds` have passed, closing what is left."""
        server, self._server = self._server, None
        if server is not None:  # else a drain cut short (a stop during it) left it closed
            server.close()
            self._unlink_unix_socket()
        if not await self._all_closed(deadline_seconds):
            left = [connection for connection in self._connections if connection.draining]
            log.warning("drain deadline of %g s passed: closing %d connections with %d open "
                        "streams", deadline_seconds, len(left), self.open_streams)
            for connection in left:
                connection.abort()
            await self._all_closed(self.CLOSE_GRACE_SECONDS)
        if server is not None:
            await server.wait_closed()

    def _unlink_unix_socket(self) -> None:
        if self._unix_socket is not None:
            path, inode = self._unix_socket
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_ino == inode:  # still ours: a new sidecar may have bound it
                    path.unlink()

    async def _all_closed(self, seconds: float) -> bool:
        """Wait up to `seconds` for every drained connection to close."""
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while True:
            for connection in list(self._connections):
                connection.drain()  # once each; also those made since the last look
            if not any(connection.draining for connection in self._connections):
                return True
            if loop.time() >= end:
                return False
            await asyncio.sleep(self.DRAIN_POLL_SECONDS)

    async def stop(self) -> None:
        """Stop at once: a drain with no time for open streams."""
        await self.drain(0)
