"""How each kind of plan step runs over its hosts.

Each handler runs one step on the hosts it names (in parallel) and either succeeds on
all of them or raises after undoing its own part; the executor (``ops/executor.py``)
undoes what earlier steps did. Shell comes from the engine's builders only.
"""

from __future__ import annotations

import contextlib
import posixpath
from collections.abc import Mapping
from typing import TYPE_CHECKING

from bluegreen import nginx
from bluegreen.errors import (
    ArtifactError,
    BgError,
    CommandError,
    HealthCheckError,
    StateError,
)
from bluegreen.facts.drain import drain_noted_script, master_discovery_script
from bluegreen.facts.retire import (
    retire_drain_script,
)
from bluegreen.health import wait_healthy
from bluegreen.host import CommandResult, Host, check
from bluegreen.ops.core import Context
from bluegreen.ops.plan import Boot, Upload
from bluegreen.ops.progress import Progress
from bluegreen.ops.session import Session
from bluegreen.ports import port_free_script
from bluegreen.releases import (
    extract_script,
    point_slot_script,
    receive_script,
    require_script,
)
from bluegreen.shell import ScriptExit, lines, subshell

if TYPE_CHECKING:  # a switch or rollback never reads a tarball
    from bluegreen.artifact import Artifact

# ----------------------------------------------------------------------------- upload


def upload(ctx: Context, session: Session, step: Upload) -> None:
    """The env file, to the hosts where its sha256 differs. The release itself travels
    on the stdin of the round trip that extracts and starts it (:func:`boot`)."""
    env = ctx.config.app.env_file
    if env is not None and step.env_hosts:
        import hashlib

        data = env.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        stale = tuple(h for h in step.env_hosts if session.observed[h].env_sha != digest)
        ctx.each(lambda h: h.write_atomic(ctx.paths.env_file, data, mode=0o600),
                 "env upload", session.hosts(stale))


# ----------------------------------------------------------------------------- boot


def _start_script(ctx: Context, slot: str, version: str, *, running: bool = False) -> str:
    """Stop what the slot runs (after nginx stopped using it), point it at ``version``,
    start it. A switch that kept the old slot running did not wait for nginx's old workers
    (nothing stopped); a slot found ``running`` (kept warm, or its retire interrupted) is
    retired here first, as the finish step would have (:mod:`bluegreen.facts.retire`)."""
    runner, paths = ctx.runner, ctx.paths
    port = ctx.config.slots[slot]
    sw = ctx.config.switch
    return lines(
        require_script(paths, version),
        # nginx's workers an earlier reload left hold only sockets and long requests now
        retire_drain_script(None, sw.drain_timeout, port=port, grace=sw.socket_grace,
                            stop=runner.stop_script(slot),
                            master=master_discovery_script(ctx.config)) if running else "",
        runner.stop_script(slot),
        point_slot_script(paths, slot, version),
        port_free_script(port, ScriptExit.PORT_BUSY,
                         bg_dir=posixpath.dirname(ctx.config.nginx.upstream_file)),
        runner.start_script(slot, port, version),
    )


def boot(ctx: Context, session: Session, step: Boot, progress: Progress,
         art: Artifact | None = None) -> None:
    """Start the new slots, ``step.batch`` hosts at a time, and health-gate each batch.

    The same round trip stages and tests each host's new upstream (phase one of the
    switch), so a template nginx rejects fails before any wait. A failure stops every
    slot this step started (healthy or not) before raising.
    """
    names = list(step.slots)
    for host_name, slot in step.slots.items():
        live = session.states[host_name].live
        if slot == live:  # never, whatever the plan says: nginx serves it
            raise StateError(f"{host_name}: refusing to restart {slot}, the slot nginx serves")
    batches = [names[i:i + step.batch] for i in range(0, len(names), step.batch)]
    try:
        for n, batch in enumerate(batches, 1):
            label = f" (batch {n}/{len(batches)})" if len(batches) > 1 else ""
            _start(ctx, session, step, batch, progress, art, label)
            _gate(ctx, session, step, batch, label)
    except BaseException:
        with contextlib.suppress(BgError):
            stop_started(ctx, session, progress)
        raise


def _start(ctx: Context, session: Session, step: Boot, batch: list[str],
           progress: Progress, art: Artifact | None, label: str) -> None:
    shipped = art is not None and any(h in step.extract for h in batch)
    extract = (f"upload ({art.size / 1024:.0f} KiB, sha256 {art.sha256[:12]}), extract, "
               if shipped and art is not None else "")
    with ctx.step(f"{extract}start {step.version}{label}"):
        ctx.each(lambda host: _start_one(ctx, session, step, host, progress, art), "start",
                 session.hosts(tuple(batch)))
    session.record("start", "ok", batch, version=step.version)


def _start_one(ctx: Context, session: Session, step: Boot, host: Host, progress: Progress,
               art: Artifact | None) -> None:
    """One round trip: (receive and extract the release,) start the slot, and where nginx
    runs on the host, stage and test its new upstream."""
    slot = step.slots[host.name]
    running = bool(session.observed[host.name].alive.get(slot))
    if running:
        was = session.states[host.name].versions.get(slot) or "?"
        ctx.reporter.info(f"{host.name}: {slot} ({was}) still runs from an earlier"
                          " operation: finishing its retire first (its open connections"
                          f" get socket_grace, {ctx.config.switch.socket_grace:g}s,"
                          " then its graceful stop)")
    script = lines(_start_script(ctx, slot, step.version, running=running),
                   ctx.tier.stage_with_start(ctx, slot, step.version))
    ship = art if art is not None and host.name in step.extract else None
    if ship is not None:
        # The release rides this round trip's stdin: received, journaled (so a crash
        # during the start still leaves "upload ok" on the host), checked, extracted.
        head = session.journals[host.name].script()
        session.record("upload", "ok", (host.name,), version=ship.version,
                       sha256=ship.sha256)
        script = lines(head, receive_script(ctx.paths, ship.version),
                       session.journals[host.name].script(),
                       subshell(extract_script(ctx.paths, step.version, ship.sha256),
                                propagate=True), script)
    progress.started[host.name] = slot
    result = session.run(host, script, stdin=ship.path if ship else None)
    _refuse_start(ctx, host, slot, step.version, result)
    check(result, f"starting {slot} ({step.version})", host)
    ctx.tier.staged_with_start(ctx, host, result, progress)


def _refuse_start(ctx: Context, host: Host, slot: str, version: str,
                  result: CommandResult) -> None:
    """What the start script's own exit codes mean."""
    nginx.raise_if_rejected(result, host.name, ctx.config)
    if result.exit_code == ScriptExit.SHA_MISMATCH:
        raise ArtifactError(f"{host.name}: the uploaded artifact's sha256 does not match")
    if result.exit_code == ScriptExit.EXTRACT_FAILED:
        raise ArtifactError(f"{host.name}: extracting {version} failed (disk full?)",
                            detail=result.output)
    if result.exit_code == ScriptExit.PORT_BUSY:
        port = ctx.config.slots[slot]
        raise CommandError(
            f"{host.name}: port {port} of slot {slot} is taken by another process",
            detail=result.output,
            hint="stop that process, or change [slots] in bluegreen.toml",
        )


def _gate(ctx: Context, session: Session, step: Boot, batch: list[str], label: str) -> None:
    cfg = ctx.config.health

    def one(host: Host) -> int:
        slot = step.slots[host.name]
        port = ctx.config.slots[slot]
        alive = ctx.runner.alive_script(slot)
        report = wait_healthy(host.http_transport(), port, cfg,
                              alive=lambda: not ctx.cancelled.is_set() and host.run(alive).ok)
        if report.healthy:
            extra = ctx.runner.check_script(slot)
            if extra is None:
                return report.attempts
            second = host.run(extra, timeout=cfg.deadline)
            if second.ok:
                return report.attempts
            why = f"HTTP was healthy but the {ctx.runner.name} check failed: {second.output}"
        else:
            why = "its process exited" if report.died else f"last answer: {report.last}"
        tail = host.run(ctx.runner.log_script(slot, 20)).stdout.rstrip()
        raise HealthCheckError(
            f"{host.name}: {slot} ({step.version}) never became healthy on port {port}"
            f" after {report.elapsed:.1f}s and {report.attempts} attempts; {why}",
            detail=f"last lines of {slot}'s log:\n{tail}" if tail else "",
            hint="traffic was not switched; the previous release keeps serving",
        )

    with ctx.step(f"health GET {cfg.path} (expect {cfg.expect}){label}") as note:
        try:
            attempts = ctx.each(one, "health check", session.hosts(tuple(batch)))
        except HealthCheckError:
            session.record("health", "failed", batch, version=step.version)
            raise
        note.append(f"{max(attempts.values())} attempts")
    session.record("health", "ok", batch, version=step.version)


def stop_started(ctx: Context, session: Session, progress: Progress, *,
                 drain: Mapping[str, list[int]] | None = None) -> None:
    """Stop every slot this operation started and did not switch to. ``drain``: nginx's
    workers that a reload back (an undone or reverted switch) left behind, host -> pids,
    still proxying to those slots: each nginx host waits for its own to exit first (behind
    load balancers the LBs do, and each app host waits for the slot's port to go quiet)."""
    if not progress.started:
        return
    started, progress.started = dict(progress.started), {}
    if drain:
        ctx.tier.drain(ctx, session, drain)

    discard = nginx.discard_staged_script(ctx.config)
    timeout = ctx.config.switch.drain_timeout

    def one(host: Host) -> None:
        slot = started[host.name]
        wait = (drain_noted_script(drain.get(host.name, []), timeout,
                                   port=ctx.config.slots[slot]) if drain is not None else "")
        check(session.run(host, lines(discard, wait, ctx.runner.stop_script(slot))),
              f"stopping {slot}", host)

    with ctx.step("stop the new slots (not switched)"):
        ctx.each(one, "stop", session.hosts(tuple(started)))
    session.record("stop", "ok", tuple(started), reason="not switched")
