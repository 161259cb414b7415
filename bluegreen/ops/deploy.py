"""deploy, rollback and switch: observe every host, plan per host, execute the plan.

A dry run observes read-only (no lock, no directory created), plans the same way and
returns the plan with the nginx diff each switching host would get.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bluegreen import nginx
from bluegreen.facts.observe import Observation
from bluegreen.health import healthy_now
from bluegreen.host import Host
from bluegreen.ops import canary as canaries
from bluegreen.ops import canarysteps
from bluegreen.ops.core import Context, OperationResult, prefetch
from bluegreen.ops.executor import counted, execute, interruptible
from bluegreen.ops.plan import HostFacts, Plan, Switch, plan_deploy, plan_rollback, plan_switch
from bluegreen.ops.reconcile import reconcile
from bluegreen.ops.session import Session, observe
from bluegreen.runners.base import release_executable
from bluegreen.state import HostState


@dataclass(frozen=True)
class DryRun:
    """What an operation would do: its plan and each switching host's nginx diff."""

    plan: Plan
    diffs: Mapping[str, str]
    notes: Mapping[str, tuple[str, ...]]

    def lines(self, ctx: Context) -> list[str]:
        out = [f"plan: {self.plan.operation} {self.plan.version} (dry run: nothing was"
               " touched on any host)"]
        for h in self.plan.hosts:
            out.append(f"  {h.host}: {h.action.value}"
                       + (f" ({h.old_slot or '-'} -> {h.slot})" if h.old_slot != h.slot else ""))
            out.extend(f"    note: {n}" for n in self.notes.get(h.host, ()))
        out.append("steps:")
        out.extend(f"  {i:2}. {s}" for i, s in enumerate(self.plan.describe(ctx.config), 1))
        for host, diff in self.diffs.items():
            if diff:
                out.append(f"nginx upstream on {host}:")
                out.extend("  " + line for line in diff.splitlines())
        return out

    def to_json(self, ctx: Context) -> dict[str, Any]:
        return {"dry_run": True, "plan": self.plan.to_json(ctx.config),
                "nginx_diff": dict(self.diffs),
                "notes": {k: list(v) for k, v in self.notes.items()}}


SlotsOfInterest = Callable[[HostState], set[str]]


def _facts(ctx: Context, states: Mapping[str, HostState], observed: Mapping[str, Observation],
           interesting: SlotsOfInterest) -> dict[str, HostFacts]:
    """Each host's state plus whether the slots that matter answer their health check now
    (a quick probe, no SSH round trip: HTTP travels through the host's transport)."""
    cfg = ctx.config.health

    def one(host: Host) -> HostFacts:
        state, obs = states[host.name], observed[host.name]
        warm = {}
        for slot in interesting(state):
            warm[slot] = bool(obs.alive.get(slot)) and healthy_now(
                host, ctx.config.slots[slot], cfg, within=min(cfg.deadline, 2.0)).healthy
        return HostFacts(state=state, warm=warm, release_sha=obs.release_sha)

    return ctx.each(one, "warm check")


def _dry_run(ctx: Context, version: str | None,
             make: Callable[[dict[str, HostFacts]], Plan]) -> DryRun:
    raw = observe(ctx, version)
    states, notes = {}, {}
    for name, (recorded, obs) in raw.items():
        rec = reconcile(ctx.config, recorded, obs)
        states[name], notes[name] = rec.state, rec.notes
    plan = make(_facts(ctx, states, {n: o for n, (_, o) in raw.items()}, _all_slots))
    switch = next((s for s in plan.steps if isinstance(s, Switch)), None)
    upstreams = ctx.tier.preview(ctx, plan, switch, {n: o for n, (_, o) in raw.items()})
    diffs = {host: _diff(ctx, old, new) for host, (old, new) in upstreams.items()}
    return DryRun(plan=plan, diffs=diffs, notes={k: v for k, v in notes.items() if v})


def _diff(ctx: Context, old: str, new: str) -> str:
    import difflib  # a dry run's only

    name = ctx.config.nginx.upstream_file
    return "".join(difflib.unified_diff(old.splitlines(keepends=True),
                                        new.splitlines(keepends=True),
                                        name + " (now)", name + " (new)"))


def _all_slots(state: HostState) -> set[str]:
    return {s for s in ("blue", "green") if state.version_of(s)}


def deploy(ctx: Context, artifact_path: Path, *, version: str | None = None,
           dry_run: bool = False, verify: bool = True, canary: int | None = None,
           promote_after: float | None = None) -> OperationResult | DryRun:
    from bluegreen import artifact as artifacts  # a switch or rollback never reads one

    started = time.monotonic()  # the reported total includes the artifact check
    prefetch(*nginx.renderer_modules(ctx.config), "httpx", "tenacity")
    # Everything that can be refused is refused before any host is touched.
    with ctx.step("check artifact") as note:
        art = artifacts.inspect(artifact_path, app=ctx.config.app.name, version=version,
                                max_size=ctx.config.app.max_release_size,
                                need=release_executable(ctx.config.app))
        note.append(f"{art.version}, {art.members} files")
    batch = ctx.target.boot_batch(len(ctx.hosts))

    def make(facts: dict[str, HostFacts]) -> Plan:
        if canary is not None:
            return canarysteps.plan_canary(ctx, facts, art.version, sha256=art.sha256,
                                          percent=canary, since=time.time(),
                                          promote_after=promote_after)
        return plan_deploy(ctx.config, facts, art.version, sha256=art.sha256,
                           retire=ctx.should_retire, boot_batch=batch, front=ctx.tier.names,
                           verify=verify)

    def wanted(state: HostState) -> set[str]:
        return {s for s in ("blue", "green") if state.version_of(s) == art.version}

    if dry_run:
        return _dry_run(ctx, art.version, make)
    with interruptible(), Session(ctx, f"deploy {art.version}", version=art.version,
                                     nginx_test=True) as session:
        canaries.refuse_during(ctx, session, "deploy")
        plan = make(_facts(ctx, session.states, session.observed, wanted))
        result = execute(ctx, session, plan, art, started=started)
    if canary is not None and promote_after is None:
        result = canarysteps.started(ctx, result, canary)
    return counted(ctx, result)


def rollback(ctx: Context, *, dry_run: bool = False) -> OperationResult | DryRun:
    # a cold previous slot boots
    prefetch(*nginx.renderer_modules(ctx.config), "httpx", "tenacity")
    batch = ctx.target.boot_batch(len(ctx.hosts))

    def make(facts: dict[str, HostFacts]) -> Plan:
        return plan_rollback(ctx.config, facts, retire=ctx.should_retire, boot_batch=batch,
                             front=ctx.tier.names)

    if dry_run:
        return _dry_run(ctx, None, make)
    with interruptible(), Session(ctx, "rollback") as session:
        canaries.refuse_during(ctx, session, "rollback")
        plan = make(_facts(ctx, session.states, session.observed,
                           lambda s: {s.idle} if s.live else set()))
        _test_nginx_first(session, plan)
        result = execute(ctx, session, plan, None)
    return counted(ctx, result)


def switch(ctx: Context, *, to: str | None = None, dry_run: bool = False
           ) -> OperationResult | DryRun:
    prefetch(*nginx.renderer_modules(ctx.config))
    batch = ctx.target.boot_batch(len(ctx.hosts))

    def make(facts: dict[str, HostFacts]) -> Plan:
        return plan_switch(ctx.config, facts, to=to, retire=ctx.should_retire,
                           boot_batch=batch, front=ctx.tier.names)

    if dry_run:
        return _dry_run(ctx, None, make)
    with interruptible(), Session(ctx, "switch") as session:
        canaries.refuse_during(ctx, session, "switch")
        plan = make(_facts(ctx, session.states, session.observed,
                           lambda s: {to or s.idle}))
        _test_nginx_first(session, plan)
        result = execute(ctx, session, plan, None)
    return counted(ctx, result)


def _test_nginx_first(session: Session, plan: Plan) -> None:
    """A switch or rollback to a warm slot changes nothing before its stage, whose test of
    nginx's configuration refuses one already broken (~10 ms of `nginx -t` saved from the
    lock's round trip); one that boots a slot or runs a hook first tests it before that."""
    if plan.steps and not isinstance(plan.steps[0], Switch):
        session.test_nginx()
