"""The entry point: build the command tree (every command registered, each given the global
options) and run it, mapping what escapes to exit codes."""

from __future__ import annotations

import copy
import os
import sys
from typing import Any

import typer

# Importing a module registers its commands on the app: the operation commands always,
# the tools (init, check, rehearse, ...) when the command line names one of them or needs
# the whole tree (importing them costs an operation's start-up a few milliseconds).
from bluegreen.cli import commands  # noqa: F401
from bluegreen.cli.app import app
from bluegreen.cli.options import install
from bluegreen.cli.quick import fail_outside, forget_handled_interrupts, internal_error
from bluegreen.errors import BgError, ConfigError, ExitCode


def build(args: list[str] | None = None) -> Any:
    """The click command tree with the global options on every command. Given the command
    line, only the command it names is built (each command costs Typer a signature walk):
    the whole tree for help, completion, or a word that names no command."""
    only = _only(args)
    if only is None:
        from bluegreen.cli import tools  # noqa: F401

        only = _only(args)
    return install(typer.main.get_command(only or app))


# Global options that take a value: their value is not the command word.
_VALUED = frozenset({"-c", "--config", "-t", "--target"})


def command_word(args: list[str]) -> str | None:
    """The command ``args`` name (the first word that is neither an option nor a value)."""
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg == "--":
            return None
        elif arg in _VALUED:
            skip = True
        elif not arg.startswith("-"):
            return arg
    return None


def _only(args: list[str] | None) -> typer.Typer | None:
    if args is None or "--help" in args or any(k.endswith("_COMPLETE") for k in os.environ):
        return None
    word = command_word(args)
    named = [c for c in app.registered_commands if word is not None and word == (
        c.name or typer.main.get_command_name(getattr(c.callback, "__name__", "")))]
    groups = [g for g in app.registered_groups if word is not None and g.name == word]
    if not named and not groups:
        return None
    only = copy.copy(app)
    only.registered_commands, only.registered_groups = named, groups
    return only


def run_main(argv: list[str] | None = None) -> None:
    try:
        _run_main(argv)
    finally:
        forget_handled_interrupts()


def _run_main(argv: list[str] | None) -> None:
    # typer vendors click; its exception classes live there.
    from typer import Abort
    from typer._click.exceptions import ClickException

    args = sys.argv[1:] if argv is None else argv
    as_json = "--json" in args
    try:
        group = build(args)
        rv = group.main(args=args, prog_name="bg", standalone_mode=False)
    except ClickException as exc:  # bad command line: nothing was touched
        if as_json:
            fail_outside(args, ConfigError(exc.format_message()))
        from typer import rich_utils

        rich_utils.rich_format_error(exc)
        sys.exit(exc.exit_code)
    except Abort:
        print("Aborted!", file=sys.stderr)
        sys.exit(int(ExitCode.INTERRUPTED))
    except BgError as exc:  # raised outside an operation (e.g. by a callback)
        fail_outside(args, exc)
    except Exception:
        internal_error()
    sys.exit(rv if isinstance(rv, int) else 0)
