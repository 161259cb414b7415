"""The one executor: runs a :class:`~bluegreen.ops.plan.Plan`'s steps in order.

On any failure or interruption before traffic moved, every slot the operation started is
stopped again (nginx untouched); a switch that fails restores every host it touched; an
``after_switch`` hook that fails switches back when ``rollback_on_failure`` is set. The
``on_failure`` hooks run last. ``BG_FAILPOINT=<boundary>[:kill|term|error]`` stops the
operation at a named step boundary, so tests can reach every one of them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from types import FrameType
from typing import TYPE_CHECKING

from bluegreen.config import warnings
from bluegreen.errors import (
    BgError,
    HookError,
    HostFailures,
    Interrupted,
    SlotDiedError,
    SwitchError,
    VerifyError,
)
from bluegreen.host import Host, check
from bluegreen.nginx import discard_backup_script
from bluegreen.ops import canarysteps
from bluegreen.ops import finish as finishing
from bluegreen.ops import switch as switching
from bluegreen.ops.core import Context, HostOutcome, OperationResult
from bluegreen.ops.plan import (
    Action,
    Boot,
    Finish,
    Hold,
    Hook,
    Plan,
    Step,
    Switch,
    Upload,
    Verify,
)
from bluegreen.ops.progress import FailpointFn, Progress
from bluegreen.ops.session import Session
from bluegreen.shell import lines
from bluegreen.state import write_state_script

# The steps a warm switch never takes (upload, boot, hooks, the verification window, an
# undo) are imported where they run: `bg switch` starts without them.
if TYPE_CHECKING:  # a switch or rollback never reads a tarball
    from bluegreen.artifact import Artifact
    from bluegreen.ops import verify as verifying

BOUNDARIES = ("locked", "uploaded", "healthy", "staged", "reloaded", "switched", "finished")


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """SIGTERM behaves like Ctrl-C while an operation runs: undo, release, exit 130."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def execute(ctx: Context, session: Session, plan: Plan, art: Artifact | None, *,
            started: float | None = None) -> OperationResult:
    """``started``: when the operation began (a deploy's artifact check comes first)."""
    started = time.monotonic() if started is None else started
    run = _Run(ctx, session, plan, art)
    session.record("plan", "intent", version=plan.version,
                   actions={h.host: h.action.value for h in plan.hosts})
    try:
        run.failpoint("locked")
        for step in plan.steps:
            run.step(step)
    except BaseException as exc:
        error = _undo(ctx, session, plan, run.progress, exc)
        if error is exc:
            raise
        raise error from exc
    session.record("done", "ok", version=plan.version)
    return _result(ctx, plan, started, run.notes)


class _Run:
    """One plan's run: what it changed so far and the notes it gathered."""

    def __init__(self, ctx: Context, session: Session, plan: Plan,
                 art: Artifact | None) -> None:
        self.ctx, self.session, self.plan, self.art = ctx, session, plan, art
        self.failpoint = FailpointFn(os.environ.get("BG_FAILPOINT", ""))
        self.progress = Progress()
        self.notes: list[str] = list(plan.notes)
        self.checking = _window_step(plan)
        self.window: verifying.Window | None = None

    def step(self, step: Step) -> None:
        ctx, session, plan, progress = self.ctx, self.session, self.plan, self.progress
        if isinstance(step, Upload | Boot):
            self.boot(step)
        elif isinstance(step, Hook):
            self.notes += _hook(ctx, session, plan, step, progress)
        elif isinstance(step, Switch):
            self.switch(step)
        elif isinstance(step, Verify) and self.window is not None:
            self.notes += _verify(ctx, session, plan, step, self.window, progress)
        elif isinstance(step, Hold):
            canarysteps.hold(ctx, session, step)
            if self.checking is not None and self.window is not None:
                self.notes += _verify(ctx, session, plan, self.checking, self.window,
                                      progress)
        elif isinstance(step, Finish):
            self.finish(step)

    def boot(self, step: Upload | Boot) -> None:
        from bluegreen.ops import steps

        if isinstance(step, Upload):
            steps.upload(self.ctx, self.session, step)
            self.failpoint("uploaded")
        else:
            steps.boot(self.ctx, self.session, step, self.progress, self.art)
            self.failpoint("healthy")

    def switch(self, step: Switch) -> None:
        ctx, session, progress = self.ctx, self.session, self.progress
        if self.checking is not None and self.window is None:
            from bluegreen.ops import verify as verifying

            # the log's length before any request reaches the new slots
            self.window = verifying.begin(ctx, session, self.checking)
        if step.canary is not None:  # what the boot staged is the full switch
            progress.staged.clear()
        switching.switch(ctx, session, step, progress, self.failpoint)
        progress.staged.clear()  # committed: a later switch stages its own
        progress.started.clear()  # live now: never stopped by an undo
        self.failpoint("switched")
        try:
            switching.verify_switched(ctx, session, step)
        except SwitchError:
            session.record("verify", "failed", step.hosts)
            _switch_back(ctx, session, self.plan, progress)
            raise

    def finish(self, step: Finish) -> None:
        last = step is self.plan.steps[-1]
        try:
            self.notes += finishing.finish(self.ctx, self.session, step, self.progress,
                                           release=last)
        except HostFailures as exc:
            dead = tuple(n for n, e in exc.errors.items() if isinstance(e, SlotDiedError))
            if dead:
                self.session.record("verify", "failed", dead, reason="new slot died")
                _switch_back(self.ctx, self.session, self.plan, self.progress, only=dead,
                             recorded=True)
            raise
        self.failpoint("finished")


def _hook(ctx: Context, session: Session, plan: Plan, step: Hook,
          progress: Progress) -> list[str]:
    from bluegreen.ops.hooks import run_hook

    try:
        run_hook(ctx, plan, step, session)
    except HookError as exc:
        session.record("hook", "failed", step.hosts, point=step.point, command=step.command)
        # Any ``before_*`` point runs before traffic moves: its failure refuses the operation.
        if step.point.startswith("before_"):
            exc.hint = exc.hint or "nothing was switched; the previous release keeps serving"
            raise
        if ctx.config.hooks.rollback_on_failure and step.point == "after_switch":
            _switch_back(ctx, session, plan, progress)
            exc.message += "; rolled back (rollback_on_failure)"
            raise
        ctx.reporter.info(f"warning: {exc.message}")
        return [f"hook {step.point} failed: {exc.message}"]
    session.record("hook", "ok", step.hosts, point=step.point, command=step.command)
    return []


def _window_step(plan: Plan) -> Verify | None:
    """The window an operation watches: a deploy's, or the one judging its canary."""
    found = next((s for s in plan.steps if isinstance(s, Verify)), None)
    spec = next((s.canary for s in plan.steps if isinstance(s, Switch) and s.canary), None)
    held = next((s for s in plan.steps if isinstance(s, Hold)), None)
    if found is None and spec is not None and held is not None:
        found = canarysteps.judge(held, spec)
    return found


def _verify(ctx: Context, session: Session, plan: Plan, step: Verify,
            window: verifying.Window, progress: Progress) -> list[str]:
    """The window; on a verdict, traffic back to the old slots (still warm), the new ones
    stopped (their logs kept), the figures counted to the end and journaled."""
    from bluegreen.ops import verify as verifying

    try:
        figures = verifying.watch(ctx, session, step, window)
    except VerifyError as exc:
        _switch_back(ctx, session, plan, progress)
        verifying.settle(ctx, session, window, exc)
        raise
    return [f"verified for {step.window:g}s: {figures.line()}"]


def _switch_back(ctx: Context, session: Session, plan: Plan, progress: Progress, *,
                 only: tuple[str, ...] | None = None, recorded: bool = False) -> None:
    """Traffic back to the old slots (still running: an old slot is retired only after the
    hooks and the last liveness check), then the new slots stopped. ``only`` limits it to
    some hosts; ``recorded``: their state already named the new slot, so it is put back."""
    from bluegreen.ops import steps

    acting = [h for h in plan.acting if only is None or h.host in only]
    back = {h.host: h.old_slot for h in acting if h.old_slot}
    versions = {h.host: h.old_version or "" for h in acting if h.old_slot}
    # Behind load balancers every planned host is listed again as it was before.
    fleet = {h.host: h.old_slot for h in plan.hosts if h.old_slot}
    returned = Progress()
    if back:
        switching.switch(ctx, session,
                         Switch(slots=back, versions=versions, front=ctx.tier.names,
                                fleet=fleet),
                         returned, FailpointFn(""))
    progress.started = {h.host: h.slot for h in acting}
    # nginx's workers from before the switch back still proxy to the new slots.
    steps.stop_started(ctx, session, progress, drain=returned.old_workers)
    undo = discard_backup_script(ctx.config)
    if recorded:
        def restore(host: Host) -> None:
            script = lines(undo, write_state_script(ctx.paths, session.states[host.name]))
            check(session.run(host, script), "recording the previous state again", host)

        ctx.each(restore, "restore state", session.hosts(tuple(back)))
    else:
        ctx.each(lambda h: session.run(h, undo), "cleanup",
                 session.hosts(ctx.tier.nginx_names(tuple(back))))


def _left_running(plan: Plan, progress: Progress) -> str:
    """What an interrupted retire leaves running, and what finishes it."""
    if not progress.retiring:
        return ""
    old = {h.host: h.old_version for h in plan.hosts}
    slots = ", ".join(f"{slot} ({old.get(host) or '?'}) on {host}"
                      for host, slot in sorted(progress.retiring.items()))
    return (f"; {slots} is left running with the connections it still holds:"
            " the next deploy finishes its retire first (until then it is a warm slot:"
            " bg rollback or bg switch would send traffic back to it)")


def _undo(ctx: Context, session: Session, plan: Plan, progress: Progress,
          exc: BaseException) -> BaseException:
    """Take back what the failed operation started; returns the error to raise."""
    from bluegreen.ops import steps
    from bluegreen.ops.hooks import run_hook

    error: BaseException = exc
    if isinstance(exc, KeyboardInterrupt):
        error = Interrupted("interrupted: stopped what was started and not switched;"
                            " traffic stays where it was" if not progress.switched else
                            "interrupted after the switch: traffic is on the new release"
                            + _left_running(plan, progress))
    session.record("failed", "error", message=str(getattr(error, "message", error)))
    if isinstance(error, BgError):
        try:
            with _no_interrupt():
                steps.stop_started(ctx, session, progress, drain=progress.abandoned)
        except BgError as more:
            error.attach(more)
        for cmd in ctx.config.hooks.on_failure:
            try:
                run_hook(ctx, plan, Hook("on_failure", cmd, tuple(h.host for h in plan.hosts)),
                         session)
            except BgError as more:
                error.attach(more)
    return error


@contextlib.contextmanager
def _no_interrupt() -> Iterator[None]:
    """A second Ctrl-C must not cut the undo short."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _result(ctx: Context, plan: Plan, started: float, notes: list[str]) -> OperationResult:
    verb = {"deploy": "deployed", "rollback": "rolled back to", "switch": "switched to",
            "promote": "promoted the canary:", "abort": "aborted the canary: back on"}
    acting = plan.acting
    first = acting[0] if acting else plan.hosts[0]
    n = len(plan.hosts)
    unchanged = n - len(acting)
    extra = f" ({unchanged} already there)" if unchanged and acting else ""
    previous = (f" (previous: {first.old_version} on {first.old_slot})"
                if first.old_slot and first.old_slot != first.slot else "")
    seconds = time.monotonic() - started
    summary = (
        f"{verb[plan.operation]} {ctx.config.app.name} {plan.version} on {first.slot}"
        f" on {n} host{'s' if n != 1 else ''}{extra} in {seconds:.2f}s{previous}"
        if acting else
        f"{ctx.config.app.name} {plan.version} is already live on every host: nothing to do"
    )
    outcome = {h.host: ("unchanged" if h.action is Action.NOTHING else
                        f"{h.action.value}: {h.old_slot or '-'} -> {h.slot}") for h in plan.hosts}
    return OperationResult(
        operation=plan.operation,
        app=ctx.config.app.name,
        target=ctx.target.name,
        version=plan.version,
        slot=first.slot,
        previous_slot=first.old_slot,
        previous_version=first.old_version,
        hosts=tuple(HostOutcome(h.name, outcome.get(h.name, "unchanged"), h.commands_run)
                    for h in ctx.hosts),
        steps=tuple(ctx.steps),
        seconds=seconds,
        summary=summary,
        warnings=tuple(warnings(ctx.config)) + tuple(notes),
    )


def counted(ctx: Context, result: OperationResult) -> OperationResult:
    """The result with each host's round trips counted after the lock was released."""
    return replace(result, hosts=tuple(
        replace(o, commands=h.commands_run) for o, h in zip(result.hosts, ctx.hosts, strict=True)))
