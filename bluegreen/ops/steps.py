"""How each kind of plan step runs over its hosts.

Each handler runs one step on the hosts it names (in parallel) and either succeeds on
all of them or raises after undoing its own part; the executor (``ops/executor.py``)
undoes what earlier steps did. Shell comes from the engine's builders only.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from bluegreen import nginx
from bluegreen.artifact import Artifact
from bluegreen.errors import (
    ArtifactError,
    BgError,
    CommandError,
    HealthCheckError,
    HostFailures,
    StateError,
    SwitchError,
)
from bluegreen.health import wait_healthy
from bluegreen.host import Host, check
from bluegreen.ops.core import Context
from bluegreen.ops.plan import Boot, Finish, Switch, Upload
from bluegreen.ops.session import Session
from bluegreen.ports import port_free_script
from bluegreen.releases import extract_script, parse_pruned, prune_script, require_script
from bluegreen.releases import upload_path as upload_target
from bluegreen.shell import ScriptExit, lines, q, subshell
from bluegreen.state import write_state_script


@dataclass
class Progress:
    """What the running operation changed so far: what an undo must take back."""

    started: dict[str, str] = field(default_factory=dict)  # host -> slot booted, not live
    staged: set[str] = field(default_factory=set)  # hosts whose new upstream passed the test
    switched: bool = False
    old_workers: dict[str, list[int]] = field(default_factory=dict)


# ----------------------------------------------------------------------------- upload


def upload(ctx: Context, session: Session, step: Upload, art: Artifact | None) -> None:
    env = ctx.config.app.env_file
    if env is not None and step.env_hosts:
        data = env.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        stale = tuple(h for h in step.env_hosts if session.observed[h].env_sha != digest)
        ctx.each(lambda h: h.write_atomic(ctx.paths.env_file, data, mode=0o600),
                 "env upload", session.hosts(stale))
    if not step.hosts or art is None:
        return
    target = upload_target(ctx.paths, art.version)
    with ctx.step(f"upload {art.version} ({art.size / 1024:.0f} KiB,"
                  f" sha256 {art.sha256[:12]})") as note:
        ctx.each(lambda h: h.put(art.path, target, mode=0o600), "upload",
                 session.hosts(step.hosts))
        note.append(f"to {len(step.hosts)} host(s)")
    session.record("upload", "ok", step.hosts, version=art.version, sha256=art.sha256)


# ----------------------------------------------------------------------------- boot


def _start_script(ctx: Context, slot: str, version: str) -> str:
    runner, paths = ctx.runner, ctx.paths
    port = ctx.config.slots[slot]
    link = paths.slot(slot)
    return lines(
        require_script(paths, version),
        runner.stop_script(slot),
        "set -e",
        f"ln -sfn {q('../releases/' + version)} {q(link + '.tmp')}",
        f"mv -Tf {q(link + '.tmp')} {q(link)}",
        port_free_script(port, ScriptExit.PORT_BUSY),
        runner.start_script(slot, port, version),
    )


def boot(ctx: Context, session: Session, step: Boot, progress: Progress,
         sha256: str = "") -> None:
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
            _start(ctx, session, step, batch, progress, sha256, label)
            _gate(ctx, session, step, batch, label)
    except BaseException:
        with contextlib.suppress(BgError):
            stop_started(ctx, session, progress)
        raise


def _start(ctx: Context, session: Session, step: Boot, batch: list[str],
           progress: Progress, sha256: str, label: str) -> None:
    def one(host: Host) -> None:
        slot = step.slots[host.name]
        script = _start_script(ctx, slot, step.version)
        if host.name in step.extract:
            script = lines(subshell(extract_script(ctx.paths, step.version, sha256),
                                    or_exit=None) + " || exit $?", script)
        content = nginx.render_upstream(ctx.config, slot=slot, version=step.version)
        script = lines(script, nginx.stage_script(ctx.config, content))
        progress.started[host.name] = slot
        result = session.run(host, script)
        if result.exit_code == ScriptExit.NGINX_TEST_FAILED:
            raise SwitchError(
                f"{host.name}: nginx rejected the new upstream ({ctx.config.nginx.test_command});"
                " nothing was switched", detail=result.output)
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
        progress.staged.add(host.name)

    extract = "extract, " if any(h in step.extract for h in batch) else ""
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


def stop_started(ctx: Context, session: Session, progress: Progress) -> None:
    """Stop every slot this operation started and did not switch to."""
    if not progress.started:
        return
    started, progress.started = dict(progress.started), {}

    discard = nginx.discard_staged_script(ctx.config)

    def one(host: Host) -> None:
        check(session.run(host, lines(discard, ctx.runner.stop_script(started[host.name]))),
              f"stopping {started[host.name]}", host)

    with ctx.step("stop the new slots (not switched)"):
        ctx.each(one, "stop", session.hosts(tuple(started)))
    session.record("stop", "ok", tuple(started), reason="not switched")


# ----------------------------------------------------------------------------- switch


def switch(ctx: Context, session: Session, step: Switch, progress: Progress,
           failpoint: FailpointFn) -> None:
    """Two-phase nginx switch of every host of the step; all or nothing."""
    config = ctx.config
    prepared: list[Host] = []
    reloaded: list[Host] = []

    def do_prepare(host: Host) -> None:
        slot, version = step.slots[host.name], step.versions[host.name]
        content = nginx.render_upstream(config, slot=slot, version=version)
        prepared.append(host)
        if host.name in progress.staged:
            return  # staged and tested in the round trip that started its slot
        result = session.run(host, nginx.stage_script(config, content))
        if result.exit_code == ScriptExit.NGINX_TEST_FAILED:
            raise SwitchError(
                f"{host.name}: nginx rejected the new upstream ({config.nginx.test_command});"
                " nothing was reloaded",
                detail=result.output,
            )
        check(result, "staging the nginx upstream", host)
        progress.staged.add(host.name)

    def abort(reload_too: list[Host]) -> str:
        undo = nginx.abort_script(config)

        def one(host: Host) -> None:
            script = lines(undo, config.nginx.reload_command if host in reload_too else "")
            check(session.run(host, script), "restoring the previous nginx upstream", host)

        try:
            ctx.each(one, "restore", list(prepared))
        except HostFailures as exc:
            return f"\nNOT RESTORED, check by hand: {exc.message}"
        return ""

    session.record("switch", "intent", step.hosts, slots=dict(step.slots))
    with ctx.step(f"nginx test (stage upstream -> {_slots(step.slots)})"):
        try:
            ctx.each(do_prepare, "nginx test", session.hosts(step.hosts))
            failpoint("staged")
        except BaseException as exc:
            if isinstance(exc, BgError):
                exc.detail += abort([])
            else:
                abort([])
            session.record("switch", "aborted", step.hosts, reason="nginx test")
            raise

    def commit_one(host: Host) -> None:
        slot = step.slots[host.name]
        reloaded.append(host)
        result = session.run(host, nginx.commit_script(config))
        check(result, f"reloading nginx ({config.nginx.reload_command})", host)
        progress.old_workers[host.name] = nginx.parse_old_workers(result.stdout)
        conf = nginx.confirm(host.http_transport(), config, slot)
        if not conf.ok:
            raise SwitchError(  # conf.detail names the probe that failed
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

    with ctx.step(f"switch nginx -> {_slots(step.slots)} (reload, confirm)"):
        try:
            ctx.each(do_commit, "switch", session.hosts(step.hosts))
            failpoint("reloaded")
        except BaseException as exc:
            restored = abort(reloaded)
            session.record("switch", "restored", step.hosts)
            if isinstance(exc, BgError):
                exc.detail += restored
            raise
    progress.switched = True
    session.record("switch", "ok", step.hosts, slots=dict(step.slots))


def _slots(slots: Mapping[str, str]) -> str:
    return "/".join(sorted(set(slots.values())))


def verify_switched(ctx: Context, session: Session, step: Switch) -> None:
    """Right after the switch, before anything is retired: every new live slot still
    answers its health check (HTTP through the host's transport, no round trip)."""
    cfg = ctx.config.health
    # Short: while a dead slot is live every request fails, so decide fast.
    quick = replace(cfg, start_delay=0.0, deadline=min(cfg.deadline, 0.5), successes=1,
                    interval=min(cfg.interval, 0.05), timeout=min(cfg.timeout, 0.5))

    def one(host: Host) -> None:
        slot = step.slots[host.name]
        report = wait_healthy(host.http_transport(), ctx.config.slots[slot], quick)
        if not report.healthy:
            raise HealthCheckError(
                f"{host.name}: {slot} ({step.versions[host.name]}) stopped answering right"
                f" after the switch ({report.last})",
                hint="traffic went back to the previous slot, which was still running")

    ctx.each(one, "check after the switch", session.hosts(step.hosts))


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
        script = lines(
            subshell(write_state_script(ctx.paths, new), or_exit=ScriptExit.STATE_WRITE),
            nginx.discard_backup_script(ctx.config),
            "if " + subshell(nginx.drain_script(progress.old_workers.get(host.name, []),
                                                timeout))
            + "; then echo drained; else echo drain-timeout; fi",
            subshell(ctx.runner.stop_script(retire), or_exit=ScriptExit.RETIRE_FAILED)
            if retire else "",
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
        check(result, f"stopping {retire}" if retire else "draining nginx", host)
        session.states[host.name] = new
        if release:
            session.released(host)
        return result.stdout

    parts = ["record state", "drain nginx workers"]
    if step.retire:
        parts.append("retire " + _slots(step.retire))
    if step.prune:
        parts.append("prune")
    notes: list[str] = []
    with ctx.step(", ".join(parts)) as note:
        outputs = ctx.each(one, "finish", session.hosts(step.hosts))
        if any("drain-timeout" in out for out in outputs.values()):
            note.append(f"drain timed out after {timeout:g}s on some hosts")
            notes.append(f"nginx's old workers outlived drain_timeout ({timeout:g}s)")
        pruned = sorted({v for out in outputs.values() for v in parse_pruned(out)})
        if pruned:
            note.append("pruned " + ", ".join(pruned))
    if not release:
        session.record("finish", "ok", step.hosts, retired=dict(step.retire) or None)
    return notes


class FailpointFn:
    """Stop at a named step boundary when ``BG_FAILPOINT`` names it (tests only):
    ``<boundary>[:kill|term|error|exec:CMD]`` — SIGKILL or SIGTERM this process, raise, or
    run CMD on the controller (e.g. to kill the new slot right after the switch)."""

    def __init__(self, spec: str) -> None:
        name, _, how = spec.partition(":")
        self.name, self.how = name, how or "kill"

    def __call__(self, boundary: str) -> None:
        if boundary != self.name:
            return
        if self.how.startswith("exec:"):
            subprocess.run(["/bin/sh", "-c", self.how[len("exec:"):]], check=False,
                           timeout=60)
            return
        if self.how == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if self.how == "term":
            os.kill(os.getpid(), signal.SIGTERM)
            return
        raise BgError(f"failpoint {boundary} reached")
