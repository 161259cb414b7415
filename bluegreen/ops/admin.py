"""setup, migrate, status, history and lock: the operations around a deploy.

Each returns a value of :mod:`bluegreen.results`; the CLI renders it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bluegreen import asroot, lock, nginx
from bluegreen import state as st
from bluegreen.errors import BgError, ConfigError, HookError
from bluegreen.facts.observe import Observation
from bluegreen.health import healthy_now
from bluegreen.host import Host, check
from bluegreen.ops import canary
from bluegreen.ops.core import Context
from bluegreen.ops.reconcile import reconcile, served_slot
from bluegreen.ops.session import Session, observe
from bluegreen.probe import ProbeError, Prober
from bluegreen.releases import lb_setup_script, read_created, setup_script
from bluegreen.results import HostOutcome, OperationResult
from bluegreen.results_status import (
    HostStatus,
    LbStatus,
    NginxStatus,
    SlotStatus,
    StatusResult,
)

if TYPE_CHECKING:  # imported where used: `bg status` builds none of them
    from bluegreen.results_history import HistoryResult, LockReleaseResult, LockStatusResult

# ----------------------------------------------------------------------------- setup


@dataclass(frozen=True)
class SetupScripts:
    app: str  # on each app host
    lb: str  # on each load balancer


def setup_scripts(ctx: Context) -> SetupScripts:
    config = ctx.config
    initial = nginx.render_upstream(config, slot="blue", version="none")
    if ctx.tier.hosts:  # nothing runs yet: every app host's blue slot, as one host's file says
        port = config.slots["blue"]
        initial = nginx.render_upstream(config, slot="blue", version="none", servers=[
            nginx.Server(ctx.target.address_of(h), port, h) for h in ctx.target.hosts])
    app = setup_script(
        ctx.paths,
        upstream_file=None if ctx.tier.hosts else nginx.files(config).live,
        initial_upstream=initial,
        initial_state=st.HostState(updated_at=st.now_iso()).to_json().decode(),
        runner_setup=ctx.runner.setup_script(),
    )
    return SetupScripts(app, lb_setup_script(nginx.files(config).live, initial))


def setup(ctx: Context) -> OperationResult:
    """Directories, env file, initial upstream and state; safe to run again. Under the
    lock, as every change: a deploy never starts against a half-written env file."""
    started = time.monotonic()
    config, paths = ctx.config, ctx.paths
    scripts = setup_scripts(ctx)
    everywhere = [*ctx.hosts, *ctx.tier.hosts]
    with lock.with_lock(ctx.each, everywhere, paths, "setup"):
        with ctx.step(f"set up {paths.root}"):
            outcomes = ctx.each(lambda h: setup_host(ctx, h, scripts), "setup", everywhere)
        env = config.app.env_file
        if env is not None:
            data = env.read_bytes()
            with ctx.step("upload env file (mode 0600)"):
                ctx.each(lambda h: h.write_atomic(paths.env_file, data, mode=0o600),
                         "env upload")
    return OperationResult(
        operation="setup", app=config.app.name, target=ctx.target.name, version=None,
        slot=None, previous_slot=None, previous_version=None,
        hosts=ctx.outcomes(outcomes) + tuple(
            HostOutcome(lb.name, f"load balancer: {outcomes.get(lb.name, '?')}",
                        lb.commands_run) for lb in ctx.tier.hosts),
        steps=tuple(ctx.steps),
        seconds=time.monotonic() - started,
        summary=f"set up {config.app.name} in {paths.root} on {len(ctx.hosts)} host(s)"
        + (f" and nginx on {len(ctx.tier.hosts)} load balancer(s)" if ctx.tier.hosts else ""),
    )


def setup_host(ctx: Context, host: Host, scripts: SetupScripts) -> str:
    """Set up one host; what it made, and how nginx took it."""
    is_lb = host in ctx.tier.hosts
    out = check(host.run(scripts.lb if is_lb else scripts.app), "setting up directories",
                host).stdout
    if not is_lb:
        for file in ctx.runner.setup_files():
            host.write_atomic(file.path, file.data)
            if file.install:
                check(host.run(file.install), file.what, host)
    made = read_created(out)
    note = "created " + ", ".join(made) if made else "already set up"
    if ctx.tier.hosts and not is_lb:  # nginx runs on the load balancers only
        return note
    config = ctx.config
    test = host.run(asroot.command(config.nginx.test_command))
    if not test.ok:
        ctx.reporter.info(f"{host.name}: warning: `{config.nginx.test_command}` failed:\n"
                          f"{test.output}")
        return "nginx -t failed"
    if not host.run(asroot.command(config.nginx.reload_command)).ok:
        note += "; nginx not reloaded (is it running?)"
    return note


# ----------------------------------------------------------------------------- migrate


def migrate(ctx: Context, slot: str | None) -> OperationResult:
    """Run ``app.migrate`` against a slot's release (default: the live one), on one host."""
    started = time.monotonic()
    if not ctx.config.app.migrate:
        raise ConfigError(f"{ctx.config.path}: app.migrate is empty: nothing to run")
    with Session(ctx, "migrate") as session:
        live, state = session.common_live()
        slot = slot or live
        version = state.version_of(slot)
        if slot is None or version is None:
            raise BgError("nothing is deployed yet: deploy a release before migrating")
        host = ctx.hosts[0]
        with ctx.step(f"migrate on {host.name} ({version} in {slot})"):
            result = session.run(host, ctx.runner.eval_script(slot, ctx.config.app.migrate),
                                 timeout=3600)
            if not result.ok:
                raise HookError(f"{host.name}: migrate failed (exit {result.exit_code})",
                                detail=result.output)
        session.record("migrate", "ok", slot=slot, version=version)
    return OperationResult(
        operation="migrate", app=ctx.config.app.name, target=ctx.target.name, version=version,
        slot=slot, previous_slot=None, previous_version=None,
        hosts=ctx.outcomes({ctx.hosts[0].name: "migrated"}), steps=tuple(ctx.steps),
        seconds=time.monotonic() - started,
        summary=f"migrated with {version} ({slot}) on {ctx.hosts[0].name}",
    )


# ----------------------------------------------------------------------------- status


def slot_statuses(ctx: Context, host: Host, state: st.HostState, obs: Observation
                  ) -> dict[str, SlotStatus]:
    config = ctx.config
    out = {}
    for slot, port in config.slots.items():
        running = bool(obs.alive.get(slot))
        out[slot] = SlotStatus(
            port=port, version=state.version_of(slot), release=obs.links.get(slot),
            running=running,
            healthy=running and healthy_now(host, port, config.health).healthy,
            live=state.live == slot)
    return out


def moving_notes(ctx: Context, state: st.HostState, obs: Observation, notes: tuple[str, ...],
                 serving: str | None) -> list[str]:
    """Differences an operation makes as it goes: the idle slot booting a release the state
    does not name yet, the upstream swapped before the state is recorded, nginx's new
    workers starting."""
    moving = list(notes)
    upstream_slot = served_slot(ctx.config, obs.upstream)
    if state.live and upstream_slot not in (None, state.live):
        moving.append(f"nginx upstream points at {upstream_slot}, state says {state.live}")
    held = canary.parse(obs.upstream)  # a canary's answers name it, not one slot
    expected = canary.label(held.slot) if held else state.live
    if state.live and serving != expected and not ctx.tier.hosts:
        moving.append(f"nginx answers from slot {serving!r}, expected {expected}")
    return moving


@dataclass(frozen=True)
class LockView:
    holder: dict[str, Any] | None
    interrupted: str | None = None  # a dead holder's command
    in_progress: str | None = None  # a holder that runs (or that bg cannot tell about)


def lock_view(obs: Observation) -> LockView:
    if obs.lock is None:
        return LockView(None)
    holder = lock.parse_holder(obs.lock) or {"command": "?", "note": "unreadable holder.json"}
    if lock.holder_is_gone(holder):
        return LockView(holder, interrupted=str(holder.get("command", "?")))
    return LockView(holder, in_progress=lock.describe_holder(holder))


def host_status(ctx: Context, host: Host, recorded: st.HostState, obs: Observation
                ) -> HostStatus:
    rec = reconcile(ctx.config, recorded, obs)
    state = rec.state
    slots = slot_statuses(ctx, host, state, obs)
    upstream_slot = served_slot(ctx.config, obs.upstream)
    # Behind load balancers the app host has no nginx: status() probes each LB instead.
    serving = None if ctx.tier.hosts else probe_slot(host, nginx.probe_urls(ctx.config)[-1])
    moving = moving_notes(ctx, state, obs, rec.notes, serving)
    problems = []
    if state.live and not slots[state.live].running:
        problems.append(f"live slot {state.live} is not running")
    problems += [f"slot {slot} is not running but left processes behind: {', '.join(procs)}"
                 for slot, procs in obs.leftovers.items()]
    held = lock_view(obs)
    if held.interrupted is not None:
        problems.append(f"interrupted operation: `{held.interrupted}`"
                        f" ({lock.describe_holder(held.holder or {})});"
                        " the next bg deploy/switch/rollback takes over its lock and repairs")
    # A holder that runs (or that another controller holds: bg cannot tell) is changing
    # the host right now: what it changes is expected, not a problem.
    transient = moving if held.in_progress is not None else []
    if held.in_progress is None:
        problems = moving + problems
    return HostStatus(
        host=host.name, live=state.live, version=state.live_version, previous=state.previous,
        updated_at=state.updated_at, slots=slots,
        nginx=NginxStatus(upstream_slot,
                          ctx.config.slots[upstream_slot] if upstream_slot else None, serving),
        lock=held.holder, interrupted=held.interrupted, in_progress=held.in_progress,
        transient=tuple(transient), problems=tuple(problems))


def probe_slot(host: Prober, url: str) -> str | None:
    """The X-BG-Slot nginx answers ``url`` with (None: no answer)."""
    try:
        return host.http_probe(url, timeout=2.0).header(nginx.SLOT_HEADER)
    except ProbeError:
        return None


def lb_status(ctx: Context) -> tuple[LbStatus, ...]:
    """Each load balancer: the servers its upstream lists and the slot a probe shows."""
    from bluegreen.ops import lbtier

    observed = ctx.tier.observe(ctx)

    def one(lb: Host) -> LbStatus:
        obs = observed[lb.name]
        listed = lbtier.parse_servers(obs.upstream)
        serving = probe_slot(lb, ctx.config.nginx.probe_url)
        problems = [] if serving is not None else ["nginx does not answer with X-BG-Slot"]
        if obs.backup is not None:
            problems.append("an interrupted switch left a backup upstream file")
        return LbStatus(lb.name, tuple(f"{a}:{p}" for a, p in listed.items()), serving,
                        tuple(problems))

    found = ctx.each(one, "status", ctx.tier.hosts)
    return tuple(found[lb.name] for lb in ctx.tier.hosts)


def status(ctx: Context) -> StatusResult:
    observed = observe(ctx)
    hosts = ctx.each(lambda h: host_status(ctx, h, *observed[h.name]), "status")
    return StatusResult(
        app=ctx.config.app.name, target=ctx.target.name,
        hosts=tuple(hosts[h.name] for h in ctx.hosts),
        balancers=lb_status(ctx) if ctx.tier.hosts else (), has_balancers=bool(ctx.tier.hosts),
        canary=canary.status(ctx),  # one look at nginx's file, and its log when one runs
    )


# ----------------------------------------------------------------------------- history, lock


def history(ctx: Context, limit: int, *, steps: bool = False) -> HistoryResult:
    """Each host's last ``limit`` operations (``steps``: journal entries) from its journal."""
    from bluegreen.history import read_operations
    from bluegreen.journal import read_journal
    from bluegreen.results_history import HistoryResult

    if steps:
        entries = ctx.each(lambda h: tuple(read_journal(h, ctx.paths, limit)), "history")
        return HistoryResult(entries=entries, steps=True)
    return HistoryResult(operations=ctx.each(
        lambda h: tuple(read_operations(h, ctx.paths, limit)), "history"))


def lock_status(ctx: Context) -> LockStatusResult:
    from bluegreen.results_history import LockHolder, LockStatusResult

    holders = ctx.each(lambda h: lock.read_lock(h, ctx.paths), "lock status")
    return LockStatusResult({
        name: None if holder is None else LockHolder(holder, lock.holder_is_gone(holder))
        for name, holder in holders.items()})


def lock_release(ctx: Context) -> LockReleaseResult:
    from bluegreen.results_history import LockReleaseResult

    def one(host: Host) -> bool:
        holder = lock.read_lock(host, ctx.paths)
        check(host.run(lock.release_script(ctx.paths)), "releasing the lock", host)
        return holder is not None

    return LockReleaseResult(ctx.each(one, "lock release"))
