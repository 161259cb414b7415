"""A canary's plans and steps (the record of a running one: :mod:`bluegreen.ops.canary`):
the upstream that splits new requests, the deploy whose switch is a canary, the abort,
and recording the canary once its switch held."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace

from bluegreen import nginx
from bluegreen.errors import BgError, ConfigError
from bluegreen.facts.observe import Observation
from bluegreen.host import Host, check
from bluegreen.ops.canary import Running, label, parse
from bluegreen.ops.core import Context, OperationResult
from bluegreen.ops.plan import (
    Action,
    CanarySpec,
    Finish,
    Hold,
    HostFacts,
    HostPlan,
    Plan,
    Switch,
    Verify,
    plan_deploy,
)
from bluegreen.ops.session import Session
from bluegreen.shell import ScriptExit, lines, subshell
from bluegreen.state import HostState, write_state_script


def weights(percent: int) -> tuple[int, int]:
    """(old, new) upstream weights for ``percent`` of requests to the new slot."""
    g = math.gcd(percent, 100 - percent)
    return (100 - percent) // g, percent // g


def render(ctx: Context, step: Switch, observed: Mapping[str, Observation]
           ) -> dict[str, tuple[str, str]]:
    """nginx host -> (its canary upstream, the X-BG-Slot a probe through it shows)."""
    spec = step.canary
    assert spec is not None
    slot = sorted(set(step.slots.values()))[0]
    version = sorted(set(step.versions.values()))[0]
    marker = {"slot": slot, "version": version, "percent": spec.percent,
              "sticky": spec.sticky, "since": f"{spec.since:.3f}"}
    old_w, new_w = weights(spec.percent)
    ports = ctx.config.slots

    def pair(address: str, host: str, app: str) -> list[nginx.Server]:
        # The old slot last: what reads an LB's upstream (lbtier.parse_servers) sees the
        # slot the app host still serves as live.
        return [nginx.Server(address, ports[step.slots[app]], host, new_w),
                nginx.Server(address, ports[spec.old[app]], host, old_w)]

    return {host: (_render(ctx, slot, version, servers, marker), label(slot))
            for host, servers in ctx.tier.canary_servers(ctx, step, observed, pair).items()}


def _render(ctx: Context, slot: str, version: str, servers: list[nginx.Server],
            marker: Mapping[str, object]) -> str:
    text = nginx.render_upstream(ctx.config, slot=label(slot), version=version,
                                 servers=servers, canary=marker)
    if parse(text) is None or "weight=" not in text:
        raise ConfigError(
            f"the nginx template {ctx.config.nginx.template} has no canary support (the"
            " `# bg-canary` line and server weights)",
            hint="copy templates/upstream.conf.j2 from `bg init --templates` and keep its"
            " canary lines")
    return text


def plan_canary(ctx: Context, facts: Mapping[str, HostFacts], version: str, *, sha256: str,
                percent: int, since: float, promote_after: float | None) -> Plan:
    """A deploy whose switch is a canary, held (and judged) afterwards; with
    ``promote_after``, followed by the deploy's own full switch and retire."""
    config, front = ctx.config, ctx.tier.names
    base = plan_deploy(config, facts, version, sha256=sha256, retire=ctx.should_retire,
                       boot_batch=ctx.target.boot_batch(len(facts)), front=front,
                       verify=False)
    for h in base.hosts:
        if h.old_slot is None:
            raise BgError(f"{h.host}: nothing is live yet, so there is nothing to compare a"
                          " canary with", hint="deploy the first release without --canary")
        if h.action is Action.NOTHING:
            raise BgError(f"{h.host}: {version} is already live there; a canary needs a new"
                          " release")
    ctx.tier.check_canary({h.slot for h in base.hosts})
    at = next(i for i, s in enumerate(base.steps) if isinstance(s, Switch))
    full = base.steps[at]
    assert isinstance(full, Switch)
    old = {h.host: h.old_slot for h in base.hosts if h.old_slot}
    spec = CanarySpec(percent, old, {h.host: h.old_version or "" for h in base.hosts},
                      sticky=config.verify.sticky, since=since)
    watch = promote_after if promote_after is not None else config.verify.window
    hold = Hold(slots=dict(full.slots), watch=watch, promote=promote_after is not None,
                front=front)
    steps = (*base.steps[:at], replace(full, canary=spec), hold)
    if promote_after is not None:
        steps += tuple(s for s in base.steps[at:] if not isinstance(s, Verify))
    return replace(base, steps=steps)


def judge(step: Hold, canary: CanarySpec) -> Verify | None:
    """The window that judges the canary's own requests (None: no watch)."""
    if not step.watch:
        return None
    return Verify(step.watch, step.slots, canary.old, step.front, canary=True)


def plan_abort(ctx: Context, session: Session, found: Mapping[str, Running]) -> Plan:
    """All traffic back to the old slots, then the canary's slots retired."""
    front = ctx.tier.names
    r = next(iter(found.values()))
    states: Mapping[str, HostState] = session.states
    # The app hosts an nginx host running the canary serves (behind LBs: every one).
    hosts = tuple(HostPlan(host=n, action=Action.SWITCH, slot=s.live or "",
                           version=s.live_version or "", old_slot=r.slot, old_version=r.version,
                           retire=r.slot)
                  for n, s in states.items() if set(found) & set(ctx.tier.nginx_names((n,))))
    live = {h.host: h.slot for h in hosts}
    versions = {h.host: h.version for h in hosts}
    steps = (Switch(slots=live, versions=versions, front=front, fleet=live),
             Finish(slots=live, versions=versions, retire={h.host: r.slot for h in hosts},
                    prune=False, front=front))
    return Plan(operation="abort", version=hosts[0].version, hosts=hosts, steps=steps)


def hold(ctx: Context, session: Session, step: Hold) -> None:
    """The canary's switch is recorded: its backup file goes (a crash from here on leaves
    the canary running, for `bg status` to show and promote/abort to end)."""
    discard = nginx.discard_backup_script(ctx.config)
    version = str(session.version or "")  # a deploy's session names its release
    nginx_hosts = set(ctx.tier.nginx_names(step.hosts))

    def one(host: Host) -> None:
        script = discard if host.name in nginx_hosts else ""
        if host.name in step.slots:  # the slot's release, recorded; live stays the old slot
            state = session.states[host.name]
            new = replace(state, versions={**state.versions, step.slots[host.name]: version})
            script = lines(script, subshell(write_state_script(ctx.paths, new),
                                            or_exit=ScriptExit.STATE_WRITE))
            check(session.run(host, script), "recording the canary", host)
            session.states[host.name] = new
        else:
            check(session.run(host, script), "recording the canary", host)

    with ctx.step("record the canary"):
        ctx.each(one, "record the canary", session.hosts((*step.hosts, *step.front)))
    session.record("canary", "started", (*step.hosts, *step.front), slots=dict(step.slots),
                   version=version)



def started(ctx: Context, result: OperationResult, percent: int) -> OperationResult:
    """A held canary's result says so, and how to end it."""
    n = len(result.hosts)
    summary = (f"canary {ctx.config.app.name} {result.version} on {result.slot} takes"
               f" {percent}% of new requests on {n} host{'s' if n != 1 else ''}"
               f" ({result.previous_version} on {result.previous_slot} the rest)"
               f" in {result.seconds:.2f}s; `bg promote` or `bg abort` ends it")
    return replace(result, operation="canary", summary=summary)
