"""`bg check`: is every host of a target ready for bg? One script per host (one round
trip, built by :mod:`bluegreen.facts.check`), judged into a line per check."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bluegreen.errors import HostError, HostKeyError
from bluegreen.facts import check as checks
from bluegreen.facts.check import FAIL, OK, CheckLine
from bluegreen.facts.sections import new_marker
from bluegreen.host import Host, LocalHost
from bluegreen.ops.core import Context


@dataclass(frozen=True)
class CheckReport:
    config: str
    target: str
    lines: tuple[CheckLine, ...]

    @property
    def ok(self) -> bool:
        return all(line.status != FAIL for line in self.lines)

    def counts(self) -> dict[str, int]:
        out = {s: 0 for s in (checks.OK, checks.FAIL, checks.WARN, checks.SKIP)}
        for line in self.lines:
            out[line.status] += 1
        return out

    def to_json(self) -> dict[str, Any]:
        return {"config": self.config, "target": self.target,
                "checks": [line.to_json() for line in self.lines], "summary": self.counts()}


def config_lines(ctx: Context) -> list[CheckLine]:
    from bluegreen import config as configuration

    lines = [CheckLine("-", "config", OK, f"{ctx.config.path} (target {ctx.target.name})")]
    lines += [CheckLine("-", "config", checks.WARN, w) for w in configuration.warnings(ctx.config)]
    return lines


def check_host(ctx: Context, host: Host) -> list[CheckLine]:
    name = host.name
    local = isinstance(host, LocalHost)
    marker = new_marker()
    try:
        result = host.run(checks.host_script(ctx.config, marker), timeout=60)
    except HostKeyError as exc:
        return [CheckLine(name, "reachable", OK, "answers"),
                CheckLine(name, "host key known", FAIL, exc.message, exc.hint)]
    except HostError as exc:
        return [CheckLine(name, "reachable", FAIL, exc.message, exc.hint)]
    lines = [CheckLine(name, "reachable", OK, "this machine" if local else "over SSH"),
             CheckLine(name, "host key known", OK, "no SSH" if local else "verified")]
    return lines + checks.evaluate(ctx.config, name, result.stdout, marker=marker, local=local)


def check(ctx: Context) -> CheckReport:
    per_host = ctx.each(lambda h: check_host(ctx, h), "check")
    lines = config_lines(ctx)
    for host in ctx.hosts:
        lines += per_host[host.name]
    return CheckReport(str(ctx.config.path), ctx.target.name, tuple(lines))
