"""The operation commands: deploy, switch, rollback, migrate, setup, status, history, lock.

Each command reads the global options from its context (:func:`options`), runs one
operation through :func:`run` and renders its result. The commands the fast path also
serves (:mod:`bluegreen.cli.quick`) only hand their arguments to :mod:`bluegreen.cli.actions`.
Engine modules are imported inside the commands so that `bg --version` or `bg status` load
only what they use.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from bluegreen.cli import actions
from bluegreen.cli.actions import SLOT_NAMES, hosts_of
from bluegreen.cli.app import app, lock_app
from bluegreen.cli.options import options
from bluegreen.cli.output import emit, fail
from bluegreen.cli.run import run
from bluegreen.errors import ConfigError

RetireOpt = Annotated[bool | None, typer.Option(
    "--retire/--keep-old", help="Stop the old slot after the drain (default: \\[switch] retire).")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Print the plan; change nothing.")]
HostsOpt = Annotated[str | None, typer.Option(
    "--hosts", metavar="PATTERN[,PATTERN...]",
    help="Only the target's hosts matching these names or shell globs (e.g. 'web-*').")]


@app.command()
def deploy(
    ctx: typer.Context,
    artifact: Annotated[Path, typer.Argument(help="Release tarball, e.g. hello-1.2.0.tar.gz.")],
    version: Annotated[str | None, typer.Option(help="Version (default: from the name).")] = None,
    retire: RetireOpt = None,
    dry_run: DryRun = False,
    hosts: HostsOpt = None,
    no_verify: Annotated[bool, typer.Option(
        "--no-verify", help="Skip the verification window (\\[verify] window) this once.")
    ] = False,
    canary: Annotated[int | None, typer.Option(
        "--canary", metavar="PERCENT",
        help="Send only PERCENT (1-99) of new requests to the new release; then"
        " `bg promote` or `bg abort`.")] = None,
    promote_after: Annotated[float | None, typer.Option(
        "--promote-after", metavar="SECONDS",
        help="With --canary: judge the canary's requests this long, then promote it.")
    ] = None,
) -> None:
    """Ship a release to the idle slot, health-gate it, switch nginx, retire the old slot."""
    actions.deploy(options(ctx), artifact, version=version, retire=retire, dry_run=dry_run,
                   hosts=hosts, no_verify=no_verify, canary=canary,
                   promote_after=promote_after)


@app.command()
def promote(ctx: typer.Context, retire: RetireOpt = None) -> None:
    """Send all traffic to the running canary and retire the old slot."""
    actions.promote(options(ctx), retire=retire)


@app.command()
def abort(ctx: typer.Context) -> None:
    """Send all traffic back to the old slot and stop the running canary."""
    actions.abort(options(ctx))


@app.command()
def switch(
    ctx: typer.Context,
    to: Annotated[str | None, typer.Option("--to", help="blue or green (default: the idle one).")
                  ] = None,
    retire: RetireOpt = None,
    dry_run: DryRun = False,
    hosts: HostsOpt = None,
) -> None:
    """Flip traffic to the other slot (starting it again if it was retired)."""
    actions.switch(options(ctx), to=to, retire=retire, dry_run=dry_run, hosts=hosts)


@app.command()
def rollback(ctx: typer.Context, retire: RetireOpt = None, dry_run: DryRun = False,
             hosts: HostsOpt = None) -> None:
    """Return to the previous release: instant when its slot is still warm."""
    actions.rollback(options(ctx), retire=retire, dry_run=dry_run, hosts=hosts)


@app.command()
def migrate(
    ctx: typer.Context,
    slot: Annotated[str | None, typer.Option("--slot", help="blue or green (default: live).")
                    ] = None,
) -> None:
    """Run app.migrate (bin/<name> eval EXPR) against a release, once, on the first host."""
    from bluegreen.ops import admin

    opts = options(ctx)
    if slot is not None and slot not in SLOT_NAMES:
        fail(opts, ConfigError(f"--slot must be blue or green, got {slot!r}"))
    run(opts, "migrate", lambda c: admin.migrate(c, slot), show=True)


@app.command()
def setup(ctx: typer.Context) -> None:
    """Create the directories, the initial nginx upstream and state on every host."""
    from bluegreen.ops import admin

    opts = options(ctx)
    run(opts, "setup", admin.setup, show=True)


@app.command()
def status(ctx: typer.Context, hosts: HostsOpt = None) -> None:
    """What runs where: live slot, versions, health, nginx, lock."""
    actions.status(options(ctx), hosts=hosts)


@app.command()
def history(ctx: typer.Context,
            limit: Annotated[int, typer.Option("-n", help="Operations (or entries) per host.")
                             ] = 20,
            steps: Annotated[bool, typer.Option("--steps", help="Every journal entry.")
                             ] = False) -> None:
    """The journal: who did what, when, with which outcome; a line per operation."""
    actions.history(options(ctx), limit=limit, steps=steps)


@app.command()
def remove(
    ctx: typer.Context,
    purge: Annotated[bool, typer.Option(
        "--purge", help="Also remove the releases, the slots' logs and the journal.")] = False,
    force: Annotated[bool, typer.Option(
        "--force", help="Even while a site uses the app: leave a 503 stand-in upstream.")
    ] = False,
    dry_run: DryRun = False,
    hosts: HostsOpt = None,
) -> None:
    """Take the app off its hosts: upstream out of nginx, both slots stopped, setup undone."""
    from bluegreen.ops import remove as ops

    opts = options(ctx)
    only = hosts_of(options(ctx), hosts)
    result = run(opts, "remove", lambda c: ops.remove(c, purge=purge, force=force,
                                                      dry_run=dry_run), hosts=only)
    if opts.json:
        emit(opts, result.to_json())
        return
    if isinstance(result, ops.RemovePlan):
        print("\n".join(result.lines()))
        return
    if not opts.quiet:
        for w in result.warnings:
            print(f"warning: {w}", file=sys.stderr)
    print(result.summary)


@lock_app.command("status")
def lock_status(ctx: typer.Context) -> None:
    """Show who holds the lock on each host."""
    from bluegreen.cli.render import lock_status_lines
    from bluegreen.ops import admin

    opts = options(ctx)
    result = run(opts, "", admin.lock_status)
    if opts.json:
        emit(opts, result.to_json())
        return
    print("\n".join(lock_status_lines(result)))


@lock_app.command("release")
def lock_release(ctx: typer.Context) -> None:
    """Clear the lock (after making sure no bg operation is running)."""
    from bluegreen.cli.render import lock_release_lines
    from bluegreen.ops import admin

    opts = options(ctx)
    result = run(opts, "", admin.lock_release)
    if opts.json:
        emit(opts, result.to_json())
        return
    print("\n".join(lock_release_lines(result)))
