"""`hyperfilter plugin ...`: the plugin author's commands."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape

from sidecar.plugin import check as check_module
from sidecar.plugin import run as run_module
from sidecar.plugin import tester
from sidecar.plugin.build import build_plugin
from sidecar.plugin.new import KINDS, new_plugin, template_languages
from sidecar.plugin.toolchain import BuildError, ToolchainMissing
from vmm.errors import PluginLoadError

plugin_app = typer.Typer(no_args_is_help=True, help="Write, build and try plugins.")
console = Console(stderr=True)
TierOption = Annotated[str, typer.Option(help="wasmtime or kvm.")]


@plugin_app.callback()
def _log_to_stderr() -> None:
    # Warnings, and the compile cache's lines: a first load may compile for 20 s.
    handler: logging.Handler = (RichHandler(console=console, show_path=False, show_time=False)
                                if console.is_terminal else logging.StreamHandler())
    handler.setFormatter(logging.Formatter("%(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    logging.getLogger("vmm.cache").setLevel(logging.INFO)


def fail(message: str) -> NoReturn:
    console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    raise typer.Exit(2)


@plugin_app.command("build")
def build(
    directories: Annotated[list[Path], typer.Argument(help="Plugin directories.")],
    force: Annotated[bool, typer.Option(help="Build even when the .wasm is up to date.")] = False,
    skip_missing_toolchains: Annotated[bool, typer.Option(
        help="Skip, saying so, a plugin whose language's toolchain is not installed.")] = False,
) -> None:
    """Build plugins from source with their language's toolchain."""
    for directory in directories:
        try:
            with console.status(f"building {directory}"):
                wasm, built = build_plugin(directory, force)
        except ToolchainMissing as exc:
            if not skip_missing_toolchains:
                fail(str(exc))
            console.print(f"[yellow]skipped[/] {escape(str(directory))}: {escape(str(exc))}")
            continue
        except (BuildError, PluginLoadError) as exc:
            fail(str(exc))
        console.print(f"{'built' if built else 'up to date'}: {wasm}")


@plugin_app.command("new")
def new(
    name: Annotated[str, typer.Argument(help="Lower-case letters, digits and '-'.")],
    lang: Annotated[str, typer.Option(
        help=f"One of: {', '.join(template_languages())}.")] = "python",
    kind: Annotated[str, typer.Option(
        help=f"{', '.join(KINDS)}: the events its manifest wants, the cases its tests "
             "run.")] = "both",
    directory: Annotated[Path, typer.Option("--dir", help="Where to create it.")] = Path("."),
) -> None:
    """Create a plugin from a template; then `hyperfilter plugin build` it."""
    try:
        created = new_plugin(name, lang, directory, kind)
    except ValueError as exc:
        fail(str(exc))
    console.print(f"created {created}; build it with: hyperfilter plugin build {created}")


@plugin_app.command("test")
def test(
    directory: Annotated[Path, typer.Argument(help="The plugin's directory (its tests.toml).")],
    tier: TierOption = "wasmtime",
) -> None:
    """Run the plugin's own tests (its tests.toml), without Envoy.

    Each case is one stream in fresh sandboxes of the real plugin (its manifest, grants and
    limits), through the sidecar's own session code. Exit 1 when a case fails, 2 when the
    test file or the plugin cannot be loaded."""
    raise typer.Exit(tester.main(directory, tier, Console(), console))


@plugin_app.command("check")
def check(
    path: Annotated[Path, typer.Argument(help="A plugin's .wasm, manifest or directory.")],
) -> None:
    """Compare a plugin's wasm with its manifest, and say whether it loads.

    Its kind and size, the world functions it exports, what it imports, grants used, missing
    (denied at load) and unused. Exit 2 when it would be refused or cannot be read."""
    raise typer.Exit(check_module.main(path, Console(), console))


@plugin_app.command("run")
def run(
    directory: Annotated[Path, typer.Argument(help="The plugin's directory.")],
    tier: TierOption = "wasmtime",
    body_mode: Annotated[str, typer.Option(
        help="How Envoy sends the bodies the plugin wants: STREAMED, BUFFERED, ...")
    ] = run_module.DEFAULT_BODY_MODE,
) -> None:
    """Run the plugin behind the real Envoy on free local ports, and show its verdicts.

    A TCP listener before an echo server and/or an HTTP listener before a small app, as the
    manifest's events ask; it prints where to point a client. Ctrl-C stops everything."""
    raise typer.Exit(run_module.main(run_module.Options(directory, tier, body_mode),
                                     Console(), console))
