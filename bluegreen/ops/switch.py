"""The two-phase nginx switch across hosts, and the check right after it."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import replace

from bluegreen import nginx
from bluegreen.errors import BgError, HostFailures, SlotDiedError, SwitchError
from bluegreen.health import healthy_now
from bluegreen.host import Host, check
from bluegreen.ops import lbtier
from bluegreen.ops.core import Context
from bluegreen.ops.plan import Switch
from bluegreen.ops.progress import FailpointFn, Progress
from bluegreen.ops.session import Session
from bluegreen.shell import lines


def switch(ctx: Context, session: Session, step: Switch, progress: Progress,
           failpoint: FailpointFn) -> None:
    """Two-phase nginx switch of every host of the step (or of every load balancer in
    front of them); all or nothing."""
    config = ctx.config
    prepared: list[Host] = []
    reloaded: list[Host] = []
    # nginx host -> (its new upstream file, the X-BG-Slot a probe through it must show)
    if step.canary is not None:
        from bluegreen.ops import canary

        rendered = canary.render(ctx, step, session.observed)
    elif step.lbs:
        shared = lbtier.render(ctx, step.fleet, step.versions, session.observed)
        rendered = dict.fromkeys(step.lbs, shared)
    else:
        rendered = {h: (nginx.render_upstream(config, slot=slot, version=step.versions[h]), slot)
                    for h, slot in step.slots.items()}
    nginx_hosts = session.hosts(tuple(rendered))

    def do_prepare(host: Host) -> None:
        content = rendered[host.name][0]
        prepared.append(host)
        if host.name in progress.staged:
            return  # staged and tested in the round trip that started its slot
        result = session.run(host, nginx.stage_script(config, content))
        nginx.raise_if_rejected(result, host.name, config)
        check(result, "staging the nginx upstream", host)
        progress.staged.add(host.name)
        progress.layouts[host.name] = nginx.read_layout(result.stdout, host.name, config)

    def abort(reload_too: list[Host]) -> str:
        undo = nginx.abort_script(config)
        if reload_too:
            progress.abandoned = {}

        def one(host: Host) -> None:
            reload = nginx.reload_script(config) if host in reload_too else ""
            result = check(session.run(host, lines(undo, reload)),
                           "restoring the previous nginx upstream", host)
            if reload and progress.abandoned is not None:
                progress.abandoned[host.name] = nginx.parse_old_workers(result.stdout)

        try:
            ctx.each(one, "restore", list(prepared))
        except HostFailures as exc:
            return f"\nNOT RESTORED, check by hand: {exc.message}"
        return ""

    session.record("switch", "intent", (*step.hosts, *step.lbs), slots=dict(step.slots))
    if step.lbs:
        lbtier.check_reach(ctx, step.slots, nginx_hosts)
    # One nginx host has nothing to be all-or-nothing with: its stage and test ride the
    # round trip that reloads (the script stops before the reload when the test fails).
    merged = len(nginx_hosts) == 1 and nginx_hosts[0].name not in progress.staged
    rejected: list[str] = []
    with contextlib.nullcontext() if merged else ctx.step(
            f"nginx test (stage upstream -> {slots_label(step.slots)})"):
        try:
            if not merged:
                ctx.each(do_prepare, "nginx test", nginx_hosts)
            failpoint("staged")
        except BaseException as exc:
            if isinstance(exc, BgError):
                exc.detail += abort([])
            else:
                abort([])
            session.record("switch", "aborted", step.hosts, reason="nginx test")
            raise

    def commit_one(host: Host) -> None:
        slot = rendered[host.name][1]
        script = nginx.commit_script(config)
        if merged:
            prepared.append(host)
            script = lines(nginx.stage_script(config, rendered[host.name][0]), script)
        reloaded.append(host)  # a connection lost mid-reload may have reloaded: undo it too
        result = session.run(host, script)
        if not result.ok:
            reloaded.remove(host)  # the reload failed: nginx kept its old configuration
        try:
            nginx.raise_if_rejected(result, host.name, config)
        except SwitchError:
            rejected.append(host.name)
            raise
        check(result, f"reloading nginx ({config.nginx.reload_command})", host)
        progress.old_workers[host.name] = nginx.parse_old_workers(result.stdout)
        masters[host.name] = nginx.method_name(nginx.parse_master(result.stdout)[1])
        if merged:  # staged and tested in this round trip: its layout came with it
            progress.layouts[host.name] = nginx.read_layout(result.stdout, host.name, config)
        conf = nginx.confirm(host, config, slot, layout=progress.layouts.get(host.name))
        if not conf.ok:
            raise SwitchError(
                f"{host.name}: nginx did not send traffic to {slot} after the reload"
                f" ({conf.attempts} probes in {conf.elapsed:.1f}s)",
                detail=conf.detail,
            )

    def do_commit(host: Host) -> None:
        # Any failure here (a reload that fails, a dropped connection) means this host's
        # switch failed: one kind of error per host keeps every host's outcome together.
        try:
            commit_one(host)
        except SwitchError:
            raise
        except BgError as exc:
            raise SwitchError(exc.message, detail=exc.detail, hint=exc.hint) from exc

    masters: dict[str, str] = {}  # how each host's nginx master was found (for the drain)
    title = f"switch nginx -> {slots_label(step.slots)} (reload, confirm)"
    with ctx.step(("stage, nginx test, " if merged else "") + title) as note:
        try:
            ctx.each(do_commit, "switch", nginx_hosts)
            failpoint("reloaded")
            found = sorted(set(masters.values()))
            note.append("nginx master found by " + ", ".join(found)
                        if nginx.METHOD_NONE not in found
                        else "nginx master NOT found on some hosts: their drain waits for"
                        " the old slot's port to go quiet")
        except BaseException as exc:
            restored = abort(reloaded)
            if rejected and not reloaded:
                session.record("switch", "aborted", step.hosts, reason="nginx test")
            else:
                session.record("switch", "restored", step.hosts)
            if isinstance(exc, BgError):
                exc.detail += restored
            raise
    progress.switched = True
    session.record("switch", "ok", (*step.hosts, *step.lbs), slots=dict(step.slots))


def slots_label(slots: Mapping[str, str]) -> str:
    return "/".join(sorted(set(slots.values())))


def verify_switched(ctx: Context, session: Session, step: Switch) -> None:
    """Right after the switch, before anything is retired: every new live slot still
    answers its health check (HTTP through the host's transport, no round trip)."""
    cfg = ctx.config.health
    # Short: while a dead slot is live every request fails, so decide fast: 0.5 s with the
    # default 2 s health timeout. A host that needs more per answer (an emulated VM) says so
    # with a larger health timeout, and gets a quarter of it.
    quick = replace(cfg, timeout=min(cfg.timeout, max(0.5, cfg.timeout / 4)))
    within = min(cfg.deadline, quick.timeout)

    def one(host: Host) -> None:
        slot = step.slots[host.name]
        report = healthy_now(host, ctx.config.slots[slot], quick, within=within)
        if not report.healthy:
            raise SlotDiedError(
                f"{host.name}: {slot} ({step.versions[host.name]}) stopped answering right"
                f" after the switch ({report.last})",
                hint="traffic went back to the previous slot, which was still running")

    ctx.each(one, "check after the switch", session.hosts(step.hosts))


