"""The pod's scripted scenario, seen from the client namespace. Redis and HTTP traffic flows
the whole time; over it, in order: what the client can reach, the Redis firewall, API-key
authentication, a rate limit, a reload that brings in a hostile plugin, and that plugin's
misbehaviour. Each step is a check that passes or fails with what was observed."""

from __future__ import annotations

import functools
import json
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TypeVar

from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.text import Text

from sidecar.pod.clients import Outside, Samples
from sidecar.pod.resp import RedisConnection, RedisError, encode_command
from sidecar.pod.stack import (
    ADMIN_PORT,
    API_KEYS,
    ENVOY_HTTP_PORT,
    ENVOY_REDIS_PORT,
    METRICS_PORT,
    RATE_LIMIT,
    RATE_WINDOW_MS,
    REDIS_PORT,
    WORKERS,
    Pod,
    SidecarMetrics,
)

# The steady traffic: bounded in time (the scenario's) and in count.
REDIS_INTERVAL = 0.02  # between two SET + GET pairs
COMMANDS_PER_CONNECTION = 20  # then a new connection: a new stream, new sandboxes
HTTP_INTERVAL = 0.15  # alice: 33 requests per rate window, under the limit of 40
MAX_STEADY_OPS = 100_000
# Bob's burst: three times the limit, from a few threads at once.
BURST = 3 * RATE_LIMIT
BURST_THREADS = 4
ATTACK_INTERVAL = 0.4
MAX_ATTACKS = 60
TCP_TRIGGERS = ("loop", "trap", "hog", "oob")  # see tests/plugins/faulty/manifest.toml
HTTP_TRIGGERS = ("loop", "trap")
STEP_SECONDS = 60.0  # the longest any one step waits for the client threads
CANARY = ("pod:canary", b"still here")
SEGMENT_GAP_SECONDS = 0.1
# The redis-firewall's error reply for a refused command ("-ERR FLUSHALL is not allowed").
FIREWALL_REFUSAL = "is not allowed"
T = TypeVar("T")


@dataclass(frozen=True)
class Check:
    key: str
    title: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class RateLimitSeen:
    requests: int
    passed: int
    limited: int
    seconds: float

    @property
    def in_one_window(self) -> bool:
        return self.seconds * 1000 < RATE_WINDOW_MS

    def meaning(self) -> str:
        if self.passed == RATE_LIMIT:
            return f"one count for the whole pod, shared by its {WORKERS} workers"
        if self.in_one_window:
            return "more passed than the limit: the workers did not share one count"
        return "the burst spanned two windows"


@dataclass
class Observations:
    seconds: float
    samples: Samples
    checks: list[Check] = field(default_factory=list)
    marks: list[tuple[float, str]] = field(default_factory=list)  # (at, phase) as it began
    rate_limit: RateLimitSeen | None = None
    attacks: Counter[str] = field(default_factory=Counter)  # "tcp loop" → times
    contained: int = 0
    attack_times: list[float] = field(default_factory=list)
    hostile_from: float | None = None  # when the hostile plugin began serving
    hostile_until: float | None = None
    metrics_at_reload: SidecarMetrics | None = None
    metrics_at_end: SidecarMetrics | None = None
    restarts: int = 0


class Scenario:
    def __init__(self, pod: Pod, outside: Outside, seconds: float, console: Console) -> None:
        self.pod = pod
        self.outside = outside
        self.console = console
        self.seen = Observations(seconds, Samples())
        self.phase = "starting"

    # --- the script -----------------------------------------------------------------------

    def run(self) -> Observations:
        steady = [self.outside.submit(self._redis_traffic), self.outside.submit(self._web_traffic)]
        with Live(get_renderable=self._status, console=self.console, refresh_per_second=4,
                  transient=True):
            self._step(0.0, "reachability", self._reachability)
            self._step(0.10, "redis firewall", self._firewall)
            self._step(0.20, "authentication", self._authentication)
            self._step(0.30, "rate limit", self._rate_limit)
            self._step(0.50, "reload", self._reload)
            self._step(0.55, "hostile plugin", self._attacks)
            self._until(1.0)
            self._mark("end")
            self.outside.stopping.set()
            for load in steady:
                load.result(STEP_SECONDS)
        self.seen.restarts = self.pod.restarts()
        self._flow()
        self.seen.metrics_at_end = self.pod.scrape()
        return self.seen

    def _until(self, fraction: float) -> None:
        delay = fraction * self.seen.seconds - self.seen.samples.now()
        if delay > 0:
            time.sleep(delay)

    def _mark(self, phase: str) -> None:
        self.phase = phase
        self.seen.marks.append((self.seen.samples.now(), phase))

    def _step(self, fraction: float, phase: str, step: Callable[[], None]) -> None:
        self._until(fraction)
        self._mark(phase)
        try:
            step()
        except Exception as exc:  # noqa: BLE001 - a step that breaks is a failed check
            self._check(phase.replace(" ", "-"), phase, False, f"{type(exc).__name__}: {exc}")

    def _check(self, key: str, title: str, ok: bool, detail: str) -> None:
        self.seen.checks.append(Check(key, title, ok, detail))
        mark = "[green]✓[/]" if ok else "[red]✗[/]"
        self.console.print(f"{mark} [bold]{escape(title)}[/]: {escape(detail)}")

    def _in_client(self, work: Callable[[], T]) -> T:
        return self.outside.submit(work).result(STEP_SECONDS)

    def _status(self) -> Text:
        samples = self.seen.samples
        now = samples.now()
        recent = sorted(s.ms for s in samples.items[-400:] if s.at > now - 1 and s.ok)
        tally = Counter((s.kind, s.ok) for s in samples.items)
        latency = (f"last second p50 {recent[len(recent) // 2]:.1f} ms, "
                   f"p99 {recent[int(len(recent) * 0.99)]:.1f} ms" if recent else "")
        return Text(f"{now:5.1f} / {self.seen.seconds:g} s  {self.phase:<15} redis "
                    f"{tally['redis', True]} ok {tally['redis', False]} failed · http "
                    f"{tally['http', True]} ok {tally['http', False]} failed · {latency}",
                    style="dim")

    # --- the steady traffic ---------------------------------------------------------------

    def _redis_traffic(self) -> None:
        connection: RedisConnection | None = None
        for op in range(MAX_STEADY_OPS):
            if self.outside.stopping.is_set():
                break
            if connection is None or op % COMMANDS_PER_CONNECTION == 0:
                if connection is not None:
                    connection.close()
                connection = self._redis_connection()
            key, value = f"pod:key:{op % 100}", f"value-{op}".encode()
            for command in (("SET", key, value), ("GET", key)):
                with self.seen.samples.timed("redis") as outcome:
                    try:
                        reply = connection.command(*command) if connection else None
                    except (OSError, RedisError):
                        connection = None
                        break
                    outcome.append(reply == (b"OK" if command[0] == "SET" else value))
            self.outside.stopping.wait(REDIS_INTERVAL)
        if connection is not None:
            connection.close()

    def _redis_connection(self) -> RedisConnection | None:
        try:
            return self.outside.redis(ENVOY_REDIS_PORT)
        except OSError:
            return None

    def _web_traffic(self) -> None:
        for op in range(MAX_STEADY_OPS):
            if self.outside.stopping.is_set():
                break
            with self.seen.samples.timed("http") as outcome:
                try:
                    status, body = self.outside.http(ENVOY_HTTP_PORT, f"/orders/{op}",
                                                     {"x-api-key": API_KEYS["alice"]})
                    outcome.append(status == 200 and json.loads(body).get("user") == "alice")
                except (OSError, ValueError):  # no answer, or not the application's
                    pass
            self.outside.stopping.wait(HTTP_INTERVAL)

    # --- the checks -----------------------------------------------------------------------

    def _reachability(self) -> None:
        pod_ip = self.outside.network.pod_ip
        envoy = {f"Envoy's Redis listener {pod_ip}:{ENVOY_REDIS_PORT}": (ENVOY_REDIS_PORT, None),
                 f"Envoy's HTTP listener {pod_ip}:{ENVOY_HTTP_PORT}": (ENVOY_HTTP_PORT, None)}
        inside = {f"Redis :{REDIS_PORT}": (REDIS_PORT, None),
                  f"the application :{self.pod.app_port}": (self.pod.app_port, None),
                  f"Envoy's admin :{ADMIN_PORT}": (ADMIN_PORT, None),
                  f"the sidecar's metrics :{METRICS_PORT}": (METRICS_PORT, None),
                  f"Redis on the client's own 127.0.0.1:{REDIS_PORT}": (REDIS_PORT, "127.0.0.1")}

        def probe() -> tuple[list[str], list[str]]:
            unreachable = [name for name, (port, host) in envoy.items()
                           if not self.outside.reachable(port, host)]
            reachable = [name for name, (port, host) in inside.items()
                         if self.outside.reachable(port, host)]
            return unreachable, reachable

        unreachable, reachable = self._in_client(probe)
        problems = [f"{name} unreachable" for name in unreachable] + [
            f"{name} reachable" for name in reachable]
        self._check("reachability", "the client reaches only Envoy's listeners",
                    not problems, "; ".join(problems) or
                    f"{len(envoy)} listeners reachable; refused: {', '.join(inside)}")

    def _firewall(self) -> None:
        def attempts() -> tuple[object, list[tuple[str, bool]], object]:
            key, value = CANARY
            first = self.outside.redis(ENVOY_REDIS_PORT)
            stored = first.command("SET", key, value)
            first.close()
            flushall = encode_command("FLUSHALL")
            cut = flushall.index(b"ALL")
            tried = [(name, self._refused(*segments)) for name, segments in (
                ("FLUSHALL", [flushall]),
                ("CONFIG GET dir", [encode_command("CONFIG", "GET", "dir")]),
                ("flushall (inline)", [b"flushall\r\n"]),
                ("FLUSHALL split in two segments", [flushall[:cut], flushall[cut:]]))]
            after = self.outside.redis(ENVOY_REDIS_PORT)
            kept = after.command("GET", key)
            after.close()
            return stored, tried, kept

        stored, tried, kept = self._in_client(attempts)
        self._check("redis-passes", "Redis commands pass", stored == b"OK",
                    f"SET {CANARY[0]} through Envoy: {stored!r}")
        closed = [name for name, refused in tried if refused]
        self._check("firewall-refuses", "forbidden Redis commands are refused",
                    len(closed) == len(tried) and kept == CANARY[1],
                    f"refused: {', '.join(closed) or 'none'} of {len(tried)}; "
                    f"the data survived: GET {CANARY[0]} → {kept!r}")

    def _refused(self, *segments: bytes) -> bool:
        """Whether the command was refused instead of answered by Redis: the firewall's error
        reply, or the connection closed. Segments are sent apart, so that each is its own
        data event."""
        connection = self.outside.redis(ENVOY_REDIS_PORT)
        try:
            for n, segment in enumerate(segments):
                if n:
                    time.sleep(SEGMENT_GAP_SECONDS)
                connection.send(segment)
            connection.reply()
        except (ConnectionError, TimeoutError):
            return True
        except RedisError as error:
            return FIREWALL_REFUSAL in str(error)
        finally:
            connection.close()
        return False

    def _authentication(self) -> None:
        def requests() -> list[tuple[str, int]]:
            cases: list[tuple[str, dict[str, str]]] = [
                ("no key", {}), ("a wrong key", {"x-api-key": "guess"}),
                ("alice's key", {"x-api-key": API_KEYS["alice"]})]
            return [(name, self.outside.http(ENVOY_HTTP_PORT, "/account", headers)[0])
                    for name, headers in cases]

        statuses = self._in_client(requests)
        self._check("auth-401", "unauthenticated HTTP requests get 401",
                    [status for _, status in statuses] == [401, 401, 200],
                    ", ".join(f"{name} → {status}" for name, status in statuses))

    def _rate_limit(self) -> None:
        def burst_part(count: int) -> list[int]:
            return [self.outside.http(ENVOY_HTTP_PORT, "/search",
                                      {"x-api-key": API_KEYS["bob"]})[0] for _ in range(count)]

        start = time.perf_counter()
        parts: list[Future[list[int]]] = [
            self.outside.submit(burst_part, BURST // BURST_THREADS) for _ in range(BURST_THREADS)]
        statuses = Counter(status for part in parts for status in part.result(STEP_SECONDS))
        seen = RateLimitSeen(sum(statuses.values()), statuses[200], statuses[429],
                             time.perf_counter() - start)
        self.seen.rate_limit = seen
        self._check("rate-limit-429", "a rate limit kicks in",
                    seen.passed + seen.limited == seen.requests and (
                        seen.passed == RATE_LIMIT if seen.in_one_window
                        else RATE_LIMIT < seen.passed <= 2 * RATE_LIMIT),
                    f"bob, {seen.requests} requests in {seen.seconds:.2f} s (limit {RATE_LIMIT} "
                    f"per {RATE_WINDOW_MS / 1000:g} s): {seen.passed} passed, {seen.limited} got "
                    f"429: {seen.meaning()}")

    def _reload(self) -> None:
        self.seen.metrics_at_reload = self.pod.scrape()
        self.pod.reload_with_hostile_plugin()
        self.seen.hostile_from = self.seen.samples.now()
        self._check("reload", "the hostile plugin is loaded mid-way", True,
                    "config swapped and `hyperfilter reload`: every worker reloaded; new "
                    "connections and requests run redis → redis-firewall → hostile, web → "
                    "http-auth → http-rate-limit → hostile")

    def _attacks(self) -> None:
        attacks = [("tcp", trigger) for trigger in TCP_TRIGGERS] + [
            ("http", trigger) for trigger in HTTP_TRIGGERS]
        end = 0.9 * self.seen.seconds
        for n in range(MAX_ATTACKS):
            if n >= len(attacks) and self.seen.samples.now() >= end:
                break  # every kind tried at least once
            kind, trigger = attacks[n % len(attacks)]
            self.seen.attack_times.append(self.seen.samples.now())
            contained = self._in_client(functools.partial(self._attack, kind, trigger))
            self.seen.attacks[f"{kind} {trigger}"] += 1
            self.seen.contained += bool(contained)
            time.sleep(ATTACK_INTERVAL)
        self.seen.hostile_until = self.seen.samples.now()

    def _attack(self, kind: str, trigger: str) -> bool:
        """One misbehaviour; whether the sidecar ended that stream (and the steady traffic
        shows that it ended no other)."""
        if kind == "tcp":
            return self._refused(encode_command("SET", "attack", trigger))
        status, _ = self.outside.http(ENVOY_HTTP_PORT, "/account",
                                      {"x-api-key": API_KEYS["mallory"], "x-fault": trigger})
        return status == 500  # the chain failed closed: this request only

    def _flow(self) -> None:
        seen = self.seen
        items = seen.samples.items
        tally = Counter((s.kind, s.ok) for s in items)
        start = seen.hostile_from if seen.hostile_from is not None else float("inf")
        until = seen.hostile_until if seen.hostile_until is not None else start
        during = [s for s in items if start <= s.at <= until]
        failed_during = sum(not s.ok for s in during)
        self._check("traffic-flows", "Redis and HTTP traffic passes throughout",
                    tally["redis", True] > 0 and tally["http", True] > 0
                    and tally["redis", False] + tally["http", False] == 0,
                    f"Redis {tally['redis', True]} ok, {tally['redis', False]} failed; HTTP "
                    f"{tally['http', True]} ok, {tally['http', False]} failed")
        attacks = sum(seen.attacks.values())
        self._check("hostile-contained", "the hostile plugin is contained",
                    attacks > 0 and seen.contained == attacks and not failed_during
                    and bool(during) and seen.restarts == 0,
                    f"{seen.contained} of {attacks} misbehaviours ({', '.join(seen.attacks)}) "
                    f"ended their own connection or request; meanwhile {len(during)} ordinary "
                    f"commands and requests, {failed_during} failed; workers restarted: "
                    f"{seen.restarts}")
