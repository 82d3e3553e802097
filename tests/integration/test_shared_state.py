"""`shared-state` through the real Envoy: the http-rate-limit example admits exactly its limit
across every worker of a sidecar (the default backend), and across two sidecars sharing a
real Redis; each worker counting its own (`memory`) admits the limit once per worker; a Redis
that does not answer fails the plugin's requests under its failure policy, saying why."""

from __future__ import annotations

import http.client
import re
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sidecar.envoy import Envoy, HttpListener, Upstream, render_bootstrap
from sidecar.upstreams import HttpUpstream
from tests.conftest import plugin_dir
from tests.integration.test_operations import Served

pytestmark = pytest.mark.integration
LIMIT = 12
REQUESTS = 30  # 15 for each of two workers, Envoy's round robin taking turns


def write_config(directory: Path, workers: int, shared_state: str = "",
                 policy: str = "fail-closed") -> Path:
    directory.mkdir(exist_ok=True)
    config = directory / "sidecar.toml"
    config.write_text(f'''listen = "127.0.0.1:0"
workers = {workers}
cache-dir = "{directory.parent / "cache"}"
{shared_state}
[plugins.rl]
path = "{plugin_dir("http-rate-limit")}"
failure-policy = "{policy}"
config = {{ limit = "{LIMIT}", window-ms = "600000" }}
''')
    return config


def worker_addresses(served: Served, workers: int) -> list[str]:
    if workers == 1:
        return [served.wait_for(r"listening on (127\.0\.0\.1:\d+): network").group(1)]
    served.wait_for(r"give Envoy's cluster every one")
    return re.findall(r"worker \d \(pid \d+\) listening on (\S+?)[,\n]", served.log())


@pytest.fixture
def sidecars(tmp_path: Path) -> Iterator[Callable[..., list[Served]]]:
    """Starts sidecars (`hyperfilter serve`, one config each); stops them after the test."""
    started: list[Served] = []

    def start(*configs: Path) -> list[Served]:
        for config in configs:
            started.append(Served(config, config.parent / "serve.log"))
        return started[-len(configs):]

    yield start
    for served in started:
        served.close()


@pytest.fixture
def web() -> Iterator[Upstream]:
    upstream = HttpUpstream()
    yield Upstream("127.0.0.1", upstream.start())
    upstream.stop()


def statuses(addresses: list[str], web: Upstream, count: int) -> Counter[int]:
    """The answers to `count` requests, one after another, through an Envoy whose cluster
    lists every address."""
    with Envoy(render_bootstrap(addresses, [HttpListener("rl", "rl", web)])) as envoy:
        seen: Counter[int] = Counter()
        for _ in range(count):
            connection = http.client.HTTPConnection("127.0.0.1", envoy.listener_ports["rl"],
                                                    timeout=10)
            connection.request("GET", "/")
            seen[connection.getresponse().status] += 1
            connection.close()
        return seen


def test_the_limit_holds_across_the_workers_of_a_sidecar(
        tmp_path: Path, sidecars: Callable[..., list[Served]], web: Upstream) -> None:
    [served] = sidecars(write_config(tmp_path / "a", workers=2))
    addresses = worker_addresses(served, 2)
    assert statuses(addresses, web, REQUESTS) == {200: LIMIT, 429: REQUESTS - LIMIT}


def test_a_store_per_worker_admits_the_limit_once_per_worker(
        tmp_path: Path, sidecars: Callable[..., list[Served]], web: Upstream) -> None:
    [served] = sidecars(write_config(tmp_path / "a", workers=2,
                                     shared_state='[shared-state]\nbackend = "memory"'))
    addresses = worker_addresses(served, 2)
    assert statuses(addresses, web, REQUESTS) == {200: 2 * LIMIT, 429: REQUESTS - 2 * LIMIT}
    assert "shared-state backend memory: with 2 workers, each keeps its own store" in \
        served.log()


def test_the_limit_holds_across_two_sidecars_sharing_a_redis(
        tmp_path: Path, sidecars: Callable[..., list[Served]], web: Upstream,
        redis_url: str) -> None:
    shared = f'[shared-state]\nbackend = "redis"\nurl = "{redis_url}"\nprefix = "{tmp_path.name}"'
    first, second = sidecars(write_config(tmp_path / "a", 2, shared),
                             write_config(tmp_path / "b", 2, shared))
    addresses = worker_addresses(first, 2) + worker_addresses(second, 2)
    assert statuses(addresses, web, REQUESTS) == {200: LIMIT, 429: REQUESTS - LIMIT}


@pytest.mark.parametrize(("policy", "answer"), [("fail-closed", 500), ("fail-open", 200)])
def test_a_redis_that_does_not_answer_fails_requests_under_the_policy(
        tmp_path: Path, sidecars: Callable[..., list[Served]], web: Upstream, policy: str,
        answer: int) -> None:
    nowhere = f'[shared-state]\nbackend = "redis"\nurl = "unix://{tmp_path / "none.sock"}"'
    [served] = sidecars(write_config(tmp_path / "a", 1, nowhere, policy))
    assert statuses(worker_addresses(served, 1), web, 3) == {answer: 3}
    served.wait_for(r"rl.* could not be served by a capability: shared-state: Redis at "
                    r"unix://\S+none\.sock")
