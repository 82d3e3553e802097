"""`hyperfilter demo`: the real Envoy, the sidecar with the example plugins, and local upstreams,
all on free loopback ports. A few TCP connections and HTTP requests go through; for each, the
demo shows what was sent, what came back and what every plugin decided, checks it is what the
plugins promise, and shuts everything down."""

from __future__ import annotations

import asyncio
import dataclasses
import http.client
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from rich.console import Console
from rich.table import Table

from sidecar.app import Sidecar
from sidecar.config import load_config
from sidecar.envoy import Envoy, HttpListener, TcpListener, Upstream, render_bootstrap
from sidecar.metrics import verdict_name
from sidecar.plugin.files import PLUGINS_DIR
from sidecar.streams import Decision, DecisionRecorder
from sidecar.upstreams import EchoServer, HttpUpstream
from vmm.events import Direction, HttpForward, Replace, Respond

DEMO_CONFIG = PLUGINS_DIR / "examples" / "sidecar.toml"
SECRET = b"hunter2"


def describe(decision: Decision) -> str:
    if decision.fault is not None:
        return f"fault ({decision.fault.cause})"
    verdict = decision.verdict
    if isinstance(verdict, Replace):
        return f"replace ({len(verdict.data)} bytes)"
    if isinstance(verdict, Respond):
        return f"respond {verdict.status}"
    if isinstance(verdict, HttpForward) and not verdict.mutation.is_empty:
        m = verdict.mutation
        changes = [f"+{name}" for name, _ in m.set_headers] + [f"-{n}" for n in m.remove_headers]
        if m.body is not None:
            changes.append("new body")
        return f"forward ({' '.join(changes)})"
    return verdict_name(verdict)


def summarize(decisions: list[Decision]) -> str:
    """Per plugin, its decisions in order (→ the client's side, ← the upstream's), repeats
    counted."""
    by_plugin: dict[str, list[tuple[str, int]]] = {}
    for decision in decisions:
        arrow = "←" if decision.direction is Direction.OUTBOUND else "→"
        entry = f"{arrow} {describe(decision)}"
        runs = by_plugin.setdefault(decision.plugin, [])
        if runs and runs[-1][0] == entry:
            runs[-1] = (entry, runs[-1][1] + 1)
        else:
            runs.append((entry, 1))
    return "\n".join(
        f"{plugin}: " + ", ".join(f"{entry} ×{n}" if n > 1 else entry for entry, n in runs)
        for plugin, runs in by_plugin.items())


@dataclass
class Outcome:
    sent: str
    received: str
    ok: bool
    decisions: list[Decision] = field(default_factory=list)


@dataclass
class Ports:
    tcp: int
    http: int
    echo: EchoServer
    web: HttpUpstream


async def tcp_exchange(port: int, messages: list[bytes]) -> tuple[list[bytes], bool]:
    """Send each message and read the answer; stops when the connection closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    replies, closed = [], False
    try:
        for message in messages:
            writer.write(message)
            await writer.drain()
            reply = await asyncio.wait_for(reader.read(65536), timeout=5)
            if not reply:
                closed = True
                break
            replies.append(reply)
    finally:
        writer.close()
    return replies, closed


def http_get(port: int, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _show(data: bytes | list[bytes]) -> str:
    chunks = data if isinstance(data, list) else [data]
    return " | ".join(chunk.decode(errors="replace").strip() for chunk in chunks)


async def plain_bytes(p: Ports) -> Outcome:
    replies, closed = await tcp_exchange(p.tcp, [b"hello upstream\n"])
    ok = replies == [b"hello upstream\n"] and not closed
    return Outcome("hello upstream", _show(replies), ok)


async def secret_both_ways(p: Ports) -> Outcome:
    replies, _ = await tcp_exchange(p.tcp, [b"my password is hunter2\n", b"SECRET?\n"])
    upstream_saw = bytes(p.echo.received[-1])
    ok = (SECRET not in b"".join(replies) and SECRET not in upstream_saw
          and replies[-1:] == [b"the secret is *******\n"])
    return Outcome("my password is hunter2 | SECRET?",
                   f"{_show(replies)}\n(upstream saw: {_show(upstream_saw)})", ok)


async def forbidden_pattern(p: Ports) -> Outcome:
    messages = [b"hi\n", b"DROP TABLE users;\n", b"still there?\n"]
    replies, closed = await tcp_exchange(p.tcp, messages)
    return Outcome("hi | DROP TABLE users; | still there?",
                   f"{_show(replies)} | (connection closed)" if closed else _show(replies),
                   closed and replies == [b"hi\n"])


async def split_pattern(p: Ports) -> Outcome:
    replies, closed = await tcp_exchange(p.tcp, [b"x DROP ", b"TABLE users;\n"])
    upstream_saw = bytes(p.echo.received[-1])
    return Outcome("x DROP  | TABLE users;",
                   f"{_show(replies)} | (connection closed)\n(upstream saw: {_show(upstream_saw)})",
                   closed and b"TABLE" not in upstream_saw)


async def _get(p: Ports, headers: dict[str, str]) -> tuple[int, bytes]:
    return await asyncio.to_thread(http_get, p.http, "/account", headers)


async def no_key(p: Ports) -> Outcome:
    status, body = await _get(p, {})
    return Outcome("GET /account", f"{status} {_show(body)}", status == 401)


async def wrong_key(p: Ports) -> Outcome:
    status, body = await _get(p, {"x-api-key": "guess"})
    return Outcome("GET /account x-api-key: guess", f"{status} {_show(body)}", status == 401)


async def right_key(p: Ports) -> Outcome:
    status, body = await _get(p, {"x-api-key": "k-alice-123"})
    answer = json.loads(body) if status == 200 else {}
    card = str(answer.get("card", ""))
    upstream_headers = p.web.requests[-1]["headers"] if p.web.requests else {}
    ok = (status == 200 and answer.get("user") == "alice" and card.endswith("1111")
          and "*" in card and "x-api-key" not in upstream_headers)  # type: ignore[operator]
    return Outcome("GET /account x-api-key: k-alice-123", f"{status} {_show(body)}", ok)


SCENARIOS: list[tuple[str, Callable[[Ports], Awaitable[Outcome]]]] = [
    ("TCP: bytes pass through", plain_bytes),
    ("TCP: a secret is redacted both ways", secret_both_ways),
    ("TCP: a forbidden pattern closes the connection", forbidden_pattern),
    ("TCP: the pattern split across two segments", split_pattern),
    ("HTTP: no API key", no_key),
    ("HTTP: a wrong API key", wrong_key),
    ("HTTP: the right key; the card number is masked", right_key),
]


async def run_demo(console: Console) -> bool:
    config = dataclasses.replace(load_config(DEMO_CONFIG), listen="127.0.0.1:0", metrics=None)
    log = DecisionRecorder()
    loading = "loading the example plugins (a first load compiles them: on kvm, the Python " \
              "interpreter once, a minute or two)"
    with console.status(loading) as status:
        sidecar = Sidecar(config, observers=(log,), on_plugin=lambda entry: status.update(
            f"{loading}: {entry.name}"))
    console.print("plugins: " + ", ".join(f"{plugin.name} ({plugin.kind} on {plugin.tier})"
                                          for plugin in sidecar.registry.plugins))
    echo = EchoServer(replies={b"SECRET?": b"the secret is " + SECRET + b"\n"})
    web = HttpUpstream()
    envoy: Envoy | None = None
    try:
        sidecar_port = await sidecar.start()
        echo_port = await echo.start()
        web.start()
        bootstrap = render_bootstrap([("127.0.0.1", sidecar_port)], [
            TcpListener("tcp-guard", "tcp-guard", Upstream("127.0.0.1", echo_port)),
            HttpListener("http-api", "http-api", Upstream("127.0.0.1", web.port),
                         response_body_mode="BUFFERED"),
        ])
        with console.status("starting Envoy"):
            envoy = await asyncio.to_thread(Envoy(bootstrap).start)
        ports = Ports(envoy.listener_ports["tcp-guard"], envoy.listener_ports["http-api"],
                      echo, web)
        console.print(f"Envoy {ports.tcp}/tcp (chain tcp-guard), {ports.http}/http (chain "
                      f"http-api) → hyperfilter :{sidecar_port} → upstreams :{echo_port} "
                      f":{web.port}")
        outcomes = []
        for title, scenario in SCENARIOS:
            outcome = await scenario(ports)
            await asyncio.sleep(0.05)  # let the stream's last messages reach the sidecar
            outcome.decisions = log.take()
            outcomes.append((title, outcome))
    finally:
        if envoy is not None:
            await asyncio.to_thread(envoy.stop)
        await sidecar.stop()
        await echo.stop()
        web.stop()
    console.print(_table(outcomes))
    passed = sum(outcome.ok for _, outcome in outcomes)
    console.print(f"{passed} of {len(outcomes)} behaved as the plugins promise; "
                  "every connection and request ran in its own fresh sandbox.")
    return passed == len(outcomes)


def _table(outcomes: list[tuple[str, Outcome]]) -> Table:
    table = Table(title="hyperfilter demo", show_lines=True)
    for column in ("what", "sent", "got back", "the plugins decided", "ok"):
        table.add_column(column, overflow="fold")
    for title, outcome in outcomes:
        table.add_row(title, outcome.sent, outcome.received, summarize(outcome.decisions),
                      "[green]yes[/]" if outcome.ok else "[red]NO[/]")
    return table


def main(console: Console | None = None) -> int:
    return 0 if asyncio.run(run_demo(console or Console())) else 1

