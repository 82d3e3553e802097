"""The sidecar's gRPC server: network ext_proc, HTTP ext_proc and gRPC health on one port."""

from __future__ import annotations

import asyncio

from sidecar import http_ext_proc, network_ext_proc
from sidecar.admission import Admission
from sidecar.grpc_metadata import Metadata, StreamSetup
from sidecar.grpc_server import GrpcServer
from sidecar.quiet_work import QuietWork
from sidecar.registry import Registry
from sidecar.streams import Observer


class SidecarServer:
    def __init__(self, registry: Registry, admission: Admission,
                 observers: tuple[Observer, ...] = ()) -> None:
        """Made on the event loop that will serve it."""
        self.quiet_work = QuietWork(asyncio.get_running_loop())
        self.setup = setup = StreamSetup(registry, observers, self.quiet_work, admission)

        def tcp(headers: Metadata) -> network_ext_proc.NetworkExtProcCall:
            return network_ext_proc.NetworkExtProcCall(setup, headers)

        def http(headers: Metadata) -> http_ext_proc.HttpExtProcCall:
            return http_ext_proc.HttpExtProcCall(setup, headers)

        self._grpc = GrpcServer({network_ext_proc.METHOD: tcp, http_ext_proc.METHOD: http},
                                on_bytes=self.quiet_work.activity)

    async def start(self, address: str) -> int:
        """Listen on `address` ("host:port", port 0 for any free one); returns the port."""
        host, _, port = address.rpartition(":")
        return await self._grpc.start(host.strip("[]") or None, int(port))  # type: ignore[arg-type]

    async def stop(self) -> None:
        await self._grpc.stop()
        self.quiet_work.run_all()  # the sandboxes of the streams that just ended
