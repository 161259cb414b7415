"""The `bg rehearse` command (registered by cli.py: ``app.command("rehearse")(rehearse)``)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

HostsOpt = Annotated[int, typer.Option("--hosts", min=1, max=50,
                                       help="Simulated hosts for --sandbox.")]


def rehearse(
    artifacts: Annotated[list[Path] | None, typer.Argument(
        help="One or two of your release tarballs (with your bluegreen.toml); none: a sample.",
        show_default=False)] = None,
    vagrant: Annotated[bool, typer.Option(
        "--vagrant", help="On a Vagrant VM (vagrant up; destroyed after if started here).")
    ] = False,
    sandbox: Annotated[bool, typer.Option(
        "--sandbox", help="On simulated hosts here (netns + sshd + nginx each; root).")] = False,
    local: Annotated[bool, typer.Option(
        "--local", help="On this machine with a private nginx (no root).")] = False,
    hosts: HostsOpt = 2,
    app: Annotated[str, typer.Option(
        "--app", help="Without ARTIFACT: sample, or elixir (a real mix release built here).")
    ] = "sample",
    config: Annotated[Path | None, typer.Option(
        "-c", "--config", help="Your bluegreen.toml (default: ./bluegreen.toml).",
        dir_okay=False)] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    keep: Annotated[bool, typer.Option(
        "--keep", help="Leave everything running and in place afterwards.")] = False,
    out: Annotated[Path, typer.Option(
        "--out", help="Where bg-rehearsal.png and bg-rehearsal.json go.", file_okay=False)
    ] = Path("."),
    workdir: Annotated[Path | None, typer.Option(
        "--workdir", help="Work here instead of a new temporary directory.", file_okay=False)
    ] = None,
) -> None:
    """Rehearse a deploy end to end under load: deploy A, deploy B, a release refused by the
    health gate, rollback, switch; then a report of what every step cost in requests."""
    from bluegreen.errors import BgError, ExitCode
    from bluegreen.rehearse.choose import choose
    from bluegreen.rehearse.run import Options, Rehearsal

    if app not in ("sample", "elixir"):
        print(f"error: --app must be sample or elixir, got {app!r}", file=sys.stderr)
        raise typer.Exit(int(ExitCode.USAGE))
    try:
        env, reason = choose(vagrant, sandbox, local, hosts)
        opts = Options(app=app, artifacts=list(artifacts or []), config=config, json=json_out,
                       keep=keep, workdir=workdir, out=out)
        code = Rehearsal(env, reason, opts).run()
    except BgError as exc:
        _error(exc)
        raise typer.Exit(int(exc.exit_code)) from None
    raise typer.Exit(code)


def _error(exc: object) -> None:
    message = getattr(exc, "message", str(exc))
    print(f"error: {message}", file=sys.stderr)
    for extra in (getattr(exc, "detail", ""), getattr(exc, "hint", "")):
        if extra:
            print(f"  {extra}", file=sys.stderr)
