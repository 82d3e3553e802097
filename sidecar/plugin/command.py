"""`hyperfilter plugin ...`: the plugin author's commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from sidecar.plugin.build import build_plugin
from sidecar.plugin.new import new_plugin, template_languages
from sidecar.plugin.toolchain import BuildError
from vmm.errors import PluginLoadError

plugin_app = typer.Typer(no_args_is_help=True, help="Write, build and try plugins.")
console = Console(stderr=True)


def fail(message: str) -> NoReturn:
    console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    raise typer.Exit(2)


@plugin_app.command("build")
def build(
    directories: Annotated[list[Path], typer.Argument(help="Plugin directories.")],
    force: Annotated[bool, typer.Option(help="Build even when the .wasm is up to date.")] = False,
) -> None:
    """Build plugins from source with their language's toolchain."""
    for directory in directories:
        try:
            with console.status(f"building {directory}"):
                wasm, built = build_plugin(directory, force)
        except (BuildError, PluginLoadError) as exc:
            fail(str(exc))
        console.print(f"{'built' if built else 'up to date'}: {wasm}")


@plugin_app.command("new")
def new(
    name: Annotated[str, typer.Argument(help="Lower-case letters, digits and '-'.")],
    lang: Annotated[str, typer.Option(
        help=f"One of: {', '.join(template_languages())}.")] = "python",
    directory: Annotated[Path, typer.Option("--dir", help="Where to create it.")] = Path("."),
) -> None:
    """Create a plugin from a template; then `hyperfilter plugin build` it."""
    try:
        created = new_plugin(name, lang, directory)
    except ValueError as exc:
        fail(str(exc))
    console.print(f"created {created}; build it with: hyperfilter plugin build {created}")
