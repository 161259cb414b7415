"""The two-phase nginx switch across hosts, and the check right after it."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import replace

from bluegreen import nginx
from bluegreen.errors import BgError, HostFailures, SlotDiedError, SwitchError
from bluegreen.health import healthy_now
from bluegreen.host import Host, check
from bluegreen.ops.core import Context
from bluegreen.ops.plan import Switch
from bluegreen.ops.progress import FailpointFn, Progress
from bluegreen.ops.session import Session
from bluegreen.shell import lines


def switch(ctx: Context, session: Session, step: Switch, progress: Progress,
           failpoint: FailpointFn) -> None:
    """Two-phase nginx switch of every host of the step (on every nginx host that serves
    them); all or nothing: prepare every host, commit each, restore all on any failure."""
    run = _Switching(ctx, session, step, progress)
    session.record("switch", "intent", (*step.hosts, *step.front), slots=dict(step.slots))
    ctx.tier.before_stage(ctx, step, run.nginx_hosts)
    run.prepare_all(failpoint)
    run.commit_all(failpoint)
    progress.switched = True
    session.record("switch", "ok", (*step.hosts, *step.front), slots=dict(step.slots))


class _Switching:
    """One switch's nginx hosts and what it did to each so far (what a restore undoes)."""

    def __init__(self, ctx: Context, session: Session, step: Switch,
                 progress: Progress) -> None:
        self.ctx, self.config, self.session = ctx, ctx.config, session
        self.step, self.progress = step, progress
        # nginx host -> (its new upstream file, the X-BG-Slot a probe through it must show)
        if step.canary is not None:
            from bluegreen.ops import canarysteps

            self.rendered = canarysteps.render(ctx, step, session.observed)
        else:
            self.rendered = ctx.tier.render(ctx, step, session.observed)
        self.nginx_hosts = session.hosts(tuple(self.rendered))
        # One nginx host has nothing to be all-or-nothing with: its stage and test ride the
        # round trip that reloads (the script stops before the reload when the test fails).
        self.merged = (len(self.nginx_hosts) == 1
                       and self.nginx_hosts[0].name not in progress.staged)
        self.prepared: list[Host] = []
        self.reloaded: list[Host] = []
        self.rejected: list[str] = []
        self.masters: dict[str, str] = {}  # how each host's nginx master was found (drain)

    # ------------------------------------------------------------------ prepare

    def prepare_all(self, failpoint: FailpointFn) -> None:
        """Stage and test the new upstream on every nginx host; any failure restores all."""
        label = slots_label(self.step.slots)
        with contextlib.nullcontext() if self.merged else self.ctx.step(
                f"nginx test (stage upstream -> {label})"):
            try:
                if not self.merged:
                    self.ctx.each(self.prepare_one, "nginx test", self.nginx_hosts)
                failpoint("staged")
            except BaseException as exc:
                restored = self.restore_all([])
                if isinstance(exc, BgError):
                    exc.detail += restored
                self.session.record("switch", "aborted", self.step.hosts, reason="nginx test")
                raise

    def prepare_one(self, host: Host) -> None:
        self.prepared.append(host)
        if host.name in self.progress.staged:
            return  # staged and tested in the round trip that started its slot
        content = self.rendered[host.name][0]
        result = self.session.run(host, nginx.stage_script(self.config, content))
        nginx.raise_if_rejected(result, host.name, self.config)
        check(result, "staging the nginx upstream", host)
        self.progress.staged.add(host.name)
        self.progress.layouts[host.name] = nginx.read_layout(result.stdout, host.name,
                                                             self.config)

    # ------------------------------------------------------------------ commit

    def commit_all(self, failpoint: FailpointFn) -> None:
        """Reload and confirm each nginx host; any failure restores every one."""
        title = f"switch nginx -> {slots_label(self.step.slots)} (reload, confirm)"
        with self.ctx.step(("stage, nginx test, " if self.merged else "") + title) as note:
            try:
                self.ctx.each(self.commit_one, "switch", self.nginx_hosts)
                failpoint("reloaded")
                found = sorted(set(self.masters.values()))
                note.append("nginx master found by " + ", ".join(found)
                            if nginx.METHOD_NONE not in found
                            else "nginx master NOT found on some hosts: their drain waits"
                            " for the old slot's port to go quiet")
            except BaseException as exc:
                restored = self.restore_all(self.reloaded)
                if self.rejected and not self.reloaded:
                    self.session.record("switch", "aborted", self.step.hosts,
                                        reason="nginx test")
                else:
                    self.session.record("switch", "restored", self.step.hosts)
                if isinstance(exc, BgError):
                    exc.detail += restored
                raise

    def commit_one(self, host: Host) -> None:
        # Any failure here (a reload that fails, a dropped connection) means this host's
        # switch failed: one kind of error per host keeps every host's outcome together.
        try:
            self._reload(host)
            self._confirm(host)
        except SwitchError:
            raise
        except BgError as exc:
            if host.name in self.rejected:  # the stage refused: its own kind of error
                raise
            raise SwitchError(exc.message, detail=exc.detail, hint=exc.hint) from exc

    def _reload(self, host: Host) -> None:
        config, progress = self.config, self.progress
        script = nginx.commit_script(config)
        if self.merged:
            self.prepared.append(host)
            script = lines(nginx.stage_script(config, self.rendered[host.name][0]), script)
        self.reloaded.append(host)  # a connection lost mid-reload may have reloaded: undo it
        result = self.session.run(host, script)
        if not result.ok:
            self.reloaded.remove(host)  # the reload failed: nginx kept its old configuration
        if self.merged:
            try:
                nginx.raise_if_rejected(result, host.name, config)
            except BgError:
                self.rejected.append(host.name)
                raise
        check(result, f"reloading nginx ({config.nginx.reload_command})", host)
        progress.old_workers[host.name] = nginx.parse_old_workers(result.stdout)
        self.masters[host.name] = nginx.method_name(nginx.parse_master(result.stdout)[1])
        if self.merged:  # staged and tested in this round trip: its layout came with it
            progress.layouts[host.name] = nginx.read_layout(result.stdout, host.name, config)

    def _confirm(self, host: Host) -> None:
        slot = self.rendered[host.name][1]
        conf = nginx.confirm(host, self.config, slot,
                             layout=self.progress.layouts.get(host.name))
        if not conf.ok:
            raise SwitchError(
                f"{host.name}: nginx did not send traffic to {slot} after the reload"
                f" ({conf.attempts} probes in {conf.elapsed:.1f}s)",
                detail=conf.detail,
            )

    # ------------------------------------------------------------------ restore

    def restore_all(self, reload_too: list[Host]) -> str:
        """The previous upstream back on every host prepared (reloading those that
        reloaded); what could not be restored, as a note for the error's detail."""
        undo = nginx.abort_script(self.config)
        progress = self.progress
        if reload_too:
            progress.abandoned = {}

        def one(host: Host) -> None:
            reload = nginx.reload_script(self.config) if host in reload_too else ""
            result = check(self.session.run(host, lines(undo, reload)),
                           "restoring the previous nginx upstream", host)
            if reload and progress.abandoned is not None:
                progress.abandoned[host.name] = nginx.parse_old_workers(result.stdout)

        try:
            self.ctx.each(one, "restore", list(self.prepared))
        except HostFailures as exc:
            return f"\nNOT RESTORED, check by hand: {exc.message}"
        return ""


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


