"""Servers the benchmarks run as their own processes, so that none shares a GIL with the
client that measures: a TCP echo upstream, and the naive ext_proc baseline.

    python -m bench.servers echo    # prints its port, then echoes
    python -m bench.servers naive   # prints its port, then serves network ext_proc
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
from envoy.service.network_ext_proc.v3 import network_external_processor_pb2 as pb
from envoy.service.network_ext_proc.v3 import network_external_processor_pb2_grpc as pb_grpc


async def echo() -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(1 << 20):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, backlog=1024)
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


def naive() -> None:
    server = grpc.server(ThreadPoolExecutor(max_workers=512))
    pb_grpc.add_NetworkExternalProcessorServicer_to_server(NaiveProcessor(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    {"echo": lambda: asyncio.run(echo()), "naive": naive}[sys.argv[1]]()
