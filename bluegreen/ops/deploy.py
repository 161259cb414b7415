"""deploy, rollback and switch: a plan, then the steps of DESIGN.md's deploy algorithm."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from bluegreen import artifact as artifacts
from bluegreen import hooks
from bluegreen.config import warnings
from bluegreen.errors import BgError, HealthCheckError
from bluegreen.health import wait_healthy
from bluegreen.host import Host
from bluegreen.ops import steps
from bluegreen.ops.core import Context, OperationResult, Session
from bluegreen.ops.plan import Plan, plan_deploy, plan_rollback, plan_switch


def _idle_warm(ctx: Context, session: Session, slot: str) -> bool:
    """The slot runs on every host and answers its health check right now."""
    cfg = ctx.config.health
    quick = replace(cfg, start_delay=0.0, deadline=min(cfg.deadline, 3.0), successes=1)

    def one(host: Host) -> bool:
        if not steps.slot_alive(ctx, host, slot):
            return False
        return wait_healthy(host.http_transport(), ctx.config.slots[slot], quick).healthy

    with ctx.step(f"check whether {slot} is still warm") as note:
        warm = all(ctx.each(one, "warm check").values())
        note.append("warm" if warm else "not running")
    return warm


def execute(ctx: Context, session: Session, plan: Plan, art: artifacts.Artifact | None
            ) -> OperationResult:
    started = time.monotonic()
    session.record("start", "ok", plan=plan.operation, version=plan.version, slot=plan.slot)
    extract: dict[str, str] = {}
    if art is not None:
        steps.upload_env(ctx)
        extract = steps.ship_release(ctx, art, session.probed)
    elif plan.start:
        steps.require_release(ctx, plan.version)
    if plan.start:
        steps.start_slot(ctx, plan.slot, plan.version, extract)
        try:
            steps.health_gate(ctx, plan.slot, plan.version)
        except HealthCheckError:
            session.record("health", "failed", slot=plan.slot, version=plan.version)
            raise
        session.record("health", "ok", slot=plan.slot, version=plan.version)
    for hook in plan.hooks:
        try:
            hooks.run_before_switch(ctx, hook, plan.slot, plan.version)
        except BgError:
            session.record("hook", "failed", hook=hook, version=plan.version)
            if plan.start:
                steps.stop_slot(ctx, plan.slot)
            raise
        session.record("hook", "ok", hook=hook, version=plan.version)

    try:
        switched = steps.switch_traffic(ctx, session, plan.slot, plan.version)
    except BgError:
        if plan.start:
            steps.stop_slot(ctx, plan.slot)
        raise

    steps.finalize(
        ctx, session, plan.slot, plan.version,
        retire=plan.old_slot if plan.retire else None,
        old_workers=switched.old_workers,
        prune=art is not None,
    )
    session.record(
        "switch", "ok", slot=plan.slot, version=plan.version,
        previous_slot=plan.old_slot, previous_version=plan.old_version,
    )
    if plan.retire and plan.old_slot:
        session.record("retire", "ok", slot=plan.old_slot, version=plan.old_version)
    session.record("done", "ok", version=plan.version, slot=plan.slot)

    verb = {"deploy": "deployed", "rollback": "rolled back to", "switch": "switched to"}
    previous = f" (previous: {plan.old_version} on {plan.old_slot})" if plan.old_slot else ""
    n = len(ctx.hosts)
    summary = (
        f"{verb[plan.operation]} {ctx.config.app.name} {plan.version} on {plan.slot}"
        f" on {n} host{'s' if n != 1 else ''} in {time.monotonic() - started:.2f}s{previous}"
    )
    return OperationResult(
        operation=plan.operation,
        app=ctx.config.app.name,
        target=ctx.target.name,
        version=plan.version,
        slot=plan.slot,
        previous_slot=plan.old_slot,
        previous_version=plan.old_version,
        hosts=ctx.outcomes("switched"),
        steps=tuple(ctx.steps),
        seconds=time.monotonic() - started,
        summary=summary,
        warnings=tuple(warnings(ctx.config)),
    )


def deploy(ctx: Context, artifact_path: Path, *, version: str | None = None,
           dry_run: bool = False) -> OperationResult | Plan:
    # Everything that can be refused is refused before any host is touched.
    with ctx.step("check artifact") as note:
        art = artifacts.inspect(artifact_path, app=ctx.config.app.name, version=version)
        note.append(f"{art.version}, {art.members} files")
    probe = steps.release_probe(ctx, art.version)
    with Session(ctx, f"deploy {art.version}", probe=probe) as session:
        _, state = session.common_live()
        plan = plan_deploy(ctx.config, state, art.version, retire=ctx.should_retire)
        if dry_run:
            return plan
        result = execute(ctx, session, plan, art)
    return _counted(ctx, result)


def rollback(ctx: Context, *, dry_run: bool = False) -> OperationResult | Plan:
    with Session(ctx, "rollback") as session:
        live, state = session.common_live()
        if live is None or state.previous is None:
            plan_rollback(ctx.config, state, idle_warm=False, retire=ctx.should_retire)
        warm = state.version_of(state.idle) == state.previous and _idle_warm(
            ctx, session, state.idle
        )
        plan = plan_rollback(ctx.config, state, idle_warm=warm, retire=ctx.should_retire)
        if dry_run:
            return plan
        result = execute(ctx, session, plan, None)
    return _counted(ctx, result)


def switch(ctx: Context, *, to: str | None = None, dry_run: bool = False
           ) -> OperationResult | Plan:
    with Session(ctx, "switch") as session:
        _, state = session.common_live()
        target = to or state.idle
        plan_switch(ctx.config, state, to=to, idle_warm=False, retire=ctx.should_retire)
        warm = _idle_warm(ctx, session, target)
        plan = plan_switch(ctx.config, state, to=to, idle_warm=warm, retire=ctx.should_retire)
        if dry_run:
            return plan
        result = execute(ctx, session, plan, None)
    return _counted(ctx, result)


def _counted(ctx: Context, result: OperationResult) -> OperationResult:
    """The result with each host's round trips counted after the lock was released."""
    return replace(result, hosts=ctx.outcomes("switched"))
