"""The entry point: build the command tree (every command registered, each given the global
options) and run it, mapping what escapes to exit codes."""

from __future__ import annotations

import sys
from typing import Any

import typer

# Importing these modules registers their commands on the app.
from bluegreen.cli import commands, tools  # noqa: F401
from bluegreen.cli.app import app
from bluegreen.cli.options import GlobalOptions, install
from bluegreen.errors import BgError, ConfigError, ExitCode


def build() -> Any:
    """The click command tree with the global options on every command."""
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
