"""`hyperfilter pod`: the pod made, the scenario run against it, the report written, and
everything torn down again: on success, on failure, on Ctrl-C and on SIGTERM."""

from __future__ import annotations

import contextlib
import shutil
import signal
import tempfile
from pathlib import Path
from types import FrameType

from rich.console import Console

from sidecar.envoy import envoy_binary
from sidecar.pod import netns
from sidecar.pod.clients import Outside
from sidecar.pod.report import plot, summary, table, write_json
from sidecar.pod.scenario import Scenario
from sidecar.pod.stack import Pod

MIN_SECONDS = 8.0


class Stopped(Exception):
    """SIGTERM: torn down as for Ctrl-C."""


def _stop(signum: int, frame: FrameType | None) -> None:
    raise Stopped(signal.Signals(signum).name)


def missing() -> str | None:
    """What this machine lacks for the pod, or None."""
    reason = netns.unavailable()
    if reason is not None:
        return reason
    if shutil.which("redis-server") is None:
        return "no redis-server (Debian: apt-get install redis-server; `make pod` does it)"
    try:
        envoy_binary()
    except FileNotFoundError as exc:
        return str(exc)
    return None


def _keep_logs(workdir: Path, logs: Path) -> None:
    logs.mkdir(exist_ok=True)
    for log in workdir.glob("*.log"):
        shutil.copy(log, logs / log.name)


def main(seconds: float, out: Path, console: Console | None = None) -> int:
    console = console or Console()
    reason = missing()
    if reason is not None:
        console.print(f"[bold red]hyperfilter pod cannot run:[/] {reason}")
        return 1
    out.mkdir(parents=True, exist_ok=True)
    previous = signal.signal(signal.SIGTERM, _stop)
    network = netns.PodNetwork.unique()
    teardown = contextlib.ExitStack()
    try:
        return _run(max(seconds, MIN_SECONDS), out, console, network, teardown)
    except (KeyboardInterrupt, Stopped) as exc:
        console.print(f"[yellow]interrupted ({exc or 'Ctrl-C'}); tearing down[/]")
        return 130
    except Exception as exc:  # noqa: BLE001 - said, then torn down
        console.print(f"[bold red]the pod failed:[/] {type(exc).__name__}: {exc}")
        return 1
    finally:
        held = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT,
                                                                    signal.SIGTERM)}
        try:
            teardown.close()  # in reverse: traffic, processes, namespaces, files
            console.print(f"torn down: every process stopped, {network.pod.name} and "
                          f"{network.client.name} deleted")
        finally:
            for sig, handler in held.items():
                signal.signal(sig, handler)
            signal.signal(signal.SIGTERM, previous)


def _run(seconds: float, out: Path, console: Console, network: netns.PodNetwork,
         teardown: contextlib.ExitStack) -> int:
    workdir = Path(teardown.enter_context(tempfile.TemporaryDirectory(prefix="hyperfilter-pod-")))
    teardown.callback(network.delete)
    teardown.callback(_keep_logs, workdir, out / "logs")
    network.create()
    console.print(f"network: {network.pod.name} ({network.pod_ip}) ⇄ {network.client.name} "
                  f"({network.client_ip}) over veth {' ⇄ '.join(network.veth)}")
    pod = Pod(network, workdir)
    teardown.callback(pod.stop)
    with console.status("starting the pod (a first start compiles the plugins)"):
        pod.start(lambda line: console.print(f"  {line}"))
    outside = Outside(network)
    teardown.callback(outside.close)
    console.print(f"[bold]scenario[/]: {seconds:g} s of Redis and HTTP traffic from "
                  f"{network.client.name}")
    seen = Scenario(pod, outside, seconds, console).run()
    outside.close()
    result = summary(seen)
    write_json(result, out / "summary.json")
    console.print(table(result))
    why_not = plot(seen, out / "latency.png")
    console.print(f"written: {out / 'summary.json'}" + (
        f", {out / 'latency.png'}" if why_not is None else f" (no plot: {why_not})")
        + f"; the processes' logs go to {out / 'logs'}")
    return 0 if all(check["ok"] for check in result["checks"].values()) else 1
