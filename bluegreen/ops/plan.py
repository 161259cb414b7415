"""Plans are data: what an operation will do, decided from config and host states alone.

A planner turns the goal of an operation ("V live on every host") and each host's
reconciled state into a :class:`Plan`: a per-host action and an ordered tuple of frozen
step objects, each naming the hosts it touches. The executor (``ops/executor.py``) runs
exactly these steps; ``--dry-run`` renders exactly these steps; tests assert on them
without any I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from bluegreen.config import Config
from bluegreen.errors import BgError, StateError
from bluegreen.ops.watchsteps import CanarySpec as CanarySpec  # steps of their own module,
from bluegreen.ops.watchsteps import Hold as Hold  # planned here
from bluegreen.ops.watchsteps import Verify as Verify
from bluegreen.state import HostState


class Action(StrEnum):
    NOTHING = "nothing to do"  # already live with the goal's version and healthy
    SWITCH = "switch only"  # the goal's version is warm in the idle slot
    START = "start, gate, switch"  # the release is on the host; its slot must boot
    SHIP = "ship, start, gate, switch"  # upload first


@dataclass(frozen=True)
class HostPlan:
    host: str
    action: Action
    slot: str  # the slot live after the operation
    version: str
    old_slot: str | None  # the slot live before (None: nothing deployed yet)
    old_version: str | None
    retire: str | None  # the slot stopped once nginx drained

    def to_json(self) -> dict[str, Any]:
        return {"host": self.host, "action": self.action.value, "slot": self.slot,
                "version": self.version, "old_slot": self.old_slot,
                "old_version": self.old_version, "retire": self.retire}


# ----------------------------------------------------------------------------- steps


@dataclass(frozen=True)
class Upload:
    """Env file and artifact to every host that lacks the release."""

    version: str
    hosts: tuple[str, ...]
    env_hosts: tuple[str, ...]

    def describe(self, config: Config) -> str:
        env = (f"env file to shared/env (0600) on {_names(self.env_hosts)}, where it changed"
               if self.env_hosts else "")
        if not self.hosts:
            return env
        return f"upload release {self.version} to {_names(self.hosts)}" + (f"; {env}" if env
                                                                            else "")


@dataclass(frozen=True)
class Boot:
    """Stop what runs in the slot, point it at the release, start it, health-gate it; at
    most ``batch`` hosts at a time (``boot_limit``)."""

    version: str
    slots: Mapping[str, str]  # host -> slot
    extract: tuple[str, ...]  # hosts that extract the uploaded tarball first
    batch: int

    @property
    def hosts(self) -> tuple[str, ...]:
        return tuple(self.slots)

    def describe(self, config: Config) -> str:
        h = config.health
        gate = (f"GET {h.path} until {h.expect} x{h.successes} ({h.deadline:g}s at most)")
        per = _per_slot(self.slots, config)
        batch = f", {self.batch} host(s) at a time" if self.batch < len(self.slots) else ""
        return f"start {self.version} in {per}; health gate: {gate}{batch}"


@dataclass(frozen=True)
class Hook:
    point: str
    command: str
    hosts: tuple[str, ...]

    def describe(self, config: Config) -> str:
        where = ("the controller" if self.command.startswith("local:")
                 else "the first host" if self.command == "migrate" else _names(self.hosts))
        return f"hook {self.point}: {self.command} (on {where})"


@dataclass(frozen=True)
class Switch:
    """Two-phase nginx switch of every listed host: stage + test everywhere, then reload
    and confirm each; any failure restores every host."""

    slots: Mapping[str, str]  # host -> slot it switches to
    versions: Mapping[str, str]
    # Load-balancer tier: nginx runs on these hosts only, and each one's upstream lists
    # every app host's live slot (``fleet``: every planned host -> its slot afterwards).
    lbs: tuple[str, ...] = ()
    fleet: Mapping[str, str] = field(default_factory=dict)
    canary: CanarySpec | None = None

    @property
    def hosts(self) -> tuple[str, ...]:
        return tuple(self.slots)

    def describe(self, config: Config) -> str:
        where = f" on load balancers {_names(self.lbs)}" if self.lbs else ""
        if self.canary is not None:
            sticky = ", sticky per client address" if self.canary.sticky else ""
            return (f"canary: nginx{where} sends {self.canary.percent}% of new requests to"
                    f" {_per_slot(self.slots, config)}{sticky}, the rest to"
                    f" {_per_slot(self.canary.old, config)}: stage,"
                    f" {config.nginx.test_command}, reload, confirm through nginx")
        reach = "; every load balancer reaches each new slot first" if self.lbs else ""
        return (f"switch nginx{where} to {_per_slot(self.slots, config)}{reach}: stage,"
                f" {config.nginx.test_command}, reload, confirm through nginx")


@dataclass(frozen=True)
class Finish:
    """Record the state, wait for nginx's old workers, retire old slots, prune."""

    slots: Mapping[str, str]  # host -> live slot after the operation
    versions: Mapping[str, str]
    retire: Mapping[str, str]  # host -> slot to stop
    prune: bool
    lbs: tuple[str, ...] = ()  # nginx's old workers are drained there, not on the app hosts

    @property
    def hosts(self) -> tuple[str, ...]:
        return tuple(self.slots)

    def describe(self, config: Config) -> str:
        out = "record state"
        if self.retire:
            where = f" on {_names(self.lbs)}" if self.lbs else ""
            sockets = ("" if self.lbs else
                       f", open sockets {config.switch.socket_grace:g}s, then a graceful stop")
            out += (f"; wait for nginx's old workers{where}"
                    f" (<= {config.switch.drain_timeout:g}s{sockets});"
                    f" stop {_per_slot(self.retire, config, ports=False)}")
        if self.prune:
            out += f"; prune releases beyond {config.app.keep_releases}"
        return out


Step = Upload | Boot | Hook | Switch | Verify | Hold | Finish


def _names(hosts: tuple[str, ...]) -> str:
    return ", ".join(hosts) if len(hosts) <= 4 else f"{len(hosts)} hosts"


def _per_slot(slots: Mapping[str, str], config: Config, *, ports: bool = True) -> str:
    groups: dict[str, list[str]] = {}
    for host, slot in slots.items():
        groups.setdefault(slot, []).append(host)
    parts = []
    for slot, hosts in groups.items():
        port = f" (:{config.slots[slot]})" if ports else ""
        where = "" if len(groups) == 1 and len(slots) == 1 else f" on {_names(tuple(hosts))}"
        parts.append(f"{slot}{port}{where}")
    return "; ".join(parts)


@dataclass(frozen=True)
class Plan:
    operation: str
    version: str
    hosts: tuple[HostPlan, ...]
    steps: tuple[Step, ...]
    notes: tuple[str, ...] = field(default=())

    def host(self, name: str) -> HostPlan:
        return next(h for h in self.hosts if h.host == name)

    @property
    def acting(self) -> tuple[HostPlan, ...]:
        return tuple(h for h in self.hosts if h.action is not Action.NOTHING)

    def describe(self, config: Config) -> list[str]:
        return [step.describe(config) for step in self.steps]

    def to_json(self, config: Config) -> dict[str, Any]:
        return {
            "operation": self.operation,
            "version": self.version,
            "hosts": [h.to_json() for h in self.hosts],
            "steps": [{"kind": type(s).__name__.lower(), "hosts": list(s.hosts),
                       "description": s.describe(config)} for s in self.steps],
            "notes": list(self.notes),
        }


# ----------------------------------------------------------------------------- planners


@dataclass(frozen=True)
class HostFacts:
    """What a planner needs to know of one host, beyond config."""

    state: HostState
    warm: Mapping[str, bool]  # slot -> running and healthy right now
    release_sha: str = ""  # sha256 recorded for the goal's release ("" when absent)


def plan_deploy(config: Config, facts: Mapping[str, HostFacts], version: str, *,
                sha256: str, retire: bool, boot_batch: int, lbs: tuple[str, ...] = (),
                verify: bool = True) -> Plan:
    """Goal: ``version`` live on every host. Per host: nothing, switch only, or ship;
    with ``[verify] window`` (and ``verify``), a verification window after the switch."""
    hosts: list[HostPlan] = []
    for name, f in facts.items():
        s = f.state
        if f.release_sha and f.release_sha != sha256:
            raise BgError(
                f"{name}: release {version} already exists there with another checksum",
                hint="a version names one build forever: deploy it under a new version",
            )
        if s.live is not None and s.live_version == version and f.warm.get(s.live, False):
            action, slot = Action.NOTHING, s.live
        elif s.live is not None and s.version_of(s.idle) == version and f.warm.get(s.idle):
            action, slot = Action.SWITCH, s.idle
        else:
            action = Action.START if f.release_sha == sha256 else Action.SHIP
            slot = s.idle
        hosts.append(_host_plan(name, s, action, slot, version, retire))
    return _assemble(config, "deploy", version, hosts, boot_batch=boot_batch, prune=True,
                     lbs=lbs, window=config.verify.window if verify else 0.0)


def plan_switch(config: Config, facts: Mapping[str, HostFacts], *, to: str | None,
                retire: bool, boot_batch: int, lbs: tuple[str, ...] = ()) -> Plan:
    """Goal: traffic on slot ``to`` (default: the idle slot, when hosts agree on one)."""
    states = {n: f.state for n, f in facts.items()}
    if all(s.live is None for s in states.values()):
        raise BgError("nothing is deployed yet: deploy a release before switching")
    if to is None:
        lives = {s.live for s in states.values()}
        if len(lives) > 1:
            raise StateError(
                "hosts are live on different slots ("
                + ", ".join(f"{n}: {s.live or '-'}" for n, s in states.items()) + ")",
                hint="choose one with `bg switch --to blue|green`, or converge with"
                " `bg deploy VERSION`",
            )
        to = states[next(iter(states))].idle
    hosts: list[HostPlan] = []
    versions = set()
    for name, f in facts.items():
        s = f.state
        version = s.version_of(to)
        if s.live == to:
            hosts.append(_host_plan(name, s, Action.NOTHING, to, s.live_version or "", retire))
            continue
        if version is None:
            raise BgError(f"{name}: {to} has never run a release, so traffic cannot switch to it",
                          hint="deploy a release first: `bg deploy ARTIFACT`")
        versions.add(version)
        action = Action.SWITCH if f.warm.get(to) else Action.START
        hosts.append(_host_plan(name, s, action, to, version, retire))
    if not any(h.action is not Action.NOTHING for h in hosts):
        live = next(iter(states.values()))
        raise BgError(f"{to} is already live ({live.live_version})")
    label = versions.pop() if len(versions) == 1 else "mixed"
    return _assemble(config, "switch", label, hosts, boot_batch=boot_batch, prune=False,
                     lbs=lbs)


def plan_rollback(config: Config, facts: Mapping[str, HostFacts], *, retire: bool,
                  boot_batch: int, lbs: tuple[str, ...] = ()) -> Plan:
    """Goal: every host back on the release live before its current one."""
    states = {n: f.state for n, f in facts.items()}
    if all(s.live is None for s in states.values()):
        raise BgError("nothing is deployed yet, so there is nothing to roll back to")
    lives = {(s.live_version, s.previous) for s in states.values()}
    if len(lives) > 1:
        listing = ", ".join(f"{n}: {s.live_version or '-'} (previous {s.previous or '-'})"
                            for n, s in states.items())
        raise StateError(
            f"hosts run different releases ({listing}); a rollback would take them to"
            " different places",
            hint="roll back the hosts that differ with `bg rollback --hosts NAME`, or put"
            " every host on one release with `bg deploy VERSION`",
        )
    hosts: list[HostPlan] = []
    for name, f in facts.items():
        s = f.state
        if s.previous is None:
            raise BgError(
                f"no previous release is recorded (live: {s.live_version} on {s.live})",
                hint="deploy the release you want with `bg deploy`",
            )
        slot = s.idle
        warm = f.warm.get(slot, False) and s.version_of(slot) == s.previous
        hosts.append(_host_plan(name, s, Action.SWITCH if warm else Action.START, slot,
                                s.previous, retire))
    version = hosts[0].version
    return _assemble(config, "rollback", version, hosts, boot_batch=boot_batch, prune=False,
                     lbs=lbs)


def _host_plan(name: str, s: HostState, action: Action, slot: str, version: str,
               retire: bool) -> HostPlan:
    moving = action is not Action.NOTHING and s.live is not None and s.live != slot
    return HostPlan(
        host=name, action=action, slot=slot, version=version,
        old_slot=s.live, old_version=s.live_version,
        retire=s.live if (retire and moving) else None,
    )


def _assemble(config: Config, operation: str, version: str, hosts: list[HostPlan], *,
              boot_batch: int, prune: bool, lbs: tuple[str, ...] = (),
              window: float = 0.0) -> Plan:
    acting = [h for h in hosts if h.action is not Action.NOTHING]
    booting = [h for h in acting if h.action in (Action.START, Action.SHIP)]
    shipping = tuple(h.host for h in acting if h.action is Action.SHIP)
    steps: list[Step] = []
    env = tuple(h.host for h in booting) if config.app.env_file else ()
    if shipping or env:
        # The env file is loaded at start: every host that boots gets it (when changed).
        steps.append(Upload(version, shipping, env))
    names = tuple(h.host for h in booting)
    for cmd in config.hooks.before_start if booting else ():
        steps.append(Hook("before_start", cmd, names))
    if booting:
        steps.append(Boot(
            version=version,
            slots={h.host: h.slot for h in booting},
            extract=shipping,
            batch=max(1, min(boot_batch, len(booting))),
        ))
    switching = tuple(h.host for h in acting)
    if acting:
        for cmd in config.hooks.before_switch:
            steps.append(Hook("before_switch", cmd, switching))
        steps.append(Switch(slots={h.host: h.slot for h in acting},
                            versions={h.host: h.version for h in acting}, lbs=lbs,
                            fleet={h.host: h.slot for h in hosts} if lbs else {}))
        for cmd in config.hooks.after_switch:
            steps.append(Hook("after_switch", cmd, switching))
        back = {h.host: h.old_slot for h in acting if h.old_slot and h.old_slot != h.slot}
        if window > 0 and back:  # a first deploy has nothing to go back to
            steps.append(Verify(window, {h: s for h, s in
                                         ((h.host, h.slot) for h in acting) if h in back},
                                back, lbs))
        steps.append(Finish(
            slots={h.host: h.slot for h in acting},
            versions={h.host: h.version for h in acting},
            retire={h.host: h.retire for h in acting if h.retire},
            prune=prune,
            lbs=lbs,
        ))
        if operation == "deploy":
            for cmd in config.hooks.after_deploy:
                steps.append(Hook("after_deploy", cmd, switching))
    return Plan(operation=operation, version=version, hosts=tuple(hosts), steps=tuple(steps))
