"""The sidecar's gRPC server: network ext_proc, HTTP ext_proc and gRPC health on one listening
socket (TCP or a Unix domain socket, with TLS or without)."""

from __future__ import annotations

import asyncio
import ssl

from sidecar import http_ext_proc, network_ext_proc
from sidecar.admission import Admission
from sidecar.config import Address, TcpAddress, TlsConfig, UnixAddress, parse_address
from sidecar.grpc_metadata import Metadata, StreamSetup
from sidecar.grpc_server import GrpcServer
from sidecar.offload import Offload
from sidecar.quiet_work import QuietWork
from sidecar.registry import Registry
from sidecar.slow_lanes import SlowLanes
from sidecar.streams import Observer


def tls_context(tls: TlsConfig) -> ssl.SSLContext:
    """TLS 1.2 or later, ALPN h2 (HTTP/2 over TLS); with `client-ca`, only clients presenting
    a certificate it signed (mTLS). Raises OSError naming the field that cannot be used."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["h2"])
    try:
        context.load_cert_chain(tls.cert, tls.key)
    except OSError as exc:  # ssl.SSLError is one too
        raise OSError(f"tls.cert {tls.cert} with tls.key {tls.key}: {exc}") from None
    if tls.client_ca is not None:
        try:
            context.load_verify_locations(tls.client_ca)
        except OSError as exc:
            raise OSError(f"tls.client-ca {tls.client_ca}: {exc}") from None
        context.verify_mode = ssl.CERT_REQUIRED
    return context


class SidecarServer:
    def __init__(self, registry: Registry, admission: Admission, lanes: SlowLanes,
                 observers: tuple[Observer, ...] = ()) -> None:
        """Made on the event loop that will serve it. A reload replaces `setup.registry`."""
        loop = asyncio.get_running_loop()
        self.quiet_work = QuietWork(loop)
        self.offload = Offload(loop, lanes)
        self.setup = setup = StreamSetup(registry, observers, self.quiet_work, admission,
                                         self.offload)

        def tcp(headers: Metadata) -> network_ext_proc.NetworkExtProcCall:
            return network_ext_proc.NetworkExtProcCall(setup, headers)

        def http(headers: Metadata) -> http_ext_proc.HttpExtProcCall:
            return http_ext_proc.HttpExtProcCall(setup, headers)

        self._grpc = GrpcServer({network_ext_proc.METHOD: tcp, http_ext_proc.METHOD: http},
                                on_bytes=self.quiet_work.activity)

    async def start(self, address: str, tls: TlsConfig | None = None) -> Address:
        """Listen on `address` ("host:port", port 0 for any free one, or "unix:/path");
        returns the address bound."""
        where = parse_address(address)
        context = tls_context(tls) if tls is not None else None
        if isinstance(where, UnixAddress):
            await self._grpc.start_unix(where.path, context)
            return where
        return TcpAddress(where.host, await self._grpc.start(where.host or None, where.port,
                                                             context))

    @property
    def open_streams(self) -> int:
        return self._grpc.open_streams

    async def drain(self, deadline_seconds: float) -> None:
        """No new connections or streams; open streams run until they end or the deadline."""
        await self._grpc.drain(deadline_seconds)
        await self.offload.close()  # events in flight finish first
        self.quiet_work.run_all()  # the sandboxes of the streams that just ended

    async def stop(self) -> None:
        await self.drain(0)
