"""The sidecar's gRPC server: network ext_proc, HTTP ext_proc and gRPC health on one port."""

from __future__ import annotations

from sidecar import http_ext_proc, network_ext_proc
from sidecar.grpc_metadata import Metadata
from sidecar.grpc_server import GrpcServer
from sidecar.registry import Registry
from sidecar.streams import Observer


class SidecarServer:
    def __init__(self, registry: Registry, observers: tuple[Observer, ...] = ()) -> None:
        def tcp(headers: Metadata) -> network_ext_proc.NetworkExtProcCall:
            return network_ext_proc.NetworkExtProcCall(registry, observers, headers)

        def http(headers: Metadata) -> http_ext_proc.HttpExtProcCall:
            return http_ext_proc.HttpExtProcCall(registry, observers, headers)

        self._grpc = GrpcServer({network_ext_proc.METHOD: tcp, http_ext_proc.METHOD: http})

    async def start(self, address: str) -> int:
        """Listen on `address` ("host:port", port 0 for any free one); returns the port."""
        host, _, port = address.rpartition(":")
        return await self._grpc.start(host.strip("[]") or None, int(port))  # type: ignore[arg-type]

    async def stop(self) -> None:
        await self._grpc.stop()
