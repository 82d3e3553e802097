"""The sidecar's gRPC server: network ext_proc, HTTP ext_proc and gRPC health on one port."""

from __future__ import annotations

import grpc
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as http_grpc
from envoy.service.network_ext_proc.v3 import network_external_processor_pb2_grpc as net_grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from sidecar.http_ext_proc import HttpExtProc
from sidecar.network_ext_proc import NetworkExtProc
from sidecar.registry import Registry
from sidecar.streams import Observer

MAX_MESSAGE = 64 << 20  # Envoy sends whole buffered bodies in one message
SERVICES = ("envoy.service.network_ext_proc.v3.NetworkExternalProcessor",
            "envoy.service.ext_proc.v3.ExternalProcessor")


class SidecarServer:
    """Created inside the event loop that will run it: grpc.aio binds to the running loop."""

    def __init__(self, registry: Registry, observers: tuple[Observer, ...] = ()) -> None:
        self._server = grpc.aio.server(options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE),
            ("grpc.max_send_message_length", MAX_MESSAGE),
        ])
        net_grpc.add_NetworkExternalProcessorServicer_to_server(
            NetworkExtProc(registry, observers), self._server)
        http_grpc.add_ExternalProcessorServicer_to_server(
            HttpExtProc(registry, observers), self._server)
        self._health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)

    async def start(self, address: str) -> int:
        """Listen on `address` ("host:port", port 0 for any free one); returns the port."""
        port = self._server.add_insecure_port(address)
        if port == 0:
            raise OSError(f"cannot listen on {address}")
        await self._server.start()
        for service in ("", *SERVICES):
            await self._health.set(service, health_pb2.HealthCheckResponse.SERVING)
        return port

    async def stop(self, grace: float = 1.0) -> None:
        await self._health.enter_graceful_shutdown()
        await self._server.stop(grace)

    async def wait(self) -> None:
        await self._server.wait_for_termination()
