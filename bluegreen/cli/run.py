"""Run one operation for a command: build its context once, run, render, map errors."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from bluegreen.cli.collector import collect_from_here
from bluegreen.cli.globalopts import GlobalOptions
from bluegreen.cli.output import Printer, emit, fail
from bluegreen.errors import BgError, ConfigError, ExitCode

if TYPE_CHECKING:
    from bluegreen.config import Config
    from bluegreen.ops.core import Context

T = TypeVar("T")


def split_hosts(value: str | None) -> tuple[str, ...]:
    """``--hosts 'web-*,db1'`` -> ("web-*", "db1")."""
    if value is None:
        return ()
    patterns = tuple(p.strip() for p in value.split(",") if p.strip())
    if not patterns:
        raise ConfigError(f"--hosts needs at least one pattern, got {value!r}")
    return patterns


def load_config(opts: GlobalOptions) -> Config:
    from bluegreen import config as configuration

    if opts.config is not None and opts.config.is_dir():
        raise ConfigError(f"-c/--config names a directory, not a file: {opts.config}")
    return configuration.load(opts.config)


def run(opts: GlobalOptions, title: str, fn: Callable[[Context], T], *,
        retire: bool | None = None, hosts: Sequence[str] = (), show: bool = False) -> T:
    """Build the context, run ``fn(ctx)``, close connections; a BgError exits. With
    ``show``, the result (an operation's, or a dry run's) is rendered while the context
    is still open (a dry run describes itself from it)."""
    from bluegreen import config as configuration
    from bluegreen.ops.core import Context, open_hosts
    from bluegreen.ops.tier import open_tier

    printer = Printer(opts)
    try:
        try:
            cfg = load_config(opts)
            target = cfg.target(opts.target)
            for warning in configuration.warnings(cfg):
                printer.info(f"warning: {warning}")
            accept = opts.accept_new_host_keys
            opened = open_hosts(cfg, target, accept_new_host_keys=accept, only=hosts)
            # The load balancers' hosts are covered by the host-key flag as the app hosts are.
            tier = open_tier(cfg, target, accept_new_host_keys=accept)
            collect_from_here()  # the operation's own modules are in
        except BgError as exc:
            printer.close()
            fail(opts, exc)
        ctx = Context(config=cfg, target=target, hosts=opened, reporter=printer, retire=retire,
                      tier=tier)
        try:
            if title:
                names = ", ".join(h.name for h in ctx.hosts)
                printer.info(f"bg {title}: {cfg.app.name} -> {target.name} ({names})")
            result = fn(ctx)
            if show:
                printer.close()
                render(opts, result, ctx)
            return result
        except BgError as exc:
            printer.close()
            fail(opts, exc)
        except KeyboardInterrupt:
            printer.close()
            print("interrupted", file=sys.stderr)
            raise SystemExit(int(ExitCode.INTERRUPTED)) from None
        finally:
            printer.close()
            if opts.verbose:
                for h in ctx.hosts:
                    print(f"  {h.name}: {h.commands_run} commands", file=sys.stderr)
            ctx.close()
    finally:
        printer.close()


def render(opts: GlobalOptions, result: Any, ctx: Context) -> None:
    """An OperationResult or a dry run: the JSON envelope, or human lines."""
    from bluegreen.ops.deploy import DryRun

    if isinstance(result, DryRun):
        if opts.json:
            emit(opts, result.to_json(ctx))
            return
        print("\n".join(result.lines(ctx)))
        return
    if opts.json:
        emit(opts, result.to_json())
        return
    if not opts.quiet:
        for w in result.warnings:
            print(f"warning: {w}", file=sys.stderr)
    print(result.summary)
