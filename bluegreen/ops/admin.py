"""setup, status, history and lock: the operations around a deploy."""

from __future__ import annotations

import time
from typing import Any

from bluegreen import asroot, nginx, runners
from bluegreen import state as st
from bluegreen.errors import BgError, ConfigError, HookError
from bluegreen.health import healthy_now
from bluegreen.host import Host, check
from bluegreen.observe import Observation
from bluegreen.ops import canary, lbtier
from bluegreen.ops.core import Context, HostOutcome, OperationResult
from bluegreen.ops.reconcile import reconcile, served_slot
from bluegreen.ops.session import Session, observe
from bluegreen.probe import ProbeError, Prober
from bluegreen.releases import lb_setup_script, setup_script


def setup(ctx: Context) -> OperationResult:
    """Directories, env file, initial upstream and state; safe to run again."""
    started = time.monotonic()
    config, paths = ctx.config, ctx.paths
    initial = nginx.render_upstream(config, slot="blue", version="none")
    if ctx.tier.hosts:  # nothing runs yet: every app host's blue slot, as one host's file says
        port = config.slots["blue"]
        initial = nginx.render_upstream(config, slot="blue", version="none", servers=[
            nginx.Server(ctx.target.address_of(h), port, h) for h in ctx.target.hosts])
    script = setup_script(
        paths,
        upstream_file=None if ctx.tier.hosts else nginx.files(config).live,
        initial_upstream=initial,
        initial_state=st.HostState(updated_at=st.now_iso()).to_json().decode(),
        runner_setup=runner_setup_script(ctx),
    )
    lb_script = lb_setup_script(nginx.files(config).live, initial)
    outcomes: dict[str, str] = {}

    def one(host: Host) -> None:
        is_lb = host in ctx.tier.hosts
        out = check(host.run(lb_script if is_lb else script), "setting up directories",
                    host).stdout
        if config.app.runner == "systemd" and not is_lb:
            from bluegreen.runners import systemd

            host.write_atomic(systemd.staged_unit_path(paths),
                              systemd.render_unit(config.app).encode())
            check(host.run(systemd.install_unit_script(config.app)),
                  "installing the systemd unit", host)
        made = out.split("created:", 1)[-1].split()
        if ctx.tier.hosts and not is_lb:  # nginx runs on the load balancers only
            outcomes[host.name] = "created " + ", ".join(made) if made else "already set up"
            return
        test = host.run(asroot.command(config.nginx.test_command))
        if not test.ok:
            outcomes[host.name] = "nginx -t failed"
            ctx.reporter.info(f"{host.name}: warning: `{config.nginx.test_command}` failed:\n"
                              f"{test.output}")
            return
        reload = host.run(asroot.command(config.nginx.reload_command))
        note = "created " + ", ".join(made) if made else "already set up"
        if not reload.ok:
            note += "; nginx not reloaded (is it running?)"
        outcomes[host.name] = note

    with ctx.step(f"set up {paths.root}"):
        ctx.each(one, "setup", [*ctx.hosts, *ctx.tier.hosts])
    env = config.app.env_file
    if env is not None:
        data = env.read_bytes()
        with ctx.step("upload env file (mode 0600)"):
            ctx.each(lambda h: h.write_atomic(paths.env_file, data, mode=0o600), "env upload")
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


def runner_setup_script(ctx: Context) -> str:
    """Runner-specific setup: the Erlang cookie; the systemd template unit's reload."""
    return runners.setup_script(ctx.config, ctx.paths)


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


def host_status(ctx: Context, host: Host, recorded: st.HostState, obs: Observation
                ) -> dict[str, Any]:
    config = ctx.config
    rec = reconcile(config, recorded, obs)
    state = rec.state
    slots: dict[str, Any] = {}
    for slot, port in config.slots.items():
        running = bool(obs.alive.get(slot))
        slots[slot] = {
            "port": port,
            "version": state.version_of(slot),
            "release": obs.links.get(slot),
            "running": running,
            "healthy": running and healthy_now(host, port, config.health).healthy,
            "live": state.live == slot,
        }
    upstream_slot = served_slot(config, obs.upstream)
    # Behind load balancers the app host has no nginx: status() probes each LB instead.
    serving = None if ctx.tier.hosts else probe_slot(host, nginx.probe_urls(config)[-1])
    # Differences an operation makes as it goes: the idle slot booting a release the state
    # does not name yet, the upstream swapped before the state is recorded, nginx's new
    # workers starting.
    moving = list(rec.notes)
    if state.live and upstream_slot not in (None, state.live):
        moving.append(f"nginx upstream points at {upstream_slot}, state says {state.live}")
    held = canary.parse(obs.upstream)  # a canary's answers name it, not one slot
    expected = canary.label(held.slot) if held else state.live
    if state.live and serving != expected and not ctx.tier.hosts:
        moving.append(f"nginx answers from slot {serving!r}, expected {expected}")
    problems = []
    if state.live and not slots[state.live]["running"]:
        problems.append(f"live slot {state.live} is not running")
    problems += [f"slot {slot} is not running but left processes behind: {', '.join(procs)}"
                 for slot, procs in obs.leftovers.items()]
    lock = None if obs.lock is None else (st.parse_holder(obs.lock) or
                                          {"command": "?", "note": "unreadable holder.json"})
    interrupted = in_progress = None
    transient: list[str] = []
    if lock is not None and st.holder_is_gone(lock):
        interrupted = str(lock.get("command", "?"))
        problems.append(f"interrupted operation: `{interrupted}` ({st.describe_holder(lock)});"
                        " the next bg deploy/switch/rollback takes over its lock and repairs")
    if lock is not None and interrupted is None:
        # A holder that runs (or that another controller holds: bg cannot tell) is changing
        # the host right now: what it changes is expected, not a problem.
        in_progress = st.describe_holder(lock)
        transient = moving
    else:
        problems = moving + problems
    return {
        "host": host.name,
        "live": state.live,
        "version": state.live_version,
        "previous": state.previous,
        "updated_at": state.updated_at,
        "slots": slots,
        "nginx": {"upstream_slot": upstream_slot,
                  "upstream_port": config.slots[upstream_slot] if upstream_slot else None,
                  "serving": serving},
        "lock": lock,
        "interrupted": interrupted,
        "in_progress": in_progress,
        "transient": transient,
        "problems": problems,
    }


def probe_slot(host: Prober, url: str) -> str | None:
    """The X-BG-Slot nginx answers ``url`` with (None: no answer)."""
    try:
        return host.http_probe(url, timeout=2.0).header(nginx.SLOT_HEADER)
    except ProbeError:
        return None


def lb_status(ctx: Context) -> list[dict[str, Any]]:
    """Each load balancer: the servers its upstream lists and the slot a probe shows."""
    observed = ctx.tier.observe(ctx)

    def one(lb: Host) -> dict[str, Any]:
        obs = observed[lb.name]
        listed = lbtier.parse_servers(obs.upstream)
        serving = probe_slot(lb, ctx.config.nginx.probe_url)
        problems = [] if serving is not None else ["nginx does not answer with X-BG-Slot"]
        if obs.backup is not None:
            problems.append("an interrupted switch left a backup upstream file")
        return {"host": lb.name, "servers": [f"{a}:{p}" for a, p in listed.items()],
                "serving": serving, "problems": problems}

    found = ctx.each(one, "status", ctx.tier.hosts)
    return [found[lb.name] for lb in ctx.tier.hosts]


def status(ctx: Context) -> dict[str, Any]:
    observed = observe(ctx)
    hosts = ctx.each(lambda h: host_status(ctx, h, *observed[h.name]), "status")
    listed = [hosts[h.name] for h in ctx.hosts]
    balancers = lb_status(ctx) if ctx.tier.hosts else []
    lives = {(h["live"], h["version"]) for h in listed}
    diverged = len(lives) > 1
    running = canary.status(ctx)  # one look at nginx's file, and its log when one runs
    return {
        **({"canary": running} if running else {}),
        "app": ctx.config.app.name,
        "target": ctx.target.name,
        "hosts": listed,
        **({"lbs": balancers} if ctx.tier.hosts else {}),
        "diverged": diverged,
        "divergence": ", ".join(f"{h['host']}: {h['live'] or '-'} ({h['version'] or '-'})"
                                for h in listed) if diverged else "",
        "ok": all(not h["problems"] for h in [*listed, *balancers]),
    }


def history(ctx: Context, limit: int, *, steps: bool = False
            ) -> dict[str, list[dict[str, Any]]]:
    """Each host's last ``limit`` operations (``steps``: journal entries) from its journal."""
    from bluegreen.history import read_operations

    read = st.read_journal if steps else read_operations
    return ctx.each(lambda h: read(h, ctx.paths, limit), "history")


def lock_status(ctx: Context) -> dict[str, Any]:
    holders = ctx.each(lambda h: st.read_lock(h, ctx.paths), "lock status")
    return {
        name: (None if holder is None else {**holder, "stale": st.holder_is_gone(holder)})
        for name, holder in holders.items()
    }


def lock_release(ctx: Context) -> list[str]:
    def one(host: Host) -> str:
        holder = st.read_lock(host, ctx.paths)
        check(host.run(st.release_script(ctx.paths)), "releasing the lock", host)
        return "released" if holder is not None else "was not locked"

    released = ctx.each(one, "lock release")
    return [f"{name}: {what}" for name, what in released.items()]
