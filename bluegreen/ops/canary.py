"""Canary releases: a share of new requests to the new slot, the rest to the old one.

``bg deploy --canary 20 ARTIFACT`` boots and gates the new slot as a deploy does, then
switches nginx (the same two-phase, confirmed switch) to an upstream listing both slots
with weights 80:20 (``hash $remote_addr consistent`` first with ``[verify] sticky``, so a
client stays on one release). The record of a running canary is that upstream file on
every nginx host, as the live slot's is: a ``# bg-canary`` line names its slot, version,
share and start, and ``state.json`` keeps the old slot as live until ``bg promote``. The
canary's own requests are told apart in nginx's log by their upstream address.

``bg promote`` is a switch to the canary's slot (the old slot retires as usual);
``bg abort`` switches back to the old slot alone and retires the canary's. A deploy,
switch or rollback while a canary runs is refused. An operation killed mid-way is
recovered by the next one like any other (its backup upstream file is restored).

This module reads the record (for status and for the operations that refuse to run over a
canary); :mod:`bluegreen.ops.canarysteps` plans and runs a canary's steps.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bluegreen.errors import StateError

if TYPE_CHECKING:
    from bluegreen.facts.observe import Observation
    from bluegreen.host import Host
    from bluegreen.ops.core import Context
    from bluegreen.ops.session import Session

MARK = "# bg-canary "
_FIELDS = re.compile(r"(\w+)=(\S+)")


@dataclass(frozen=True)
class Running:
    slot: str
    version: str
    percent: int
    sticky: bool
    since: float

    def to_json(self) -> dict[str, Any]:
        return {"slot": self.slot, "version": self.version, "percent": self.percent,
                "sticky": self.sticky, "since": self.since}


def parse(upstream: str | None) -> Running | None:
    """The canary an upstream file records, or None."""
    for line in (upstream or "").splitlines():
        if line.startswith(MARK):
            f = dict(_FIELDS.findall(line))
            try:
                return Running(f["slot"], f["version"], int(f["percent"]),
                               f.get("sticky") == "True", float(f.get("since", "0")))
            except (KeyError, ValueError):
                return None
    return None


def label(slot: str) -> str:
    """X-BG-Slot while a canary runs: no slot serves alone."""
    return f"canary-{slot}"


def served(observed: Observation) -> str | None:
    """What nginx serves once an interrupted switch is undone (the backup wins)."""
    return observed.backup if observed.backup is not None else observed.upstream


def running(ctx: Context, session: Session) -> dict[str, Running]:
    """nginx host -> the canary its upstream file records."""
    names = ctx.tier.nginx_names(tuple(session.states))
    found = {n: parse(served(session.observed[n])) for n in names if n in session.observed}
    return {n: r for n, r in found.items() if r is not None}


def refuse_during(ctx: Context, session: Session, operation: str) -> None:
    """A deploy, switch or rollback would overwrite the canary's upstream: refuse."""
    found = running(ctx, session)
    if found:
        r = next(iter(found.values()))
        raise StateError(
            f"a canary of {r.version} ({r.slot}, {r.percent}% of new requests) is running on"
            f" {', '.join(found)}: no {operation} until it ends",
            hint="`bg promote` sends all traffic to it, `bg abort` takes it back")


# ----------------------------------------------------------------------------- status


def status(ctx: Context) -> dict[str, Any] | None:
    """The running canary and its figures from nginx's log since it started (None: none)."""
    nginx_hosts = ctx.tier.nginx_hosts(ctx.hosts)
    upstream = ctx.config.nginx.upstream_file

    def marker(host: Host) -> Running | None:
        raw = host.read(upstream)
        return parse(raw.decode(errors="replace") if raw else None)

    found = {n: r for n, r in ctx.each(marker, "canary", nginx_hosts).items() if r}
    if not found:
        return None
    from bluegreen import accesslog  # its log is read only while a canary runs

    r = next(iter(found.values()))
    path = ctx.config.verify.log_path(ctx.config.app.root)

    def count(host: Host) -> tuple[int, int, int]:
        new = ctx.tier.addresses(ctx, host.name,
                                 dict.fromkeys(ctx.tier.served_by(ctx, host.name), r.slot))
        out = host.run(accesslog.count_script(path, 0, new=new, old=[], mode="canary",
                                              since=r.since) + "\n"
                       + accesslog.count_script(path, 0, new=[], old=[], since=r.since))
        counts = [c for c in (accesslog.parse_count(line) for line in out.stdout.splitlines())
                  if c is not None]
        if len(counts) != 2:
            return 0, 0, 0
        return counts[0].requests, counts[0].errors, counts[1].requests

    figures = ctx.each(count, "canary figures", [h for h in nginx_hosts if h.name in found])
    canary_req = sum(f[0] for f in figures.values())
    total = sum(f[2] for f in figures.values())
    errors = sum(f[1] for f in figures.values())
    return {**r.to_json(), "hosts": sorted(found), "seconds": round(time.time() - r.since, 1),
            "requests": canary_req, "errors": errors, "all_requests": total,
            "share": round(canary_req / total, 4) if total else None}
