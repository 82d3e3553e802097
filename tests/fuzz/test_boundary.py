"""The sidecar fuzzed at its boundary: network and HTTP ext_proc streams of schema-made,
mutated ProcessingRequests (tests/fuzz/messages.py), sent over real gRPC (grpcio) to a real
sidecar, concurrently, ending every way a client can end a stream. Whatever arrives, the
sidecar raises nothing (no INTERNAL or UNKNOWN status, no error logged), answers each call
with a status, answers only with messages that parse, leaks no stream, sandbox or descriptor,
and still serves a well-formed stream afterwards. The seed is in the test's id: a failure
replays with the same one."""

from __future__ import annotations

import logging
import os
import queue
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from envoy.service.ext_proc.v3 import external_processor_pb2 as http_pb
from envoy.service.network_ext_proc.v3 import network_external_processor_pb2 as tcp_pb
from google.protobuf.message import Message

from sidecar import http_ext_proc, network_ext_proc
from sidecar.app import Sidecar
from sidecar.config import parse_config
from sidecar.registry import CHAIN_METADATA_KEY
from tests.conftest import plugin_dir
from tests.fuzz.messages import Ending, FuzzStream, Generator
from tests.integration.harness import sidecar_on_a_thread

STREAMS = 300  # `-m heavy`: HEAVY_STREAMS
HEAVY_STREAMS = 3000
CONCURRENCY = 8
CALL_SECONDS = 10.0  # one stream's deadline; none should come near it
CANCEL_AFTER_SECONDS = 0.3  # a cancelling client waits this long after its last message
SETTLE_SECONDS = 10.0  # for the sidecar to close what the last streams left
# What a call may end with: answered, refused as malformed or too large, or cancelled by us.
EXPECTED = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT,
            grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.CANCELLED}
KINDS: dict[str, tuple[str, type[Message], type[Message]]] = {  # chain: method, request, answer
    "tcp": (network_ext_proc.METHOD, tcp_pb.ProcessingRequest, tcp_pb.ProcessingResponse),
    "http": (http_ext_proc.METHOD, http_pb.ProcessingRequest, http_pb.ProcessingResponse),
}


@pytest.fixture(scope="module")
def sidecar(compile_cache: Path) -> Iterator[Sidecar]:
    # On wasmtime: what is left after the streams (descriptors) is the boundary's to clean
    # up, and a kvm plugin keeps idle VMs (two descriptors each) by design.
    config = parse_config({
        "plugins": {"pass-through": {"path": str(plugin_dir("pass-through")),
                                     "tier": "wasmtime"},
                    "auth": {"path": str(plugin_dir("http-auth")), "tier": "wasmtime",
                             "config": {"keys": "k-1:alice"}},
                    "redactor": {"path": str(plugin_dir("body-redactor")),
                                 "tier": "wasmtime"}},
        "chains": {"tcp": ["pass-through"], "http": ["auth", "redactor"]},
        "listen": "127.0.0.1:0", "cache-dir": str(compile_cache)}, Path("."))
    with sidecar_on_a_thread(config) as running:
        yield running


def descriptors() -> dict[str, str]:
    """This process's open descriptors and what each is (the sidecar runs in it)."""
    found = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            found[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except FileNotFoundError:  # closed meanwhile (the listing's own, say)
            continue
    return found


def run_stream(channel: grpc.Channel, stream: FuzzStream) -> tuple[grpc.StatusCode, int]:
    """The status the call ended with, and how many answers came."""
    method, _, answer_type = KINDS[stream.chain]
    ended = threading.Event()

    def requests() -> Iterator[bytes]:
        yield from stream.messages
        if stream.ending is not Ending.HALF_CLOSE:
            ended.wait(CANCEL_AFTER_SECONDS)  # the answers to what was sent come meanwhile
            call.cancel()

    call = channel.stream_stream(method, request_serializer=lambda b: b,
                                 response_deserializer=lambda b: b)(
        requests(), timeout=CALL_SECONDS, metadata=((CHAIN_METADATA_KEY, stream.chain),))
    answers = 0
    try:
        for answer in call:
            answer_type.FromString(answer)  # raises if the sidecar sent garbage
            answers += 1
            if stream.ending is Ending.ABANDON:
                break
    except grpc.RpcError:
        pass  # its code is read below
    finally:
        if stream.ending is not Ending.HALF_CLOSE:
            call.cancel()
        ended.set()
    return call.code(), answers


def well_formed_tcp(channel: grpc.Channel) -> bytes:
    call = channel.stream_stream(network_ext_proc.METHOD, request_serializer=lambda b: b,
                                 response_deserializer=lambda b: b)
    request = tcp_pb.ProcessingRequest(read_data=tcp_pb.Data(data=b"still here"))
    answers = queue.Queue[bytes]()
    for answer in call(iter([request.SerializeToString()]), timeout=CALL_SECONDS,
                       metadata=((CHAIN_METADATA_KEY, "tcp"),)):
        answers.put(answer)
    return tcp_pb.ProcessingResponse.FromString(answers.get_nowait()).read_data.data


@pytest.mark.parametrize("streams", [
    STREAMS, pytest.param(HEAVY_STREAMS, marks=pytest.mark.heavy)])
@pytest.mark.parametrize("seed", [1, 2])
def test_hostile_ext_proc_streams_are_survived_and_leave_nothing(
        sidecar: Sidecar, caplog: pytest.LogCaptureFixture, seed: int, streams: int) -> None:
    generator = Generator(random.Random(seed))
    chains = list(KINDS)
    planned = [generator.stream(KINDS[chain][1], chain)
               for chain in (random.Random(seed).choice(chains) for _ in range(streams))]
    with grpc.insecure_channel(f"127.0.0.1:{sidecar.port}") as channel:
        well_formed_tcp(channel)  # grpc's own lasting descriptors made before counting
    before = descriptors()
    with caplog.at_level(logging.ERROR), \
            grpc.insecure_channel(f"127.0.0.1:{sidecar.port}") as channel, \
            ThreadPoolExecutor(CONCURRENCY) as pool:
        outcomes = list(pool.map(lambda stream: run_stream(channel, stream), planned))
        assert well_formed_tcp(channel) == b"still here"
    codes = Counter(code for code, _ in outcomes)
    assert set(codes) <= EXPECTED, f"seed {seed}: statuses {codes}"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], \
        f"seed {seed}: the sidecar logged errors: {[r.getMessage() for r in caplog.records]}"
    admission = sidecar.server.setup.admission  # type: ignore[union-attr]
    deadline = time.monotonic() + SETTLE_SECONDS
    while (admission.streams or admission.sandboxes or len(descriptors()) > len(before)) \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (admission.streams, admission.sandboxes) == (0, 0), f"seed {seed}: leaked"
    left = {fd: what for fd, what in descriptors().items() if before.get(fd) != what}
    assert len(descriptors()) <= len(before), f"seed {seed}: descriptors left: {left}"
