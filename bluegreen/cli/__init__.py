"""The `bg` command line.

Kept import-light: ``bg --version`` answers before Typer or any engine module is loaded;
the operation commands' usual command lines are read without Typer
(:mod:`bluegreen.cli.quick`); everything else goes through :mod:`bluegreen.cli.entry`.
Modules: ``app`` (the Typer app and its root options), ``entry`` (builds the command tree,
runs it, maps what escapes), ``options`` (global options before or after the command),
``globalopts`` (their merged value), ``quick`` (the fast path), ``actions`` (what the
operation commands do, Typer-free), ``coerce`` (value conversion without pydantic),
``output`` (progress, JSON envelope, errors), ``run`` (one operation per command),
``commands`` and ``tools`` (the commands).
"""

from __future__ import annotations

import sys


def main() -> None:
    args = sys.argv[1:]
    if args == ["--version"]:
        from bluegreen import __version__

        print(f"bg {__version__}")
        return
    import gc

    gc.disable()  # until the operation's modules are in: see collect_from_here
    from bluegreen.cli import quick

    try:
        call = quick.parse(args)
        if call is not None:  # the operation commands' usual shapes: no Typer import
            quick.run(call, args)  # exits
        from bluegreen.cli.collector import collect_from_here
        from bluegreen.cli.entry import run_main

        collect_from_here()
        run_main(args)
    finally:
        # On the way out (sys.exit included): the interpreter's last garbage collection
        # would walk every object of every imported module, about 10% of a `bg switch`'s
        # CPU. Frozen objects are skipped by it; exit handlers, flushes and thread joins
        # still run as usual.
        gc.freeze()
        gc.enable()  # for a caller in the same process (tests)


def __getattr__(name: str) -> object:
    # `from bluegreen.cli import app` keeps working without importing Typer eagerly.
    if name == "app":
        from bluegreen.cli.app import app

        return app
    raise AttributeError(name)
