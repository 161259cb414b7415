"""The `bg` command: parse, run one operation, render its result, map errors to exit codes."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from bluegreen import __version__
from bluegreen import config as configuration
from bluegreen.errors import BgError, ConfigError, ExitCode, HostFailures
from bluegreen.ops import admin
from bluegreen.ops import deploy as ops
from bluegreen.ops.core import Context, OperationResult, open_hosts
from bluegreen.ops.deploy import DryRun as DryRunResult

app = typer.Typer(
    name="bg",
    help="Blue-green deployments behind nginx: deploy, switch and roll back"
    " without a dropped request.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
lock_app = typer.Typer(help="Inspect or clear the deploy lock.", no_args_is_help=True)
app.add_typer(lock_app, name="lock")


class Options:
    config: Path | None = None
    target: str | None = None
    verbose: int = 0
    json: bool = False
    accept_new_host_keys: bool = False


OPTS = Options()


class Printer:
    """Human progress on stderr (stdout stays clean for --json)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.tty = sys.stderr.isatty()

    def step_done(self, title: str, seconds: float, ok: bool, note: str) -> None:
        if self.quiet:
            return
        mark = "ok " if ok else "FAIL"
        extra = f"  ({note})" if note else ""
        print(f"  {mark} {title:<58} {seconds:7.2f}s{extra}", file=sys.stderr, flush=True)

    def info(self, text: str) -> None:
        if not self.quiet:
            print(text, file=sys.stderr, flush=True)


def _fail(exc: BgError) -> NoReturn:
    hosts = exc.outcomes if isinstance(exc, HostFailures) and len(exc.outcomes) > 1 else {}
    if OPTS.json:
        print(json.dumps({"ok": False, "error": exc.message, "detail": exc.detail,
                          "hint": exc.hint, "exit_code": int(exc.exit_code),
                          "hosts": hosts}))
    else:
        print(f"error: {exc.message}", file=sys.stderr)
        for name, outcome in hosts.items():
            print(f"  {name}: {outcome}", file=sys.stderr)
        if exc.detail:
            for line in exc.detail.rstrip().splitlines():
                print(f"  | {line}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
    raise typer.Exit(int(exc.exit_code))


def _context(*, retire: bool | None = None) -> Context:
    cfg = configuration.load(OPTS.config)
    target = cfg.target(OPTS.target)
    printer = Printer(quiet=OPTS.json)
    for warning in configuration.warnings(cfg):
        printer.info(f"warning: {warning}")
    hosts = open_hosts(cfg, target, accept_new_host_keys=OPTS.accept_new_host_keys)
    return Context(config=cfg, target=target, hosts=hosts, reporter=printer, retire=retire)


def _run(title: str, fn: Any, *, retire: bool | None = None, render: bool = False) -> Any:
    """Build the context, run ``fn(ctx)``, close connections, turn BgError into an exit."""
    try:
        ctx = _context(retire=retire)
    except BgError as exc:
        _fail(exc)
    try:
        if title and not OPTS.json:
            hosts = ", ".join(h.name for h in ctx.hosts)
            print(f"bg {title}: {ctx.config.app.name} -> {ctx.target.name} ({hosts})",
                  file=sys.stderr)
        result = fn(ctx)
        if render:
            _render(result, ctx)
        return result
    except BgError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise typer.Exit(int(ExitCode.INTERRUPTED)) from None
    finally:
        if OPTS.verbose:
            for h in ctx.hosts:
                print(f"  {h.name}: {h.commands_run} commands", file=sys.stderr)
        ctx.close()


def _render(result: OperationResult | DryRunResult, ctx: Context) -> None:
    if isinstance(result, DryRunResult):
        if OPTS.json:
            print(json.dumps({"ok": True, **result.to_json(ctx)}, indent=2))
            return
        print("\n".join(result.lines(ctx)))
        return
    if OPTS.json:
        print(json.dumps({"ok": True, **result.to_json()}, indent=2))
        return
    for w in result.warnings:
        print(f"warning: {w}", file=sys.stderr)
    print(result.summary)


def _version_callback(value: bool) -> None:
    if value:
        print(f"bg {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    config: Annotated[Path | None, typer.Option("-c", "--config", help="bluegreen.toml to use.",
                                                dir_okay=False)] = None,
    target: Annotated[str | None, typer.Option("-t", "--target", help="Target to act on.")] = None,
    verbose: Annotated[int, typer.Option("-v", "--verbose", count=True,
                                         help="Show commands run per host.")] = 0,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    accept_new_host_keys: Annotated[bool, typer.Option(
        "--accept-new-host-keys", help="Trust and record the key of a host never seen before."
    )] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version_callback,
                                          is_eager=True, help="Print the version.")] = False,
) -> None:
    """bluegreen: blue-green deploys behind nginx."""
    OPTS.config = config
    OPTS.target = target
    OPTS.verbose = verbose
    OPTS.json = json_out
    OPTS.accept_new_host_keys = accept_new_host_keys


RetireOpt = Annotated[bool | None, typer.Option(
    "--retire/--keep-old", help="Stop the old slot after the drain (default: [switch] retire).")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Print the plan; change nothing.")]


@app.command()
def deploy(
    artifact: Annotated[Path, typer.Argument(help="Release tarball, e.g. hello-1.2.0.tar.gz.")],
    version: Annotated[str | None, typer.Option(help="Version (default: from the name).")] = None,
    retire: RetireOpt = None,
    dry_run: DryRun = False,
) -> None:
    """Ship a release to the idle slot, health-gate it, switch nginx, retire the old slot."""
    _run("deploy", lambda c: ops.deploy(c, artifact, version=version, dry_run=dry_run),
                 retire=retire, render=True)


@app.command()
def switch(
    to: Annotated[str | None, typer.Option("--to", help="blue or green (default: the idle one).")
                  ] = None,
    retire: RetireOpt = None,
    dry_run: DryRun = False,
) -> None:
    """Flip traffic to the other slot (starting it again if it was retired)."""
    if to is not None and to not in configuration.SLOTS:
        _fail(ConfigError(f"--to must be blue or green, got {to!r}"))
    _run("switch", lambda c: ops.switch(c, to=to, dry_run=dry_run), retire=retire, render=True)


@app.command()
def rollback(retire: RetireOpt = None, dry_run: DryRun = False) -> None:
    """Return to the previous release: instant when its slot is still warm."""
    _run("rollback", lambda c: ops.rollback(c, dry_run=dry_run), retire=retire, render=True)


@app.command()
def migrate(
    slot: Annotated[str | None, typer.Option("--slot", help="blue or green (default: live).")
                    ] = None,
) -> None:
    """Run app.migrate (bin/<name> eval EXPR) against a release, once, on the first host."""
    if slot is not None and slot not in configuration.SLOTS:
        _fail(ConfigError(f"--slot must be blue or green, got {slot!r}"))
    _run("migrate", lambda c: admin.migrate(c, slot), render=True)


@app.command()
def setup() -> None:
    """Create the directories, the initial nginx upstream and state on every host."""
    _run("setup", admin.setup, render=True)


@app.command()
def status() -> None:
    """What runs where: live slot, versions, health, nginx, lock."""
    data = _run("", admin.status)
    if OPTS.json:
        print(json.dumps(data, indent=2))
    else:
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
            if h["lock"]:
                print(f"  locked by {h['lock'].get('user')} ({h['lock'].get('command')})")
            for p in h["problems"]:
                print(f"  problem: {p}")
    if not data["ok"]:
        raise typer.Exit(int(ExitCode.STATE))


@app.command()
def history(limit: Annotated[int, typer.Option("-n", help="Entries per host.")] = 20) -> None:
    """The journal: who did what, when, with which outcome."""
    data = _run("", lambda c: admin.history(c, limit))
    if OPTS.json:
        print(json.dumps(data, indent=2))
        return
    for host, entries in data.items():
        print(f"{host}:")
        for e in entries:
            extra = " ".join(f"{k}={e[k]}" for k in ("version", "slot") if k in e)
            print(f"  {e.get('time', '?')[:19]}  {e.get('user', '?'):<8} {e.get('op', '?'):<8}"
                  f" {e.get('step', '?'):<8} {e.get('outcome', '?'):<8} {extra}")


@lock_app.command("status")
def lock_status() -> None:
    """Show who holds the lock on each host."""
    data = _run("", admin.lock_status)
    if OPTS.json:
        print(json.dumps(data, indent=2))
        return
    for host, holder in data.items():
        print(f"{host}: " + ("free" if holder is None else
                             f"held by {holder.get('user')}@{holder.get('controller')} pid"
                             f" {holder.get('pid')} ({holder.get('command')}) since"
                             f" {holder.get('time')}" + (" [stale]" if holder["stale"] else "")))


@lock_app.command("release")
def lock_release() -> None:
    """Clear the lock (after making sure no bg operation is running)."""
    for line in _run("", admin.lock_release):
        print(line)


@app.command()
def init(
    app_name: Annotated[str, typer.Option("--app", help="Application name.")] = "hello",
    runner: Annotated[str, typer.Option(help="command, elixir or systemd.")] = "command",
    force: Annotated[bool, typer.Option(help="Overwrite an existing bluegreen.toml.")] = False,
) -> None:
    """Write a commented bluegreen.toml to start from."""
    from bluegreen.scaffold import write_config

    try:
        path = write_config(Path.cwd(), app_name, runner, force=force)
    except BgError as exc:
        _fail(exc)
    print(f"wrote {path}: edit it, then run `bg setup`")


@app.command()
def demo(
    workdir: Annotated[Path, typer.Option(help="Where the demo lives (recreated).")] = Path(
        "/tmp/bg-demo"),
    port: Annotated[int, typer.Option(help="nginx port on 127.0.0.1.")] = 18080,
    keep: Annotated[bool, typer.Option(help="Leave nginx and the app running.")] = False,
) -> None:
    """Deploy, refuse a bad release, roll back and switch a sample app here, under load."""
    from bluegreen.demo import run_demo

    raise typer.Exit(run_demo(workdir, port=port, keep=keep))


def main() -> None:
    try:
        app()
    except BgError as exc:  # raised outside an operation (e.g. by a callback)
        try:
            _fail(exc)
        except typer.Exit as ex:
            sys.exit(ex.exit_code)
    except Exception:
        import traceback

        traceback.print_exc()
        print("bg: internal error (a bug): please report it with the trace above", file=sys.stderr)
        sys.exit(int(ExitCode.INTERNAL))
