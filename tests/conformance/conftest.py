"""The server under test: the sidecar's gRPC server with an echo method, on its own event loop
thread; and raw connections to it."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from sidecar.grpc_server import GrpcServer
from tests.conformance.raw_client import ECHO_PATH, RawClient
from tests.integration.harness import LoopThread

Connect = Callable[[], RawClient]


class Echo:
    """Answers each message with itself."""

    def message(self, payload: bytes) -> bytes:
        return payload

    def close(self) -> None:
        pass


@pytest.fixture(scope="package")
def server_port() -> Iterator[int]:
    loop = LoopThread()
    grpc = GrpcServer({ECHO_PATH: lambda metadata: Echo()})
    port = loop.run(lambda: grpc.start("127.0.0.1", 0))
    yield port
    loop.run(grpc.stop)
    loop.close()


@pytest.fixture
def connect(server_port: int) -> Iterator[Connect]:
    """Opens connections to the server, each closed after the test."""
    opened: list[RawClient] = []

    def open_one() -> RawClient:
        opened.append(RawClient(server_port))
        return opened[-1]

    yield open_one
    for client in opened:
        client.close()


@pytest.fixture
def client(connect: Connect) -> RawClient:
    """A connection past the preface and the SETTINGS exchange."""
    return connect().handshake()
