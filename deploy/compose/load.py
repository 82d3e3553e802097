"""The client outside the container pod (docker-compose.yml's `client`): it checks what the
pod's chains do, then runs a bounded load, through Envoy's two listeners only.

    python load.py --host envoy --config sidecar.toml --seconds 10

The API keys and the rate limit come from the sidecar's configuration. Checks, each printed
with what was seen:
- Redis through chain `redis`: SET and GET pass; FLUSHALL gets the firewall's -ERR and a
  close before Redis runs it (redis-firewall), and the key is still there after;
- HTTP through chain `web`: 401 without an API key and with a wrong one (http-auth), 200 with
  one; a burst past the rate limit: no more than `limit` pass, the rest are answered 429
  (http-rate-limit; exactly `limit` pass when the burst opens the user's window);
- then `--seconds` of steady traffic (SET and GET; GET / under the rate limit), every answer
  right, with its p50 and p99 latency.
Exit 0 when every check passed, 1 otherwise."""

from __future__ import annotations

import argparse
import http.client
import socket
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from sidecar.config import load_config
from sidecar.pod.resp import RedisConnection, RedisError

REDIS_PORT = 7379  # Envoy's listeners (deploy/envoy_bootstrap.py)
HTTP_PORT = 8000
READY_SECONDS = 120.0  # for Envoy's listeners to answer through the whole chain
# Envoy spreads streams over the sidecar's workers in turn: this many answered in a row, each
# on a new connection, and every worker is serving.
READY_IN_A_ROW = 10
IO_SECONDS = 5.0
STEADY_INTERVAL = 0.05  # between two rounds of the steady traffic
MAX_STEADY_ROUNDS = 10_000
RATE_MARGIN = 1.5  # the steady user's requests: this much under the rate limit
COMMANDS_PER_CONNECTION = 20  # then a new connection: a new stream, fresh sandboxes


class CheckFailed(Exception):
    """A check saw something else; the message says what."""


def expect(holds: bool, seen: str) -> None:
    if not holds:
        raise CheckFailed(seen)


class Pod:
    def __init__(self, host: str, keys: dict[str, str]) -> None:
        self.host = host
        self.keys = keys  # user → API key

    def redis(self) -> RedisConnection:
        sock = socket.create_connection((self.host, REDIS_PORT), timeout=IO_SECONDS)
        return RedisConnection(sock)

    def get(self, path: str, user: str | None = None, key: str | None = None) -> int:
        """The status of GET `path` with `user`'s API key (or `key`)."""
        connection = http.client.HTTPConnection(self.host, HTTP_PORT, timeout=IO_SECONDS)
        key = key or (self.keys[user] if user else None)
        try:
            connection.request("GET", path, headers={"x-api-key": key} if key else {})
            response = connection.getresponse()
            response.read()
            return response.status
        finally:
            connection.close()


def wait_until_served(pod: Pod) -> None:
    """PINGs answered through Envoy and every worker of the sidecar: the whole path is up."""
    deadline = time.monotonic() + READY_SECONDS
    in_a_row = 0
    while in_a_row < READY_IN_A_ROW:
        if time.monotonic() > deadline:
            raise SystemExit(f"Envoy's listeners on {pod.host} did not answer in "
                             f"{READY_SECONDS:g} s")
        try:
            redis = pod.redis()
            try:
                in_a_row = in_a_row + 1 if redis.command("PING") == b"PONG" else 0
            finally:
                redis.close()
        except OSError:
            in_a_row = 0
            time.sleep(0.5)


def check_redis_firewall(pod: Pod) -> str:
    redis = pod.redis()
    try:
        expect(redis.command("SET", "pod:canary", "still here") == b"OK", "SET failed")
        redis.command("FLUSHALL")
        raise CheckFailed("FLUSHALL was answered")
    except RedisError as error:  # redis-firewall's reply, before Redis had the command
        expect("is not allowed" in str(error), f"FLUSHALL: {error}")
    finally:
        redis.close()
    redis = pod.redis()
    try:
        kept = redis.command("GET", "pod:canary")
    finally:
        redis.close()
    expect(kept == b"still here", f"the key after FLUSHALL: {kept!r}")
    return "SET, GET pass; FLUSHALL refused by the firewall; the key is still there"


def check_auth(pod: Pod) -> str:
    user = next(iter(pod.keys))
    statuses = (pod.get("/"), pod.get("/", key="not-a-key"), pod.get("/", user))
    expect(statuses == (401, 401, 200), f"no key, wrong key, {user}'s key: {statuses}")
    return f"no key 401, wrong key 401, {user}'s key 200"


def check_rate_limit(pod: Pod, limit: int) -> str:
    user = list(pod.keys)[-1]  # not the steady traffic's
    burst = limit + max(10, limit // 2)
    statuses = [pod.get("/", user) for _ in range(burst)]
    passed, limited = statuses.count(200), statuses.count(429)
    expect(passed + limited == burst, f"other answers: {sorted(set(statuses))}")
    expect(passed <= limit, f"{passed} of {burst} passed, limit {limit}")
    return f"a burst of {burst} from {user}: {passed} passed, {limited} answered 429"


def steady(pod: Pod, seconds: float, http_interval: float) -> str:
    """Redis rounds every STEADY_INTERVAL, an HTTP request every `http_interval`."""
    user = next(iter(pod.keys))
    latencies: dict[str, list[float]] = {"redis": [], "http": []}
    failures = 0
    redis: RedisConnection | None = None
    next_request = time.monotonic()
    deadline = next_request + seconds
    for round_number in range(MAX_STEADY_ROUNDS):
        if time.monotonic() > deadline:
            break
        try:
            if redis is None or round_number % COMMANDS_PER_CONNECTION == 0:
                if redis is not None:
                    redis.close()
                redis = pod.redis()
            start = time.perf_counter()
            ok = (redis.command("SET", f"pod:{round_number}", "v") == b"OK"
                  and redis.command("GET", f"pod:{round_number}") == b"v")
            latencies["redis"].append(time.perf_counter() - start)
            if time.monotonic() >= next_request:
                next_request += http_interval
                start = time.perf_counter()
                ok = pod.get("/", user) == 200 and ok
                latencies["http"].append(time.perf_counter() - start)
        except OSError:
            ok, redis = False, None
        failures += not ok
        time.sleep(STEADY_INTERVAL)
    if redis is not None:
        redis.close()
    summary = ", ".join(f"{kind} {len(values)} p50/p99 {percentile(values, 50):.2f}/"
                        f"{percentile(values, 99):.2f} ms" for kind, values in latencies.items())
    expect(failures == 0, f"{failures} rounds failed ({summary})")
    return summary


def percentile(values: list[float], which: int) -> float:
    if len(values) < 2:
        return 1000 * (values[0] if values else 0.0)
    return 1000 * statistics.quantiles(values, n=100, method="inclusive")[which - 1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="Envoy's address")
    parser.add_argument("--config", type=Path, required=True, help="the sidecar's TOML")
    parser.add_argument("--seconds", type=float, default=10.0, help="of steady traffic")
    args = parser.parse_args()
    plugins = load_config(args.config).plugins
    keys = {user: key for key, user in (pair.split(":") for pair in
                                        plugins["http-auth"].config["keys"].split(","))}
    rate_limit = plugins["http-rate-limit"].config
    limit = int(rate_limit["limit"])
    http_interval = RATE_MARGIN * int(rate_limit["window-ms"]) / 1000 / limit
    pod = Pod(args.host, keys)
    wait_until_served(pod)
    checks: dict[str, Callable[[], str]] = {
        "redis-firewall": lambda: check_redis_firewall(pod),
        "http-auth": lambda: check_auth(pod),
        "http-rate-limit": lambda: check_rate_limit(pod, limit),
        f"steady traffic, {args.seconds:g} s": lambda: steady(pod, args.seconds, http_interval),
    }
    failed = 0
    for name, check in checks.items():
        try:
            print(f"ok    {name}: {check()}", flush=True)
        except (CheckFailed, OSError) as problem:
            failed += 1
            print(f"FAIL  {name}: {problem}", flush=True)
    print(f"{len(checks) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
