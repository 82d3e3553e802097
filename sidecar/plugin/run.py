"""`hyperfilter plugin run DIR`: the plugin behind the real Envoy on free loopback ports, as
`hyperfilter demo` runs the examples: a TCP listener in front of an echo server and/or an HTTP
listener in front of a small app (whichever protocols the manifest's events are about), the
sidecar serving this one plugin. It prints where to point a client, then one line per verdict
the plugin gives, until SIGINT (Ctrl-C) or SIGTERM stops everything; exit 0 then, 2 when
something cannot start."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from sidecar.app import Sidecar
from sidecar.config import TIERS, ConfigError, SidecarConfig, parse_config
from sidecar.demo import describe
from sidecar.envoy import (
    FULL_DUPLEX,
    Envoy,
    EnvoyError,
    HttpListener,
    Listener,
    TcpListener,
    Upstream,
    check_body_mode,
    render_bootstrap,
)
from sidecar.streams import Decision, StreamPlugins
from sidecar.upstreams import EchoServer, HttpUpstream
from vmm.errors import PluginLoadError
from vmm.events import Direction, EventKind
from vmm.manifest import Manifest, load_manifest

TCP_LISTENER, HTTP_LISTENER = "tcp", "http"
DEFAULT_BODY_MODE = "BUFFERED"  # a whole body per event: what most plugins expect
PLUGIN_LOGGER = "hyperfilter.plugin"  # where the plugin's `log` grant writes


class VerdictLog:
    """An observer printing each decision of the plugin: stream, event, verdict, time."""

    def __init__(self, console: Console) -> None:
        self._console = console

    def stream_started(self, stream: StreamPlugins) -> None:
        pass

    def decided(self, decision: Decision) -> None:
        arrow = "←" if decision.direction is Direction.OUTBOUND else "→"
        took = f"{decision.seconds * 1000:.2f} ms"
        self._console.print(f"stream {decision.stream} {decision.event.value} {arrow} "
                            f"{escape(describe(decision))} ({took})", highlight=False,
                            soft_wrap=True)


@dataclass(frozen=True)
class Options:
    directory: Path
    tier: str = "wasmtime"
    body_mode: str = DEFAULT_BODY_MODE


def sidecar_config(options: Options, manifest: Manifest) -> SidecarConfig:
    return parse_config({
        "listen": "127.0.0.1:0",
        "plugins": {manifest.name: {"path": str(options.directory.resolve()),
                                    "tier": options.tier}},
        "shared-state": {"backend": "memory"},
    }, Path("."))


def listeners(manifest: Manifest, body_mode: str, echo_port: int | None,
              web_port: int | None) -> list[Listener]:
    """A listener per protocol the plugin serves; bodies and trailers sent to the sidecar
    only in the directions the plugin wants them."""
    found: list[Listener] = []
    if echo_port is not None:
        found.append(TcpListener(TCP_LISTENER, manifest.name, Upstream("127.0.0.1", echo_port)))
    if web_port is not None:
        def mode(kind: EventKind) -> str:
            return body_mode if manifest.wants(kind) else "NONE"

        trailers = (manifest.wants(EventKind.HTTP_REQUEST_TRAILERS)
                    or manifest.wants(EventKind.HTTP_RESPONSE_TRAILERS)
                    or body_mode == FULL_DUPLEX)  # which Envoy asks trailers for
        found.append(HttpListener(
            HTTP_LISTENER, manifest.name, Upstream("127.0.0.1", web_port),
            request_body_mode=mode(EventKind.HTTP_REQUEST_BODY),
            response_body_mode=mode(EventKind.HTTP_RESPONSE_BODY),
            trailer_mode="SEND" if trailers else "SKIP"))
    return found


@contextlib.asynccontextmanager
async def running(options: Options, manifest: Manifest, sidecar: Sidecar,
                  console: Console) -> AsyncIterator[Envoy]:
    """The sidecar serving, upstreams and Envoy running; all stopped on the way out."""
    echo = EchoServer() if manifest.handles("tcp") else None
    web = HttpUpstream() if manifest.handles("http") else None
    envoy: Envoy | None = None
    try:
        sidecar_port = await sidecar.start()
        echo_port = await echo.start() if echo is not None else None
        web_port = web.start() if web is not None else None
        bootstrap = render_bootstrap([("127.0.0.1", sidecar_port)],
                                     listeners(manifest, options.body_mode, echo_port,
                                               web_port))
        with console.status("starting Envoy"):
            envoy = await asyncio.to_thread(Envoy(bootstrap).start)
        yield envoy
    finally:
        if envoy is not None:
            await asyncio.to_thread(envoy.stop)
        await sidecar.stop()
        if echo is not None:
            await echo.stop()
        if web is not None:
            web.stop()


def _where(envoy: Envoy, sidecar: Sidecar) -> list[str]:
    lines = []
    if TCP_LISTENER in envoy.listener_ports:
        lines.append(f"TCP:  nc 127.0.0.1 {envoy.listener_ports[TCP_LISTENER]}   (the upstream "
                     "echoes what it receives)")
    if HTTP_LISTENER in envoy.listener_ports:
        lines.append(f"HTTP: curl http://127.0.0.1:{envoy.listener_ports[HTTP_LISTENER]}/   "
                     "(the upstream answers JSON describing the request; POST /echo echoes "
                     "the body)")
    lines.append(f"(Envoy's admin on :{envoy.admin_port}, the sidecar on :{sidecar.port})")
    return lines


async def serve(options: Options, manifest: Manifest, sidecar: Sidecar,
                console: Console) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with running(options, manifest, sidecar, console) as envoy:
        plugin = sidecar.registry.plugins[0]
        console.print(f"{plugin.name} ({plugin.kind} on {plugin.tier}) behind Envoy; point a "
                      "client at:", highlight=False)
        for line in _where(envoy, sidecar):
            console.print(f"  {line}", highlight=False, soft_wrap=True)
        console.print("Its verdicts follow (→ from the client, ← from the upstream). Ctrl-C "
                      "stops.", highlight=False)
        await stop.wait()
    console.print("stopped", highlight=False)


def main(options: Options, console: Console, err: Console) -> int:
    def fail(message: str) -> int:
        err.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
        return 2

    if options.tier not in TIERS:
        return fail(f"--tier: {options.tier!r} is not one of {', '.join(TIERS)}")
    try:
        manifest = load_manifest(options.directory)
        config = sidecar_config(options, manifest)
        check_body_mode(options.body_mode)
        with err.status(f"loading {options.directory} on {options.tier} (a first load "
                        "compiles it)"):
            sidecar = Sidecar(config, observers=(VerdictLog(console),))
    except ValueError as exc:
        return fail(f"--body-mode: {exc}")
    except (PluginLoadError, ConfigError) as exc:
        return fail(str(exc))
    logging.getLogger(PLUGIN_LOGGER).setLevel(logging.INFO)  # all its own lines, too
    try:
        asyncio.run(serve(options, manifest, sidecar, console))
    except (EnvoyError, OSError) as exc:
        return fail(str(exc))
    return 0
