"""The operation commands: deploy, switch, rollback, migrate, setup, status, history, lock.

Each command reads the global options from its context (:func:`options`), runs one
operation through :func:`run` and renders its result. Engine modules are imported inside
the commands so that `bg --version` or `bg status` load only what they use.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from bluegreen.cli.app import app, lock_app
from bluegreen.cli.options import options
from bluegreen.cli.output import emit, fail
from bluegreen.cli.run import run, split_hosts
from bluegreen.errors import ConfigError, StateError

SLOT_NAMES = ("blue", "green")

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
    from bluegreen.ops import deploy as ops

    opts = options(ctx)
    only = _hosts(ctx, hosts)
    if canary is not None and not 1 <= canary <= 99:
        fail(opts, ConfigError(f"--canary takes a percentage from 1 to 99, got {canary}"))
    if promote_after is not None and (canary is None or promote_after <= 0):
        fail(opts, ConfigError("--promote-after takes SECONDS > 0 and needs --canary"))
    run(opts, "deploy", lambda c: ops.deploy(c, artifact, version=version, dry_run=dry_run,
                                             verify=not no_verify, canary=canary,
                                             promote_after=promote_after),
        retire=retire, hosts=only, show=True)


@app.command()
def promote(ctx: typer.Context, retire: RetireOpt = None) -> None:
    """Send all traffic to the running canary and retire the old slot."""
    from bluegreen.ops import promote as ops

    run(options(ctx), "promote", ops.promote, retire=retire, show=True)


@app.command()
def abort(ctx: typer.Context) -> None:
    """Send all traffic back to the old slot and stop the running canary."""
    from bluegreen.ops import promote as ops

    run(options(ctx), "abort", ops.abort, show=True)


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
    from bluegreen.ops import deploy as ops

    opts = options(ctx)
    if to is not None and to not in SLOT_NAMES:
        fail(opts, ConfigError(f"--to must be blue or green, got {to!r}"))
    only = _hosts(ctx, hosts)
    run(opts, "switch", lambda c: ops.switch(c, to=to, dry_run=dry_run), retire=retire,
        hosts=only, show=True)


@app.command()
def rollback(ctx: typer.Context, retire: RetireOpt = None, dry_run: DryRun = False,
             hosts: HostsOpt = None) -> None:
    """Return to the previous release: instant when its slot is still warm."""
    from bluegreen.ops import deploy as ops

    opts = options(ctx)
    only = _hosts(ctx, hosts)
    run(opts, "rollback", lambda c: ops.rollback(c, dry_run=dry_run), retire=retire,
        hosts=only, show=True)


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
    from bluegreen.cli.render import status_lines
    from bluegreen.ops import admin

    opts = options(ctx)
    result = run(opts, "", admin.status, hosts=_hosts(ctx, hosts))
    problems = result.problems
    if opts.json:
        if problems:
            fail(opts, _problems(problems), result=result.to_json())
        emit(opts, result.to_json())
        return
    print("\n".join(status_lines(result)))
    if problems:
        raise typer.Exit(int(StateError.exit_code))


def _problems(problems: list[str]) -> StateError:
    return StateError(f"{len(problems)} problem(s) found: " + "; ".join(problems),
                      hint="`bg status` lists them per host")


@app.command()
def history(ctx: typer.Context,
            limit: Annotated[int, typer.Option("-n", help="Operations (or entries) per host.")
                             ] = 20,
            steps: Annotated[bool, typer.Option("--steps", help="Every journal entry.")
                             ] = False) -> None:
    """The journal: who did what, when, with which outcome; a line per operation."""
    from bluegreen.cli.render import history_lines
    from bluegreen.ops import admin

    opts = options(ctx)
    result = run(opts, "", lambda c: admin.history(c, limit, steps=steps))
    if opts.json:
        emit(opts, result.to_json())
        return
    print("\n".join(history_lines(result)))


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
    only = _hosts(ctx, hosts)
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


def _hosts(ctx: typer.Context, value: str | None) -> tuple[str, ...]:
    try:
        return split_hosts(value)
    except ConfigError as exc:
        fail(options(ctx), exc)
