"""The lock on every host (all or none), what each host really has, and its journal.

Entering a :class:`Session` takes the lock and observes each host in one round trip,
takes over a lock whose holder provably died, undoes a switch an earlier operation left
half done, and reconciles the recorded state with what nginx really serves. Journal
entries ride in front of the next script each host runs (:meth:`Session.run`), so they
reach the host before the next step starts without costing a round trip.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bluegreen import asroot, nginx
from bluegreen import state as st
from bluegreen.errors import StateError
from bluegreen.facts.drain import drain_noted_script
from bluegreen.facts.observe import (
    Observation,
    new_marker,
    nginx_test_script,
    observe_script,
    parse_observation,
)
from bluegreen.host import CommandResult, Host, check
from bluegreen.journal import Journal
from bluegreen.lock import Locks, describe_holder, release_script
from bluegreen.ops.core import Context
from bluegreen.ops.reconcile import reconcile, served_slot
from bluegreen.releases import clean_uploads_script, layout_script
from bluegreen.runners.base import leftover_script
from bluegreen.shell import lines


def observation_script(ctx: Context, marker: str, version: str | None, *,
                       nginx_test: bool = False, leftovers: bool = False) -> str:
    files = nginx.files(ctx.config)
    alive = {slot: ctx.runner.alive_script(slot) for slot in ctx.config.slots}
    return observe_script(
        ctx.paths, marker,
        upstream_file=files.live, backup_file=files.backup,
        alive_scripts=alive,
        version=version,
        nginx_test=ctx.tier.app_nginx_test(ctx) if nginx_test else None,
        leftover_scripts={slot: leftover_script(alive[slot], ctx.paths.pid(slot), port,
                                                ctx.paths.root, slot)
                          for slot, port in ctx.config.slots.items()} if leftovers else None,
    )


def observe(ctx: Context, version: str | None = None) -> dict[str, tuple[st.HostState,
                                                                        Observation]]:
    """Read-only: each host's recorded state and observation (for dry runs and status).
    Behind load balancers, the upstream an app host is served by is read from them."""
    def one(host: Host) -> tuple[st.HostState, Observation]:
        marker = new_marker()
        result = check(host.run(observation_script(ctx, marker, version, leftovers=True)),
                       "reading state", host)
        obs = parse_observation(result.stdout, marker)
        return _parse_state(host, ctx, obs.state_raw), obs

    observed = ctx.each(one, "reading state")
    served = ctx.tier.served(ctx, ctx.tier.observe(ctx),
                             {n: obs for n, (_, obs) in observed.items()})
    return {n: (state, served[n]) for n, (state, _) in observed.items()}


def _parse_state(host: Host, ctx: Context, raw: str) -> st.HostState:
    return st.parse_state(host, ctx.paths, raw)


class Session:
    """Lock, observe and reconcile every host on entry; release (with the journal) on exit."""

    def __init__(self, ctx: Context, command: str, *, version: str | None = None,
                 nginx_test: bool = False) -> None:
        self.ctx = ctx
        # Test nginx's configuration as it is, in the lock's round trip: an operation that
        # will switch refuses a configuration already broken before it changes anything.
        # Without it, the stage's own test tells (a warm switch), or :meth:`test_nginx`.
        self.nginx_test = nginx_test
        self.command = command
        self.version = version
        self.op = command.split()[0]
        self.states: dict[str, st.HostState] = {}
        self.recorded: dict[str, st.HostState] = {}
        self.observed: dict[str, Observation] = {}  # app hosts and load balancers
        self.notes: dict[str, tuple[str, ...]] = {}
        self.journals: dict[str, Journal] = {}
        self._locks = Locks(ctx.paths, command)

    # -------------------------------------------------------------------- enter / exit

    def __enter__(self) -> Session:
        everywhere = [*self.ctx.hosts, *self.ctx.tier.hosts]
        self.journals = {h.name: Journal(h, self.ctx.paths, self.op) for h in everywhere}
        begun = st.now_iso()  # `bg history` times the operation from here
        try:
            with self.ctx.step("lock and read state") as note:
                # Load balancers too: each one's upstream covers hosts --hosts may leave out.
                self.ctx.each(self._lock_one, "taking the lock", everywhere)
                self._refuse_broken_nginx()
                self._reconcile()
                recovered = self._recover()
                if recovered:
                    note.append(f"recovered {recovered} host(s)")
        except BaseException as exc:
            self._release(exc)
            raise
        # Only an operation that goes on is journaled: one refused here changed nothing.
        for journal in self.journals.values():
            journal.begin(self.command, begun)
        return self

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        self._release(exc)

    def _lock_one(self, host: Host) -> None:
        paths = self.ctx.paths
        marker = new_marker()
        # Holding the lock, nothing staged by an earlier operation can still be committed.
        nginx_only = host in self.ctx.tier.hosts
        if nginx_only:
            tail = self.ctx.tier.lock_tail(self.ctx, marker, nginx_test=self.nginx_test)
        else:
            tail = lines(layout_script(paths), nginx.discard_staged_script(self.ctx.config),
                         clean_uploads_script(paths),
                         observation_script(self.ctx, marker, self.version,
                                            nginx_test=self.nginx_test))
        result, dead = self._locks.take(host, tail)
        if dead is None:
            check(result, "taking the lock", host)
        else:
            check(result, "taking over a dead operation's lock", host)
            self.journals[host.name].record(
                "lock", "taken over", dead_holder=describe_holder(dead),
                interrupted=str(dead.get("command", "?")))
        obs = parse_observation(result.stdout, marker)
        self.observed[host.name] = obs
        if not nginx_only:
            self.recorded[host.name] = _parse_state(host, self.ctx, obs.state_raw)

    def _refuse_broken_nginx(self) -> None:
        broken = {n: o.nginx_error for n, o in self.observed.items() if o.nginx_error}
        if broken:
            raise nginx.already_broken(self.ctx.config, broken)

    def test_nginx(self) -> None:
        """The test the lock's round trip left out (``nginx_test=False``), for a plan that
        changes something (boots, runs a hook) before its switch: refuses, journaling
        nothing, when nginx's configuration as it is fails its test."""
        tier, config = self.ctx.tier, self.ctx.config
        on_app = tier.app_nginx_test(self.ctx)

        def one(host: Host) -> str | None:
            command = asroot.command(config.nginx.test_command) if host in tier.hosts else on_app
            if command is None:
                return None
            marker = new_marker()
            result = check(host.run(nginx_test_script(marker, command)), "testing nginx", host)
            return parse_observation(result.stdout, marker).nginx_error

        said = self.ctx.each(one, "nginx test", [*self.ctx.hosts, *tier.hosts])
        broken = {n: e for n, e in said.items() if e}
        if broken:
            self.discard_journal()
            raise nginx.already_broken(config, broken)

    def _reconcile(self) -> None:
        """Each app host's recorded state against what nginx serves it: its own upstream
        file, or behind load balancers, what they list for it."""
        served = self.ctx.tier.served(self.ctx, self.observed,
                                      {n: self.observed[n] for n in self.recorded})
        for name, recorded in self.recorded.items():
            rec = reconcile(self.ctx.config, recorded, served[name])
            self.states[name] = rec.state
            self.notes[name] = rec.notes
            for n in rec.notes:
                self.journals[name].record("reconcile", "corrected", note=n)

    def _recover(self) -> int:
        """Undo switches an interrupted operation left staged or half done."""
        hosts = [h for h in self.ctx.tier.nginx_hosts(self.ctx.hosts)
                 if self.observed.get(h.name) and self.observed[h.name].backup is not None]
        if not hosts:
            return 0
        config = self.ctx.config
        script = lines(nginx.abort_script(config), nginx.reload_script(config))

        def one(host: Host) -> None:
            # What the interrupted switch left nginx serving: drained before anything goes on,
            # because the operation that follows may stop exactly that slot.
            left = served_slot(config, self.observed[host.name].upstream)
            result = self.run(host, script)
            check(result, "restoring the upstream of an interrupted switch", host)
            drain = drain_noted_script(nginx.parse_old_workers(result.stdout),
                                       config.switch.drain_timeout,
                                       port=config.slots[left] if left else None)
            check(self.run(host, drain), "draining nginx after the restore", host)
            self.journals[host.name].record("recover", "ok", undone="interrupted switch")

        self.ctx.each(one, "recovery", hosts)
        for host in hosts:
            self.ctx.reporter.info(f"{host.name}: undid an interrupted switch"
                                   " (restored the previous nginx upstream)")
        return len(hosts)

    def _release(self, exc: BaseException | None) -> None:
        """Release every lock taken, flushing the journal; a failure here is attached to
        the operation's own error, never put in its place."""
        self._locks.release(self.ctx.each, exc, lambda h: self.journals[h.name].script()
                            if h.name in self.journals else "")

    # -------------------------------------------------------------------- during

    def run(self, host: Host, script: str, *, timeout: float | None = None,
            stdin: Path | None = None) -> CommandResult:
        """Run ``script`` on ``host`` with the journal's pending entries in front."""
        journal = self.journals.get(host.name)
        head = journal.script() if journal else ""
        return host.run(lines(head, script) if head else script, timeout=timeout, stdin=stdin)

    def release_tail(self, host: Host) -> str:
        """Script that flushes the journal and releases this host's lock: appended to the
        last step's script when the operation succeeded, to save a round trip."""
        journal = self.journals.get(host.name)
        return lines(journal.script() if journal else "", release_script(self.ctx.paths))

    def discard_journal(self) -> None:
        """An operation refused before it changed anything leaves no entry of its own (what
        taking the lock did, a recovery, stays)."""
        for journal in self.journals.values():
            journal.pending = [e for e in journal.pending if e["step"] != "begin"]

    def released(self, host: Host) -> None:
        """The host's lock went with the last step's script."""
        self._locks.drop(host)

    def record(self, step: str, outcome: str, hosts: Any = None, **detail: Any) -> None:
        names = set(hosts) if hosts is not None else None
        for name, journal in self.journals.items():
            if names is None or name in names:
                journal.record(step, outcome, **detail)

    def host(self, name: str) -> Host:
        return next(h for h in (*self.ctx.hosts, *self.ctx.tier.hosts) if h.name == name)

    def hosts(self, names: Mapping[str, object] | tuple[str, ...]) -> list[Host]:
        """The named app hosts and nginx hosts, in that order."""
        wanted = set(names)
        return [h for h in (*self.ctx.hosts, *self.ctx.tier.hosts) if h.name in wanted]

    def common_live(self) -> tuple[str | None, st.HostState]:
        """The live slot all hosts agree on (for operations that need one, e.g. migrate)."""
        lives = {name: (s.live, s.live_version) for name, s in self.states.items()}
        if len(set(lives.values())) > 1:
            listing = ", ".join(f"{n}: {slot} ({v})" for n, (slot, v) in lives.items())
            raise StateError(
                f"hosts disagree about what is live ({listing})",
                hint="converge them with `bg deploy VERSION`, or act on some with --hosts",
            )
        first = next(iter(self.states.values()))
        return first.live, first

