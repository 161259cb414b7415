"""`bg remove`: take an app off its hosts. Under the lock, per host: find who in nginx still
uses the app's upstream (refuse unless ``--force``), take the upstream file out of nginx
(tested, reloaded; with ``--force`` a 503 stand-in keeps such a site valid), drain nginx's
old workers, stop both slots, remove what `bg setup` made. Releases, the slots' logs and
the journal stay unless ``--purge``. See :mod:`bluegreen.teardown` for what "live" means.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

from bluegreen import teardown
from bluegreen.errors import ConfigError
from bluegreen.facts.drain import drain_noted_script
from bluegreen.facts.observe import Observation
from bluegreen.host import Host, check
from bluegreen.ops.core import Context, OperationResult
from bluegreen.ops.executor import interruptible
from bluegreen.ops.reconcile import served_slot
from bluegreen.ops.session import Session, observe
from bluegreen.shell import lines


@dataclass(frozen=True)
class HostRemoval:
    """What `bg remove` does (or refuses) on one host; the same for a dry run."""

    host: str
    upstream_file: str | None  # None: there is none to take out of nginx
    stand_in: bool  # --force and a site still uses the upstream: a 503 stand-in replaces it
    uses: dict[str, list[str]] = field(default_factory=dict)  # nginx file -> names it uses
    serving: str | None = None  # the running slot the upstream points at: traffic is live
    running: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    refused: str | None = None

    def describe(self) -> list[str]:
        if self.refused:
            return [f"refused: {self.refused}"]
        out = []
        if self.upstream_file:
            out.append(f"replace {self.upstream_file} by a 503 stand-in" if self.stand_in
                       else f"remove {self.upstream_file}" + ", test and reload nginx")
        out.append("stop " + (", ".join(self.running) if self.running else "nothing (no slot"
                                                                                " runs)"))
        out.append("remove " + " ".join(self.removed))
        return out

    def to_json(self) -> dict[str, Any]:
        return {"upstream_file": self.upstream_file, "stand_in": self.stand_in,
                "uses": self.uses, "serving": self.serving, "running": list(self.running),
                "removed": list(self.removed), "refused": self.refused,
                "actions": self.describe()}


@dataclass(frozen=True)
class RemovePlan:
    purge: bool
    hosts: tuple[HostRemoval, ...]

    def to_json(self) -> dict[str, Any]:
        return {"dry_run": True, "purge": self.purge,
                "hosts": {h.host: h.to_json() for h in self.hosts}}

    def lines(self) -> list[str]:
        out = ["plan: remove (dry run: nothing was touched on any host)"]
        for h in self.hosts:
            out.append(f"  {h.host}:")
            out.extend(f"    {line}" for line in h.describe())
        return out


def _refusal(h: HostRemoval, uses: dict[str, list[str]], upstream: str) -> str:
    where = "; ".join(f"{f} uses {', '.join(n)}" for f, n in uses.items())
    if h.serving:
        return (f"traffic is live: {where}, and {upstream} points at {h.serving},"
                " which runs")
    return f"a site still uses the app's upstream ({where})"


def plan_host(ctx: Context, host: Host, obs: Observation, *, force: bool, purge: bool
              ) -> HostRemoval:
    """Read-only: what removing the app does on ``host`` (one `nginx -T` round trip)."""
    config = ctx.config
    upstreams, variables = teardown.defined_names(obs.upstream)
    # A log format is named like an upstream (`access_log PATH hello_bg;`).
    names = (*upstreams, *teardown.defined_formats(obs.upstream))
    script = teardown.references_script(config, [*names, *variables])
    uses = {} if script is None else teardown.parse_references(
        check(host.run(script), "reading nginx's configuration", host).stdout,
        names, variables, config.nginx.upstream_file)
    served = served_slot(config, obs.upstream)
    running = tuple(s for s in config.slots if obs.alive.get(s))
    h = HostRemoval(
        host=host.name, upstream_file=config.nginx.upstream_file if obs.upstream else None,
        stand_in=bool(uses) and force, uses=uses,
        serving=served if served in running else None, running=running,
        removed=teardown.removed_paths(ctx.paths, purge=purge))
    if uses and not force:
        return replace(h, refused=_refusal(h, uses, h.upstream_file or ""))
    return h


def remove(ctx: Context, *, purge: bool = False, force: bool = False, dry_run: bool = False
           ) -> OperationResult | RemovePlan:
    if ctx.tier.hosts:  # nginx on hosts of its own
        raise ConfigError("bg remove does not handle a target with load balancers yet",
                          hint="remove the app's upstream from the load balancers by hand")
    started = time.monotonic()
    if dry_run:
        observed = observe(ctx)
        found = ctx.each(lambda h: plan_host(ctx, h, observed[h.name][1], force=force,
                                             purge=purge), "remove plan")
        return RemovePlan(purge, tuple(found[h.name] for h in ctx.hosts))
    with interruptible(), Session(ctx, "remove") as session:
        with ctx.step("read nginx's configuration"):
            found = ctx.each(lambda h: plan_host(ctx, h, session.observed[h.name], force=force,
                                                 purge=purge), "remove plan")
        refused = {n: p.refused for n, p in found.items() if p.refused}
        if refused:
            session.discard_journal()  # refused: nothing changed, nothing to journal
            raise ConfigError(
                "refusing to remove " + ctx.config.app.name + ": "
                + "; ".join(f"{n}: {why}" for n, why in refused.items()),
                hint="take the site out of nginx (and reload) first, then run bg remove"
                " again; or --force: stop the app and leave a 503 stand-in upstream")
        outcomes = _execute(ctx, session, found, purge=purge)
    kept = "" if purge else "; kept the releases, logs and journal (--purge removes them)"
    return OperationResult(
        operation="remove", app=ctx.config.app.name, target=ctx.target.name, version=None,
        slot=None, previous_slot=None, previous_version=None,
        hosts=ctx.outcomes(outcomes), steps=tuple(ctx.steps),
        seconds=time.monotonic() - started,
        summary=f"removed {ctx.config.app.name} from {len(ctx.hosts)} host(s){kept}",
        warnings=tuple(f"{p.host}: left a 503 stand-in in {p.upstream_file} (a site still uses"
                       " it): take the site out of nginx, then run bg remove again"
                       for p in found.values() if p.stand_in))


def _execute(ctx: Context, session: Session, found: dict[str, HostRemoval], *, purge: bool
             ) -> dict[str, str]:
    config = ctx.config
    drains: dict[str, list[int]] = {}
    notes: dict[str, list[str]] = {n: [] for n in found}

    def take_out(host: Host) -> None:
        p = found[host.name]
        upstream = session.observed[host.name].upstream
        content = teardown.stand_in(config, *teardown.defined_names(upstream),
                                    teardown.defined_formats(upstream)) if p.stand_in else None
        done = teardown.read_removal(session.run(host, teardown.nginx_script(config, content)),
                                     host, config)
        drains[host.name] = done.old_workers
        notes[host.name].append("503 stand-in" if p.stand_in else "upstream removed")
        if not done.reloaded:
            notes[host.name].append("nginx not reloaded (is it running?)")

    with_upstream = [h for h in ctx.hosts if found[h.name].upstream_file]
    if with_upstream:
        with ctx.step("take the upstream out of nginx, reload"):
            ctx.each(take_out, "remove upstream", with_upstream)
    session.record("nginx", "ok", tuple(h.name for h in with_upstream))

    def finish(host: Host) -> None:
        p = found[host.name]
        port = config.slots[p.serving] if p.serving else None
        old = drains.get(host.name, [])
        session.record("done", "ok", (host.name,), purge=purge or None)
        script = lines(
            drain_noted_script(old, config.switch.drain_timeout, port=port) if old else "",
            *(ctx.runner.stop_script(slot) for slot in config.slots),
            teardown.files_script(config, ctx.paths, purge=purge),
            session.release_tail(host),
            teardown.purge_script(ctx.paths) if purge else "")
        check(host.run(script), "stopping the slots and removing files", host)
        session.released(host)
        if p.running:
            notes[host.name].append("stopped " + ", ".join(p.running))

    with ctx.step("drain, stop both slots, remove files" + (" (purge)" if purge else "")):
        ctx.each(finish, "remove", ctx.hosts)
    return {n: "removed: " + ", ".join(v) if v else "removed" for n, v in notes.items()}
