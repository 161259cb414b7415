"""The last step of a switch: record the new state, wait for nginx's old workers, retire
the old slots, prune; one round trip per app host (see :func:`finish`)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping

from bluegreen import nginx
from bluegreen.errors import SlotDiedError
from bluegreen.facts.drain import drain_noted_script
from bluegreen.facts.retire import (
    LEFT_RUNNING,
    read_retire,
    retire_drain_script,
    stop_while_alive,
)
from bluegreen.host import Host, check
from bluegreen.ops.core import Context
from bluegreen.ops.plan import Finish
from bluegreen.ops.progress import Progress
from bluegreen.ops.session import Session
from bluegreen.ops.switch import slots_label as _slots
from bluegreen.releases import mark_live_script, parse_pruned, prune_script
from bluegreen.shell import ScriptExit, guard, lines, subshell
from bluegreen.state import HostState, write_state_script


def finish(ctx: Context, session: Session, step: Finish, progress: Progress, *,
           release: bool = False) -> list[str]:
    """One round trip per host: record the new state (and drop the switch's backup file),
    wait for nginx's old workers, stop the old slot, prune; with ``release`` (the last
    step), also journal the outcome and release the lock. Returns notes."""
    keep = {v for s in session.states.values() for v in s.versions.values() if v}
    keep.update(step.versions.values())
    # nginx hosts apart from the app hosts: their old workers gone before any old slot stops
    notes = ctx.tier.drain(ctx, session, progress.old_workers, wait=bool(step.retire))
    parts = ["record state"]
    if step.retire:
        parts += [*ctx.tier.app_drain, "retire " + _slots(step.retire)]
    if step.prune:
        parts.append("prune")
    with ctx.step(", ".join(parts)) as note, _waiting(ctx, step):
        outputs = ctx.each(lambda host: _finish_one(ctx, session, step, progress, host, keep,
                                                    release=release),
                           "finish", session.hosts(step.hosts))
        notes += _retire_notes(ctx, step, outputs, note)
        pruned = sorted({v for out in outputs.values() for v in parse_pruned(out)})
        if pruned:
            note.append("pruned " + ", ".join(pruned))
    if not release:
        session.record("finish", "ok", step.hosts, retired=dict(step.retire) or None)
    return notes


def _finish_one(ctx: Context, session: Session, step: Finish, progress: Progress,
                host: Host, keep: set[str], *, release: bool) -> str:
    new = session.states[host.name].switched(step.slots[host.name], step.versions[host.name])
    retire = step.retire.get(host.name)
    if retire:
        progress.retiring[host.name] = retire
    script = _finish_script(ctx, session, step, progress, host, new, keep)
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


def _finish_script(ctx: Context, session: Session, step: Finish, progress: Progress,
                   host: Host, new: HostState, keep: set[str]) -> str:
    """Record ``new``, drain, guard the new slot, retire the old one, mark live, prune."""
    state = session.states[host.name]
    retire = step.retire.get(host.name)
    old = progress.old_workers.get(host.name, [])
    timeout = ctx.config.switch.drain_timeout
    return lines(
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
                                                 state.live_version) if v]),
        prune_script(ctx.paths, ctx.config.app.keep_releases, keep) if step.prune else "",
    )


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
