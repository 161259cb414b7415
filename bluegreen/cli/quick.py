"""The operation commands' fast path: their usual command lines read without Typer.

Importing Typer costs ~50 ms, a third of a `bg status` and a quarter of a warm `bg switch`
(issue 23). The hot commands (deploy, switch, rollback, promote, abort, status, history)
are read here when their command line uses only the plain forms of their options: every
option spelled out (``-t prod``, ``--to=blue``), values that need no guessing. Anything
else (``--help``, an unknown or combined option, a value that starts with ``-``, a missing
or extra argument, a number not written plainly, shell completion) returns ``None`` and
goes through Typer as before, which also owns every usage error. What is read here is
exactly what Typer would have passed: ``tests/test_cli_quick.py`` compares this table with
the Typer commands' parameters and both readings over a matrix of command lines.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any, NoReturn

from bluegreen.cli.globalopts import GlobalOptions
from bluegreen.errors import BgError, ExitCode

# An option string -> (Python parameter name, kind). Kinds: "flag" (sets True), "off"
# (sets False: the second half of --retire/--keep-old), "count" (adds one), and the kinds
# that take a value: "str", "path", "int", "float".
Table = Mapping[str, tuple[str, str]]

GLOBAL: Table = {
    "-c": ("config", "path"), "--config": ("config", "path"),
    "-t": ("target", "str"), "--target": ("target", "str"),
    "-v": ("verbose", "count"), "--verbose": ("verbose", "count"),
    "--json": ("json_out", "flag"),
    "-q": ("quiet", "flag"), "--quiet": ("quiet", "flag"),
    "--accept-new-host-keys": ("accept_new_host_keys", "flag"),
}
_RETIRE: Table = {"--retire": ("retire", "flag"), "--keep-old": ("retire", "off")}
_DRY: Table = {"--dry-run": ("dry_run", "flag")}
_HOSTS: Table = {"--hosts": ("hosts", "str")}

# command -> (its own options, its positional arguments as (name, kind)).
COMMANDS: Mapping[str, tuple[Table, tuple[tuple[str, str], ...]]] = {
    "deploy": ({"--version": ("version", "str"), **_RETIRE, **_DRY, **_HOSTS,
                "--no-verify": ("no_verify", "flag"), "--canary": ("canary", "int"),
                "--promote-after": ("promote_after", "float")}, (("artifact", "path"),)),
    "promote": (_RETIRE, ()),
    "abort": ({}, ()),
    "switch": ({"--to": ("to", "str"), **_RETIRE, **_DRY, **_HOSTS}, ()),
    "rollback": ({**_RETIRE, **_DRY, **_HOSTS}, ()),
    "status": (_HOSTS, ()),
    "history": ({"-n": ("limit", "int"), "--steps": ("steps", "flag")}, ()),
}

_VALUED = frozenset({"str", "path", "int", "float"})


class _Unread(Exception):
    """This command line is Typer's to read."""


def parse(args: list[str], environ: Mapping[str, str] | None = None
          ) -> Callable[[], None] | None:
    """The call ``args`` make, or None when Typer must read them."""
    env = os.environ if environ is None else environ
    if any(k.endswith("_COMPLETE") for k in env):
        return None
    try:
        return _parse(args, env)
    except _Unread:
        return None


def _parse(args: list[str], env: Mapping[str, str]) -> Callable[[], None]:
    before: dict[str, Any] = {}
    i = 0
    while i < len(args) and args[i].startswith("-"):
        i = _take(GLOBAL, args, i, before)
    if i >= len(args) or args[i] not in COMMANDS:
        raise _Unread
    name = args[i]
    own_table, positional = COMMANDS[name]
    after: dict[str, Any] = {}
    own: dict[str, Any] = {}
    words: list[str] = []
    i += 1
    while i < len(args):
        arg = args[i]
        if not arg.startswith("-"):
            words.append(arg)
            i += 1
        elif _spelled(arg) in own_table:  # a command's own option wins over a global one
            i = _take(own_table, args, i, own)
        else:
            i = _take(GLOBAL, args, i, after)
    if len(words) != len(positional):
        raise _Unread
    values = [_convert(kind, word) for (_, kind), word in zip(positional, words, strict=True)]
    opts = GlobalOptions.merge(before, after, command=name, environ=env)
    from bluegreen.cli import actions

    return partial(getattr(actions, name), opts, *values, **own)


def _spelled(arg: str) -> str:
    return arg.split("=", 1)[0] if arg.startswith("--") else arg


def _take(table: Table, args: list[str], i: int, into: dict[str, Any]) -> int:
    """Read the option at ``args[i]`` into ``into``; the index after it."""
    arg = args[i]
    spelled = _spelled(arg)
    if spelled not in table:
        raise _Unread
    name, kind = table[spelled]
    if kind not in _VALUED:
        if spelled != arg:  # --flag=value
            raise _Unread
        into[name] = (int(into.get(name) or 0) + 1 if kind == "count" else kind == "flag")
        return i + 1
    if spelled != arg:
        value, nxt = arg[len(spelled) + 1:], i + 1
    elif i + 1 < len(args) and not args[i + 1].startswith("-"):
        value, nxt = args[i + 1], i + 2
    else:
        raise _Unread
    into[name] = _convert(kind, value)
    return nxt


def _convert(kind: str, value: str) -> Any:
    if kind == "path":
        return Path(value)
    if kind in ("int", "float"):  # plain digits (and one point): nothing to guess
        digits = value.replace(".", "", 1) if kind == "float" else value
        if not (digits.isascii() and digits.isdigit()):
            raise _Unread
        return int(value) if kind == "int" else float(value)
    return value


def run(call: Callable[[], None], args: list[str]) -> NoReturn:
    """Run the call as :func:`bluegreen.cli.entry.run_main` runs a Typer command: the same
    exit codes and messages for what escapes it."""
    try:
        try:
            call()
        except (KeyboardInterrupt, EOFError):  # as click reports them
            print(file=sys.stderr)
            print("Aborted!", file=sys.stderr)
            sys.exit(int(ExitCode.INTERRUPTED))
        except BgError as exc:
            fail_outside(args, exc)
        except Exception:
            internal_error()
        sys.exit(0)
    finally:
        forget_handled_interrupts()


def fail_outside(args: list[str], exc: BgError) -> None:
    """Report an error raised outside an operation (e.g. while reading options)."""
    from bluegreen.cli.output import fail

    words = [a for a in args if not a.startswith("-")]
    fail(GlobalOptions(json="--json" in args, command=words[0] if words else ""), exc)


def internal_error() -> None:
    import traceback

    traceback.print_exc()
    print("bg: internal error (a bug): please report it with the trace above", file=sys.stderr)
    sys.exit(int(ExitCode.INTERNAL))


def forget_handled_interrupts() -> None:
    """Keep a Ctrl-C that bg handled (undo, exit 130) from killing it by SIGINT at exit.

    CPython 3.11 flags an "unhandled KeyboardInterrupt" whenever one leaves code run by
    ``exec``/``eval`` of a string (dataclasses and namedtuple build their methods that way,
    so an import can be such code), caught or not, and at exit re-sends itself SIGINT when
    the flag is set: the exit status became -2 instead of 130 when Ctrl-C landed during an
    import. Every exec of a string clears the flag first; a KeyboardInterrupt that really
    escapes bg sets it again on the way out, so that case still exits by SIGINT.
    """
    exec("")  # a constant: its only effect is clearing that flag
