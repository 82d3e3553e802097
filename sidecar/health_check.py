"""`hyperfilter health`: ask sidecars, through the standard gRPC health service
(`grpc.health.v1.Health/Check`), whether they serve. What a container's health check, a
Kubernetes probe or a script runs: exit 0 when every address answers SERVING, 1 otherwise,
with one line saying what each answered."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sidecar.config import TcpAddress, parse_address

DEFAULT_TIMEOUT_SECONDS = 2.0


@dataclass(frozen=True)
class Answer:
    address: str
    serving: bool
    status: str  # the health service's status name, or the gRPC error and its details


def grpc_target(address: str) -> str:
    """The sidecar's `listen` form (host:port, unix:/path) as a gRPC channel target; an empty
    host (every interface) is reached on loopback."""
    where = parse_address(address)
    if not isinstance(where, TcpAddress):
        return f"unix:{where.path}"
    host = where.host or "127.0.0.1"
    return f"[{host}]:{where.port}" if ":" in host else f"{host}:{where.port}"


def check(address: str, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> Answer:
    """One Check of the whole server (service ""), over plain HTTP/2 (no TLS)."""
    try:
        target = grpc_target(address)
    except ValueError as exc:
        return Answer(address, False, str(exc))
    with grpc.insecure_channel(target) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=timeout)
        except grpc.RpcError as error:
            return Answer(address, False, f"{error.code().name}: {error.details()}")
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return Answer(address, reply.status == health_pb2.HealthCheckResponse.SERVING, status)


def check_all(addresses: Sequence[str], timeout: float = DEFAULT_TIMEOUT_SECONDS
              ) -> tuple[bool, str]:
    """Whether every address serves, and one line with what each answered."""
    answers = [check(address, timeout) for address in addresses]
    healthy = all(answer.serving for answer in answers)
    line = "; ".join(f"{answer.address}: {answer.status}" for answer in answers)
    return healthy, f"{'healthy' if healthy else 'unhealthy'}: {line}"
