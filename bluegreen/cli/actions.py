"""What the operation commands do, given their parsed arguments: Typer-free.

Two command lines lead here: the Typer commands (:mod:`bluegreen.cli.commands`) and the fast
path (:mod:`bluegreen.cli.quick`), which reads the common shapes of the same command lines
without importing Typer. Each function takes the merged global options first and the
command's own parameters as keywords, with the same defaults as the Typer command's.
Engine modules are imported inside, so a command loads only what it uses.
"""

from __future__ import annotations

from pathlib import Path

from bluegreen.cli.globalopts import GlobalOptions
from bluegreen.cli.output import emit, fail
from bluegreen.cli.run import run, split_hosts
from bluegreen.errors import ConfigError, StateError

SLOT_NAMES = ("blue", "green")


def deploy(opts: GlobalOptions, artifact: Path, *, version: str | None = None,
           retire: bool | None = None, dry_run: bool = False, hosts: str | None = None,
           no_verify: bool = False, canary: int | None = None,
           promote_after: float | None = None) -> None:
    from bluegreen.ops import deploy as ops

    only = hosts_of(opts, hosts)
    if canary is not None and not 1 <= canary <= 99:
        fail(opts, ConfigError(f"--canary takes a percentage from 1 to 99, got {canary}"))
    if promote_after is not None and (canary is None or promote_after <= 0):
        fail(opts, ConfigError("--promote-after takes SECONDS > 0 and needs --canary"))
    run(opts, "deploy", lambda c: ops.deploy(c, artifact, version=version, dry_run=dry_run,
                                             verify=not no_verify, canary=canary,
                                             promote_after=promote_after),
        retire=retire, hosts=only, show=True)


def promote(opts: GlobalOptions, *, retire: bool | None = None) -> None:
    from bluegreen.ops import promote as ops

    run(opts, "promote", ops.promote, retire=retire, show=True)


def abort(opts: GlobalOptions) -> None:
    from bluegreen.ops import promote as ops

    run(opts, "abort", ops.abort, show=True)


def switch(opts: GlobalOptions, *, to: str | None = None, retire: bool | None = None,
           dry_run: bool = False, hosts: str | None = None) -> None:
    from bluegreen.ops import deploy as ops

    if to is not None and to not in SLOT_NAMES:
        fail(opts, ConfigError(f"--to must be blue or green, got {to!r}"))
    only = hosts_of(opts, hosts)
    run(opts, "switch", lambda c: ops.switch(c, to=to, dry_run=dry_run), retire=retire,
        hosts=only, show=True)


def rollback(opts: GlobalOptions, *, retire: bool | None = None, dry_run: bool = False,
             hosts: str | None = None) -> None:
    from bluegreen.ops import deploy as ops

    only = hosts_of(opts, hosts)
    run(opts, "rollback", lambda c: ops.rollback(c, dry_run=dry_run), retire=retire,
        hosts=only, show=True)


def status(opts: GlobalOptions, *, hosts: str | None = None) -> None:
    from bluegreen.cli.render import status_lines
    from bluegreen.ops import admin

    result = run(opts, "", admin.status, hosts=hosts_of(opts, hosts))
    problems = result.problems
    if opts.json:
        if problems:
            fail(opts, _problems(problems), result=result.to_json())
        emit(opts, result.to_json())
        return
    print("\n".join(status_lines(result)))
    if problems:
        raise SystemExit(int(StateError.exit_code))


def history(opts: GlobalOptions, *, limit: int = 20, steps: bool = False) -> None:
    from bluegreen.cli.render import history_lines
    from bluegreen.ops import admin

    result = run(opts, "", lambda c: admin.history(c, limit, steps=steps))
    if opts.json:
        emit(opts, result.to_json())
        return
    print("\n".join(history_lines(result)))


def _problems(problems: list[str]) -> StateError:
    return StateError(f"{len(problems)} problem(s) found: " + "; ".join(problems),
                      hint="`bg status` lists them per host")


def hosts_of(opts: GlobalOptions, value: str | None) -> tuple[str, ...]:
    """``--hosts``'s patterns, or a usage error."""
    try:
        return split_hosts(value)
    except ConfigError as exc:
        fail(opts, exc)
