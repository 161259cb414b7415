"""The operation commands: deploy, switch, rollback, migrate, setup, status, history, lock.

Each command reads the global options from its context (:func:`options`), runs one
operation through :func:`run` and renders its result. Engine modules are imported inside
the commands so that `bg --version` or `bg status` load only what they use.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

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
    from bluegreen.ops import admin

    opts = options(ctx)
    data = run(opts, "", admin.status, hosts=_hosts(ctx, hosts))
    problems = [f"{h['host']}: {p}" for h in data["hosts"] for p in h["problems"]]
    if opts.json:
        if problems:
            fail(opts, _problems(problems), result=data)
        emit(opts, data)
        return
    if data.get("canary"):
        c = data["canary"]
        share = f"{c['share']:.1%}" if c["share"] is not None else "-"
        print(f"canary: {c['version']} on {c['slot']}, {c['percent']}% of new requests"
              f"{' (sticky)' if c['sticky'] else ''} for {c['seconds']:.0f}s: served"
              f" {c['requests']} of {c['all_requests']} ({share}), {c['errors']} failed;"
              " `bg promote` or `bg abort`")
    for h in data["hosts"]:
        print(f"{h['host']}: live {h['live'] or '-'} ({h['version'] or 'nothing deployed'}),"
              f" previous {h['previous'] or '-'}")
        for slot, s in h["slots"].items():
            flags = ("live " if s["live"] else "") + (
                "running" if s["running"] else "stopped") + (
                ", healthy" if s["healthy"] else "")
            print(f"  {slot:<5} :{s['port']:<5} {s['version'] or '-':<16} {flags}")
        print(f"  nginx  upstream :{h['nginx']['upstream_port']}, serving"
              f" {h['nginx']['serving'] or '?'}")
        if h["in_progress"]:
            print(f"  in progress: {h['in_progress']}")
            for note in h["transient"]:
                print(f"    (expected while it runs) {note}")
        elif h["lock"]:
            print(f"  locked by {h['lock'].get('user')} ({h['lock'].get('command')})")
        for p in h["problems"]:
            print(f"  problem: {p}")
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
    from bluegreen.ops import admin

    opts = options(ctx)
    data = run(opts, "", lambda c: admin.history(c, limit, steps=steps))
    if opts.json:
        emit(opts, data)
        return
    for host, entries in data.items():
        print(f"{host}:")
        for e in entries:
            print("  " + (_step_line(e) if steps else _operation_line(e)))


def _operation_line(o: dict[str, Any]) -> str:
    seconds = f"{o['seconds']:.2f}s" if isinstance(o.get("seconds"), float | int) else "?"
    why = f"  {o['message']}" if o.get("message") else ""
    return (f"{str(o.get('time') or '?')[:19].replace('T', ' ')}  {o.get('op') or '?':<8}"
            f" {o.get('version') or '-':<12} {o['outcome']:<10} {seconds:>8}"
            f"  {o.get('user') or '?'}@{o.get('controller') or '?'}{why}")


def _step_line(e: dict[str, Any]) -> str:
    extra = " ".join(f"{k}={e[k]}" for k in ("version", "slot") if k in e)
    return (f"{str(e.get('time', '?'))[:19]}  {e.get('user', '?'):<8} {e.get('op', '?'):<8}"
            f" {e.get('step', '?'):<8} {e.get('outcome', '?'):<8} {extra}")


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
    from bluegreen.ops import admin

    opts = options(ctx)
    data: dict[str, Any] = run(opts, "", admin.lock_status)
    if opts.json:
        emit(opts, data)
        return
    for host, holder in data.items():
        print(f"{host}: " + ("free" if holder is None else
                             f"held by {holder.get('user')}@{holder.get('controller')} pid"
                             f" {holder.get('pid')} ({holder.get('command')}) since"
                             f" {holder.get('time')}" + (" [stale]" if holder["stale"] else "")))


@lock_app.command("release")
def lock_release(ctx: typer.Context) -> None:
    """Clear the lock (after making sure no bg operation is running)."""
    from bluegreen.ops import admin

    opts = options(ctx)
    lines = run(opts, "", admin.lock_release)
    if opts.json:
        emit(opts, {"hosts": dict(line.split(": ", 1) for line in lines)})
        return
    for line in lines:
        print(line)


def _hosts(ctx: typer.Context, value: str | None) -> tuple[str, ...]:
    try:
        return split_hosts(value)
    except ConfigError as exc:
        fail(options(ctx), exc)
