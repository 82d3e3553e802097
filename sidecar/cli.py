"""The `hyperfilter` command."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, NoReturn

import typer
import uvloop
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape

from sidecar import demo as demo_module
from sidecar.app import EarlyReload, Sidecar, log_plugins
from sidecar.app import serve as serve_forever
from sidecar.config import LOG_FORMATS, ConfigError, SidecarConfig, load_config, parse_address
from sidecar.envoy import (
    FULL_DUPLEX,
    HttpListener,
    Listener,
    SidecarTls,
    TcpListener,
    Upstream,
    render_bootstrap,
)
from sidecar.logs import JsonLines, log_to_stderr
from sidecar.plugin.command import plugin_app
from sidecar.workers import Supervisor
from vmm.errors import PluginLoadError

app = typer.Typer(
    name="hyperfilter", no_args_is_help=True, add_completion=False,
    pretty_exceptions_enable=False,
    help="Sandboxed WebAssembly filters for Envoy: a fresh sandbox per connection and request.")
app.add_typer(plugin_app, name="plugin")
console = Console(stderr=True)
log = logging.getLogger("hyperfilter")
LISTENER_SPEC = "LISTEN_PORT/CHAIN/UPSTREAM_HOST:PORT"


def fail(message: str) -> NoReturn:
    console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    raise typer.Exit(2)


def setup_logging(level: str) -> None:
    """Rich on a terminal; one plain line per record anywhere else (files, CI, journald)."""
    if console.is_terminal:
        handler: logging.Handler = RichHandler(console=console, show_path=False)
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    else:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(
            "%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler])


def load_sidecar(config_path: Path) -> Sidecar:
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        fail(str(exc))
    try:
        with console.status("loading plugins") as status:
            return Sidecar(config, on_plugin=lambda entry: status.update(
                f"loading plugin {entry.name} (the first load compiles it)"))
    except PluginLoadError as exc:
        fail(str(exc))


@contextlib.contextmanager
def pid_file_written(path: Path | None) -> Iterator[None]:
    """`pid-file` holds this process's id while it serves, for `hyperfilter reload`."""
    if path is None:
        yield
        return
    pid = str(os.getpid())
    partial = path.with_name(f".{path.name}.{pid}")
    try:
        partial.write_text(f"{pid}\n")
        os.replace(partial, path)  # never half written
    except OSError as exc:
        raise OSError(f"pid-file {path}: {exc}") from None
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            if path.read_text().strip() == pid:  # not a newer sidecar's
                path.unlink()


@app.command()
def serve(
    config: Annotated[Path, typer.Option("--config", "-c", help="The sidecar's TOML config.")],
    listen: Annotated[str | None, typer.Option(
        help="host:port or unix:/path, overriding `listen`.")] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
    log_format: Annotated[str | None, typer.Option(
        help="text, or json: one JSON object a line (time, level, worker, logger, message; "
             "stream on lines about a stream); overrides `log-format`.")] = None,
) -> None:
    """Serve Envoy's network and HTTP ext_proc, every stream in fresh sandboxes. SIGTERM
    drains, SIGHUP (`hyperfilter reload`) loads plugins and configuration again."""
    early = EarlyReload()  # before anything else: a SIGHUP must never kill the sidecar
    if log_format is None:
        try:  # read first: every line is in the format the configuration asks for
            log_format = load_config(config).log_format
        except ConfigError as exc:
            fail(str(exc))
    elif log_format not in LOG_FORMATS:
        fail(f"--log-format: {log_format!r}: expected text or json")
    if log_format == "json":
        log_to_stderr(log_level, JsonLines(worker=None))
    else:
        setup_logging(log_level)
    if listen is not None:
        try:
            parse_address(listen)
        except ValueError as exc:
            fail(f"--listen: {exc}")
    sidecar = load_sidecar(config)  # every plugin loaded and checked before anything listens
    log_plugins(sidecar.registry)
    workers = sidecar.config.workers
    metrics_host = (sidecar.config.metrics or "").rpartition(":")[0]
    tls = sidecar.config.tls
    security = "" if tls is None else "; TLS" if tls.client_ca is None else "; mTLS"

    def ready(address: str, metrics_port: int | None) -> None:
        if metrics_port is not None:
            log.info("metrics on http://%s:%d/metrics", metrics_host, metrics_port)
        log.info("listening on %s: network ext_proc, HTTP ext_proc, gRPC health%s", address,
                 security)

    try:
        with pid_file_written(sidecar.config.pid_file):
            if workers == 1:
                uvloop.run(serve_forever(sidecar, listen, ready, lambda: load_config(config),
                                         early))
                return
            sidecar.close()  # each worker loads its own, from the compile cache
            if sidecar.config.shared_state.backend == "memory" and any(
                    "shared-state" in p.manifest.grants for p in sidecar.registry.plugins):
                log.warning("shared-state backend memory: with %d workers, each keeps its "
                            "own store", workers)
            supervisor = Supervisor(config, sidecar.config, listen, log_level, log_format)
            for worker in supervisor.start():
                log.info("worker %d (pid %d) listening on %s", worker.index,
                         worker.process.pid, worker.listen)  # type: ignore[union-attr]
            if supervisor.metrics:
                log.info("metrics on http://%s/metrics: every worker's, summed",
                         supervisor.metrics)
            log.info("listening on %s: network ext_proc, HTTP ext_proc, gRPC health%s (%d "
                     "workers; give Envoy's cluster every one)",
                     ", ".join(w.listen for w in supervisor.workers), security, workers)
            supervisor.run()
    except OSError as exc:
        fail(str(exc))


def sidecar_pid(config: Path | None, pid: int | None) -> int:
    """The process `reload` signals: --pid, else the one in the configuration's pid-file."""
    if pid is None:
        if config is None:
            fail("give --config (whose pid-file names the sidecar) or --pid")
        try:
            pid_file = load_config(config).pid_file
        except ConfigError as exc:
            fail(str(exc))
        if pid_file is None:
            fail(f"{config} sets no pid-file: set one (serve writes it), or give --pid")
        try:
            pid = int(pid_file.read_text())
        except (OSError, ValueError) as exc:
            fail(f"pid-file {pid_file}: {exc} (is the sidecar running?)")
    cmdline = Path(f"/proc/{pid}/cmdline")
    try:
        if b"hyperfilter" not in cmdline.read_bytes():
            fail(f"process {pid} is not a hyperfilter sidecar (a stale pid-file?)")
    except FileNotFoundError:
        fail(f"no process {pid} (a stale pid-file?)")
    return pid


@app.command()
def reload(
    config: Annotated[Path | None, typer.Option(
        "--config", "-c", help="The sidecar's TOML config: its pid-file names the sidecar.")
    ] = None,
    pid: Annotated[int | None, typer.Option(
        help="The sidecar's process id (with workers, the parent's).")] = None,
) -> None:
    """Make a running sidecar load its configuration and plugins again (SIGHUP): new streams
    get the new set, open ones keep theirs; a set that fails to load is not used. The
    sidecar's log says which happened."""
    target = sidecar_pid(config, pid)
    try:
        os.kill(target, signal.SIGHUP)
    except OSError as exc:
        fail(f"cannot signal process {target}: {exc}")
    console.print(f"asked the sidecar (pid {target}) to reload; its log says how it went")


@app.command()
def health(
    address: Annotated[list[str] | None, typer.Option(
        envvar="HYPERFILTER_HEALTH_ADDRESS",
        help="Where a sidecar listens (host:port or unix:/path); once per worker. Default: "
             "$HYPERFILTER_HEALTH_ADDRESS (space-separated), else 127.0.0.1:50051.")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds each answer may take.")] = 2.0,
) -> None:
    """Ask sidecars' gRPC health service whether they serve (grpc.health.v1 Check): exit 0
    when every one answers SERVING, 1 otherwise, with one line saying what each answered."""
    from sidecar.health_check import check_all  # grpc's client only when asked

    healthy, line = check_all(address or [SidecarConfig.listen], timeout)
    print(line)
    raise typer.Exit(0 if healthy else 1)


@app.command()
def demo() -> None:
    """Envoy + sidecar + upstreams on free loopback ports: a few connections and requests,
    what each plugin decided, then everything shut down."""
    setup_logging("warning")
    raise typer.Exit(demo_module.main(Console()))


@app.command()
def pod(
    seconds: Annotated[float, typer.Option(help="How long the scenario runs (at least 8).")] = 30,
    out: Annotated[Path, typer.Option(
        help="Where summary.json and latency.png go.")] = Path(".cache/pod"),
) -> None:
    """The pod on this machine, without containers (needs root): network namespaces, Envoy,
    the sidecar, Redis and an HTTP application; a scripted scenario with live output, a
    summary and a latency plot; then everything torn down."""
    from sidecar.pod.run import main as run_pod

    setup_logging("warning")
    raise typer.Exit(run_pod(seconds, out, Console()))


@app.command()
def fuzz(
    plugin_dir: Annotated[Path, typer.Argument(help="The plugin's directory (its manifest).")],
    tier: Annotated[str, typer.Option(help="wasmtime or kvm.")] = "wasmtime",
    time: Annotated[str, typer.Option(help="How long: 60s, 5m, 500ms.")] = "60s",
    events: Annotated[int | None, typer.Option(help="Stop after this many events.")] = None,
    seed: Annotated[int | None, typer.Option(help="The run's seed (printed).")] = None,
    corpus: Annotated[Path | None, typer.Option(
        help="Cases to start from, and where new ones and findings go.")] = None,
    property: Annotated[Path | None, typer.Option(
        help="A Python file of property_… predicates over a case and its outcome.")] = None,
    replay: Annotated[Path | None, typer.Option(help="Run one saved case and check it.")] = None,
    coverage: Annotated[bool, typer.Option(
        help="Count what the plugin runs (core modules) and follow it.")] = True,
) -> None:
    """Fuzz a plugin in its real sandbox, through the sidecar's own session code: generated
    and mutated TCP or HTTP streams until one breaks a rule; that one minimized and saved."""
    from sidecar.fuzz.command import main as run_fuzz

    setup_logging("warning")
    raise typer.Exit(run_fuzz(plugin_dir, tier, time, events, seed, corpus, property, replay,
                              coverage, Console()))


def _listener_spec(spec: str) -> tuple[int, str, Upstream]:
    """LISTEN_PORT/CHAIN/UPSTREAM_HOST:PORT as (port, chain, upstream)."""
    try:
        port, chain, upstream = spec.split("/")
        host, _, upstream_port = upstream.rpartition(":")
        return int(port), chain, Upstream(host, int(upstream_port))
    except ValueError:
        fail(f"{spec!r}: expected {LISTENER_SPEC}")


@app.command()
def bench(
    quick: Annotated[bool, typer.Option(help="A CI-sized run, under two minutes.")] = False,
) -> None:
    """Measure hyperfilter against Envoy alone, a naive ext_proc server and Envoy's own Wasm:
    bench/results/latest.json, latest.md and plots."""
    from bench.__main__ import main as run_bench  # matplotlib and friends only when asked

    raise typer.Exit(run_bench(["--quick"] if quick else []))


@app.command("envoy-config")
def envoy_config(
    tcp: Annotated[list[str] | None, typer.Option(help=f"TCP listener: {LISTENER_SPEC}")] = None,
    http: Annotated[list[str] | None, typer.Option(help=f"HTTP listener: {LISTENER_SPEC}")] = None,
    sidecar: Annotated[list[str] | None, typer.Option(
        help="Where the sidecar listens (host:port or unix:/path); once per worker.")] = None,
    sidecar_ca: Annotated[Path | None, typer.Option(
        help="TLS to the sidecar: the CA that signed its certificate.")] = None,
    sidecar_server_name: Annotated[str | None, typer.Option(
        help="TLS: the name the sidecar's certificate must carry (also sent as SNI).")] = None,
    client_cert: Annotated[Path | None, typer.Option(
        help="mTLS: Envoy's certificate, signed by the sidecar's client-ca.")] = None,
    client_key: Annotated[Path | None, typer.Option(help="mTLS: its private key.")] = None,
    admin_port: Annotated[int, typer.Option(help="Envoy's admin port.")] = 9901,
    request_body_mode: Annotated[str, typer.Option(help="HTTP request body mode.")] = "NONE",
    response_body_mode: Annotated[str, typer.Option(help="HTTP response body mode.")] = "NONE",
    inspect_tls: Annotated[bool, typer.Option(
        help="TCP listeners read the TLS server name (SNI) for the plugins' stream info; a "
             "protocol where the server speaks first then waits 15 s for nothing.")] = False,
) -> None:
    """Print an Envoy bootstrap attaching Envoy to a sidecar."""
    listeners: list[Listener] = []
    for spec in tcp or ():
        port, chain, upstream = _listener_spec(spec)
        listeners.append(TcpListener(f"tcplistener-{port}", chain, upstream, port,
                                     inspect_tls=inspect_tls))
    # Envoy asks for trailers to be sent in full-duplex mode.
    trailers = "SEND" if FULL_DUPLEX in (request_body_mode, response_body_mode) else "SKIP"
    for spec in http or ():
        port, chain, upstream = _listener_spec(spec)
        try:
            listeners.append(HttpListener(f"httplistener-{port}", chain, upstream, port,
                                          request_body_mode=request_body_mode,
                                          response_body_mode=response_body_mode,
                                          trailer_mode=trailers))
        except ValueError as exc:
            fail(f"--http {spec}: {exc}")
    if not listeners:
        fail("give at least one --tcp or --http listener")
    addresses = sidecar or ["127.0.0.1:50051"]
    for address in addresses:
        try:
            parse_address(address)
        except ValueError as exc:
            fail(f"--sidecar: {exc}")
    if (client_cert is None) != (client_key is None):
        fail("--client-cert and --client-key go together")
    if sidecar_ca is None and (client_cert or sidecar_server_name):
        fail("TLS options need --sidecar-ca")
    tls = None if sidecar_ca is None else SidecarTls(
        sidecar_ca.resolve(), sidecar_server_name, client_cert and client_cert.resolve(),
        client_key and client_key.resolve())
    print(render_bootstrap(addresses, listeners, admin_port, tls))


def main() -> None:
    app()
