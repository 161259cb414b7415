"""How each kind of plan step runs over its hosts.

Each handler runs one step on the hosts it names (in parallel) and either succeeds on
all of them or raises after undoing its own part; the executor (``ops/executor.py``)
undoes what earlier steps did. Shell comes from the engine's builders only.
"""

from __future__ import annotations

import contextlib
import posixpath
import threading
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from bluegreen import nginx
from bluegreen.errors import (
    ArtifactError,
    BgError,
    CommandError,
    HealthCheckError,
    SlotDiedError,
    StateError,
)
from bluegreen.facts.drain import drain_noted_script, master_discovery_script
from bluegreen.facts.retire import (
    LEFT_RUNNING,
    read_retire,
    retire_drain_script,
    stop_while_alive,
)
from bluegreen.health import wait_healthy
from bluegreen.host import Host, check
from bluegreen.ops import lbtier
from bluegreen.ops.core import Context
from bluegreen.ops.plan import Boot, Finish, Upload
from bluegreen.ops.progress import Progress
from bluegreen.ops.session import Session
from bluegreen.ops.switch import slots_label as _slots
from bluegreen.ports import port_free_script
from bluegreen.releases import (
    extract_script,
    mark_live_script,
    parse_pruned,
    point_slot_script,
    prune_script,
    receive_script,
    require_script,
)
from bluegreen.shell import ScriptExit, guard, lines, subshell
from bluegreen.state import write_state_script

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
    def one(host: Host) -> None:
        slot = step.slots[host.name]
        running = bool(session.observed[host.name].alive.get(slot))
        if running:
            was = session.states[host.name].versions.get(slot) or "?"
            ctx.reporter.info(f"{host.name}: {slot} ({was}) still runs from an earlier"
                              " operation: finishing its retire first (its open connections"
                              f" get socket_grace, {ctx.config.switch.socket_grace:g}s,"
                              " then its graceful stop)")
        script = _start_script(ctx, slot, step.version, running=running)
        if not ctx.lbs:  # behind load balancers, nginx (and staging) is on the LBs only
            content = nginx.render_upstream(ctx.config, slot=slot, version=step.version)
            script = lines(script, nginx.stage_script(ctx.config, content))
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
        nginx.raise_if_rejected(result, host.name, ctx.config)
        if result.exit_code == ScriptExit.SHA_MISMATCH:
            raise ArtifactError(f"{host.name}: the uploaded artifact's sha256 does not match")
        if result.exit_code == ScriptExit.EXTRACT_FAILED:
            raise ArtifactError(f"{host.name}: extracting {step.version} failed (disk full?)",
                                detail=result.output)
        if result.exit_code == ScriptExit.PORT_BUSY:
            port = ctx.config.slots[slot]
            raise CommandError(
                f"{host.name}: port {port} of slot {slot} is taken by another process",
                detail=result.output,
                hint="stop that process, or change [slots] in bluegreen.toml",
            )
        check(result, f"starting {slot} ({step.version})", host)
        if not ctx.lbs:
            progress.staged.add(host.name)
            # before the health gate: a refused layout stops the slot at once
            progress.layouts[host.name] = nginx.read_layout(result.stdout, host.name, ctx.config)

    shipped = art is not None and any(h in step.extract for h in batch)
    extract = (f"upload ({art.size / 1024:.0f} KiB, sha256 {art.sha256[:12]}), extract, "
               if shipped and art is not None else "")
    with ctx.step(f"{extract}start {step.version}{label}"):
        ctx.each(one, "start", session.hosts(tuple(batch)))
    session.record("start", "ok", batch, version=step.version)


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
    if drain and ctx.target.lbs:
        lbtier.drain(ctx, session.hosts(ctx.target.lbs), session.run, drain)

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


# ----------------------------------------------------------------------------- finish


def finish(ctx: Context, session: Session, step: Finish, progress: Progress, *,
           release: bool = False) -> list[str]:
    """One round trip per host: record the new state (and drop the switch's backup file),
    wait for nginx's old workers, stop the old slot, prune; with ``release`` (the last
    step), also journal the outcome and release the lock. Returns notes."""
    timeout = ctx.config.switch.drain_timeout
    keep = {v for s in session.states.values() for v in s.versions.values() if v}
    keep.update(step.versions.values())

    def one(host: Host) -> str:
        new = session.states[host.name].switched(step.slots[host.name],
                                                 step.versions[host.name])
        retire = step.retire.get(host.name)
        old = progress.old_workers.get(host.name, [])
        if retire:
            progress.retiring[host.name] = retire
        script = lines(
            subshell(write_state_script(ctx.paths, new), or_exit=ScriptExit.STATE_WRITE),
            nginx.discard_backup_script(ctx.config),
            # A slot about to stop needs nginx's old workers gone, or holding only what
            # reached it (sockets: it closes them itself, see bluegreen.facts.retire). One kept
            # running only needs them to stop taking new connections (every new request then
            # reaches the new slot when bg returns); whatever stops it later drains it.
            _retire_drain(ctx, old, retire, step.slots[host.name]) if retire
            else drain_noted_script(old, timeout, accepting_only=True) if old else "",
            # The last moment the old slot can still take traffic back: is the new one alive?
            guard(ctx.runner.alive_script(step.slots[host.name]), ScriptExit.NEW_SLOT_DIED,
                  "new-slot-died") if retire else "",
            subshell(ctx.runner.stop_script(retire), or_exit=ScriptExit.RETIRE_FAILED)
            if retire else "",
            # Both releases have served (the old one before this operation): pruning keeps
            # releases that went live before ones that never did.
            mark_live_script(ctx.paths, [v for v in (step.versions[host.name],
                                                     session.states[host.name].live_version) if v]),
            prune_script(ctx.paths, ctx.config.app.keep_releases, keep) if step.prune else "",
        )
        if release:
            # Earlier entries go first; this step's outcome and the lock release run only
            # when everything before them succeeded (each part exits on failure).
            head = session.journals[host.name].script()
            session.record("finish", "ok", (host.name,), retired=retire)
            session.record("done", "ok", (host.name,), version=step.versions[host.name])
            result = host.run(lines(head, script, session.release_tail(host)))
        else:
            result = session.run(host, script)
        if result.exit_code == ScriptExit.STATE_WRITE:
            check(result, "recording the state", host)
        if result.exit_code == ScriptExit.NEW_SLOT_DIED:
            slot = step.slots[host.name]
            raise SlotDiedError(
                f"{host.name}: {slot} ({step.versions[host.name]}) died right after the switch",
                hint=f"traffic went back to {retire}, which was still running")
        check(result, f"stopping {retire}" if retire else "draining nginx", host)
        session.states[host.name] = new
        if release:
            session.released(host)
        return result.stdout

    notes: list[str] = []
    if step.lbs:  # every LB's old workers gone before any old slot stops
        notes += lbtier.drain(ctx, session.hosts(step.lbs), session.run,
                              progress.old_workers, wait=bool(step.retire))
    parts = ["record state"]
    if step.retire:
        parts += ([] if step.lbs else ["drain nginx workers"]) + ["retire " + _slots(step.retire)]
    if step.prune:
        parts.append("prune")
    with ctx.step(", ".join(parts)) as note, _waiting(ctx, step):
        outputs = ctx.each(one, "finish", session.hosts(step.hosts))
        notes += _retire_notes(ctx, step, outputs, note)
        pruned = sorted({v for out in outputs.values() for v in parse_pruned(out)})
        if pruned:
            note.append("pruned " + ", ".join(pruned))
    if not release:
        session.record("finish", "ok", step.hosts, retired=dict(step.retire) or None)
    return notes


def _retire_drain(ctx: Context, old: list[int], retire: str, new: str) -> str:
    """The drain before ``retire`` stops: past ``[switch] socket_grace`` the old slot gets
    its graceful stop (only while the new slot runs: else the guard after it says so)."""
    stop = stop_while_alive(ctx.runner.alive_script(new), ctx.runner.stop_script(retire))
    sw = ctx.config.switch
    return retire_drain_script(old, sw.drain_timeout, port=ctx.config.slots[retire],
                               grace=sw.socket_grace, stop=stop)


def _retire_notes(ctx: Context, step: Finish, outputs: Mapping[str, str],
                  note: list[str]) -> list[str]:
    """What the retire waited for, per host, as the step's note and the warnings."""
    sw, notes = ctx.config.switch, []
    for host, out in sorted(outputs.items()):
        retire = step.retire.get(host, "")
        done = read_retire(out)
        if done.opened is not None:
            up, waiting, seconds = done.opened
            note.append(f"{host}: {up} connection{'s' if up != 1 else ''} still open on"
                        f" {retire} after {seconds:.1f}s (socket_grace {sw.socket_grace:g}s):"
                        f" asked {retire} to shut down"
                        + (" (nginx's workers are another user's: requests it was still"
                           " reading could not be seen)" if waiting == "-" else ""))
        notes += [f"{host}: {retire} did not exit on SIGTERM: {line} ([app] stop_timeout);"
                  " its sockets were reset, not closed" for line in done.killed]
        if done.left_running:
            notes.append(f"{host}: {LEFT_RUNNING}")
        if done.drain.timed_out:
            why = ("requests nginx was still reading kept them" if done.opened is None and retire
                   else "connections that did not close kept them")
            note.append(f"{host}: drain timed out after {sw.drain_timeout:g}s")
            notes.append(f"{host}: nginx's old workers outlived [switch] drain_timeout"
                         f" ({sw.drain_timeout:g}s): {why} ({done.drain.left or 'no detail'});"
                         " raise drain_timeout for longer requests")
    if any(read_retire(out).killed_any for out in outputs.values()):
        note.append(f"killed what outlived stop_timeout ({ctx.config.app.stop_timeout:g}s)")
    return notes


@contextlib.contextmanager
def _waiting(ctx: Context, step: Finish) -> Iterator[None]:
    """A line while the retire waits for long (a host script says nothing until it ends)."""
    if not step.retire:
        yield
        return
    sw = ctx.config.switch
    slots = _slots(step.retire)
    timer = threading.Timer(sw.socket_grace + 2.0, ctx.reporter.info, [
        f"waiting for nginx's old workers and {slots}: connections that reached {slots} get"
        f" its graceful stop after socket_grace ({sw.socket_grace:g}s; SIGKILL after [app]"
        f" stop_timeout, {ctx.config.app.stop_timeout:g}s), requests nginx is still reading"
        f" get up to drain_timeout ({sw.drain_timeout:g}s)"])
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
