"""The Typer application, its root options and the entry point.

Commands are registered by :mod:`bluegreen.cli.commands` and :mod:`bluegreen.cli.tools`;
:func:`run_main` then gives every command the global options (see ``options.install``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from bluegreen import __version__
from bluegreen.cli.options import GlobalOptions, install, remember_before
from bluegreen.errors import BgError, ConfigError, ExitCode

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


def build() -> Any:
    """The click command tree with the global options on every command."""
    from bluegreen.cli import commands, tools  # noqa: F401  (they register the commands)

    return install(typer.main.get_command(app))


def run_main(argv: list[str] | None = None) -> None:
    # typer vendors click; its exception classes live there.
    from typer import Abort
    from typer._click.exceptions import ClickException

    args = sys.argv[1:] if argv is None else argv
    as_json = "--json" in args
    try:
        group = build()
        rv = group.main(args=args, prog_name="bg", standalone_mode=False)
    except ClickException as exc:  # bad command line: nothing was touched
        if as_json:
            _fail_outside(args, ConfigError(exc.format_message()))
        from typer import rich_utils

        rich_utils.rich_format_error(exc)
        sys.exit(exc.exit_code)
    except Abort:
        print("Aborted!", file=sys.stderr)
        sys.exit(int(ExitCode.INTERRUPTED))
    except BgError as exc:  # raised outside an operation (e.g. by a callback)
        _fail_outside(args, exc)
    except Exception:
        import traceback

        traceback.print_exc()
        print("bg: internal error (a bug): please report it with the trace above", file=sys.stderr)
        sys.exit(int(ExitCode.INTERNAL))
    sys.exit(rv if isinstance(rv, int) else 0)


def _fail_outside(args: list[str], exc: BgError) -> None:
    from bluegreen.cli.output import fail

    opts = GlobalOptions(json="--json" in args, command=_guess_command(args))
    try:
        fail(opts, exc)
    except typer.Exit as ex:
        sys.exit(ex.exit_code)


def _guess_command(args: list[str]) -> str:
    words = [a for a in args if not a.startswith("-")]
    return words[0] if words else ""


__all__ = ["ConfigError", "app", "build", "lock_app", "run_main"]
