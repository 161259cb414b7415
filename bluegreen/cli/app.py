"""The Typer application and its root options.

Commands are registered by :mod:`bluegreen.cli.commands` and :mod:`bluegreen.cli.tools`;
:mod:`bluegreen.cli.entry` then gives every command the global options (``options.install``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bluegreen import __version__
from bluegreen.cli.options import remember_before

app = typer.Typer(
    name="bg",
    help="Blue-green deployments behind nginx: deploy, switch and roll back"
    " without a dropped request.",
    no_args_is_help=True,
    # `bg --install-completion` / `--show-completion` (bash, zsh, fish); see the README.
    add_completion=True,
    pretty_exceptions_enable=False,
)
lock_app = typer.Typer(help="Inspect or clear the deploy lock.", no_args_is_help=True)
app.add_typer(lock_app, name="lock")


def _version_callback(value: bool) -> None:
    if value:
        print(f"bg {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    ctx: typer.Context,
    config: Annotated[Path | None, typer.Option(
        "-c", "--config", help="bluegreen.toml to use.", metavar="FILE")] = None,
    target: Annotated[str | None, typer.Option(
        "-t", "--target", help="Target to act on.", metavar="NAME")] = None,
    verbose: Annotated[int, typer.Option(
        "-v", "--verbose", count=True, help="Show the commands run per host.")] = 0,
    json_out: Annotated[bool, typer.Option(
        "--json", help="One JSON document on stdout (see the README).")] = False,
    quiet: Annotated[bool, typer.Option(
        "-q", "--quiet", help="No progress or warnings; errors and results only.")] = False,
    accept_new_host_keys: Annotated[bool, typer.Option(
        "--accept-new-host-keys", help="Trust and record the key of a host never seen before."
    )] = False,
    version: Annotated[bool, typer.Option(
        "--version", callback=_version_callback, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """bluegreen: blue-green deploys behind nginx.

    Global options work before or after the command: `bg -t prod deploy X` or
    `bg deploy X -t prod`.
    """
    remember_before(ctx, {"config": config, "target": target, "verbose": verbose,
                          "json_out": json_out, "quiet": quiet,
                          "accept_new_host_keys": accept_new_host_keys})
