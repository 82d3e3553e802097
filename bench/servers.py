"""Servers the benchmarks run as their own processes, so that none shares a GIL with the
client that measures. Each prints its port when ready.

    python -m bench.servers echo         # TCP echo upstream
    python -m bench.servers http         # HTTP/1.1 upstream: answers with the request body
    python -m bench.servers naive        # the naive ext_proc baseline (grpcio), both services
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
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


class NaiveProcessor(pb_grpc.NetworkExternalProcessorServicer):
    """What most ext_proc tutorials show: iterate the requests, echo each message's data.
    One thread per stream: 512 threads serve the 256-connection workload."""

    def Process(self, request_iterator: Iterator[pb.ProcessingRequest],  # noqa: N802
                context: grpc.ServicerContext) -> Iterator[pb.ProcessingResponse]:
        for request in request_iterator:
            if request.HasField("read_data"):
                yield pb.ProcessingResponse(read_data=request.read_data)
            else:
                yield pb.ProcessingResponse(write_data=request.write_data)


class NaiveHttpProcessor(http_grpc.ExternalProcessorServicer):
    """The same for HTTP: one CONTINUE response of the matching kind per message."""

    def Process(self, request_iterator: Iterator[http_pb.ProcessingRequest],  # noqa: N802
                context: grpc.ServicerContext) -> Iterator[http_pb.ProcessingResponse]:
        for request in request_iterator:
            response = http_pb.ProcessingResponse()
            getattr(response, request.WhichOneof("request")).SetInParent()
            yield response


def naive() -> None:
    server = grpc.server(ThreadPoolExecutor(max_workers=512))
    pb_grpc.add_NetworkExternalProcessorServicer_to_server(NaiveProcessor(), server)
    http_grpc.add_ExternalProcessorServicer_to_server(NaiveHttpProcessor(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    {
        "echo": lambda: uvloop.run(echo()),
        "http": lambda: uvloop.run(http()),
        "naive": naive,
    }[sys.argv[1]]()
