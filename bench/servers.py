"""Servers the benchmarks run as their own processes, so that none shares a GIL with the
client that measures. Each prints its port when ready.

    python -m bench.servers echo         # TCP echo upstream
    python -m bench.servers http         # HTTP/1.1 upstream: answers with the request body
    python -m bench.servers naive        # the naive ext_proc baseline (grpcio), both services
    python -m bench.servers aio          # the same as an async servicer (grpc.aio on uvloop)
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import uvloop
from envoy.service.ext_proc.v3 import external_processor_pb2 as http_pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as http_grpc
from envoy.service.network_ext_proc.v3 import network_external_processor_pb2 as pb
from envoy.service.network_ext_proc.v3 import network_external_processor_pb2_grpc as pb_grpc


async def echo() -> None:
    class Echo(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            self.transport.write(data)  # type: ignore[attr-defined]

    server = await asyncio.get_running_loop().create_server(Echo, "127.0.0.1", 0, backlog=4096)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()


async def http() -> None:
    """Keep-alive HTTP/1.1 that answers every request with its own body (or "ok")."""

    class Responder(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport
            self.buffer = b""

        def data_received(self, data: bytes) -> None:
            self.buffer += data
            while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
                head = self.buffer[:end].lower()
                at = head.find(b"content-length:")
                length = int(head[at + 15:].split(b"\r\n", 1)[0]) if at >= 0 else 0
                if len(self.buffer) < end + 4 + length:
                    return
                body = self.buffer[end + 4:end + 4 + length] or b"ok"
                self.buffer = self.buffer[end + 4 + length:]
                self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s"  # type: ignore[attr-defined]
                                     % (len(body), body))

    server = await asyncio.get_running_loop().create_server(Responder, "127.0.0.1", 0,
                                                            backlog=4096)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()


def echoed(request: pb.ProcessingRequest) -> pb.ProcessingResponse:
    """The message's data sent back unchanged, in the direction it came."""
    if request.HasField("read_data"):
        return pb.ProcessingResponse(read_data=request.read_data)
    return pb.ProcessingResponse(write_data=request.write_data)


def continued(request: http_pb.ProcessingRequest) -> http_pb.ProcessingResponse:
    """CONTINUE, as the response of the kind matching the request's."""
    response = http_pb.ProcessingResponse()
    getattr(response, request.WhichOneof("request")).SetInParent()
    return response


class NaiveProcessor(pb_grpc.NetworkExternalProcessorServicer):
    """What most ext_proc tutorials show: iterate the requests, echo each message's data.
    One thread per stream: 512 threads serve the 256-connection workload."""

    def Process(self, request_iterator: Iterator[pb.ProcessingRequest],  # noqa: N802
                context: grpc.ServicerContext) -> Iterator[pb.ProcessingResponse]:
        for request in request_iterator:
            yield echoed(request)


class NaiveHttpProcessor(http_grpc.ExternalProcessorServicer):
    """The same for HTTP: one CONTINUE response of the matching kind per message."""

    def Process(self, request_iterator: Iterator[http_pb.ProcessingRequest],  # noqa: N802
                context: grpc.ServicerContext) -> Iterator[http_pb.ProcessingResponse]:
        for request in request_iterator:
            yield continued(request)


def naive() -> None:
    server = grpc.server(ThreadPoolExecutor(max_workers=512))
    pb_grpc.add_NetworkExternalProcessorServicer_to_server(NaiveProcessor(), server)
    http_grpc.add_ExternalProcessorServicer_to_server(NaiveHttpProcessor(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    server.wait_for_termination()


class AioProcessor(pb_grpc.NetworkExternalProcessorServicer):
    """The shape of the Python ext_proc SDKs: an async servicer, one task per stream on one
    event loop, no threads."""

    async def Process(self, request_iterator: AsyncIterator[pb.ProcessingRequest],  # noqa: N802
                      context: grpc.aio.ServicerContext) -> AsyncIterator[pb.ProcessingResponse]:
        async for request in request_iterator:
            yield echoed(request)


class AioHttpProcessor(http_grpc.ExternalProcessorServicer):
    async def Process(self, request_iterator: AsyncIterator[http_pb.ProcessingRequest],  # noqa: N802
                      context: grpc.aio.ServicerContext
                      ) -> AsyncIterator[http_pb.ProcessingResponse]:
        async for request in request_iterator:
            yield continued(request)


async def aio() -> None:
    server = grpc.aio.server()
    pb_grpc.add_NetworkExternalProcessorServicer_to_server(AioProcessor(), server)
    http_grpc.add_ExternalProcessorServicer_to_server(AioHttpProcessor(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    {
        "echo": lambda: uvloop.run(echo()),
        "http": lambda: uvloop.run(http()),
        "naive": naive,
        "aio": lambda: uvloop.run(aio()),
    }[sys.argv[1]]()
