"""setup, status, history and lock: the operations around a deploy."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import httpx

from bluegreen import nginx
from bluegreen import state as st
from bluegreen.errors import BgError, ConfigError, HookError
from bluegreen.health import wait_healthy
from bluegreen.host import Host, check, q
from bluegreen.observe import Observation
from bluegreen.ops.core import Context, OperationResult
from bluegreen.ops.reconcile import reconcile, served_slot
from bluegreen.ops.session import Session, observe
from bluegreen.releases import setup_script


def setup(ctx: Context) -> OperationResult:
    """Directories, env file, initial upstream and state; safe to run again."""
    started = time.monotonic()
    config, paths = ctx.config, ctx.paths
    script = setup_script(
        paths,
        upstream_file=nginx.files(config).live,
        initial_upstream=nginx.render_upstream(config, slot="blue", version="none"),
        initial_state=st.HostState(updated_at=st.now_iso()).to_json().decode(),
        runner_setup=runner_setup_script(ctx),
    )
    outcomes: dict[str, str] = {}

    def one(host: Host) -> None:
        if config.app.runner == "systemd":
            from bluegreen.runners.systemd import render_unit, unit_path

            host.write_atomic(unit_path(config.app), render_unit(config.app).encode())
        out = check(host.run(script), "setting up directories", host).stdout
        made = out.split("created:", 1)[-1].split()
        test = host.run(config.nginx.test_command)
        if not test.ok:
            outcomes[host.name] = "nginx -t failed"
            ctx.reporter.info(f"{host.name}: warning: `{config.nginx.test_command}` failed:\n"
                              f"{test.output}")
            return
        reload = host.run(config.nginx.reload_command)
        note = "created " + ", ".join(made) if made else "already set up"
        if not reload.ok:
            note += "; nginx not reloaded (is it running?)"
        outcomes[host.name] = note

    with ctx.step(f"set up {paths.root}"):
        ctx.each(one, "setup")
    env = config.app.env_file
    if env is not None:
        data = env.read_bytes()
        with ctx.step("upload env file (mode 0600)"):
            ctx.each(lambda h: h.write_atomic(paths.env_file, data, mode=0o600), "env upload")
    return OperationResult(
        operation="setup", app=config.app.name, target=ctx.target.name, version=None,
        slot=None, previous_slot=None, previous_version=None,
        hosts=ctx.outcomes(outcomes), steps=tuple(ctx.steps),
        seconds=time.monotonic() - started,
        summary=f"set up {config.app.name} in {paths.root} on {len(ctx.hosts)} host(s)",
    )


def runner_setup_script(ctx: Context) -> str:
    """Runner-specific setup: the Erlang cookie; the systemd template unit's reload."""
    app = ctx.config.app
    if app.runner == "command":
        return ""
    from bluegreen.runners.elixir import cookie_script
    from bluegreen.runners.systemd import slot_env_file

    script = "\n" + cookie_script(ctx.paths) + "\n"
    if app.runner == "systemd":
        for slot, port in ctx.config.slots.items():
            script += f"printf 'PORT=%s\\n' {port} > {q(slot_env_file(ctx.paths, slot))}\n"
        script += (
            "if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then"
            " systemctl daemon-reload; else echo 'warning: systemd is not running here';"
            " fi\n"
        )
    return script


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
    transport = host.http_transport()
    quick = replace(config.health, start_delay=0.0, deadline=0.1, successes=1,
                    timeout=min(config.health.timeout, 2.0))
    slots: dict[str, Any] = {}
    for slot, port in config.slots.items():
        running = bool(obs.alive.get(slot))
        slots[slot] = {
            "port": port,
            "version": state.version_of(slot),
            "release": obs.links.get(slot),
            "running": running,
            "healthy": running and wait_healthy(transport, port, quick).healthy,
            "live": state.live == slot,
        }
    upstream_slot = served_slot(config, obs.upstream)
    serving = None
    try:
        with httpx.Client(transport=transport, timeout=2.0) as client:
            r = client.get(nginx.probe_urls(config)[-1], headers={"Connection": "close"})
            serving = r.headers.get(nginx.SLOT_HEADER)
    except httpx.HTTPError:
        serving = None
    problems = list(rec.notes)
    if state.live and upstream_slot not in (None, state.live):
        problems.append(f"nginx upstream points at {upstream_slot}, state says {state.live}")
    if state.live and not slots[state.live]["running"]:
        problems.append(f"live slot {state.live} is not running")
    if state.live and serving != state.live:
        problems.append(f"nginx answers from slot {serving!r}, expected {state.live}")
    lock = None if obs.lock is None else (st.parse_holder(obs.lock) or
                                          {"command": "?", "note": "unreadable holder.json"})
    interrupted = None
    if lock is not None and st.holder_is_gone(lock):
        interrupted = str(lock.get("command", "?"))
        problems.append(f"interrupted operation: `{interrupted}` ({st.describe_holder(lock)});"
                        " the next bg deploy/switch/rollback takes over its lock and repairs")
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
        "problems": problems,
    }


def status(ctx: Context) -> dict[str, Any]:
    observed = observe(ctx)
    hosts = ctx.each(lambda h: host_status(ctx, h, *observed[h.name]), "status")
    listed = [hosts[h.name] for h in ctx.hosts]
    lives = {(h["live"], h["version"]) for h in listed}
    diverged = len(lives) > 1
    return {
        "app": ctx.config.app.name,
        "target": ctx.target.name,
        "hosts": listed,
        "diverged": diverged,
        "divergence": ", ".join(f"{h['host']}: {h['live'] or '-'} ({h['version'] or '-'})"
                                for h in listed) if diverged else "",
        "ok": all(not h["problems"] for h in listed),
    }


def history(ctx: Context, limit: int) -> dict[str, list[dict[str, Any]]]:
    return ctx.each(lambda h: st.read_journal(h, ctx.paths, limit), "history")


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
