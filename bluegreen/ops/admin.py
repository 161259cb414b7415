"""setup, status, history and lock: the operations around a deploy."""

from __future__ import annotations

import re
import time
from dataclasses import replace
from typing import Any

import httpx

from bluegreen import nginx
from bluegreen import state as st
from bluegreen.errors import BgError
from bluegreen.health import wait_healthy
from bluegreen.host import Host, check, q
from bluegreen.ops.core import Context, OperationResult
from bluegreen.ops.steps import upload_env


def setup(ctx: Context) -> OperationResult:
    """Directories, env file, initial upstream and state; safe to run again."""
    started = time.monotonic()
    config, paths = ctx.config, ctx.paths
    f = nginx.files(config)
    initial = nginx.render_upstream(config, slot="blue", version="none")
    dirs = " ".join(q(d) for d in paths.directories)
    script = f"""set -e
mkdir -p {dirs}
chmod 700 {q(paths.shared)}
created=""
if [ ! -f {q(f.live)} ]; then
  mkdir -p {q(f.live.rsplit("/", 1)[0])}
  printf '%s' {q(initial)} > {q(f.live)}
  created="$created upstream"
fi
if [ ! -f {q(paths.state)} ]; then
  printf '%s' {q(st.HostState(updated_at=st.now_iso()).to_json().decode())} > {q(paths.state)}
  created="$created state"
fi
echo "created:$created"
"""
    script = script.replace('echo "created:', runner_setup_script(ctx) + 'echo "created:')
    outcomes: dict[str, str] = {}

    def one(host: Host) -> None:
        if config.app.runner == "systemd":
            from bluegreen.elixir import render_unit, unit_path

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
    upload_env(ctx)
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
    from bluegreen.elixir import cookie_script, slot_env_file

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
    from bluegreen import hooks
    from bluegreen.errors import ConfigError
    from bluegreen.ops.core import Session

    started = time.monotonic()
    if not ctx.config.app.migrate:
        raise ConfigError(f"{ctx.config.path}: app.migrate is empty: nothing to run")
    with Session(ctx, "migrate") as session:
        live, state = session.common_live()
        slot = slot or live
        version = state.version_of(slot)
        if slot is None or version is None:
            raise BgError("nothing is deployed yet: deploy a release before migrating")
        hooks.run_before_switch(ctx, "migrate", slot, version)
        session.record("migrate", "ok", slot=slot, version=version)
    return OperationResult(
        operation="migrate", app=ctx.config.app.name, target=ctx.target.name, version=version,
        slot=slot, previous_slot=None, previous_version=None,
        hosts=ctx.outcomes({ctx.hosts[0].name: "migrated"}), steps=tuple(ctx.steps),
        seconds=time.monotonic() - started,
        summary=f"migrated with {version} ({slot}) on {ctx.hosts[0].name}",
    )


def host_status(ctx: Context, host: Host) -> dict[str, Any]:
    config, paths, runner = ctx.config, ctx.paths, ctx.runner
    state = st.read_state(host, paths)
    lock = st.read_lock(host, paths)
    transport = host.http_transport()
    quick = replace(config.health, start_delay=0.0, deadline=0.1, successes=1,
                    timeout=min(config.health.timeout, 2.0))
    slots: dict[str, Any] = {}
    for slot, port in config.slots.items():
        link = host.run(f"readlink {q(paths.slot(slot))} 2>/dev/null || true").stdout.strip()
        running = host.run(runner.alive_script(slot)).ok
        healthy = running and wait_healthy(transport, port, quick).healthy
        slots[slot] = {
            "port": port,
            "version": state.version_of(slot),
            "release": link.rsplit("/", 1)[-1] or None,
            "running": running,
            "healthy": healthy,
            "live": state.live == slot,
        }
    upstream = host.read(config.nginx.upstream_file)
    upstream_port = None
    if upstream:
        m = re.search(rb"server\s+127\.0\.0\.1:(\d+)", upstream)
        upstream_port = int(m.group(1)) if m else None
    serving = None
    try:
        with httpx.Client(transport=transport, timeout=2.0) as client:
            r = client.get(config.nginx.probe_url, headers={"Connection": "close"})
            serving = r.headers.get(nginx.SLOT_HEADER)
    except httpx.HTTPError:
        serving = None
    releases = host.run(f"ls -1t {q(paths.releases)} 2>/dev/null || true").stdout.split()
    problems = []
    if state.live and upstream_port != config.slots[state.live]:
        problems.append(f"nginx upstream points at port {upstream_port}, state says {state.live}")
    if state.live and not slots[state.live]["running"]:
        problems.append(f"live slot {state.live} is not running")
    if state.live and serving != state.live:
        problems.append(f"nginx answers from slot {serving!r}, expected {state.live}")
    return {
        "host": host.name,
        "live": state.live,
        "version": state.live_version,
        "previous": state.previous,
        "updated_at": state.updated_at,
        "slots": slots,
        "nginx": {"upstream_port": upstream_port, "serving": serving},
        "releases": [r for r in releases if not r.startswith(".")],
        "lock": lock,
        "problems": problems,
    }


def status(ctx: Context) -> dict[str, Any]:
    hosts = ctx.each(lambda h: host_status(ctx, h), "status")
    return {
        "app": ctx.config.app.name,
        "target": ctx.target.name,
        "hosts": [hosts[h.name] for h in ctx.hosts],
        "ok": all(not h["problems"] for h in hosts.values()),
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
