"""Commands around the operations: init, check, logs, demo (and the spot for rehearse)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from bluegreen.cli.app import app
from bluegreen.cli.commands import HostsOpt
from bluegreen.cli.options import options
from bluegreen.cli.output import emit, fail
from bluegreen.cli.run import run, split_hosts
from bluegreen.errors import BgError, ConfigError, ExitCode
from bluegreen.rehearse.command import rehearse


@app.command()
def init(
    ctx: typer.Context,
    app_name: Annotated[str | None, typer.Option(
        "--app", help="Application name (default: from mix.exs, else the directory).")] = None,
    runner: Annotated[str | None, typer.Option(
        help="command, elixir or systemd (default: elixir in a Mix project).")] = None,
    force: Annotated[bool, typer.Option(help="Overwrite files that already exist.")] = False,
    templates: Annotated[bool, typer.Option(
        "--templates", help="Also copy the default templates, to edit.")] = False,
    server_name: Annotated[str | None, typer.Option(
        "--server-name", help="The site's server_name: your domain(s), e.g. shop.example.com"
        " (default _: the site then answers only as nginx's default server).")] = None,
    nginx_dir: Annotated[Path, typer.Option(
        "--nginx-dir", help="This machine's nginx configuration, read to pick ports no other"
        " bg app uses and to spot a default site that would shadow this one.")
    ] = Path("/etc/nginx"),
    listen: Annotated[str, typer.Option(
        "--listen", help="The site's listen: a port or address:port.")] = "80",
) -> None:
    """Write a commented bluegreen.toml, an env file and the nginx site to include."""
    from bluegreen.scaffold import scaffold

    opts = options(ctx)
    try:
        result = scaffold(Path.cwd(), app=app_name, runner=runner, force=force,
                          templates=templates, server_name=server_name, nginx_dir=nginx_dir,
                          listen=listen)
    except BgError as exc:
        fail(opts, exc)
    if opts.json:
        emit(opts, result.to_json())
        return
    print(f"app {result.app} (runner {result.runner}"
          + (f", version {result.version})" if result.version else ")"))
    for f in result.files:
        print(f"  wrote {f}")
    for hint in result.hints:
        print(f"next: {hint}")


@app.command("check")
def check_cmd(ctx: typer.Context, hosts: HostsOpt = None) -> None:
    """Is the target ready for bg? A line per check and host; exits non-zero on a failure."""
    from bluegreen.facts.check import FAIL
    from bluegreen.ops.check import check

    opts = options(ctx)
    try:
        only = split_hosts(hosts)
    except ConfigError as exc:
        fail(opts, exc)
    report = run(opts, "", check, hosts=only)
    counts = report.counts()
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    if opts.json:
        if not report.ok:
            fail(opts, ConfigError(f"{counts[FAIL]} check(s) failed"), result=report.to_json())
        emit(opts, report.to_json())
        return
    marks = {"ok": "ok  ", "fail": "FAIL", "warn": "warn", "skip": "skip"}
    for line in report.lines:
        print(f"{marks[line.status]} {line.host:<20} {line.name:<22} {line.detail}")
        if line.hint and line.status != "ok":
            print(f"{'':<26}{'':<22} hint: {line.hint}")
    print(f"{'ready' if report.ok else 'NOT ready'}: {summary}")
    if not report.ok:
        raise typer.Exit(int(ExitCode.USAGE))


@app.command()
def logs(
    ctx: typer.Context,
    slot: Annotated[str, typer.Option(help="live, idle, blue or green.")] = "live",
    follow: Annotated[bool, typer.Option("-f", "--follow", help="Keep printing new lines"
                                         " (Ctrl-C stops).")] = False,
    lines: Annotated[int, typer.Option("-n", "--lines", help="Lines per host.")] = 50,
    hosts: HostsOpt = None,
) -> None:
    """A slot's log on every host (or those of --hosts), each line prefixed by its host."""
    from bluegreen.ops import logs as ops
    from bluegreen.ops.core import Context
    from bluegreen.results import HostLogLines, LogsResult

    opts = options(ctx)
    try:
        only = split_hosts(hosts)
        if follow and opts.json:
            raise ConfigError("--json cannot be combined with --follow")
        if lines < 0:
            raise ConfigError(f"-n must be >= 0, got {lines}")
    except ConfigError as exc:
        fail(opts, exc)

    def show(c: Context) -> None:
        start = ops.tail(c, slot, lines)
        if opts.json:
            emit(opts, LogsResult({name: HostLogLines(log.slot, tuple(text.splitlines()))
                                   for name, (log, text, _) in start.items()}).to_json())
            return
        for name, (log, text, _) in start.items():
            for line in text.splitlines():
                print(f"{name} {log.slot}| {line}")
        sys.stdout.flush()
        if follow:
            slots = {name: log.slot for name, (log, _, _) in start.items()}
            try:
                ops.follow(c, start, lambda host, line: print(f"{host} {slots[host]}| {line}",
                                                              flush=True))
            except KeyboardInterrupt:
                return  # Ctrl-C is how a follow ends

    run(opts, "", show, hosts=only)


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


# ---------------------------------------------------------------------------- rehearse
# `bg rehearse` lives in bluegreen/rehearse/command.py. The global options reach every
# command registered before `bg` starts (options.install); a command reads them with
# `options(ctx)` from a `ctx: typer.Context` parameter. rehearse defines its own -c/--config
# and --json, which it keeps (its --json prints its report, not the envelope).
app.command("rehearse")(rehearse)
